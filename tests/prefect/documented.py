"""Flow patterns from Prefect's own documentation, written as its pages show them (retries with
and without delays, ``.map`` with ``unmapped``, ``.submit`` with ``wait``, subflows, async
flows with ``asyncio.gather``, task timeouts, and the upgrade guide's examples of flow final
states), with no TelemHQ code: ``test_fidelity.py`` runs them under instrument-all."""

from __future__ import annotations

import asyncio
import time

from prefect import flow, task, unmapped
from prefect.futures import wait
from prefect.states import Failed, State

attempts: dict[str, int] = {}


def _count(key: str) -> int:
    attempts[key] = attempts.get(key, 0) + 1
    return attempts[key]


# Retries: immediate, with a list of delays (AwaitingRetry), exhausted; a flow retried.
@task(retries=2)
def fetch_flaky() -> int:
    if _count("fetch_flaky") < 3:
        raise ConnectionError("upstream unavailable")
    return 1


@task(retries=3, retry_delay_seconds=[0.1, 0.2, 0.4])
def fetch_with_backoff() -> int:
    if _count("fetch_with_backoff") < 2:
        raise TimeoutError("slow upstream")
    return 2


@task(retries=1)
def fetch_broken() -> int:
    raise ValueError("bad payload")


@flow
def retries_flow() -> int:
    broken = fetch_broken(return_state=True)
    assert broken.is_failed()
    return fetch_flaky() + fetch_with_backoff()


@flow(retries=1)
def retried_flow() -> int:
    if _count("retried_flow") == 1:
        raise RuntimeError("first attempt fails")
    return add(1, 2)


# .map, with an unmapped argument.
@task
def add(x: int, y: int) -> int:
    return x + y


@flow
def mapped_flow() -> list[int]:
    futures = add.map([1, 2, 3], unmapped(10))
    return list(futures.result())


# .submit, waiting for every future (one of them fails; the flow goes on).
@task
def double(x: int) -> int:
    return 2 * x


@flow
def submitted_flow() -> list[int]:
    futures = [double.submit(i) for i in range(3)]
    broken = fetch_broken.submit()
    wait([*futures, broken])
    assert broken.state.is_failed()
    return [future.result() for future in futures]


# Subflows, one of them failing (its state returned, not raised).
@flow
def child_flow(n: int) -> int:
    return add(n, 1)


@flow
def failing_child_flow() -> None:
    raise ValueError("child failed")


@flow
def parent_flow() -> int:
    state = failing_child_flow(return_state=True)
    assert state.is_failed()
    return child_flow(1) + child_flow(2)


# Async: tasks run concurrently with asyncio.gather.
@task
async def fetch_page(page: int) -> int:
    await asyncio.sleep(0.01)
    return page


@flow
async def async_flow() -> int:
    pages = await asyncio.gather(*[fetch_page(i) for i in range(3)])
    return sum(pages)


# A task timeout (Prefect's TimedOut, a Failed state).
@task(timeout_seconds=0.5)
def too_slow() -> None:
    time.sleep(5)


@flow
def timeout_flow() -> str:
    state = too_slow(return_state=True)
    assert state.is_failed()
    return "went on"


# The upgrade guide's "Flow final states" examples.
@task
def failing_task() -> None:
    raise ValueError("Task failed")


@flow
def unhandled_flow() -> None:
    failing_task()  # Exception propagates, causing flow failure


@flow
def return_state_flow() -> str:
    state = failing_task(return_state=True)
    if state.is_failed():
        raise ValueError(state.result(raise_on_failure=False))
    return "Flow completed successfully"


@flow
def try_except_flow() -> State[None] | str:
    try:
        failing_task()
    except ValueError:
        return Failed(message="Flow failed due to task failure")
    return "Flow completed successfully"


SYNC_FLOWS = (
    retries_flow,
    retried_flow,
    mapped_flow,
    submitted_flow,
    parent_flow,
    timeout_flow,
    unhandled_flow,
    return_state_flow,
    try_except_flow,
)
