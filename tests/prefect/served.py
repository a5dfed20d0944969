"""Flows served by ``serve()`` (each run in a subprocess of the runner), for the cancellation
and SIGKILL tests (the runner calls ``on_cancellation`` and ``on_crashed`` in its own process)
and a run that completes (its hooks run in the run's own subprocess, with a subflow)."""

from __future__ import annotations

import os
import time
from pathlib import Path

from prefect import flow, serve

from telemhq_plugins.prefect import hooks


@flow(name="served-sleeper", **hooks())
def served_sleeper() -> None:
    time.sleep(120)


@flow(name="served-victim", **hooks())
def served_victim() -> None:
    """Writes its process id where the test can read it, then waits to be killed."""
    Path(os.environ["SERVED_PID_FILE"]).write_text(str(os.getpid()))
    time.sleep(120)


@flow(name="served-quick-child", **hooks())
def served_quick_child() -> None:
    """A subflow of a deployed run: it has no deployment of its own."""


@flow(name="served-quick", **hooks())
def served_quick() -> None:
    served_quick_child()


if __name__ == "__main__":
    serve(
        served_sleeper.to_deployment(name="sleeper"),
        served_victim.to_deployment(name="victim"),
        served_quick.to_deployment(name="quick"),
    )
