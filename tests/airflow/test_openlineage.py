"""Airflow's own OpenLineage provider (``apache-airflow-providers-openlineage``) pointed at the
reference server's ``POST /api/v1/lineage``: real DAGs with no TelemHQ code run with
``dag.test()``, the TelemHQ listener off, and every task and DAG run arrives as a tracker
``<namespace>/<dag_id>[.<task_id>]`` with its states, error and parent. (A DAG run's START
comes from the scheduler, which ``dag.test()`` has none of: here a DAG run is its end.)

The provider reads its configuration once per process (and its plugin decides at import
whether to listen), so the DAGs run in a process of their own, configured only by
``AIRFLOW__OPENLINEAGE__TRANSPORT`` as a deployment would be. The production path (a
scheduler, a DAG processor, LocalExecutor workers) is the last test: there the scheduler sends
the DAG run's START and end from its process pool, and each worker its task's events.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.airflow.cluster import airflow_cluster, trigger
from tests.airflow.helpers import runs_of, tracker
from tests.kit import new_ping_key, statuses_oldest_first, wait_until
from tests.live_server import LiveServer

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]

OL_DAGS = Path(__file__).parent / "ol_dags"
NAMESPACE = "warehouse-prod"
#: bounds for a busy 2-core machine, not speed assertions.
RUN = 300.0


def openlineage_settings(server: LiveServer, key: str, namespace: str) -> dict[str, str]:
    """The provider's whole configuration: where to send, with which key, in which namespace."""
    transport = {
        "type": "http",
        "url": server.base_url,
        "endpoint": "api/v1/lineage",
        "auth": {"type": "api_key", "apiKey": key},
    }
    return {
        "AIRFLOW__OPENLINEAGE__NAMESPACE": namespace,
        "AIRFLOW__OPENLINEAGE__TRANSPORT": json.dumps(transport),
    }


def provider_env(server: LiveServer, key: str) -> dict[str, str]:
    """The environment of an Airflow whose OpenLineage provider sends to the server, with
    nothing of TelemHQ in it (so no TelemHQ listener either)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("TELEMHQ_")}
    env["AIRFLOW__CORE__DAGS_FOLDER"] = str(OL_DAGS)
    env.update(openlineage_settings(server, key, NAMESPACE))
    return env


def run_dags(env: dict[str, str], *dag_ids: str) -> None:
    done = subprocess.run(
        [sys.executable, str(OL_DAGS / "ol_dags.py"), *dag_ids],
        env=env,
        capture_output=True,
        text=True,
        timeout=RUN,
        check=False,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-5000:]


def job(name: str) -> str:
    return f"{NAMESPACE}/{name}"


def ended(server: LiveServer, name: str) -> list[dict[str, Any]]:
    """A task's runs once it has ended (START and end), oldest first; a DAG run's (``name``
    without a dot) is its end alone."""
    return runs_of(server, job(name), 2 if "." in name else 1, timeout=RUN)


@pytest.fixture(scope="module")
def ran(server: LiveServer, airflow_db: str) -> str:
    """The DAGs run once for the module, under a ping key; ``ol_user_scheduled``'s tracker
    was made first, with a schedule of its own."""
    key = new_ping_key(server)
    made = server.api(
        "POST",
        "/trackers",
        json={
            "name": job("ol_user_scheduled"),
            "schedule": {"kind": "period", "period_seconds": 7200},
        },
    )
    assert made.status_code == 201, made.text
    run_dags(provider_env(server, key), "ol_etl", "ol_broken", "ol_user_scheduled")
    return key


def test_every_task_and_the_dag_run_arrive_with_their_states(server: LiveServer, ran: str) -> None:
    extract, load = ended(server, "ol_etl.extract"), ended(server, "ol_etl.load")
    dag_run = ended(server, "ol_etl")
    for runs in (extract, load):
        assert statuses_oldest_first(runs) == ["start", "success"]
        assert runs[1]["duration_ms"] is not None
    assert statuses_oldest_first(dag_run) == ["success"]
    found = tracker(server, job("ol_etl.load"))
    assert found is not None
    assert {"openlineage", "producer:airflow"} <= set(found["tags"])
    # The provider alone reported: TelemHQ's listener (trackers without a namespace) is off.
    assert tracker(server, "ol_etl.load") is None
    # The DAG run is the parent of its tasks' runs.
    dag_run_id = dag_run[0]["run_id"]
    for runs in (extract, load):
        parent = runs[1]["payload"]["parent"]
        assert parent["job"] == job("ol_etl")
        assert parent["run_id"] == dag_run_id


def test_a_failed_task_and_its_dag_run_arrive_as_failures_with_the_error(
    server: LiveServer, ran: str
) -> None:
    assert statuses_oldest_first(ended(server, "ol_broken.check")) == ["start", "success"]
    publish = ended(server, "ol_broken.publish")
    assert statuses_oldest_first(publish) == ["start", "failure"]
    error = publish[1]["payload"]["error"]
    assert "warehouse unreachable" in error["message"]
    dag_run = ended(server, "ol_broken")
    assert statuses_oldest_first(dag_run) == ["failure"]
    assert publish[1]["payload"]["parent"]["run_id"] == dag_run[0]["run_id"]
    assert dag_run[0]["payload"]["error"]["message"]


def test_the_dag_run_tracker_takes_the_dags_schedule_and_timezone(
    server: LiveServer, ran: str
) -> None:
    ended(server, "ol_etl")
    found = tracker(server, job("ol_etl"))
    assert found is not None
    assert found["schedule"] == {
        "kind": "cron",
        "cron": "30 6 * * 1-5",
        "timezone": "Europe/Paris",
        "grace_seconds": found["schedule"]["grace_seconds"],
    }
    # Tasks are not seeded (a branch may skip them).
    ended(server, "ol_etl.extract")
    task = tracker(server, job("ol_etl.extract"))
    assert task is not None
    assert task["schedule"] == {"kind": "none"}
    # A timedelta is a period of that many seconds.
    ended(server, "ol_broken")
    period = tracker(server, job("ol_broken"))
    assert period is not None
    assert (period["schedule"]["kind"], period["schedule"]["period_seconds"]) == ("period", 3600)


def test_a_schedule_set_before_the_first_event_is_kept(server: LiveServer, ran: str) -> None:
    ended(server, "ol_user_scheduled")
    found = wait_until(
        lambda: tracker(server, job("ol_user_scheduled")), "the user-scheduled tracker"
    )
    assert found["schedule"]["kind"] == "period"
    assert found["schedule"]["period_seconds"] == 7200


PROD_NAMESPACE = "airflow-scheduler"
PROD_DAGS = """
import datetime as dt

from airflow.sdk import dag, task


@dag(schedule=None, start_date=dt.datetime(2024, 1, 1), catchup=False)
def ol_prod():
    @task
    def extract():
        return 3

    @task
    def publish(rows):
        raise RuntimeError(f"cannot publish {rows} rows")

    publish(extract())


ol_prod()
"""


def test_the_scheduler_path_reports_the_dag_run_start_and_every_task(
    tmp_path: Path, server: LiveServer
) -> None:
    settings = openlineage_settings(server, new_ping_key(server), PROD_NAMESPACE)
    with airflow_cluster(tmp_path / "airflow", {"ol_prod.py": PROD_DAGS}, settings) as env:
        trigger(env, "ol_prod")

        def runs(name: str) -> list[dict[str, Any]]:
            return runs_of(server, f"{PROD_NAMESPACE}/{name}", 2, timeout=RUN)

        dag_run = runs("ol_prod")
        extract, publish = runs("ol_prod.extract"), runs("ol_prod.publish")
    assert statuses_oldest_first(dag_run) == ["start", "failure"]
    assert dag_run[1]["duration_ms"] is not None
    assert statuses_oldest_first(extract) == ["start", "success"]
    assert statuses_oldest_first(publish) == ["start", "failure"]
    assert "cannot publish 3 rows" in publish[1]["payload"]["error"]["message"]
    assert "RuntimeError" in publish[1]["payload"]["error"]["traceback"]
    for task_runs in (extract, publish):
        assert task_runs[1]["payload"]["parent"]["run_id"] == dag_run[1]["run_id"]
        assert task_runs[1]["payload"]["parent"]["job"] == f"{PROD_NAMESPACE}/ol_prod"
