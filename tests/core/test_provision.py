"""The server schedule JSON a JobSchedule stands for, one cron for several, and sync() never
raising (no server involved; what a sync stores on the real server is tested in
tests/e2e/test_provision.py)."""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Iterator
from typing import Any

import pytest

from telemhq_plugins.core import JobSchedule, sync
from telemhq_plugins.core.cron import combine_crons, cron_from_fields, fires_per_year


@pytest.mark.parametrize(
    ("job", "expected"),
    [
        (
            JobSchedule("a", "0 3 * * *"),
            {"kind": "cron", "cron": "0 3 * * *", "timezone": "UTC", "grace_seconds": 300},
        ),
        (
            JobSchedule("a", " 0 3 * * 1-5 ", timezone="Europe/Paris", grace_seconds=59.2),
            {
                "kind": "cron",
                "cron": "0 3 * * 1-5",
                "timezone": "Europe/Paris",
                "grace_seconds": 60,
            },
        ),
        (
            JobSchedule("a", ["0 9 * * *", "0 17 * * *"]),
            {"kind": "cron", "cron": "0 9,17 * * *", "timezone": "UTC", "grace_seconds": 300},
        ),
        (
            JobSchedule("a", dt.timedelta(minutes=5), timezone="Europe/Paris", grace_seconds=0),
            {"kind": "period", "period_seconds": 300, "grace_seconds": 0},
        ),
        (JobSchedule("a", 30.5), {"kind": "period", "period_seconds": 31, "grace_seconds": 300}),
        (JobSchedule("a", 60), {"kind": "period", "period_seconds": 60, "grace_seconds": 300}),
        (JobSchedule("a", None, grace_seconds=10), {"kind": "none"}),
    ],
)
def test_it_builds_the_servers_schedule(job: JobSchedule, expected: dict[str, Any]) -> None:
    assert job.spec() == expected


@pytest.mark.parametrize(
    ("schedule", "grace", "message"),
    [
        (0, None, "positive number of seconds"),
        (-1.5, None, "positive number of seconds"),
        (float("inf"), None, "positive number of seconds"),
        (dt.timedelta(0), None, "positive number of seconds"),
        (True, None, "schedule must be"),
        (object(), None, "schedule must be"),
        ("   ", None, "empty"),
        ([], None, "no cron expression"),
        (60, -1, "grace_seconds must be"),
        ("0 * * * *", float("nan"), "grace_seconds must be"),
    ],
)
def test_it_refuses_what_cannot_be_a_schedule(
    schedule: Any, grace: float | None, message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        JobSchedule("a", schedule, grace_seconds=grace).spec()


def test_a_job_schedule_is_a_frozen_value() -> None:
    job = JobSchedule("a", 60, tags=("x",))
    assert job == JobSchedule("a", 60, tags=("x",))
    assert hash(job) == hash(JobSchedule("a", 60, tags=("x",)))
    with pytest.raises(AttributeError):
        job.schedule = 30  # type: ignore[misc]


def test_schedules_that_cannot_be_read_raise_nothing(caplog: pytest.LogCaptureFixture) -> None:
    def broken() -> Iterator[JobSchedule]:
        yield JobSchedule("fine", 60)
        raise RuntimeError("the orchestrator's schedule objects broke")

    with caplog.at_level(logging.ERROR, logger="telemhq"):
        pending = sync(broken(), api_key="thq_any")
    assert pending.done
    assert pending.wait(0) == []
    assert "TelemHQ integration error in provision.sync" in caplog.text


@pytest.mark.parametrize(
    ("crons", "expected"),
    [
        (["0 3 * * *"], "0 3 * * *"),
        (["0 3 * * *", "0 3 * * *"], "0 3 * * *"),
        # one differing field: the exact union
        (["0 9 * * *", "0 17 * * *"], "0 9,17 * * *"),
        (["0 9 * * 1-5", "0 9 * * 6"], "0 9 * * 1-5,6"),
        (["15 * * 1 *", "15 * * 7 *"], "15 * * 1,7 *"),
        (["0 9 * * *", "* 9 * * *"], "* 9 * * *"),
        # a day field while the other is restricted: not a union in cron, so not merged
        (["0 9 1 * 1", "0 9 15 * 1"], "0 9 1 * 1"),
        # several differing fields: the one firing most often
        (["0 9 * * 1-5", "30 12 * * 0,6"], "0 9 * * 1-5"),
        (["0 0 1 * *", "*/15 * * * *", "0 * * * *"], "*/15 * * * *"),
        (["@daily", "30 6 * * 1"], "@daily"),
        # equals: the first given
        (["0 9 * * 1", "30 10 * * 2"], "0 9 * * 1"),
        # unreadable ones count as firing least often
        (["0 0 * * * *", "5 4 * * *"], "5 4 * * *"),
    ],
)
def test_it_combines_several_crons_into_one(crons: list[str], expected: str) -> None:
    assert combine_crons(crons) == expected


def test_it_counts_how_often_a_cron_fires() -> None:
    assert fires_per_year("0 0 * * *") == pytest.approx(365.25)
    assert fires_per_year("*/15 * * * *") == pytest.approx(365.25 * 96)
    assert fires_per_year("0 9 * * mon-fri") == pytest.approx(365.25 * 5 / 7)
    assert fires_per_year("0 0 1,15 * *") == 24
    assert fires_per_year("0 0 1 jan,jul *") == 2
    assert fires_per_year("0 0 * * 0,7") == pytest.approx(365.25 / 7)  # Sunday twice
    assert fires_per_year("@hourly") == pytest.approx(365.25 * 24)
    for unreadable in ("61 * * * *", "* * *", "0 0 * * funday", "*/0 * * * *", "5-1 * * * *"):
        assert fires_per_year(unreadable) == 0.0


@pytest.mark.parametrize(
    ("fields", "expected"),
    [
        ([{0}, {3}, None, None, None], "0 3 * * *"),
        ([{0, 15, 30, 45}, None, None, None, {1, 2, 3, 4, 5}], "0,15,30,45 * * * 1-5"),
        ([{30}, {2, 3}, {1, 15}, None, {0, 6}], "30 2,3 1,15 * 0,6"),
        (
            [set(range(60)), set(range(24)), set(range(1, 32)), set(range(1, 13)), set(range(7))],
            "* * * * *",
        ),
        (
            [{*range(11), *range(50, 60)}, None, None, {1, 2, 3, 12}, None],
            "0-10,50-59 * * 1-3,12 *",
        ),
    ],
)
def test_cron_fields_are_written_with_ranges_of_three_or_more(
    fields: list[set[int] | None], expected: str
) -> None:
    assert cron_from_fields(fields) == expected
