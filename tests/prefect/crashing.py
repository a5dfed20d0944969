"""Flows whose task runs crash, and retried task runs, for ``test_crash.py`` (in the test
process under ``instrument(tasks=True)``, or as a script in a subprocess)."""

from __future__ import annotations

import os
import signal
import sys
import threading
import time
from typing import Any

from prefect import flow, task

from telemhq_plugins.prefect import instrument, task_hooks

attempts: dict[str, int] = {}
#: set when the upgrade guide's flow has completed (its own ``on_completion`` hook)
flow_completed = threading.Event()


def _count(key: str) -> int:
    attempts[key] = attempts.get(key, 0) + 1
    return attempts[key]


def hold_until_the_flow_completes(task: Any, task_run: Any, state: Any) -> None:
    """Keep the task at its start until its flow has completed: Prefect's task runner then
    cancels the task before its function runs, every time (without this the task may win the
    race and complete, or never start)."""
    flow_completed.wait(60)
    time.sleep(0.5)  # the flow engine's remaining steps up to the cancel: no I/O


def mark_completed(flow: Any, flow_run: Any, state: Any) -> None:
    flow_completed.set()


# Prefect's upgrade guide (``my_task.submit()`` in an async flow), the task held at its start.
@task(on_running=[hold_until_the_flow_completes])
async def my_task() -> None:
    pass


@flow(on_completion=[mark_completed])
async def my_flow() -> None:
    my_task.submit()


@task(name="interrupted")
def interrupted() -> None:
    raise KeyboardInterrupt


@flow(name="crash-interrupt")
def crash_interrupt() -> None:
    interrupted()


@task(name="interrupted-hooked", **task_hooks())
def interrupted_hooked() -> None:
    raise KeyboardInterrupt


@flow(name="crash-interrupt-hooked")
def crash_interrupt_hooked() -> None:
    interrupted_hooked()


@task(name="terminated")
def terminated() -> None:
    os.kill(os.getpid(), signal.SIGTERM)
    time.sleep(30)


@flow(name="crash-sigterm")
def crash_sigterm() -> None:
    terminated()


@task(name="flaky", retries=2)
def flaky() -> str:
    if _count("flaky") < 3:
        raise ConnectionError("try again")
    return "ok"


@task(name="flaky-later", retries=2, retry_delay_seconds=0.2)
def flaky_later() -> str:
    if _count("flaky-later") < 3:
        raise ConnectionError("try again later")
    return "ok"


@flow(name="crash-retries")
def crash_retries() -> str:
    return flaky() + flaky_later()


if __name__ == "__main__":
    # ``crash-sigterm flow``: instrument-all; ``crash-sigterm task-only``: the same flow named
    # ``crash-sigterm-alone``, left out: only its task pings.
    if sys.argv[2] == "flow":
        instrument(tasks=True)
        crash_sigterm()
    else:
        instrument(tasks=True, exclude=["crash-sigterm-alone"])
        crash_sigterm.with_options(name="crash-sigterm-alone")()
