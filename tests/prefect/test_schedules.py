"""Prefect RRule schedules as tracker schedules (``telemhq_plugins.prefect.schedules``), checked
against Prefect's own expansion of each rule.

For each rule that maps to a cron:

* the wall times dateutil gives Prefect (``RRuleSchedule.to_rrule()``) are exactly the cron's
  wall times as croniter iterates them (the reference server evaluates crons with croniter on
  the zone's wall clock), over windows that start now and just before each of the zone's
  daylight saving changes;
* the instants Prefect's scheduler creates (its server-side ``get_dates``) never come after
  the reference server's expectation (``next_expected_after``, grace 0): no false alarm, DST
  nights included.

For each rule that maps to a period, every gap between Prefect's instants equals it. Each
rule that does not map is refused with its reason; two of them are shown to be wrong if pushed
(the server would expect a run that Prefect does not make). The last test reads real
deployments from the session's Prefect API."""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import re
from collections.abc import Iterator
from itertools import pairwise
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from croniter import croniter
from dateutil import tz as dateutil_tz
from prefect.client.orchestration import get_client
from prefect.client.schemas.actions import DeploymentScheduleCreate
from prefect.client.schemas.schedules import CronSchedule, RRuleSchedule
from prefect.server.schemas.schedules import RRuleSchedule as ServerRRuleSchedule
from telemhq_server.schedules import Schedule, next_expected_after

from telemhq_plugins.core.provision import JobSchedule
from telemhq_plugins.prefect.schedules import deployment_schedules, rrule_schedule

UTC = dt.UTC
#: A fixed "now": the windows and the zones' coming offset changes do not move with the clock.
NOW = dt.datetime(2026, 1, 15, 12, 0, tzinfo=UTC)
OCCURRENCES = 300
HORIZON = dt.timedelta(days=10 * 366)  # sparse rules: at most this far

PARIS, NEW_YORK, SYDNEY = "Europe/Paris", "America/New_York", "Australia/Sydney"
ODD_HOURS = ",".join(str(hour) for hour in range(1, 24, 2))


def at(dtstart: str, rule: str) -> str:
    """``rule`` with an explicit DTSTART (floating: read in the schedule's zone)."""
    return f"DTSTART:{dtstart}\nRRULE:{rule}"


#: (RRULE, time zone, the cron it must map to: one expression, or a list for an rruleset)
CRONS: list[tuple[str, str, str | list[str]]] = [
    ("FREQ=DAILY", "UTC", "0 0 * * *"),
    ("FREQ=DAILY;BYHOUR=7;BYMINUTE=45", PARIS, "45 7 * * *"),
    ("FREQ=DAILY;BYHOUR=2,3;BYMINUTE=30", PARIS, "30 2,3 * * *"),
    ("FREQ=WEEKLY;BYDAY=MO,FR;BYHOUR=6;BYMINUTE=15", NEW_YORK, "15 6 * * 1,5"),
    ("FREQ=WEEKLY;BYDAY=SU;BYHOUR=23;BYMINUTE=5", "Asia/Tokyo", "5 23 * * 0"),
    # dateutil drops a weekday's ordinal below MONTHLY: a WEEKLY 1MO runs every Monday.
    ("FREQ=WEEKLY;BYDAY=1MO;BYHOUR=9", "UTC", "0 9 * * 1"),
    # Prefect stores a MINUTELY rule with a recent DTSTART of the same phase.
    (at("20251201T000500", "FREQ=MINUTELY;INTERVAL=15"), PARIS, "5,20,35,50 * * * *"),
    (
        at("20240101T000700", "FREQ=MINUTELY;INTERVAL=20;BYHOUR=9,10,11"),
        NEW_YORK,
        "7,27,47 9-11 * * *",
    ),
    (at("20240101T013000", "FREQ=MINUTELY;INTERVAL=120"), PARIS, f"30 {ODD_HOURS} * * *"),
    ("FREQ=HOURLY", NEW_YORK, "0 * * * *"),
    ("FREQ=HOURLY;BYMINUTE=30;BYSECOND=20", PARIS, "30 * * * *"),
    (at("20230301T031000", "FREQ=HOURLY;INTERVAL=6"), NEW_YORK, "10 3,9,15,21 * * *"),
    ("FREQ=HOURLY;BYHOUR=9,10,11,12;BYDAY=MO,TU,WE,TH,FR", PARIS, "0 9-12 * * 1-5"),
    ("FREQ=MONTHLY;BYMONTHDAY=1,15;BYHOUR=4", SYDNEY, "0 4 1,15 * *"),
    (at("20230131T080000", "FREQ=MONTHLY"), "UTC", "0 8 31 * *"),
    (at("20240215T120000", "FREQ=MONTHLY;INTERVAL=3;BYMONTHDAY=1"), NEW_YORK, "0 12 1 2,5,8,11 *"),
    ("FREQ=MONTHLY;BYDAY=SA,SU;BYHOUR=10", "Europe/London", "0 10 * * 0,6"),
    ("FREQ=MONTHLY;BYMONTHDAY=1;BYDAY=MO,TU,WE,TH,FR,SA,SU", "UTC", "0 0 1 * *"),
    ("FREQ=YEARLY;BYMONTH=1,7;BYDAY=MO;BYHOUR=5", SYDNEY, "0 5 * 1,7 1"),
    ("FREQ=YEARLY;BYMONTH=2;BYMONTHDAY=29;BYHOUR=12", "UTC", "0 12 29 2 *"),
    ("FREQ=DAILY;BYMONTH=12;BYHOUR=23;BYMINUTE=59", "Pacific/Auckland", "59 23 * 12 *"),
    (
        "RRULE:FREQ=DAILY;BYHOUR=9\nRRULE:FREQ=DAILY;BYHOUR=17;BYMINUTE=30",
        PARIS,
        ["0 9 * * *", "30 17 * * *"],
    ),
]

#: (RRULE, time zone, period in seconds): zones that keep one UTC offset.
PERIODS: list[tuple[str, str, float]] = [
    (at("20251201T000300", "FREQ=MINUTELY;INTERVAL=7"), "UTC", 420.0),
    (at("20250601T000000", "FREQ=MINUTELY;INTERVAL=90"), "America/Phoenix", 5400.0),
    ("FREQ=HOURLY;INTERVAL=5;BYMINUTE=10", "Asia/Kolkata", 18_000.0),
    ("FREQ=DAILY;INTERVAL=3;BYHOUR=4", "Asia/Tokyo", 259_200.0),
    ("FREQ=WEEKLY;INTERVAL=2;BYDAY=TU;BYHOUR=8", "UTC", 1_209_600.0),
]

#: (RRULE, time zone, a part of the reason it gives)
UNMAPPABLE: list[tuple[str, str, str]] = [
    ("FREQ=MONTHLY;BYDAY=1MO", "UTC", "ordinal weekday"),
    ("FREQ=MONTHLY;BYDAY=-1FR", "Europe/Paris", "ordinal weekday"),
    ("FREQ=MONTHLY;BYMONTHDAY=-1", "UTC", "month's end"),
    ("FREQ=MONTHLY;BYMONTHDAY=13;BYDAY=FR", "UTC", "both in an RRULE but either in a cron"),
    ("FREQ=MONTHLY;BYDAY=MO,TU,WE,TH,FR;BYSETPOS=-1", "UTC", "BYSETPOS"),
    ("FREQ=YEARLY;BYWEEKNO=20;BYDAY=MO", "UTC", "BYWEEKNO"),
    ("FREQ=YEARLY;BYYEARDAY=100", "UTC", "BYYEARDAY"),
    ("FREQ=YEARLY;BYEASTER=0", "UTC", "BYEASTER"),
    ("FREQ=DAILY;BYSECOND=0,30", "UTC", "several times a minute"),
    ("FREQ=SECONDLY;INTERVAL=30", "UTC", "SECONDLY"),
    ("FREQ=DAILY;COUNT=10", "UTC", "it ends"),
    ("FREQ=DAILY;UNTIL=20400101T000000", "UTC", "it ends"),
    ("FREQ=MINUTELY;INTERVAL=7", "Europe/Paris", "changes offset"),
    ("FREQ=DAILY;INTERVAL=2", "America/New_York", "changes offset"),
    ("FREQ=DAILY;INTERVAL=2;BYHOUR=6,18", "UTC", "uneven gaps"),
    ("FREQ=MINUTELY;INTERVAL=7;BYHOUR=9", "UTC", "uneven gaps"),
    ("FREQ=WEEKLY;INTERVAL=2;BYDAY=MO,TH", "UTC", "uneven gaps"),
    ("FREQ=MONTHLY;INTERVAL=5", "UTC", "neither a cron"),
    ("FREQ=YEARLY;INTERVAL=2", "UTC", "neither a cron"),
    ("FREQ=YEARLY;BYMONTH=2;BYMONTHDAY=30", "UTC", "never runs"),
    ("FREQ=DAILY;BYHOUR=2;BYMINUTE=30", "Europe/Paris", "skip from 02:00 to 03:00"),
    ("FREQ=WEEKLY;BYDAY=SU;BYHOUR=2", "America/New_York", "skip from 02:00 to 03:00"),
    ("FREQ=HOURLY", "Australia/Lord_Howe", "skip from 02:00 to 02:30"),
    (at("20300101T000000", "FREQ=DAILY"), "UTC", "in the future"),
    ("RRULE:FREQ=DAILY;BYHOUR=9\nEXDATE:20260201T090000", "UTC", "EXDATE"),
    ("RRULE:FREQ=DAILY;BYHOUR=9\nRDATE:20260201T120000", "UTC", "RDATE"),
    ("RRULE:FREQ=DAILY\nEXRULE:FREQ=WEEKLY;BYDAY=SU", "UTC", "EXRULE"),
    ("RRULE:FREQ=DAILY\nRRULE:FREQ=MONTHLY;BYDAY=1MO", "UTC", "RRULE 2 of 2: an ordinal"),
    ("RRULE:FREQ=DAILY;BYHOUR=9\nRRULE:FREQ=MINUTELY;INTERVAL=7", "UTC", "fixed-period RRULE"),
]


def case_id(case: tuple[str, str, Any]) -> str:
    return f"{case[0].replace(chr(10), ' ')} [{case[1]}]"


def window_starts(zone: str) -> list[dt.datetime]:
    """Now, and two days before each offset change of ``zone`` in the coming year (UTC)."""
    starts = [NOW]
    tzinfo = ZoneInfo(zone)
    offset = NOW.astimezone(tzinfo).utcoffset()
    for hours in range(1, 366 * 24):
        moment = NOW + dt.timedelta(hours=hours)
        if moment.astimezone(tzinfo).utcoffset() != offset:
            offset = moment.astimezone(tzinfo).utcoffset()
            starts.append(moment - dt.timedelta(days=2))
    return starts


def rule_walls(rule: str, zone: str, start: dt.datetime) -> list[dt.datetime]:
    """The wall times (to the minute) of Prefect's rule after ``start``."""
    expanded = RRuleSchedule(rrule=rule, timezone=zone).to_rrule()
    # dateutil's gettz returns one shared object per zone: an aware start with the very
    # tzinfo of the rule's DTSTART compares on the wall clock, as dateutil steps.
    wall_start = start.astimezone(ZoneInfo(zone)).replace(tzinfo=dateutil_tz.gettz(zone))
    walls = []
    for occurrence in expanded.xafter(wall_start, count=OCCURRENCES, inc=False):
        wall = occurrence.replace(tzinfo=None, second=0)
        if wall > wall_start.replace(tzinfo=None) + HORIZON:
            break
        walls.append(wall)
    return walls


def cron_walls(
    crons: list[str], zone: str, start: dt.datetime, last: dt.datetime
) -> list[dt.datetime]:
    """The wall times croniter gives for ``crons`` after ``start`` up to ``last`` (naive)."""
    wall_start = start.astimezone(ZoneInfo(zone)).replace(tzinfo=None)
    walls: set[dt.datetime] = set()
    for cron in crons:
        iterator = croniter(cron, wall_start)
        while (wall := iterator.get_next(dt.datetime)) <= last:
            walls.add(wall)
    return sorted(walls)


def prefect_instants(rule: str, zone: str, start: dt.datetime) -> list[dt.datetime]:
    """The instants Prefect's scheduler creates from ``start`` on (its own code)."""
    schedule = ServerRRuleSchedule(rrule=rule, timezone=zone)
    dates = asyncio.run(schedule.get_dates(n=OCCURRENCES, start=start, end=start + HORIZON))
    # Plain datetimes: Prefect's own type warns on some standard calls.
    return [dt.datetime.fromtimestamp(d.timestamp(), UTC) for d in dates]


@pytest.mark.parametrize("case", CRONS, ids=case_id)
def test_a_mapped_cron_names_exactly_the_rules_runs(case: tuple[str, str, str | list[str]]) -> None:
    rule, zone, expected = case
    mapped = rrule_schedule(RRuleSchedule(rrule=rule, timezone=zone), now=NOW)
    assert mapped == expected
    crons = [mapped] if isinstance(mapped, str) else mapped
    tracker = JobSchedule("job", mapped, timezone=zone).spec()  # what the tracker holds
    server = Schedule(kind="cron", cron=tracker["cron"], timezone=zone, grace_seconds=0)
    for start in window_starts(zone):
        walls = rule_walls(rule, zone, start)
        assert len(walls) >= 2, "the window holds runs"
        assert cron_walls(crons, zone, start, walls[-1]) == walls, start
        instants = prefect_instants(rule, zone, start)
        for run, following in pairwise(instants):
            expected_by = next_expected_after(server, run)
            # The server expects the next run no earlier than Prefect makes it (to the minute:
            # a cron names minutes, and a BYSECOND run comes seconds into its minute).
            scheduled_minute = following.replace(second=0)
            assert expected_by is not None, run
            assert scheduled_minute <= expected_by, (run, following)


@pytest.mark.parametrize("case", PERIODS, ids=case_id)
def test_a_mapped_period_is_every_gap_between_runs(case: tuple[str, str, float]) -> None:
    rule, zone, expected = case
    assert rrule_schedule(RRuleSchedule(rrule=rule, timezone=zone), now=NOW) == expected
    for start in (NOW, NOW + dt.timedelta(days=200)):
        instants = prefect_instants(rule, zone, start)
        assert len(instants) >= 10
        gaps = {(b - a).total_seconds() for a, b in pairwise(instants)}
        assert gaps == {expected}


@pytest.mark.parametrize("case", UNMAPPABLE, ids=case_id)
def test_a_rule_that_does_not_map_is_refused_with_its_reason(case: tuple[str, str, str]) -> None:
    rule, zone, reason = case
    with pytest.raises(ValueError, match=re.escape(reason)):
        rrule_schedule(RRuleSchedule(rrule=rule, timezone=zone), now=NOW)


def test_a_period_across_a_daylight_saving_change_would_be_wrong() -> None:
    """Why a period needs a zone with one offset: Prefect steps on the wall clock."""
    instants = prefect_instants("FREQ=DAILY;INTERVAL=2", "America/New_York", NOW)
    gaps = {(b - a).total_seconds() / 3600 for a, b in pairwise(instants)}
    assert gaps == {47.0, 48.0, 49.0}


def test_a_run_in_the_skipped_hour_would_make_a_false_alarm() -> None:
    """Why ``30 2 * * *`` in Europe/Paris is refused: on the night the clocks skip 02:00-03:00
    Prefect runs the 02:30 run at 01:30, and the server then waits for 03:30."""
    rule, zone = "FREQ=DAILY;BYHOUR=2;BYMINUTE=30", "Europe/Paris"
    server = Schedule(kind="cron", cron="30 2 * * *", timezone=zone, grace_seconds=0)
    instants = prefect_instants(rule, zone, dt.datetime(2026, 3, 27, tzinfo=UTC))
    late = [
        (run, following)
        for run, following in pairwise(instants)
        if following > (next_expected_after(server, run) or following)
    ]
    assert late[0][0] == dt.datetime(2026, 3, 29, 0, 30, tzinfo=UTC)  # 01:30 CET


# --- deployment_schedules, against the session's Prefect API ------------------------------


@pytest.fixture
def deployments(prefect_api: Any) -> Iterator[list[Any]]:
    """Deployments of three flows (each flow's name is its job): crons and RRules together,
    a mappable RRule next to one that is not, an RRule that maps to a period."""
    plan = {
        "schedules-mixed": [
            CronSchedule(cron="0 9 * * *", timezone="Europe/Paris"),
            RRuleSchedule(rrule="FREQ=DAILY;BYHOUR=17", timezone="Europe/Paris"),
            RRuleSchedule(rrule="FREQ=DAILY;BYHOUR=12", timezone="Asia/Tokyo"),
        ],
        "schedules-partly": [
            RRuleSchedule(rrule="FREQ=MONTHLY;BYDAY=1MO", timezone="UTC"),
            RRuleSchedule(rrule="FREQ=WEEKLY;BYDAY=TU;BYHOUR=8", timezone="UTC"),
        ],
        "schedules-period": [RRuleSchedule(rrule="FREQ=MINUTELY;INTERVAL=7", timezone="UTC")],
    }
    ids = []
    with get_client(sync_client=True) as prefect:
        for flow, schedules in plan.items():
            flow_id = prefect.create_flow_from_name(flow)
            ids.append(
                prefect.create_deployment(
                    flow_id,
                    name="rrules",
                    schedules=[DeploymentScheduleCreate(schedule=s) for s in schedules],
                )
            )
    yield ids
    with get_client(sync_client=True) as prefect:
        for deployment_id in ids:
            prefect.delete_deployment(deployment_id)


@pytest.mark.slow
def test_deployment_schedules_push_rrules_with_crons_and_log_the_rest(
    deployments: list[Any], caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.INFO, logger="telemhq"):
        jobs = {js.job: js for js in asyncio.run(deployment_schedules())}
    mixed = jobs["schedules-mixed"]
    assert (mixed.schedule, mixed.timezone) == (["0 17 * * *", "0 9 * * *"], "Europe/Paris")
    assert mixed.spec()["cron"] == "0 17,9 * * *"  # sorted as text: the same on each sync
    partly = jobs["schedules-partly"]
    assert (partly.schedule, partly.timezone) == ("0 8 * * 2", "UTC")
    assert jobs["schedules-period"].spec()["period_seconds"] == 420
    lines = [r.getMessage() for r in caplog.records if r.levelno == logging.INFO]
    [tokyo] = [line for line in lines if "schedules-mixed" in line]
    assert "0 12 * * * in Asia/Tokyo are not pushed" in tokyo
    [ordinal] = [line for line in lines if "schedules-partly" in line]
    assert "is not pushed: an ordinal weekday" in ordinal
