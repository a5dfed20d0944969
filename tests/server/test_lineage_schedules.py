"""Schedules seeded from Airflow's DAG run events, on SQLite and PostgreSQL: the event is a
DAG run's COMPLETE as Airflow's OpenLineage provider (2.20) sent it
(``lineage_events/airflow_dag_run_complete.json``, a DAG scheduled ``30 6 * * 1-5`` in
Europe/Paris), posted as the provider's HTTP transport posts it."""

from __future__ import annotations

import copy
import json
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from telemhq_plugins.core import slugify
from tests.kit import new_ping_key, tracker_by_slug
from tests.live_server import LiveServer

pytestmark = pytest.mark.slow

DAG_RUN_COMPLETE = json.loads(
    (Path(__file__).parent / "lineage_events" / "airflow_dag_run_complete.json").read_text()
)


@pytest.fixture
def server(db_url: str) -> Iterator[LiveServer]:
    """A live server on the test's database (SQLite, or a fresh PostgreSQL schema)."""
    with LiveServer(db_url) as live:
        yield live


def dag_event(timetable: dict[str, Any] | None = None) -> tuple[dict[str, Any], str]:
    """The recorded event for a DAG of a fresh name (and ``timetable``), and its tracker."""
    event = copy.deepcopy(DAG_RUN_COMPLETE)
    event["job"]["name"] = f"etl_{uuid.uuid4().hex[:8]}"
    event["run"]["runId"] = str(uuid.uuid4())
    if timetable is not None:
        event["run"]["facets"]["airflowDagRun"]["dag"]["timetable"] = timetable
    return event, f"{event['job']['namespace']}/{event['job']['name']}"


def post(server: LiveServer, key: str, event: dict[str, Any]) -> None:
    response = httpx.post(
        f"{server.base_url}/api/v1/lineage",
        json=event,
        headers={"Authorization": f"Bearer {key}"},
        timeout=10,
    )
    assert response.status_code == 200, response.text


def schedule(server: LiveServer, name: str) -> dict[str, Any]:
    found = tracker_by_slug(server, slugify(name))
    assert found is not None, name
    return dict(found["schedule"])


def test_the_tracker_an_airflow_dag_run_creates_takes_its_cron_and_timezone(
    server: LiveServer,
) -> None:
    event, name = dag_event()
    post(server, new_ping_key(server), event)
    seeded = schedule(server, name)
    assert (seeded["kind"], seeded["cron"], seeded["timezone"]) == (
        "cron",
        "30 6 * * 1-5",
        "Europe/Paris",
    )


def test_a_timedelta_timetable_seeds_a_period(server: LiveServer) -> None:
    event, name = dag_event({"delta": 3600.0, "interval": 0.0})
    post(server, new_ping_key(server), event)
    seeded = schedule(server, name)
    assert (seeded["kind"], seeded["period_seconds"]) == ("period", 3600)


def test_a_timetable_without_an_exact_schedule_leaves_it_unscheduled(
    server: LiveServer,
) -> None:
    event, name = dag_event({"expressions": ["0 1 * * *", "0 2 * * *"], "timezone": "UTC"})
    post(server, new_ping_key(server), event)
    assert schedule(server, name) == {"kind": "none"}


def test_a_schedule_set_by_a_user_is_not_overwritten(server: LiveServer) -> None:
    key = new_ping_key(server)
    event, name = dag_event()
    made = server.api("POST", "/trackers", json={"name": name, "schedule": {"kind": "none"}})
    assert made.status_code == 201, made.text
    post(server, key, event)
    # Set afterwards: a later event of the DAG changes nothing either.
    changed = server.api(
        "PATCH",
        f"/trackers/{slugify(name)}",
        json={"schedule": {"kind": "period", "period_seconds": 600}},
    )
    assert changed.status_code == 200, changed.text
    event["run"]["runId"] = str(uuid.uuid4())
    post(server, key, event)
    assert schedule(server, name)["kind"] == "period"
