"""Flows the tests run (in the test process, or as scripts in a subprocess)."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from typing import Any

from prefect import flow, task
from pydantic import SecretStr

import telemhq_plugins
from telemhq_plugins.prefect import hooks, task_hooks

attempts: dict[str, int] = {}


def _count(key: str) -> int:
    attempts[key] = attempts.get(key, 0) + 1
    return attempts[key]


@task(**task_hooks())
def extract(n: int) -> int:
    telemhq_plugins.report(rows_extracted=n)
    return n


@flow(**hooks())
def acc_success(n: int = 3, password: str = "hunter2", api: SecretStr | None = None) -> int:
    rows = extract(n)
    telemhq_plugins.report(records_processed=rows)
    return rows


@flow(name="acc-failure", **hooks())
def acc_failure() -> None:
    raise ValueError("0 rows loaded")


@flow(name="acc-flow-retry", retries=1, **hooks())
def acc_flow_retry() -> str:
    if _count("flow-retry") == 1:
        raise RuntimeError("first attempt fails")
    return "ok"


@task(name="flaky", retries=2, **task_hooks())
def flaky() -> str:
    if _count("task-retry") < 3:
        raise ConnectionError("try again")
    return "ok"


@flow(name="acc-task-retry", **hooks())
def acc_task_retry() -> str:
    return flaky()


@task(name="async-load", **task_hooks())
async def async_load(n: int) -> int:
    await asyncio.sleep(0.01)
    telemhq_plugins.report(rows_loaded=n)
    return n


@flow(name="acc-async", **hooks())
async def acc_async() -> int:
    n = await async_load(5)
    telemhq_plugins.report(records_processed=n)
    return n


@flow(name="acc-interrupt", **hooks())
def acc_interrupt() -> None:
    raise KeyboardInterrupt


def own_hook(flow: Any, flow_run: Any, state: Any) -> None:
    attempts["own-hook"] = attempts.get("own-hook", 0) + 1


@flow(name="acc-own-hook", on_completion=[own_hook])
def acc_own_hook() -> str:
    return "done"


@flow(name="acc-sigterm", **hooks())
def acc_sigterm() -> None:
    os.kill(os.getpid(), signal.SIGTERM)
    import time

    time.sleep(30)


if __name__ == "__main__":
    {"acc-sigterm": acc_sigterm}[sys.argv[1]]()
