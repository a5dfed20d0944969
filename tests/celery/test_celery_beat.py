"""Beat schedule awareness: crontab/interval conversion, and a real beat pushing its schedule
to the real reference server through the management API."""

from __future__ import annotations

import datetime as dt
import shelve
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from celery import Celery
from celery.beat import Service
from celery.schedules import crontab, schedule
from croniter import croniter

from telemhq_plugins.celery import CeleryInstrumentor, schedule_spec
from telemhq_plugins.celery.beat import PushResult, cron_expression, crontab_timezone
from telemhq_plugins.core import set_client
from tests import kit
from tests.celery.conftest import close_app, make_client
from tests.celery.server import TelemHQ
from tests.celery.tasks import configure


class Custom(schedule):
    """A schedule subclass (like ``solar``): its meaning is its own, never guessed."""


# (crontab arguments, the cron string expected)
CRONTABS = [
    ({"minute": 0, "hour": 3}, "0 3 * * *"),
    ({"minute": "*/15"}, "0,15,30,45 * * * *"),
    ({"minute": 30, "hour": 9, "day_of_week": "mon-fri"}, "30 9 * * 1-5"),
    ({"minute": 0, "hour": "*/6", "day_of_month": "1,15"}, "0 0,6,12,18 1,15 * *"),
    ({"minute": 5, "hour": 0, "day_of_week": "sun"}, "5 0 * * 0"),
    ({"minute": "0-10,50-59", "month_of_year": "1-3,12"}, "0-10,50-59 * * 1-3,12 *"),
    ({}, "* * * * *"),
]


@pytest.mark.parametrize(("kwargs", "expected"), CRONTABS)
def test_it_converts_a_crontab_to_an_equivalent_cron_string(
    kwargs: dict[str, Any], expected: str
) -> None:
    entry = crontab(**kwargs)
    expression = cron_expression(entry)
    assert expression == expected
    # Same fire times: croniter's expansion of each field is the crontab's set.
    expanded = croniter(expression).expanded
    for index, field in enumerate(
        ("minute", "hour", "day_of_month", "month_of_year", "day_of_week")
    ):
        values = expanded[index]
        if values == ["*"]:
            first, last = {0: (0, 59), 1: (0, 23), 2: (1, 31), 3: (1, 12), 4: (0, 6)}[index]
            values = list(range(first, last + 1))
        assert set(values) == set(getattr(entry, field)), field


def test_it_refuses_a_crontab_restricting_both_days() -> None:
    # Celery runs only when both match; cron would fire when either does.
    assert cron_expression(crontab(minute=0, day_of_month=1, day_of_week="mon")) is None
    assert schedule_spec(crontab(minute=0, day_of_month=1, day_of_week="mon")) is None


def test_it_converts_intervals_to_periods() -> None:
    assert schedule_spec(schedule(dt.timedelta(minutes=5)), grace=60) == {
        "kind": "period",
        "period_seconds": 300,
        "grace_seconds": 60,
    }
    assert schedule_spec(30.5, grace=0) == {
        "kind": "period",
        "period_seconds": 31,
        "grace_seconds": 0,
    }
    assert schedule_spec(schedule(dt.timedelta(0))) is None
    assert schedule_spec(Custom(dt.timedelta(minutes=5))) is None
    assert schedule_spec(object()) is None


def test_it_reads_the_crontab_timezone_from_the_app() -> None:
    app = Celery("tz", set_as_current=False)
    app.conf.timezone = "Europe/Paris"
    assert schedule_spec(crontab(minute=0, hour=3, app=app), grace=120) == {
        "kind": "cron",
        "cron": "0 3 * * *",
        "timezone": "Europe/Paris",
        "grace_seconds": 120,
    }


def pushed(instrumentor: CeleryInstrumentor) -> list[PushResult]:
    """What the push started by beat's ``beat_init`` did, once it is done."""
    sync = instrumentor.beat_sync
    assert sync is not None
    for _ in range(600):  # the thread exists once beat_init fired
        if sync.thread is not None:
            break
        threading.Event().wait(0.05)
    assert sync.thread is not None
    sync.thread.join(timeout=60)
    return sync.results


def zoned_crontab(tz: ZoneInfo, **fields: Any) -> crontab:
    """A crontab carrying its own zone the way django-celery-beat's ``CrontabSchedule``
    builds one (its ``TzAwareCrontab``): ``tz`` set on the instance, "now" in that zone."""
    entry = crontab(**fields, nowfun=lambda: dt.datetime.now(tz))
    entry.tz = tz
    return entry


PARIS = ZoneInfo("Europe/Paris")


def test_a_crontab_with_its_own_zone_keeps_it_over_the_app_zone() -> None:
    utc_app = Celery("utc", set_as_current=False)
    utc_app.conf.timezone = "UTC"
    paris_app = Celery("paris", set_as_current=False)
    paris_app.conf.timezone = "Europe/Paris"
    zoned = zoned_crontab(PARIS, minute=15, hour=18)
    assert schedule_spec(zoned, grace=60, app=utc_app) == {
        "kind": "cron",
        "cron": "15 18 * * *",
        "timezone": "Europe/Paris",
        "grace_seconds": 60,
    }
    assert crontab_timezone(crontab(minute=0, app=paris_app), utc_app) == "Europe/Paris"
    assert crontab_timezone(crontab(minute=0), paris_app) == "Europe/Paris"
    assert crontab_timezone(zoned_crontab(dt.UTC, minute=0), paris_app) == "UTC"


@pytest.mark.services
def test_beat_pushes_a_zoned_crontab_in_its_own_zone(
    server: TelemHQ, redis_db: tuple[str, str]
) -> None:
    """A real beat whose app runs in UTC, with an entry at 18:15 Europe/Paris (a crontab as
    django-celery-beat builds one): the tracker expects the run when Celery fires it."""
    broker, prefix = redis_db
    app = Celery("telemhq_tests_zoned_beat", set_as_current=False)
    configure(app, broker, f"{prefix}zoned-")
    app.conf.timezone = "UTC"
    zoned = zoned_crontab(PARIS, minute=15, hour=18)
    app.conf.beat_schedule = {"paris-evening": {"task": "beat.paris", "schedule": zoned}}
    client = make_client(server, ping_key=kit.new_ping_key(server.live), token=None)
    previous = set_client(client)
    instrumentor = CeleryInstrumentor()
    instrumentor.instrument(app, beat_schedules=True, api_key=server.live.api_key)
    service = Service(app, max_interval=0.2, scheduler_cls="celery.beat:Scheduler")
    beat = threading.Thread(target=service.start, daemon=True)
    try:
        beat.start()
        outcomes = {r.entry: r.outcome for r in pushed(instrumentor)}
        fired = service.scheduler.schedule["paris-evening"].schedule
    finally:
        service.stop(wait=True)
        beat.join(timeout=30)
        instrumentor.uninstrument()
        set_client(previous)
        client.close()
        close_app(app)

    assert outcomes == {"paris-evening": "created"}
    tracker = server.live.tracker("beat-paris")["schedule"]
    assert tracker == {
        "kind": "cron",
        "cron": "15 18 * * *",
        "timezone": "Europe/Paris",
        "grace_seconds": 300,
    }
    # Celery's own next run of the entry beat held is the tracker's next expected run.
    last = dt.datetime(2026, 7, 1, 12, 0, tzinfo=dt.UTC)
    start, delta, _ = fired.remaining_delta(last)
    celery_next = start + delta
    expected = croniter(tracker["cron"], last.astimezone(PARIS)).get_next(dt.datetime)
    assert celery_next.astimezone(dt.UTC) == expected.astimezone(dt.UTC)


@pytest.fixture
def beat_app(redis_db: tuple[str, str]) -> Iterator[Celery]:
    broker, prefix = redis_db
    app = Celery("telemhq_tests_beat", set_as_current=False)
    configure(app, broker, f"{prefix}beat-")
    app.conf.timezone = "Europe/Paris"

    @app.task(name="beat.quiet", shared=False, telemhq={"enabled": False})
    def quiet() -> None: ...

    app.conf.beat_schedule = {
        "every-5-min": {"task": "beat.every5", "schedule": 300.0},
        "nightly": {"task": "beat.nightly", "schedule": crontab(minute=0, hour=3)},
        "quiet": {"task": "beat.quiet", "schedule": dt.timedelta(hours=1)},
        "custom": {"task": "beat.every5", "schedule": Custom(dt.timedelta(minutes=1))},
        "both-days": {
            "task": "beat.both",
            "schedule": crontab(minute=0, day_of_month=1, day_of_week="mon"),
        },
    }
    yield app
    close_app(app)


@pytest.mark.services
def test_it_pushes_beat_schedules_to_the_trackers(
    beat_app: Celery, server: TelemHQ, tmp_path: Path
) -> None:
    live = server.live
    every5 = live.create_tracker(name="beat every5")
    client = make_client(
        server,
        trackers=(("beat.every5", every5["token"]),),
        ping_key=kit.new_ping_key(live),
        token=None,
    )
    previous = set_client(client)
    instrumentor = CeleryInstrumentor()
    instrumentor.instrument(beat_app, beat_schedules=True, beat_grace=120, api_key=live.api_key)
    schedule_file = tmp_path / "celerybeat-schedule"
    service = Service(beat_app, schedule_filename=str(schedule_file), max_interval=0.2)
    beat = threading.Thread(target=service.start, daemon=True)
    try:
        beat.start()
        outcomes = {r.entry: (r.outcome, r.detail) for r in pushed(instrumentor)}
    finally:
        service.stop(wait=True)
        beat.join(timeout=30)
        instrumentor.uninstrument()
        set_client(previous)
        client.close()

    assert outcomes["every-5-min"] == ("updated", "")
    assert outcomes["nightly"] == ("created", "")
    assert outcomes["quiet"] == ("skipped", "not monitored")
    assert outcomes["custom"][0] == "skipped"
    assert outcomes["both-days"][0] == "skipped"

    assert live.tracker(every5["id"])["schedule"] == {
        "kind": "period",
        "period_seconds": 300,
        "grace_seconds": 120,
    }
    nightly = live.tracker("beat-nightly")
    assert nightly["name"] == "beat.nightly"
    assert nightly["tags"] == ["celery"]
    assert live.tracker(every5["id"])["tags"] == ["celery"]
    assert live.tracker(every5["id"])["name"] == "beat every5"  # named by hand: kept
    assert nightly["schedule"] == {
        "kind": "cron",
        "cron": "0 3 * * *",
        "timezone": "Europe/Paris",
        "grace_seconds": 120,
    }
    # The schedule file is beat's alone: still readable, every entry in it untouched.
    with shelve.open(str(schedule_file), flag="r") as db:
        entries = db["entries"]
    assert set(beat_app.conf.beat_schedule) <= set(entries)
    assert entries["nightly"].schedule == crontab(minute=0, hour=3)


@pytest.mark.services
def test_it_does_not_push_without_an_api_key(server: TelemHQ, beat_app: Celery) -> None:
    from telemhq_plugins.celery.beat import BeatScheduleSync

    tracker = server.live.create_tracker(name="beat no key")
    client = make_client(server, trackers=(("beat.every5", tracker["token"]),))
    with kit.process_client(client):
        sync = BeatScheduleSync(api_key=None)
        entries = {"every-5-min": _Entry("beat.every5", 300.0)}
        (result,) = sync.push(entries, app=beat_app)
    assert result.outcome == "skipped"
    assert "TELEMHQ_API_KEY" in result.detail
    assert server.live.tracker(tracker["id"])["schedule"] == {"kind": "none"}


@pytest.mark.services
def test_a_second_push_of_the_same_schedule_writes_nothing(
    server: TelemHQ, beat_app: Celery
) -> None:
    from telemhq_plugins.celery.beat import BeatScheduleSync

    client = make_client(server, ping_key=kit.new_ping_key(server.live), token=None)
    previous = set_client(client)
    entries = {
        "hourly": _Entry("beat.again", crontab(minute=5)),
        "hourly-copy": _Entry("beat.again", crontab(minute=5)),
        "hourly-other": _Entry("beat.again", crontab(minute=10)),
    }
    try:
        sync = BeatScheduleSync(api_key=server.live.api_key, grace=60)
        first = {r.entry: r for r in sync.push(entries, app=beat_app)}
        before = server.live.tracker("beat-again")
        second = {r.entry: r for r in sync.push(entries, app=beat_app)}
    finally:
        set_client(previous)
        client.close()
    assert first["hourly"].outcome == first["hourly-copy"].outcome == "created"
    assert first["hourly-other"].outcome == "skipped"
    assert "schedule of entry 'hourly'" in first["hourly-other"].detail
    assert second["hourly"].outcome == second["hourly-copy"].outcome == "unchanged"
    after = server.live.tracker("beat-again")
    assert after == before  # updated_at included: nothing was written
    assert after["schedule"] == {
        "kind": "cron",
        "cron": "5 * * * *",
        "timezone": "Europe/Paris",
        "grace_seconds": 60,
    }


class _Entry:
    def __init__(self, task: str, run_every: Any) -> None:
        self.task = task
        self.schedule = run_every
