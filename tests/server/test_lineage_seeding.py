"""Which Airflow timetables (as the OpenLineage provider serialises them in the
``airflowDagRun`` facet) seed a cron or period schedule, and which leave the tracker
unscheduled."""

from __future__ import annotations

from typing import Any

import pytest
from telemhq_server.lineage.seeding import airflow_schedule


def facets(timetable: Any) -> dict[str, Any]:
    return {"airflowDagRun": {"dag": {"dag_id": "d", "timetable": timetable}, "dagRun": {}}}


@pytest.mark.parametrize(
    ("timetable", "cron", "timezone"),
    [
        ({"expression": "0 6 * * *", "timezone": "UTC"}, "0 6 * * *", "UTC"),
        (
            {
                "expression": "*/5 * * * *",
                "timezone": "Asia/Tokyo",
                "interval": 0.0,
                "run_immediately": False,
            },
            "*/5 * * * *",
            "Asia/Tokyo",
        ),
        ({"expression": "0 0 * * *", "timezone": 7200}, "0 0 * * *", "Etc/GMT-2"),
        ({"expression": "0 0 * * *", "timezone": -18000}, "0 0 * * *", "Etc/GMT+5"),
    ],
)
def test_a_cron_timetable_seeds_its_expression_and_timezone(
    timetable: dict[str, Any], cron: str, timezone: str
) -> None:
    seed = airflow_schedule(facets(timetable), "ns/d")
    assert seed is not None
    assert (seed["schedule_kind"], seed["cron"], seed["timezone"]) == ("cron", cron, timezone)


@pytest.mark.parametrize(
    ("timetable", "seconds"),
    [
        ({"delta": 3600.0}, 3600),  # DeltaDataIntervalTimetable(timedelta(hours=1))
        ({"delta": 900.0, "interval": 0.0}, 900),  # DeltaTriggerTimetable
    ],
)
def test_a_timedelta_timetable_seeds_a_period(timetable: dict[str, Any], seconds: int) -> None:
    seed = airflow_schedule(facets(timetable), "ns/d")
    assert seed is not None
    assert (seed["schedule_kind"], seed["period_seconds"]) == ("period", seconds)


@pytest.mark.parametrize(
    "timetable",
    [
        {},  # schedule=None
        {"delta": {"months": 1}},  # a relativedelta: no fixed period
        {"delta": 0.5},
        {"expressions": ["0 1 * * *", "0 2 * * *"], "timezone": "UTC"},
        {"expression": "0 0 * * *", "timezone": "UTC", "run_offset": 1, "key_format": "%Y"},
        {"expression": "0 0 * * *", "timezone": 19800},  # +05:30: no IANA name
        {"expression": "not cron", "timezone": "UTC"},
        {"expression": "0 0 * * *", "timezone": "Mars/Olympus"},
    ],
)
def test_other_timetables_leave_the_tracker_unscheduled(timetable: dict[str, Any]) -> None:
    assert airflow_schedule(facets(timetable), "ns/d") is None


def test_events_without_the_dag_run_facet_seed_nothing() -> None:
    assert airflow_schedule({}, "ns/d") is None
    assert (
        airflow_schedule({"airflow": {"dag": {"timetable": {"expression": "0 0 * * *"}}}}, "t")
        is None
    )
