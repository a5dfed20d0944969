"""Task runs that crash (Prefect records them Crashed, and calls no hook for that state) and
task runs that Prefect retries: one ping per attempt, the crashed attempt a ``failure``."""

from __future__ import annotations

import asyncio
import signal
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from prefect.client.orchestration import get_client

from telemhq_plugins.core import Client
from telemhq_plugins.prefect import instrument, uninstrument
from tests.kit import assert_one_ping_per_event, statuses_oldest_first, wait_for_runs, wait_until
from tests.live_server import LiveServer
from tests.prefect import crashing
from tests.prefect.conftest import telemhq_env

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("prefect_api")]


@pytest.fixture
def instrumented(client: Client) -> Iterator[Client]:
    """Instrument-all with tasks, in this process, for one test."""
    assert instrument(tasks=True) is True
    try:
        yield client
    finally:
        uninstrument()


def prefect_task_run(task_run_id: str, *, timeout: float = 30.0) -> Any:
    """The task run as Prefect's API recorded it, once its state there is final (task run
    states reach the API as events, a moment after the run)."""
    with get_client(sync_client=True) as prefect:
        seen: list[Any] = [None]

        def final() -> Any:
            seen[0] = prefect.read_task_run(uuid.UUID(task_run_id))
            state = seen[0].state
            return seen[0] if state is not None and state.is_final() else None

        return wait_until(
            final, lambda: f"task run {task_run_id}: {seen[0].state}", timeout=timeout, interval=0.2
        )


def test_a_task_left_running_by_its_async_flow_is_one_failure(
    live_server: LiveServer, instrumented: Client
) -> None:
    # The upgrade guide's example: the flow returns without waiting for its submitted task,
    # and Prefect's task runner cancels the task. The flow completes, the task crashes.
    asyncio.run(crashing.my_flow())
    [flow_run] = wait_for_runs(live_server, "my-flow", 1)
    assert flow_run["status"] == "success"
    [task_run] = wait_for_runs(live_server, "my-flow-my-task", 1)
    assert task_run["status"] == "failure"
    assert task_run["payload"]["attempt"] == 1
    error = task_run["payload"]["error"]
    assert error["type"] == "CancelledError"
    assert error["message"] == "Execution was cancelled by the runtime environment."
    assert live_server.tracker("my-flow-my-task")["state"] == "failing"
    assert live_server.tracker("my-flow")["state"] == "up"
    # Prefect agrees: the task run is Crashed, with the same message.
    state = prefect_task_run(task_run["run_id"]).state
    assert (state.type.value, state.message) == ("CRASHED", error["message"])
    instrumented.flush()
    assert len(live_server.runs("my-flow-my-task")) == 1


@pytest.mark.parametrize(
    ("run", "flow_slug", "slug"),
    [
        (crashing.crash_interrupt, "crash-interrupt", "crash-interrupt-interrupted"),
        (
            crashing.crash_interrupt_hooked,
            "crash-interrupt-hooked",
            "crash-interrupt-hooked-interrupted-hooked",
        ),
    ],
    ids=["instrument-all", "task-hooks"],
)
def test_a_keyboard_interrupt_in_a_task_is_one_failure(
    live_server: LiveServer, instrumented: Client, run: Any, flow_slug: str, slug: str
) -> None:
    with pytest.raises(KeyboardInterrupt):
        run()
    [task_run] = wait_for_runs(live_server, slug, 1)
    assert (task_run["status"], task_run["payload"]["attempt"]) == ("failure", 1)
    error = task_run["payload"]["error"]
    assert error["type"] == "KeyboardInterrupt"
    assert error["message"] == "Execution was aborted by an interrupt signal."
    assert "raise KeyboardInterrupt" in error["traceback"]
    assert live_server.tracker(slug)["state"] == "failing"
    assert statuses_oldest_first(wait_for_runs(live_server, flow_slug, 1)) == ["failure"]
    assert prefect_task_run(task_run["run_id"]).state.type.value == "CRASHED"
    instrumented.flush()
    assert len(live_server.runs(slug)) == 1


@pytest.mark.parametrize("monitored", ["flow", "task-only"])
def test_a_task_stopped_by_sigterm_is_one_failure(
    live_server: LiveServer, ping_key: str, monitored: str
) -> None:
    proc = subprocess.run(
        [sys.executable, str(Path(crashing.__file__)), "crash-sigterm", monitored],
        env=telemhq_env(live_server, ping_key),
        capture_output=True,
        timeout=180,
        check=False,
    )
    # Prefect re-raises the signal with the default handler: the process dies by it, and
    # ``atexit`` never runs. The task's ping was delivered before (the flow's too, when kept).
    assert proc.returncode == -signal.SIGTERM, proc.stderr.decode()[-3000:]
    flow_slug = "crash-sigterm" if monitored == "flow" else "crash-sigterm-alone"
    slug = f"{flow_slug}-terminated"
    [task_run] = wait_for_runs(live_server, slug, 1)
    assert (task_run["status"], task_run["payload"]["attempt"]) == ("failure", 1)
    error = task_run["payload"]["error"]
    assert error["type"] == "TerminationSignal"
    assert error["message"] == "Execution was aborted by a termination signal."
    assert live_server.tracker(slug)["state"] == "failing"
    assert prefect_task_run(task_run["run_id"]).state.type.value == "CRASHED"
    if monitored == "flow":
        assert statuses_oldest_first(wait_for_runs(live_server, flow_slug, 1)) == ["failure"]
    else:
        assert live_server.api("GET", f"/trackers/{flow_slug}").status_code == 404
    assert len(live_server.runs(slug)) == 1


def test_retried_tasks_send_retry_retry_success(
    live_server: LiveServer, instrumented: Client
) -> None:
    assert crashing.crash_retries() == "okok"
    for slug, message in (
        ("crash-retries-flaky", "try again"),
        ("crash-retries-flaky-later", None),  # retried after a delay: AwaitingRetry
    ):
        runs = wait_for_runs(live_server, slug, 3)
        assert statuses_oldest_first(runs) == ["retry", "retry", "success"], slug
        assert [r["payload"]["attempt"] for r in reversed(runs)] == [1, 2, 3]
        assert {r["run_id"] for r in runs} == {runs[0]["run_id"]}
        assert_one_ping_per_event(runs)
        if message is not None:
            assert runs[-1]["payload"]["error"]["message"] == message
        assert live_server.tracker(slug)["state"] == "up"
        assert prefect_task_run(runs[0]["run_id"]).run_count == 3
    instrumented.flush()
    assert len(live_server.runs("crash-retries-flaky")) == 3
