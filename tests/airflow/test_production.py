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

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.airflow.helpers import block, run_count, runs_of
from tests.kit import assert_one_ping_per_event, free_port, new_ping_key, statuses_oldest_first
from tests.live_server import LiveServer, dies_with_parent

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
#: bounds for a busy 2-core machine, not speed assertions.
STARTUP = 300.0
RUN = 300.0


def _airflow() -> str:
    return str(Path(sys.executable).with_name("airflow"))


@pytest.fixture
def airflow_cluster(tmp_path: Path, server: LiveServer) -> Iterator[dict[str, str]]:
    home = tmp_path / "airflow"
    (home / "dags").mkdir(parents=True)
    (home / "dags" / "prod_dag.py").write_text(DAG_FILE)
    api_port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AIRFLOW", "TELEMHQ_"))}
    env.update(
        {
            "AIRFLOW_HOME": str(home),
            "AIRFLOW__CORE__DAGS_FOLDER": str(home / "dags"),
            "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
            "AIRFLOW__CORE__EXECUTOR": "LocalExecutor",
            "AIRFLOW__CORE__PARALLELISM": "2",
            "AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION": "False",
            "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"http://127.0.0.1:{api_port}/execution/",
            "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_ALL_ADMINS": "True",
            "AIRFLOW__API__PORT": str(api_port),
            "AIRFLOW__API__WORKERS": "1",
            "AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT": str(free_port()),
            "AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL": "5",
            "AIRFLOW__SCHEDULER__SCHEDULER_HEARTBEAT_SEC": "2",
            "TELEMHQ_BASE_URL": server.base_url,
            "TELEMHQ_PING_KEY": new_ping_key(server),
            "TELEMHQ_AIRFLOW_AUTO": "1",
            "TELEMHQ_SEND_START": "1",
            "TELEMHQ_TIMEOUT": "5",
        }
    )
    subprocess.run(
        [_airflow(), "db", "migrate"], env=env, check=True, capture_output=True, timeout=STARTUP
    )
    procs: list[subprocess.Popen[bytes]] = []
    logs = {}
    for component in ("api-server", "scheduler", "dag-processor"):
        logs[component] = home / f"{component}.log"
        with logs[component].open("wb") as out:
            procs.append(
                subprocess.Popen(
                    dies_with_parent([_airflow(), component]),
                    env=env,
                    stdout=out,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                )
            )
    try:
        _wait_until_healthy(f"http://127.0.0.1:{api_port}/api/v2/monitor/health", procs, logs)
        yield env
    finally:
        for proc in procs:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
        for proc in procs:
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=10)


def _wait_until_healthy(
    url: str, procs: list[subprocess.Popen[bytes]], logs: dict[str, Path]
) -> None:
    deadline = time.monotonic() + STARTUP
    while time.monotonic() < deadline:
        for proc, (name, log) in zip(procs, logs.items(), strict=True):
            if proc.poll() is not None:
                raise AssertionError(f"airflow {name} exited:\n{log.read_text()[-3000:]}")
        try:
            if httpx.get(url, timeout=2).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(1)
    raise AssertionError(f"the API server did not answer {url} within {STARTUP} s")


def _trigger(env: dict[str, str], dag_id: str) -> None:
    """Trigger once the DAG processor has parsed the file (the command fails before)."""
    deadline = time.monotonic() + STARTUP
    while True:
        done = subprocess.run(
            [_airflow(), "dags", "trigger", dag_id],
            env=env,
            capture_output=True,
            text=True,
            timeout=STARTUP,
            check=False,
        )
        if done.returncode == 0:
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"airflow dags trigger {dag_id}: {done.stdout}{done.stderr}")
        time.sleep(3)


def test_a_triggered_run_reports_from_forked_task_processes_and_the_dag_processor(
    server: LiveServer, airflow_cluster: dict[str, str]
) -> None:
    _trigger(airflow_cluster, "prod_dag")

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
