"""Schedule math: periods, cron in a timezone, and the two DST nights of a daily 02:30 job."""

from __future__ import annotations

import datetime as dt
from zoneinfo import ZoneInfo

import pytest
from telemhq_server.schedules import (
    Schedule,
    ScheduleError,
    due_after,
    expected_state,
    local_to_utc,
    next_due,
    next_expected_after,
    runtime_exceeded,
    schedule_changed,
)

UTC = dt.UTC
BERLIN = ZoneInfo("Europe/Berlin")
NEW_YORK = ZoneInfo("America/New_York")


def utc(*args: int) -> dt.datetime:
    return dt.datetime(*args, tzinfo=UTC)


def local(zone: ZoneInfo, *args: int, fold: int = 0) -> dt.datetime:
    return dt.datetime(*args, tzinfo=zone, fold=fold).astimezone(UTC)


def test_it_expects_a_period_after_the_last_ping() -> None:
    s = Schedule(kind="period", period_seconds=3600, grace_seconds=300)
    nxt = next_expected_after(s, utc(2026, 1, 1, 12))
    assert nxt == utc(2026, 1, 1, 13)
    assert expected_state(s, nxt, utc(2026, 1, 1, 12, 59)) is None
    assert expected_state(s, nxt, utc(2026, 1, 1, 13)) == "late"
    assert expected_state(s, nxt, utc(2026, 1, 1, 13, 4, 59)) == "late"
    assert expected_state(s, nxt, utc(2026, 1, 1, 13, 5)) == "down"


def test_it_reads_naive_database_times_as_utc() -> None:
    s = Schedule(kind="period", period_seconds=60)
    assert next_expected_after(s, dt.datetime(2026, 1, 1, 12)) == utc(2026, 1, 1, 12, 1)


def test_it_expects_nothing_without_a_schedule() -> None:
    s = Schedule()
    assert next_expected_after(s, utc(2026, 1, 1)) is None
    assert expected_state(s, None, utc(2030, 1, 1)) is None


def test_it_reads_cron_in_the_trackers_timezone() -> None:
    s = Schedule(kind="cron", cron="0 9 * * 1-5", timezone="America/New_York")
    # Friday 2026-01-09 10:00 New York -> next is Monday 09:00 New York (14:00 UTC in winter).
    nxt = next_expected_after(s, local(NEW_YORK, 2026, 1, 9, 10))
    assert nxt == utc(2026, 1, 12, 14)


def test_it_gives_no_next_run_for_a_cron_that_never_fires() -> None:
    s = Schedule(kind="cron", cron="0 0 30 2 *")
    assert next_expected_after(s, utc(2026, 1, 1)) is None


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"kind": "weekly"}, "schedule kind must be one of"),
        ({"kind": "period"}, "period_seconds > 0"),
        ({"kind": "cron", "cron": "61 * * * *"}, "is not valid"),
        ({"kind": "cron", "cron": "* * * * *", "timezone": "Mars/Olympus"}, "IANA zone"),
        ({"grace_seconds": -1}, "grace_seconds"),
        ({"max_runtime_seconds": 0}, "max_runtime_seconds"),
    ],
)
def test_it_rejects_a_broken_schedule_with_a_clear_message(
    fields: dict[str, object], message: str
) -> None:
    with pytest.raises(ScheduleError, match=message):
        Schedule(**fields)  # type: ignore[arg-type]


def test_it_maps_skipped_and_repeated_wall_times_to_their_latest_instant() -> None:
    # 2026-03-29: Berlin jumps 02:00 CET -> 03:00 CEST; 02:30 does not exist.
    assert local_to_utc(dt.datetime(2026, 3, 29, 2, 30), BERLIN) == utc(2026, 3, 29, 1, 30)
    # 2026-10-25: Berlin falls back 03:00 CEST -> 02:00 CET; 02:30 happens twice.
    assert local_to_utc(dt.datetime(2026, 10, 25, 2, 30), BERLIN) == utc(2026, 10, 25, 1, 30)
    # An ordinary time has one meaning.
    assert local_to_utc(dt.datetime(2026, 7, 1, 2, 30), BERLIN) == utc(2026, 7, 1, 0, 30)


DAILY_0230 = Schedule(kind="cron", cron="30 2 * * *", timezone="Europe/Berlin", grace_seconds=600)


def _simulate(pings: list[dt.datetime], start: dt.datetime, end: dt.datetime) -> list[str]:
    """Walk minute by minute, pinging at the given instants; return every late/down seen."""
    alerts: list[str] = []
    nxt = next_expected_after(DAILY_0230, start)
    now = start
    pending = sorted(pings)
    while now <= end:
        while pending and pending[0] <= now:
            nxt = next_expected_after(DAILY_0230, pending.pop(0))
        state = expected_state(DAILY_0230, nxt, now)
        if state is not None:
            alerts.append(f"{state} at {now.isoformat()} (expected {nxt})")
        now += dt.timedelta(minutes=1)
    return alerts


@pytest.mark.parametrize(
    "job_runs_at",
    [
        # Vixie cron: the skipped 02:30 runs right after the jump, at 03:00 CEST.
        local(BERLIN, 2026, 3, 29, 3, 0),
        # Or at 03:30 CEST (a scheduler that shifts skipped times by the gap).
        local(BERLIN, 2026, 3, 29, 3, 30),
    ],
)
def test_it_raises_no_false_alert_across_spring_forward(job_runs_at: dt.datetime) -> None:
    # The job pings two minutes after it starts, every night from the 27th to the 31st.
    pings = [local(BERLIN, 2026, 3, day, 2, 32) for day in (27, 28, 30, 31)]
    pings.append(job_runs_at + dt.timedelta(minutes=2))
    alerts = _simulate(pings, local(BERLIN, 2026, 3, 26, 23), local(BERLIN, 2026, 3, 31, 23))
    # The expected ping is at 02:30 and the job pings at 02:32: two minutes "late" each night
    # is the ordinary, inside-grace lateness. What must not happen is anything longer or a down.
    assert not [a for a in alerts if a.startswith("down")]
    late_minutes_on_the_dst_night = [a for a in alerts if "2026-03-29" in a]
    assert len(late_minutes_on_the_dst_night) <= 2


@pytest.mark.parametrize("occurrence", [0, 1])
def test_it_raises_no_false_alert_across_fall_back(occurrence: int) -> None:
    # On 2026-10-25 02:30 happens twice; the scheduler runs the job at one of them, once.
    pings = [local(BERLIN, 2026, 10, day, 2, 30) for day in (23, 24, 26, 27)]
    pings.append(local(BERLIN, 2026, 10, 25, 2, 30, fold=occurrence))
    alerts = _simulate(pings, local(BERLIN, 2026, 10, 22, 23), local(BERLIN, 2026, 10, 27, 23))
    assert alerts == []


def test_it_does_not_expect_the_repeated_hour_again_after_a_ping_at_its_first_occurrence() -> None:
    first = local(BERLIN, 2026, 10, 25, 2, 31, fold=0)
    assert next_expected_after(DAILY_0230, first) == local(BERLIN, 2026, 10, 26, 2, 30)
    # A ping inside the repeated hour but before its 02:30 still expects the second 02:30.
    early = local(BERLIN, 2026, 10, 25, 2, 10, fold=1)
    assert next_expected_after(DAILY_0230, early) == local(BERLIN, 2026, 10, 25, 2, 30, fold=1)


def test_it_still_alerts_when_the_job_misses_the_dst_night() -> None:
    pings = [local(BERLIN, 2026, 3, 28, 2, 31)]
    alerts = _simulate(pings, local(BERLIN, 2026, 3, 28, 0), local(BERLIN, 2026, 3, 29, 5))
    assert any(a.startswith("down") for a in alerts)
    # ...but not before 03:30 CEST + 10 minutes of grace.
    first_down = next(a for a in alerts if a.startswith("down"))
    assert "2026-03-29T01:40:00+00:00" in first_down


def test_it_flags_a_start_that_outlives_the_max_runtime() -> None:
    s = Schedule(max_runtime_seconds=600)
    started = utc(2026, 1, 1, 12)
    assert not runtime_exceeded(s, started, utc(2026, 1, 1, 12, 9, 59))
    assert runtime_exceeded(s, started, utc(2026, 1, 1, 12, 10))
    assert not runtime_exceeded(s, None, utc(2030, 1, 1))
    assert not runtime_exceeded(Schedule(), started, utc(2030, 1, 1))


# --- a tracker row's schedule -----------------------------------------------------------------

ROW = {
    "schedule_kind": "cron",
    "period_seconds": None,
    "cron": "30 2 * * *",
    "timezone": "Europe/Berlin",
    "grace_seconds": 600,
    "max_runtime_seconds": None,
    "last_ping_at": None,
    "schedule_set_at": None,
}


def test_it_reads_a_schedule_from_a_tracker_row() -> None:
    assert Schedule.from_row(ROW) == DAILY_0230
    # The ingest writer's row holds only what decides the next expected time.
    lean = {k: ROW[k] for k in ("schedule_kind", "period_seconds", "cron", "timezone")}
    assert Schedule.from_row(lean) == Schedule(
        kind="cron", cron="30 2 * * *", timezone="Europe/Berlin"
    )
    none = {**ROW, "schedule_kind": "none", "cron": None, "timezone": None}
    assert Schedule.from_row(none) == Schedule(grace_seconds=600)
    with pytest.raises(ScheduleError, match="timezone"):
        Schedule.from_row({**ROW, "timezone": "Mars/Olympus"})


def test_a_row_is_due_after_its_last_ping_or_else_after_its_schedule_was_set() -> None:
    set_at, pinged = utc(2026, 1, 10, 12), utc(2026, 1, 12, 3)
    assert next_due(ROW) is None  # no anchor yet
    assert next_due({**ROW, "schedule_set_at": set_at}) == local(BERLIN, 2026, 1, 11, 2, 30)
    both = {**ROW, "schedule_set_at": set_at, "last_ping_at": pinged}
    assert next_due(both) == local(BERLIN, 2026, 1, 13, 2, 30)
    assert next_due({**both, "schedule_kind": "none"}) is None
    assert due_after(ROW, pinged) == next_expected_after(DAILY_0230, pinged)
    assert due_after({**ROW, "cron": "not cron"}, pinged) is None  # unusable: no expectation


def test_only_what_decides_the_expected_time_changes_a_schedule() -> None:
    assert schedule_changed(ROW, {"cron": "0 3 * * *"})
    assert schedule_changed(ROW, {"timezone": "UTC"})
    assert not schedule_changed(ROW, {"grace_seconds": 5, "cron": "30 2 * * *"})
