"""The production path with a local agent: a real scheduler with the LocalExecutor (each task
in a forked process ended by ``os._exit``), a DAG processor and an API server, every component
with ``TELEMHQ_AGENT`` naming the socket of a real ``telemhq agent``, which delivers to the
reference server.

A task process then hands its pings to the agent before it ends, and the agent delivers them:
every task's start and end, and the DAG run's (from the scheduler), reach the server through
the agent, which counted each.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.airflow.cluster import RUN, airflow_cluster, listener_env, trigger
from tests.airflow.helpers import runs_of
from tests.kit import (
    AgentProcess,
    assert_one_ping_per_event,
    statuses_oldest_first,
    wait_for_agent_delivery,
)
from tests.live_server import LiveServer

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]

DAG_FILE = """
import datetime as dt

from airflow.sdk import dag, task

import telemhq_plugins


@dag(schedule=None, start_date=dt.datetime(2024, 1, 1), catchup=False)
def agent_dag():
    @task
    def extract():
        telemhq_plugins.report(rows=3)

    @task
    def load():
        pass

    @task(retries=0)
    def broken():
        raise ValueError("no rows today")

    extract() >> [load(), broken()]


agent_dag()
"""

#: each task's (and the DAG run's) statuses, in the order they are sent
EXPECTED = {
    "agent_dag.extract": ["start", "success"],
    "agent_dag.load": ["start", "success"],
    "agent_dag.broken": ["start", "failure"],
    "agent_dag": ["start", "failure"],
}


@pytest.fixture
def airflow_env(
    tmp_path: Path, server: LiveServer, local_agent: AgentProcess
) -> Iterator[dict[str, str]]:
    home = tmp_path / "airflow"
    extra = listener_env(server, TELEMHQ_AGENT=str(local_agent.socket))
    with airflow_cluster(home, {"agent_dag.py": DAG_FILE}, extra) as env:
        yield env


def test_task_processes_hand_their_pings_to_the_agent(
    server: LiveServer, local_agent: AgentProcess, airflow_env: dict[str, str]
) -> None:
    trigger(airflow_env, "agent_dag")

    stored = {job: runs_of(server, job, len(want), timeout=RUN) for job, want in EXPECTED.items()}
    for job, want in EXPECTED.items():
        assert statuses_oldest_first(stored[job]) == want, job
        assert_one_ping_per_event(stored[job])
    assert stored["agent_dag.extract"][1]["payload"]["rows"] == 3
    error = stored["agent_dag.broken"][1]["payload"]["error"]
    assert (error["type"], error["message"]) == ("ValueError", "no rows today")
    assert stored["agent_dag"][1]["payload"]["error"]["message"].startswith("task broken failed")

    # Every stored ping went through the agent: it acknowledged and delivered each.
    total = sum(len(runs) for runs in stored.values())
    status = wait_for_agent_delivery(local_agent, total)
    assert status["acked"] == status["delivered"] == total, status
    assert status["refused"] == 0, status
    assert status["spool_pings"] == 0, status
