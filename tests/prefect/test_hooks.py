"""``hooks()``, ``task_hooks()`` and ``monitor_flow()``: real flows against a real Prefect API
server, their pings stored by the real reference server over HTTP."""

from __future__ import annotations

import asyncio
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from prefect import flow, task
from pydantic import SecretStr

from telemhq_plugins.core import Client
from telemhq_plugins.core.payload import stable_ping_id
from telemhq_plugins.prefect import hooks, monitor_flow, task_hooks
from tests.kit import (
    breaking_core,
    client_for,
    dead_endpoint,
    process_client,
    statuses_oldest_first,
    wait_for_runs,
)
from tests.live_server import LiveServer
from tests.prefect import flows
from tests.prefect.conftest import telemhq_env

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("prefect_api")]


def test_a_successful_flow_and_its_task_report_their_metrics(
    live_server: LiveServer, client: Client
) -> None:
    assert flows.acc_success(4, api=SecretStr("s3cret-value")) == 4
    [run] = wait_for_runs(live_server, "acc-success", 1)
    payload = run["payload"]
    assert run["status"] == "success"
    assert payload["orchestrator"] == "prefect"
    assert payload["records_processed"] == 4
    assert payload["attempt"] == 1
    assert payload["duration"] > 0
    block = payload["prefect"]
    assert block["flow_name"] == "acc-success"
    assert block["flow_run_id"] == payload["run_id"] == run["run_id"]
    assert block["run_count"] == 1
    # Bounded and secret-free: the password-named parameter and the SecretStr are left out.
    assert block["parameters"] == {"n": 4}
    assert "s3cret-value" not in str(run)
    assert "hunter2" not in str(run)
    assert run["ping_id"] == stable_ping_id(run["run_id"], 1, "success")
    [task_run] = wait_for_runs(live_server, "acc-success-extract", 1)
    assert task_run["status"] == "success"
    assert task_run["payload"]["job"] == "acc-success.extract"
    assert task_run["payload"]["rows_extracted"] == 4
    assert task_run["payload"]["prefect"]["flow_run_id"] == run["run_id"]
    assert task_run["payload"]["prefect"]["parameters"] == {"n": 4}


def test_a_failing_flow_reports_the_error_and_still_raises(
    live_server: LiveServer, client: Client
) -> None:
    with pytest.raises(ValueError, match="0 rows loaded"):
        flows.acc_failure()
    [run] = wait_for_runs(live_server, "acc-failure", 1)
    assert run["status"] == "failure"
    error = run["payload"]["error"]
    assert error["type"] == "ValueError"
    assert error["message"] == "0 rows loaded"
    assert "acc_failure" in error["traceback"]


def test_a_retried_flow_reports_the_failed_attempt_as_retry(
    live_server: LiveServer, client: Client
) -> None:
    assert flows.acc_flow_retry() == "ok"
    runs = wait_for_runs(live_server, "acc-flow-retry", 2)
    assert statuses_oldest_first(runs) == ["retry", "success"]
    retry, success = reversed(runs)
    assert (retry["payload"]["attempt"], success["payload"]["attempt"]) == (1, 2)
    assert retry["run_id"] == success["run_id"]
    assert retry["payload"]["error"]["message"] == "first attempt fails"
    assert live_server.tracker("acc-flow-retry")["state"] == "up"


def test_a_retried_task_reports_each_failed_attempt_as_retry(
    live_server: LiveServer, client: Client
) -> None:
    assert flows.acc_task_retry() == "ok"
    runs = wait_for_runs(live_server, "acc-task-retry-flaky", 3)
    assert statuses_oldest_first(runs) == ["retry", "retry", "success"]
    assert [r["payload"]["attempt"] for r in reversed(runs)] == [1, 2, 3]
    assert {r["run_id"] for r in runs} == {runs[0]["run_id"]}
    assert runs[-1]["payload"]["error"]["type"] == "ConnectionError"
    assert statuses_oldest_first(wait_for_runs(live_server, "acc-task-retry", 1)) == ["success"]


def test_async_flows_and_tasks_report_through_the_run_context(
    live_server: LiveServer, client: Client
) -> None:
    assert asyncio.run(flows.acc_async()) == 5
    [run] = wait_for_runs(live_server, "acc-async", 1)
    assert (run["status"], run["payload"]["records_processed"]) == ("success", 5)
    [task_run] = wait_for_runs(live_server, "acc-async-async-load", 1)
    assert (task_run["status"], task_run["payload"]["rows_loaded"]) == ("success", 5)


def test_a_keyboard_interrupt_is_reported_as_a_crash(
    live_server: LiveServer, client: Client
) -> None:
    with pytest.raises(KeyboardInterrupt):
        flows.acc_interrupt()
    [run] = wait_for_runs(live_server, "acc-interrupt", 1)
    assert run["status"] == "failure"
    assert run["payload"]["error"]["type"] == "KeyboardInterrupt"


def test_a_flow_killed_by_sigterm_still_pings(live_server: LiveServer, ping_key: str) -> None:
    script = Path(flows.__file__)
    proc = subprocess.run(
        [sys.executable, str(script), "acc-sigterm"],
        env=telemhq_env(live_server, ping_key),
        capture_output=True,
        timeout=120,
        check=False,
    )
    # Prefect re-raises the signal with the default handler: the process dies by it.
    assert proc.returncode == -signal.SIGTERM, proc.stderr.decode()[-2000:]
    [run] = wait_for_runs(live_server, "acc-sigterm", 1)
    assert run["status"] == "failure"
    assert run["payload"]["prefect"]["flow_name"] == "acc-sigterm"


def test_monitor_flow_keeps_the_flows_own_hook(live_server: LiveServer, client: Client) -> None:
    monitored = monitor_flow(flows.acc_own_hook)
    assert monitored() == "done"
    assert flows.attempts["own-hook"] == 1
    assert statuses_oldest_first(wait_for_runs(live_server, "acc-own-hook", 1)) == ["success"]
    # Monitoring a monitored copy adds nothing: one ping per event.
    again = monitor_flow(monitored)
    assert len(again.on_completion_hooks) == 2
    assert again() == "done"
    both = wait_for_runs(live_server, "acc-own-hook", 2)
    assert statuses_oldest_first(both) == ["success", "success"]


def test_a_dead_endpoint_costs_the_flow_at_most_the_flush_bound(live_server: LiveServer) -> None:
    dead = client_for(live_server, base_url=dead_endpoint(), ping_key="k", flush_timeout=1.0)
    with process_client(dead):

        @flow(name="acc-dead-endpoint", **hooks())
        def fine() -> str:
            return "fine"

        @flow(name="acc-dead-endpoint-crash", **hooks())
        def crashing() -> None:
            raise KeyboardInterrupt

        started = time.monotonic()
        assert fine() == "fine"
        # The crash hook flushes: bounded by flush_timeout (1 s) against a refusing endpoint;
        # the rest of the bound is Prefect's own work for two runs on a busy machine.
        with pytest.raises(KeyboardInterrupt):
            crashing()
        assert time.monotonic() - started < 30


def test_the_adapter_failing_never_fails_the_flow(live_server: LiveServer, client: Client) -> None:
    @task(name="survives-task", **task_hooks())
    def survives_task() -> int:
        return 1

    @flow(name="acc-broken-core", **hooks())
    def survives() -> str:
        survives_task()
        return "fine"

    with breaking_core() as reached:
        assert survives() == "fine"
    # Core was reached (and raised) for the task and the flow: the flow still succeeded.
    assert "acc-broken-core.survives-task" in reached
    assert "acc-broken-core" in reached
    assert live_server.api("GET", "/trackers/acc-broken-core").status_code == 404
