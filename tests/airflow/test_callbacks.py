"""``callbacks()`` and ``dag_callbacks()`` under a real ``dag.test()``, against the real server."""

from __future__ import annotations

import time
from typing import Any

import pytest

from telemhq_plugins.core import Client
from tests.airflow.dags.telemhq_test_dags import DAGS
from tests.airflow.helpers import block, run_count, runs_of, tracker
from tests.kit import (
    assert_one_ping_per_event,
    breaking_core,
    client_for,
    dead_endpoint,
    process_client,
    statuses_oldest_first,
)
from tests.live_server import LiveServer

pytestmark = pytest.mark.usefixtures("airflow_db")


def run_dag(dag_id: str) -> Any:
    return DAGS[dag_id].test()


def test_it_reports_a_success_with_metrics_and_the_dag_run(
    server: LiveServer, client: Client
) -> None:
    dag_run = run_dag("cb_success")
    assert dag_run.state == "success"

    (run,) = runs_of(server, "cb_success.load", 1)
    assert run["status"] == "success"
    assert run["payload"]["records_processed"] == 450
    assert run["payload"]["cost_usd"] == 0.12
    assert run["payload"]["job"] == "cb_success.load"
    assert run["payload"]["orchestrator"] == "airflow"
    assert run["payload"]["attempt"] == 1
    assert run["run_id"] == f"cb_success/{dag_run.run_id}/load"
    assert run["duration_ms"] is not None
    assert run["duration_ms"] >= 0
    airflow = block(run)
    assert airflow["dag_id"] == "cb_success"
    assert airflow["task_id"] == "load"
    assert airflow["run_id"] == dag_run.run_id
    assert airflow["logical_date"] == dag_run.logical_date.isoformat()
    assert airflow["try_number"] == 1
    assert airflow["map_index"] == -1
    assert airflow["operator"] == "_PythonDecoratedOperator"
    assert airflow["hostname"]
    assert "max_tries" in airflow

    (dag_ping,) = runs_of(server, "cb_success", 1)
    assert dag_ping["status"] == "success"
    assert dag_ping["run_id"] == f"cb_success/{dag_run.run_id}"
    assert block(dag_ping)["dag_id"] == "cb_success"
    assert block(dag_ping)["run_id"] == dag_run.run_id


def test_it_reports_a_retry_then_a_success_and_the_tracker_never_fails(
    server: LiveServer, client: Client
) -> None:
    dag_run = run_dag("cb_retry")
    assert dag_run.state == "success"

    runs = runs_of(server, "cb_retry.flaky", 2)
    assert statuses_oldest_first(runs) == ["retry", "success"]
    assert_one_ping_per_event(runs)
    assert [r["payload"]["attempt"] for r in runs] == [1, 2]
    assert {r["run_id"] for r in runs} == {f"cb_retry/{dag_run.run_id}/flaky"}
    assert runs[0]["payload"]["error"]["type"] == "ValueError"
    assert runs[1]["payload"]["records_processed"] == 7
    assert "records_processed" not in runs[0]["payload"]
    assert [block(r)["max_tries"] for r in runs] == [2, 2]
    found = tracker(server, "cb_retry.flaky")
    assert found is not None
    assert found["state"] == "up"
    assert [f["new_state"] for f in server.flips(found["id"])] in ([], ["up"])


def test_it_reports_failure_only_on_the_last_try(server: LiveServer, client: Client) -> None:
    dag_run = run_dag("cb_failure")
    assert dag_run.state == "failed"

    runs = runs_of(server, "cb_failure.broken", 2)
    assert statuses_oldest_first(runs) == ["retry", "failure"]
    assert runs[1]["payload"]["error"]["type"] == "RuntimeError"
    assert "always broken" in runs[1]["payload"]["error"]["message"]
    found = tracker(server, "cb_failure.broken")
    assert found is not None
    assert found["state"] == "failing"

    (dag_ping,) = runs_of(server, "cb_failure", 1)
    assert dag_ping["status"] == "failure"
    # The DAG run's ping names the failed task and its error, as a Dagster run's names its step.
    error = dag_ping["payload"]["error"]
    assert error["type"] == "RuntimeError"
    assert error["message"].startswith("task broken failed: ")
    assert "always broken" in error["message"]
    assert "RuntimeError" in error["traceback"]
    assert block(dag_ping)["failed_tasks"] == ["broken"]


def test_it_reports_a_skipped_task(server: LiveServer, client: Client) -> None:
    dag_run = run_dag("cb_skipped")
    assert dag_run.state == "success"

    (run,) = runs_of(server, "cb_skipped.nothing_to_do", 1)
    assert run["status"] == "skipped"
    (after,) = runs_of(server, "cb_skipped.after", 1)
    assert after["status"] == "success"


def test_it_reports_each_map_index_of_a_mapped_task_to_one_tracker(
    server: LiveServer, client: Client
) -> None:
    dag_run = run_dag("cb_mapped")
    assert dag_run.state == "success"

    runs = runs_of(server, "cb_mapped.part", 3)
    assert statuses_oldest_first(runs) == ["success"] * 3
    by_index = {block(r)["map_index"]: r for r in runs}
    assert sorted(by_index) == [0, 1, 2]
    for index, run in by_index.items():
        assert run["run_id"] == f"cb_mapped/{dag_run.run_id}/part/{index}"
        assert run["payload"]["part"] == index


def test_it_sends_a_start_ping_with_send_start(server: LiveServer, client: Client) -> None:
    dag_run = run_dag("cb_start")
    assert dag_run.state == "success"

    runs = runs_of(server, "cb_start.with_start", 2)
    assert statuses_oldest_first(runs) == ["start", "success"]
    assert {r["run_id"] for r in runs} == {f"cb_start/{dag_run.run_id}/with_start"}


def test_it_changes_nothing_when_the_endpoint_is_down(server: LiveServer) -> None:
    dead = client_for(server, base_url=dead_endpoint(), ping_key="k", flush_timeout=1.0)
    with process_client(dead):
        started = time.monotonic()
        outcomes = {d: run_dag(d).state for d in ("cb_success", "cb_failure")}
        elapsed = time.monotonic() - started
    assert outcomes == {"cb_success": "success", "cb_failure": "failed"}
    # Five final events (two tasks' tries, two DAG runs) each wait at most the flush timeout.
    assert elapsed < 5 * 1.0 + 10.0, elapsed


def test_it_never_fails_the_task_when_the_adapter_fails(server: LiveServer, client: Client) -> None:
    before = run_count(server, "cb_success.load")
    with breaking_core() as reached:
        dag_run = run_dag("cb_success")
    assert dag_run.state == "success"
    assert "cb_success.load" in reached  # the adapter did reach core, which failed
    assert run_count(server, "cb_success.load") == before
