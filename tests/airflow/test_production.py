"""The production path: a real scheduler with the LocalExecutor, a DAG processor and an API
server in a temporary ``AIRFLOW_HOME``, one triggered DAG run.

``dag.test()`` runs every task in the test process; here each task runs in a process the
executor's supervisor forks and ends with ``os._exit``, and the DAG callback runs in a child of
the DAG processor, so a ping gets out only if the adapter flushes it. The listener plugin is
switched on by ``TELEMHQ_AIRFLOW_AUTO=1`` (loaded through its entry point by each component)
and the DAG also has callbacks: one task and the DAG run are reported by both, the other task
by the listener alone. ``TELEMHQ_SEND_START=1``: the tasks' and the DAG run's starts too (a
DAG run's start only exists in the scheduler).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.airflow.cluster import RUN, airflow_cluster, listener_env, trigger
from tests.airflow.helpers import block, run_count, runs_of
from tests.kit import assert_one_ping_per_event, statuses_oldest_first
from tests.live_server import LiveServer

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]

DAG_FILE = """
import datetime as dt

from airflow.sdk import dag, task

import telemhq_plugins
from telemhq_plugins.airflow import callbacks, dag_callbacks


@dag(schedule=None, start_date=dt.datetime(2024, 1, 1), catchup=False, **dag_callbacks())
def prod_dag():
    @task(**callbacks())
    def with_callbacks():
        telemhq_plugins.report(rows=5)

    @task
    def by_listener():
        telemhq_plugins.report(rows=6)

    with_callbacks() >> by_listener()


prod_dag()
"""


@pytest.fixture
def cluster(tmp_path: Path, server: LiveServer) -> Iterator[dict[str, str]]:
    with airflow_cluster(
        tmp_path / "airflow", {"prod_dag.py": DAG_FILE}, listener_env(server)
    ) as env:
        yield env


def test_a_triggered_run_reports_from_forked_task_processes_and_the_dag_processor(
    server: LiveServer, cluster: dict[str, str]
) -> None:
    trigger(cluster, "prod_dag")

    with_callbacks = runs_of(server, "prod_dag.with_callbacks", 2, timeout=RUN)
    assert statuses_oldest_first(with_callbacks) == ["start", "success"]
    assert with_callbacks[1]["payload"]["rows"] == 5
    assert block(with_callbacks[1])["hostname"]
    by_listener = runs_of(server, "prod_dag.by_listener", 2, timeout=RUN)
    assert statuses_oldest_first(by_listener) == ["start", "success"]
    assert by_listener[1]["payload"]["rows"] == 6
    dag_run = runs_of(server, "prod_dag", 2, timeout=RUN)
    assert statuses_oldest_first(dag_run) == ["start", "success"]
    run_id = block(dag_run[1])["run_id"]
    assert {r["run_id"] for r in with_callbacks} == {f"prod_dag/{run_id}/with_callbacks"}
    assert {r["run_id"] for r in dag_run} == {f"prod_dag/{run_id}"}

    # The DAG run's end is reported by the scheduler's listener and by the DAG processor's
    # callback: one stored ping. Give a late second one the time to arrive before counting.
    time.sleep(10)
    for job in ("prod_dag.with_callbacks", "prod_dag.by_listener", "prod_dag"):
        assert run_count(server, job) == 2, runs_of(server, job, run_count(server, job))
        assert_one_ping_per_event(runs_of(server, job, 2))
