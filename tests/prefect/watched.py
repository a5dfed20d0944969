"""Flows for the watcher tests: no TelemHQ code, except one with hooks and a metric."""

from __future__ import annotations

import sys
import time

from prefect import flow

import telemhq_plugins
from telemhq_plugins.prefect import hooks


@flow(name="watched-plain")
def watched_plain() -> str:
    return "ok"


@flow(name="watched-failing")
def watched_failing() -> None:
    raise ValueError("watched failure")


@flow(name="watched-hooked", **hooks())
def watched_hooked() -> None:
    telemhq_plugins.report(records_processed=11)


@flow(name="watched-hooked-lost", **hooks())
def watched_hooked_lost() -> None:
    telemhq_plugins.report(records_processed=5)


@flow(name="watched-restart")
def watched_restart() -> str:
    return "ok"


@flow(name="watched-after-restart")
def watched_after_restart() -> str:
    return "ok"


@flow(name="watched-killed")
def watched_killed() -> None:
    print("running", flush=True)
    time.sleep(600)


if __name__ == "__main__":
    {"watched-killed": watched_killed}[sys.argv[1]]()
