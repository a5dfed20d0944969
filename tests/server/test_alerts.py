"""Channels, policies and silences on a real database (SQLite and PostgreSQL), the clock
injected: state changes are recorded with the real ``record_flip`` and ``enqueue_alerts`` as
its listener, and the :class:`AlertDispatcher` sends through real Apprise (``json://``) to a
loopback HTTP receiver.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import Engine
from telemhq_server import db
from telemhq_server.alerts import (
    AlertDispatcher,
    enqueue_alerts,
    format_duration,
    parse_duration,
    silence_end,
    validate_channel,
    validate_silence,
)
from telemhq_server.alerts.tables import alert_outbox, channels, silences
from telemhq_server.flips import record_flip
from telemhq_server.trackers import ValidationError, create_tracker
from telemhq_server.webhooks import RetryPolicy

UTC = dt.UTC
T0 = dt.datetime(2026, 6, 1, 12, 0, tzinfo=UTC)


class Receiver:
    """A loopback HTTP server recording each JSON POST Apprise's json:// sends."""

    def __init__(self) -> None:
        self.messages: list[dict[str, Any]] = []
        #: each message's request headers, in the same order
        self.headers: list[dict[str, str]] = []
        self.status = 200
        self.hang = threading.Event()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                if receiver.hang.is_set():
                    receiver.hang.wait(0)  # answer nothing until the test ends
                    threading.Event().wait(30)
                receiver.headers.append(dict(self.headers.items()))
                receiver.messages.append(json.loads(body))
                self.send_response(receiver.status)
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"ok")

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"json://127.0.0.1:{self.server.server_address[1]}/notify"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def titles(self) -> list[str]:
        return [m["title"] for m in self.messages]

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    r = Receiver()
    yield r
    r.close()


class Clock:
    def __init__(self, now: dt.datetime) -> None:
        self.now = now

    def __call__(self) -> dt.datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += dt.timedelta(seconds=seconds)


def add_channel(engine: Engine, url: str, **body: Any) -> int:
    values = validate_channel({"url": url, "name": "team", **body}, creating=True)
    with db.write_tx(engine) as conn:
        return int(
            conn.execute(
                sa.insert(channels).values(**values, created_at=T0).returning(channels.c.id)
            ).scalar_one()
        )


def add_tracker(engine: Engine, name: str = "Nightly ETL", tags: list[str] | None = None) -> int:
    with db.write_tx(engine) as conn:
        row = create_tracker(
            conn, {"name": name, "slug": name.lower().replace(" ", "-"), "tags": tags or []}
        )
        return int(row["id"])


def add_run(
    engine: Engine, tracker_id: int, at: dt.datetime, airflow: dict[str, str] | None = None
) -> int:
    """A failed run with a failed assertion and an error (``airflow``: the block an Airflow
    task's ping carries)."""
    results = [
        {
            "expression": "records_processed > 0",
            "passed": False,
            "actual": 0,
            "reason": "records_processed was 0, expected > 0",
        },
    ]
    payload = {
        "status": "failure",
        "records_processed": 0,
        "orchestrator": "airflow",
        "error": {"type": "KeyError", "message": "'customer_id'"},
    }
    if airflow is not None:
        payload["airflow"] = airflow
    with db.write_tx(engine) as conn:
        return int(
            conn.execute(
                sa.insert(db.runs)
                .values(
                    tracker_id=tracker_id,
                    ping_id=f"p-{tracker_id}-{at.timestamp()}",
                    run_id="r-1",
                    status="failure",
                    passed=False,
                    duration_ms=1500.0,
                    payload=json.dumps(payload),
                    assertions=json.dumps(results),
                    received_at=at,
                )
                .returning(db.runs.c.id)
            ).scalar_one()
        )


def flip(  # noqa: PLR0917 - mirrors record_flip's positional order
    engine: Engine,
    tracker_id: int,
    old: str,
    new: str,
    at: dt.datetime,
    run_id: int | None = None,
    failures: int = 1,
) -> None:
    with db.write_tx(engine) as conn:
        conn.execute(
            sa.update(db.trackers)
            .where(db.trackers.c.id == tracker_id)
            .values(
                state=new,
                state_changed_at=at,
                consecutive_failures=failures if new == "failing" else 0,
            )
        )
        record_flip(
            conn, tracker_id, old, new, f"{old} to {new}", run_id, at, listeners=[enqueue_alerts]
        )


def set_failures(engine: Engine, tracker_id: int, n: int) -> None:
    with db.write_tx(engine) as conn:
        conn.execute(
            sa.update(db.trackers)
            .where(db.trackers.c.id == tracker_id)
            .values(consecutive_failures=n)
        )


def dispatcher(engine: Engine, clock: Clock, **kw: Any) -> AlertDispatcher:
    policy = kw.pop("policy", RetryPolicy(initial=10, jitter=0, timeout=5))
    return AlertDispatcher(
        engine, clock=clock, policy=policy, public_url="https://telemhq.example", recheck=5, **kw
    )


def tick(d: AlertDispatcher) -> int:
    return asyncio.run(d.tick())


def statuses(engine: Engine) -> list[tuple[str, str]]:
    o = alert_outbox
    with engine.connect() as conn:
        rows = conn.execute(sa.select(o).order_by(o.c.id)).mappings().all()
    return [
        (
            r["event"],
            "delivered"
            if r["delivered_at"]
            else "failed"
            if r["failed_at"]
            else "dropped"
            if r["dropped_at"]
            else "pending",
        )
        for r in rows
    ]


def test_it_parses_durations() -> None:
    assert parse_duration("30s", "d") == 30
    assert parse_duration("15m", "d") == 900
    assert parse_duration("1h", "d") == 3600
    assert parse_duration("2d", "d") == 172800
    assert format_duration(3600) == "1h"
    with pytest.raises(ValidationError):
        parse_duration("0s", "d")
    with pytest.raises(ValidationError):
        parse_duration("5 minutes", "d")


def test_it_sends_the_failure_with_why_and_the_recovery(engine: Engine, receiver: Receiver) -> None:
    clock = Clock(T0)
    add_channel(engine, receiver.url)
    tracker = add_tracker(engine)
    run = add_run(engine, tracker, T0)
    flip(engine, tracker, "up", "failing", T0, run)
    d = dispatcher(engine, clock)
    clock.advance(1)
    assert tick(d) == 1
    [message] = receiver.messages
    assert message["title"] == "Nightly ETL is failing"
    assert "records_processed > 0: records_processed was 0, expected > 0" in message["message"]
    assert "Error: KeyError: 'customer_id'" in message["message"]
    assert "https://telemhq.example/dashboard/trackers/" in message["message"]
    assert "for 1s now" in message["message"]
    clock.advance(600)
    flip(engine, tracker, "failing", "up", clock.now)
    assert tick(d) == 1
    assert receiver.titles()[-1] == "Nightly ETL has recovered"
    assert "after 10m" in receiver.messages[-1]["message"]
    assert d.counts.sent
    assert any(line.startswith("telemhq_alerts_sent_total") for line in d.counts.lines())


def test_it_retries_a_failed_delivery_with_backoff(engine: Engine, receiver: Receiver) -> None:
    clock = Clock(T0)
    add_channel(engine, receiver.url)
    tracker = add_tracker(engine)
    flip(engine, tracker, "up", "down", T0)
    d = dispatcher(engine, clock)
    receiver.status = 500
    assert tick(d) == 1
    assert statuses(engine) == [("down", "pending")]
    clock.advance(5)
    assert tick(d) == 0  # not before the backoff
    receiver.status = 200
    clock.advance(6)
    assert tick(d) == 1
    assert statuses(engine) == [("down", "delivered")]
    assert len(receiver.messages) == 2


def test_after_failures_waits_for_the_nth_failed_run(engine: Engine, receiver: Receiver) -> None:
    clock = Clock(T0)
    add_channel(engine, receiver.url, after_failures=3)
    tracker = add_tracker(engine)
    flip(engine, tracker, "up", "failing", T0, failures=1)
    d = dispatcher(engine, clock)
    assert tick(d) == 0
    set_failures(engine, tracker, 2)
    clock.advance(5)
    assert tick(d) == 0
    set_failures(engine, tracker, 3)
    clock.advance(5)
    assert tick(d) == 1
    assert receiver.titles() == ["Nightly ETL is failing"]


def test_reminders_repeat_while_bad_up_to_max_repeats(engine: Engine, receiver: Receiver) -> None:
    clock = Clock(T0)
    add_channel(engine, receiver.url, repeat_every="1h", max_repeats=2)
    tracker = add_tracker(engine)
    flip(engine, tracker, "up", "down", T0)
    d = dispatcher(engine, clock)
    tick(d)
    for _ in range(4):
        clock.advance(3600)
        tick(d)
    assert receiver.titles() == [
        "Nightly ETL is down",
        "Reminder 1: Nightly ETL is down",
        "Reminder 2: Nightly ETL is down",
    ]


def test_a_reminder_stops_when_the_tracker_recovers(engine: Engine, receiver: Receiver) -> None:
    clock = Clock(T0)
    add_channel(engine, receiver.url, repeat_every="1h", max_repeats=5)
    tracker = add_tracker(engine)
    flip(engine, tracker, "up", "down", T0)
    d = dispatcher(engine, clock)
    tick(d)
    clock.advance(1800)
    flip(engine, tracker, "down", "up", clock.now)
    tick(d)
    clock.advance(3600)
    tick(d)
    assert receiver.titles() == ["Nightly ETL is down", "Nightly ETL has recovered"]


def test_delay_tells_only_if_still_bad(engine: Engine, receiver: Receiver) -> None:
    clock = Clock(T0)
    add_channel(engine, receiver.url, delay="30m")
    tracker = add_tracker(engine)
    flip(engine, tracker, "up", "failing", T0)
    d = dispatcher(engine, clock)
    assert tick(d) == 0
    clock.advance(600)
    flip(engine, tracker, "failing", "up", clock.now)
    clock.advance(1800)
    tick(d)
    assert receiver.messages == []  # neither the problem nor a recovery nobody needed
    flip(engine, tracker, "up", "down", clock.now)
    clock.advance(1799)
    assert tick(d) == 0
    clock.advance(1)
    assert tick(d) == 1
    assert receiver.titles() == ["Nightly ETL is down"]


def test_the_selector_routes_by_tag_orchestrator_and_name(
    engine: Engine, receiver: Receiver
) -> None:
    clock = Clock(T0)
    add_channel(
        engine,
        receiver.url,
        selector={"tags": ["team:data"], "orchestrator": "airflow", "name": "etl_*"},
    )
    matching = add_tracker(engine, "etl_daily", ["team:data"])
    other_tag = add_tracker(engine, "etl_other", ["team:web"])
    other_name = add_tracker(engine, "report", ["team:data"])
    for tracker in (matching, other_tag, other_name):
        flip(engine, tracker, "up", "failing", T0, add_run(engine, tracker, T0))
    tick(dispatcher(engine, clock))
    assert receiver.titles() == ["etl_daily is failing"]


def test_late_is_opt_in(engine: Engine, receiver: Receiver) -> None:
    clock = Clock(T0)
    add_channel(engine, receiver.url)
    tracker = add_tracker(engine)
    flip(engine, tracker, "up", "late", T0)
    flip(engine, tracker, "late", "up", T0 + dt.timedelta(seconds=30))
    assert tick(dispatcher(engine, clock)) == 0
    assert statuses(engine) == []


def add_silence(engine: Engine, body: dict[str, Any], now: dt.datetime) -> int:
    values = validate_silence(body, now)
    with db.write_tx(engine) as conn:
        return int(
            conn.execute(
                sa.insert(silences).values(**values, created_at=now).returning(silences.c.id)
            ).scalar_one()
        )


def test_a_silence_holds_then_sends_one_message_if_still_bad(
    engine: Engine, receiver: Receiver
) -> None:
    clock = Clock(T0)
    add_channel(engine, receiver.url)
    tracker = add_tracker(engine, "nightly", ["nightly"])
    add_silence(
        engine,
        {"selector": {"tags": ["nightly"]}, "ends_at": (T0 + dt.timedelta(hours=2)).isoformat()},
        T0,
    )
    flip(engine, tracker, "up", "failing", T0)
    d = dispatcher(engine, clock)
    assert tick(d) == 0
    clock.advance(1800)
    flip(engine, tracker, "failing", "down", clock.now)
    assert tick(d) == 0
    with engine.connect() as conn:  # the flips are recorded all the same
        assert conn.execute(sa.select(sa.func.count()).select_from(db.flips)).scalar() == 2
    clock.advance(5400)
    tick(d)
    assert receiver.titles() == ["nightly is down"]


def test_a_silence_that_ends_after_recovery_sends_nothing(
    engine: Engine, receiver: Receiver
) -> None:
    clock = Clock(T0)
    add_channel(engine, receiver.url)
    tracker = add_tracker(engine, "nightly", ["nightly"])
    add_silence(engine, {"selector": {"name": "night*"}, "duration": "2h"}, T0)
    flip(engine, tracker, "up", "failing", T0)
    d = dispatcher(engine, clock)
    tick(d)
    clock.advance(600)
    flip(engine, tracker, "failing", "up", clock.now)
    tick(d)
    clock.advance(7200)
    tick(d)
    assert receiver.messages == []
    assert statuses(engine) == [("failing", "dropped"), ("recovered", "dropped")]


def test_a_recurring_silence_follows_its_timezone() -> None:
    row = {
        "id": 1,
        "ended_at": None,
        "starts_at": None,
        "ends_at": None,
        "cron": "0 2 * * 6",
        "duration_seconds": 7200,
        "timezone": "Europe/Berlin",
    }
    # Saturday 2026-06-06 02:00 in Berlin is 00:00 UTC (summer time).
    saturday = dt.datetime(2026, 6, 6, 0, 30, tzinfo=UTC)
    assert silence_end(row, saturday) == dt.datetime(2026, 6, 6, 2, 0, tzinfo=UTC)
    assert silence_end(row, saturday + dt.timedelta(hours=2)) is None
    assert silence_end(row, saturday - dt.timedelta(hours=1)) is None
    # In winter the same wall time is 01:00 UTC.
    winter = dt.datetime(2026, 12, 5, 1, 30, tzinfo=UTC)
    assert silence_end(row, winter) == dt.datetime(2026, 12, 5, 3, 0, tzinfo=UTC)


def test_a_hanging_channel_delays_no_other(engine: Engine, receiver: Receiver) -> None:
    hanging = Receiver()
    hanging.hang.set()
    try:
        clock = Clock(T0)
        add_channel(engine, hanging.url)
        add_channel(engine, receiver.url)
        tracker = add_tracker(engine)
        flip(engine, tracker, "up", "down", T0)
        d = dispatcher(engine, clock, policy=RetryPolicy(initial=10, jitter=0, timeout=1))
        started = dt.datetime.now(UTC)
        tick(d)
        took = (dt.datetime.now(UTC) - started).total_seconds()
        assert receiver.titles() == ["Nightly ETL is down"]
        assert took < 4  # bounded by the hanging channel's 1 s deadline, not its 30 s hang
        o = alert_outbox
        with engine.connect() as conn:
            errors = [r.last_error for r in conn.execute(sa.select(o.c.last_error))]
        assert any(e and e.startswith("Timeout") for e in errors)
    finally:
        hanging.hang.clear()
        hanging.close()


def test_two_dispatchers_send_each_message_once(engine: Engine, receiver: Receiver) -> None:
    clock = Clock(T0)
    add_channel(engine, receiver.url)
    for i in range(5):
        flip(engine, add_tracker(engine, f"job {i}"), "up", "down", T0)
    a, b = dispatcher(engine, clock), dispatcher(engine, clock)

    async def both() -> None:
        # at most 2 per channel and pass: both keep claiming until the outbox is drained
        for _ in range(5):
            await asyncio.gather(a.tick(), b.tick())

    asyncio.run(both())
    assert sorted(receiver.titles()) == [f"job {i} is down" for i in range(5)]


def test_a_failed_dag_run_with_five_failed_tasks_is_one_message(
    engine: Engine, receiver: Receiver
) -> None:
    clock = Clock(T0)
    add_channel(engine, receiver.url)
    names = ["etl_daily", *(f"etl_daily.task_{i}" for i in range(5))]
    for offset, name in enumerate(names):
        tracker = add_tracker(engine, name)
        at = T0 + dt.timedelta(seconds=offset)
        run = add_run(
            engine, tracker, at, {"dag_id": "etl_daily", "task_id": "t", "run_id": "run-7"}
        )
        flip(engine, tracker, "up", "failing", at, run)
    d = dispatcher(engine, clock, group_window=60)
    clock.advance(10)
    assert tick(d) == 0  # waiting for the rest of its group
    clock.advance(50)
    # a pass looks at 2 messages of a channel: those not yet seen wait their own window out
    assert sum(tick(d) for _ in range(4)) == 1
    [message] = receiver.messages
    assert message["title"] == "Airflow run etl_daily run-7 failed: 6 failing"
    for name in names:
        assert (
            f"- {name}: records_processed was 0, expected > 0; KeyError: 'customer_id'"
            in (message["message"])
        )
    # every tracker counts as told: each one's recovery will go out
    assert statuses(engine) == [("failing", "delivered")] * 6


def add_scheduled(engine: Engine, name: str) -> int:
    with db.write_tx(engine) as conn:
        row = create_tracker(
            conn,
            {
                "name": name,
                "slug": name,
                "tags": [],
                "schedule_kind": "period",
                "period_seconds": 3600,
            },
        )
    tracker = int(row["id"])
    add_run(engine, tracker, T0 - dt.timedelta(hours=1))  # orchestrator: airflow
    return tracker


def test_twenty_of_thirty_airflow_trackers_late_is_one_message(
    engine: Engine, receiver: Receiver
) -> None:
    clock = Clock(T0)
    add_channel(engine, receiver.url, events=["late", "failing", "down", "recovered"])
    trackers = [add_scheduled(engine, f"job{i:02}") for i in range(30)]
    for tracker in trackers[:20]:
        flip(engine, tracker, "up", "late", T0)
    d = dispatcher(engine, clock, group_window=60)
    clock.advance(60)
    for _ in range(3):
        tick(d)
    assert receiver.titles() == ["20 Airflow jobs are late: is the scheduler running?"]
    assert "- job00" in receiver.messages[0]["message"]


def test_a_few_late_trackers_are_told_one_by_one(engine: Engine, receiver: Receiver) -> None:
    clock = Clock(T0)
    add_channel(engine, receiver.url, events=["late"])
    trackers = [add_scheduled(engine, f"job{i:02}") for i in range(30)]
    for tracker in trackers[:3]:
        flip(engine, tracker, "up", "late", T0)
    d = dispatcher(engine, clock, group_window=60)
    clock.advance(60)
    for _ in range(3):
        tick(d)
    assert sorted(receiver.titles()) == [f"job0{i} is late" for i in range(3)]
