"""The listener plugin under a real ``dag.test()``: alone (no TelemHQ code in the DAG), and
together with callbacks (one ping per event)."""

from __future__ import annotations

from collections.abc import Iterator
from importlib.metadata import entry_points

import pytest
from airflow.listeners.listener import get_listener_manager as core_listeners
from airflow.sdk.listener import get_listener_manager as task_listeners

from telemhq_plugins.airflow import AirflowInstrumentor
from telemhq_plugins.airflow.listener import TelemHQListener
from telemhq_plugins.airflow.plugin import TelemHQPlugin, listener_from_conf
from telemhq_plugins.core import Client
from tests.airflow.dags.telemhq_test_dags import DAGS
from tests.airflow.helpers import block, run_count, runs_of
from tests.kit import assert_one_ping_per_event, statuses_oldest_first
from tests.live_server import LiveServer

pytestmark = pytest.mark.usefixtures("airflow_db")


@pytest.fixture
def listener(client: Client) -> Iterator[TelemHQListener]:
    """The listener registered in both of Airflow's listener managers (the scheduler's for DAG
    runs, the task runner's for task instances), as the plugin would be; taken off after."""
    instrumentor = AirflowInstrumentor()
    assert instrumentor.instrument(exclude=["ls_excluded"])
    assert instrumentor.listener is not None
    yield instrumentor.listener
    assert instrumentor.uninstrument()


def test_the_instrumentor_registers_one_listener_and_takes_it_off() -> None:
    instrumentor = AirflowInstrumentor()
    assert instrumentor.instrument()
    try:
        assert not instrumentor.instrument()  # a second call changes nothing
        registered = instrumentor.listener
        assert registered is not None
        for manager in (core_listeners(), task_listeners()):
            assert manager.pm.is_registered(registered)
    finally:
        assert instrumentor.uninstrument()
    assert not instrumentor.uninstrument()
    for manager in (core_listeners(), task_listeners()):
        assert not manager.pm.is_registered(registered)


def test_it_reports_every_task_try_and_the_dag_run_with_no_dag_code(
    server: LiveServer, listener: TelemHQListener
) -> None:
    dag_run = DAGS["ls_etl"].test()
    assert dag_run.state == "success"

    (extract,) = runs_of(server, "ls_etl.extract", 1)
    assert extract["status"] == "success"
    assert extract["payload"]["records_processed"] == 12
    assert extract["run_id"] == f"ls_etl/{dag_run.run_id}/extract"
    assert block(extract)["logical_date"] == dag_run.logical_date.isoformat()
    assert block(extract)["operator"] == "_PythonDecoratedOperator"

    flaky = runs_of(server, "ls_etl.flaky", 2)
    assert statuses_oldest_first(flaky) == ["retry", "success"]
    assert [r["payload"]["attempt"] for r in flaky] == [1, 2]
    assert flaky[0]["payload"]["error"]["type"] == "ValueError"

    (skipped,) = runs_of(server, "ls_etl.skip", 1)
    assert skipped["status"] == "skipped"

    parts = runs_of(server, "ls_etl.part", 2)
    assert sorted(block(r)["map_index"] for r in parts) == [0, 1]
    assert len({r["run_id"] for r in parts}) == 2

    (dag_ping,) = runs_of(server, "ls_etl", 1)
    assert dag_ping["status"] == "success"
    assert dag_ping["run_id"] == f"ls_etl/{dag_run.run_id}"
    for job in ("ls_etl.extract", "ls_etl.flaky", "ls_etl.skip", "ls_etl.part", "ls_etl"):
        assert_one_ping_per_event(runs_of(server, job, run_count(server, job)))


def test_it_reports_a_failed_task_and_dag_run(
    server: LiveServer, listener: TelemHQListener
) -> None:
    dag_run = DAGS["ls_broken"].test()
    assert dag_run.state == "failed"
    (broken,) = runs_of(server, "ls_broken.broken", 1)
    assert broken["status"] == "failure"
    assert broken["payload"]["error"]["type"] == "RuntimeError"
    (dag_ping,) = runs_of(server, "ls_broken", 1)
    assert dag_ping["status"] == "failure"
    assert dag_ping["payload"]["error"]["message"].startswith("task broken failed: ")
    assert dag_ping["payload"]["airflow"]["failed_tasks"] == ["broken"]


def test_it_leaves_excluded_dags_alone(server: LiveServer, listener: TelemHQListener) -> None:
    assert DAGS["ls_excluded"].test().state == "success"
    DAGS["ls_broken"].test()  # a DAG that is reported, run after: its pings arrive
    runs_of(server, "ls_broken", 2)
    assert run_count(server, "ls_excluded.quiet") == 0
    assert run_count(server, "ls_excluded") == 0


def test_it_sends_start_pings_with_send_start(server: LiveServer, client: Client) -> None:
    instrumentor = AirflowInstrumentor()
    assert instrumentor.instrument(include=["ls_start"], send_start=True)
    try:
        dag_run = DAGS["ls_start"].test()
    finally:
        instrumentor.uninstrument()
    assert dag_run.state == "success"
    step = runs_of(server, "ls_start.step", 2)
    assert statuses_oldest_first(step) == ["start", "success"]
    assert {r["run_id"] for r in step} == {f"ls_start/{dag_run.run_id}/step"}
    assert step[1]["payload"]["rows"] == 2
    # A DAG run's start comes from the scheduler, which dag.test() has none of.
    (whole,) = runs_of(server, "ls_start", 1)
    assert whole["status"] == "success"


def test_callbacks_and_the_listener_together_send_one_ping_per_event(
    server: LiveServer, listener: TelemHQListener
) -> None:
    # Airflow calls a task's callbacks before the listener, and the listener before a DAG's
    # callbacks: both orders are in this one run.
    dag_run = DAGS["both_etl"].test()
    assert dag_run.state == "success"

    flaky = runs_of(server, "both_etl.flaky", 2)
    assert statuses_oldest_first(flaky) == ["retry", "success"]
    assert flaky[1]["payload"]["records_processed"] == 3
    assert_one_ping_per_event(flaky)
    (plain,) = runs_of(server, "both_etl.plain", 1)
    assert plain["status"] == "success"
    (dag_ping,) = runs_of(server, "both_etl", 1)
    assert dag_ping["status"] == "success"


def test_the_plugin_is_registered_and_off_without_the_switch(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    (entry,) = [e for e in entry_points(group="airflow.plugins") if e.name == "telemhq"]
    assert entry.load() is TelemHQPlugin
    assert TelemHQPlugin.name == "telemhq"
    assert TelemHQPlugin.listeners == []  # this session runs without TELEMHQ_AIRFLOW_AUTO

    monkeypatch.delenv("TELEMHQ_AIRFLOW_AUTO", raising=False)
    assert listener_from_conf() is None
    monkeypatch.setenv("TELEMHQ_AIRFLOW_AUTO", "no")
    assert listener_from_conf() is None

    monkeypatch.setenv("TELEMHQ_AIRFLOW_AUTO", "1")
    monkeypatch.setenv("TELEMHQ_AIRFLOW_INCLUDE", "etl_*, ml_*")
    monkeypatch.setenv("TELEMHQ_AIRFLOW_EXCLUDE", "etl_tmp*")
    on = listener_from_conf()
    assert on is not None
    assert on.include == ("etl_*", "ml_*")
    assert on.exclude == ("etl_tmp*",)
    assert on.options("etl_daily") is not None
    assert on.options("etl_tmp1") is None
    assert on.options("reports") is None

    # Airflow's own config wins over the TELEMHQ_* fallback ([telemhq] auto = False).
    monkeypatch.setenv("AIRFLOW__TELEMHQ__AUTO", "False")
    assert listener_from_conf() is None
