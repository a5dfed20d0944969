"""Schedule sync: DAG timetables become their trackers' schedules on the real server."""

from __future__ import annotations

import datetime as dt
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from airflow.sdk import DAG, Asset, CronTriggerTimetable
from airflow.serialization.serialized_objects import DagSerialization

from telemhq_plugins.airflow import AirflowInstrumentor
from telemhq_plugins.airflow.listener import TelemHQListener
from telemhq_plugins.airflow.schedules import dag_schedule, paused_dags, sync_dags
from telemhq_plugins.core import Client
from telemhq_plugins.core.provision import PAUSED_TAG
from tests.airflow.conftest import AIRFLOW_ENV, DAGS_FOLDER
from tests.airflow.dags.telemhq_test_dags import DAGS
from tests.airflow.helpers import tracker
from tests.kit import new_ping_key
from tests.live_server import LiveServer

START = dt.datetime(2024, 1, 1, tzinfo=dt.UTC)


def make_dag(schedule: Any) -> DAG:
    extra = {"max_active_runs": 1} if schedule == "@continuous" else {}
    return DAG(f"d{time.monotonic_ns()}", schedule=schedule, start_date=START, **extra)


@pytest.mark.parametrize(
    ("schedule", "spec"),
    [
        ("0 6 * * *", {"kind": "cron", "cron": "0 6 * * *", "timezone": "UTC"}),
        ("@daily", {"kind": "cron", "cron": "0 0 * * *", "timezone": "UTC"}),
        ("@hourly", {"kind": "cron", "cron": "0 * * * *", "timezone": "UTC"}),
        (
            CronTriggerTimetable("0 6 * * 1", timezone="Europe/Paris"),
            {"kind": "cron", "cron": "0 6 * * 1", "timezone": "Europe/Paris"},
        ),
        (dt.timedelta(minutes=30), {"kind": "period", "period_seconds": 1800}),
        (None, {"kind": "none"}),
        ("@once", {"kind": "none"}),
        ("@continuous", {"kind": "none"}),
        ([Asset("s3://bucket/file")], {"kind": "none"}),
    ],
)
def test_a_timetable_maps_to_a_tracker_schedule(schedule: Any, spec: dict[str, Any]) -> None:
    dag = make_dag(schedule)
    # The Task SDK's DAG (DAG files, callbacks) and the scheduler's (the listener's DAG runs).
    scheduler_dag = DagSerialization.deserialize_dag(DagSerialization.serialize_dag(dag))
    for seen in (dag, scheduler_dag):
        found = dag_schedule(seen).spec()
        assert {k: found[k] for k in spec} == spec, type(seen.timetable)
        assert dag_schedule(seen).job == dag.dag_id


@pytest.fixture
def api_key(server: LiveServer, monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.setenv("TELEMHQ_API_KEY", server.api_key)
    return server.api_key


def schedule_of(server: LiveServer, job: str) -> dict[str, Any] | None:
    found = tracker(server, job)
    return None if found is None else dict(found["schedule"])


def test_it_syncs_cron_preset_and_timedelta_schedules_to_the_server(
    server: LiveServer, client: Client, api_key: str
) -> None:
    dags = [DAGS["ls_etl"], DAGS["ls_broken"], DAGS["ls_excluded"], DAGS["cb_success"]]
    listener = TelemHQListener(exclude=["ls_excluded"])
    results = sync_dags(dags, listener_options=listener.options, background=False).results
    assert sorted(r.job for r in results) == ["cb_success", "ls_broken", "ls_etl"]
    outcomes = {r.job: r.outcome for r in results}
    assert outcomes["ls_etl"] in {"created", "updated"}, results
    assert outcomes["ls_broken"] in {"created", "updated"}, results
    assert schedule_of(server, "ls_etl") == {
        "kind": "cron",
        "cron": "0 6 * * *",
        "timezone": "UTC",
        "grace_seconds": 300,
    }
    hourly = schedule_of(server, "ls_broken")
    assert hourly is not None
    assert hourly["cron"] == "0 * * * *"
    found = tracker(server, "cb_success")
    assert found is not None
    assert "airflow" in found["tags"]

    every = sync_dags([DAGS["ls_excluded"]], every_dag=True, background=False).results
    assert [r.outcome for r in every] in (["created"], ["updated"])
    assert schedule_of(server, "ls_excluded") == {
        "kind": "period",
        "period_seconds": 1800,
        "grace_seconds": 300,
    }
    again = sync_dags(dags, listener_options=listener.options, background=False, cached=False)
    assert {r.outcome for r in again.results} == {"unchanged"}


@pytest.mark.usefixtures("airflow_db")
def test_the_listener_syncs_the_schedule_at_the_end_of_a_dag_run(
    server: LiveServer, client: Client, api_key: str
) -> None:
    instrumentor = AirflowInstrumentor()
    assert instrumentor.instrument(include=["ls_broken"], sync_schedules=True)
    try:
        server.api("PATCH", "/trackers/ls-broken", json={"schedule": {"kind": "none"}})
        DAGS["ls_broken"].test()
    finally:
        instrumentor.uninstrument()
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        schedule = schedule_of(server, "ls_broken")
        if schedule is not None and schedule.get("cron") == "0 * * * *":
            break
        time.sleep(0.1)
    assert schedule_of(server, "ls_broken") == {
        "kind": "cron",
        "cron": "0 * * * *",
        "timezone": "UTC",
        "grace_seconds": 300,
    }


def test_the_sync_command_syncs_the_dags_folder(server: LiveServer, api_key: str) -> None:
    server.api("PATCH", "/trackers/ls-etl", json={"schedule": {"kind": "none"}})
    env = {
        **os.environ,
        **AIRFLOW_ENV,
        "TELEMHQ_BASE_URL": server.base_url,
        "TELEMHQ_PING_KEY": new_ping_key(server),
        "TELEMHQ_API_KEY": server.api_key,
    }
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "telemhq_plugins.airflow",
            "sync",
            "--all",
            "--dags-folder",
            str(DAGS_FOLDER),
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "ls_etl: updated" in done.stdout
    assert schedule_of(server, "ls_etl") == {
        "kind": "cron",
        "cron": "0 6 * * *",
        "timezone": "UTC",
        "grace_seconds": 300,
    }


def airflow_cli(*args: str) -> str:
    """Run the ``airflow`` command on this session's metadata DB; its output."""
    done = subprocess.run(
        [str(Path(sys.executable).with_name("airflow")), *args],
        env={**os.environ, **AIRFLOW_ENV},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


@pytest.mark.slow
@pytest.mark.usefixtures("airflow_db")
def test_a_paused_dag_pauses_its_tracker_and_unpausing_resumes_it(
    server: LiveServer, client: Client, api_key: str
) -> None:
    dags = [DAGS["ls_etl"]]
    listener = TelemHQListener()
    # Unknown to the metadata database: its tracker's pause is left as it is.
    assert paused_dags(["no_such_dag"]) == {}
    # Parsed into the database (a new DAG is paused there: dags_are_paused_at_creation), then
    # running. (Its runs are other tests' to count: no ping here.)
    airflow_cli("dags", "reserialize")
    airflow_cli("dags", "unpause", "ls_etl")
    sync_dags(dags, listener_options=listener.options, background=False, cached=False)
    assert server.tracker("ls-etl")["paused"] is False

    airflow_cli("dags", "pause", "ls_etl")
    assert paused_dags(["ls_etl"]) == {"ls_etl": True}
    (result,) = sync_dags(dags, listener_options=listener.options, background=False).results
    assert (result.outcome, result.changed) == ("updated", ("tags", "paused")), result
    paused = server.tracker("ls-etl")
    assert (paused["paused"], paused["state"]) == (True, "paused")
    assert PAUSED_TAG in paused["tags"]
    again = sync_dags(dags, listener_options=listener.options, background=False, cached=False)
    assert [(r.outcome, r.changed) for r in again.results] == [("unchanged", ())]

    airflow_cli("dags", "unpause", "ls_etl")
    (result,) = sync_dags(dags, listener_options=listener.options, background=False).results
    assert (result.outcome, result.changed) == ("updated", ("tags", "paused"))
    resumed = server.tracker("ls-etl")
    assert (resumed["paused"], resumed["state"]) == (False, "new")
    assert PAUSED_TAG not in resumed["tags"]
    # The clock restarted: the next run is due after the resume (the DAG runs at 06:00).
    assert resumed["next_expected_at"] > resumed["state_changed_at"]
