"""Webhook outbox and delivery: a real receiving HTTP server on loopback, the clock injected.

State changes are recorded with the real ``record_flip``, with ``enqueue_flips`` as its listener
(which queues the outbox rows in the same transaction); the :class:`Dispatcher` sends them over
real HTTP to :class:`Receiver`.
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
from telemhq_server.flips import record_flip
from telemhq_server.trackers import create_tracker
from telemhq_server.webhooks import (
    KEEP_DAYS,
    Dispatcher,
    RetryPolicy,
    enqueue_flips,
    event_for,
    new_secret,
    sign,
    subscribed,
    verify_signature,
)

UTC = dt.UTC
T0 = dt.datetime(2026, 6, 1, 12, 0, tzinfo=UTC)
SECRET = "whsec_test-secret"


class _Server(ThreadingHTTPServer):
    request_queue_size = 128  # the default 5 refuses bursts of concurrent deliveries


class Receiver:
    """A loopback HTTP server that records each POST and answers with scripted statuses."""

    def __init__(self, statuses: list[int] | None = None, *, port: int = 0) -> None:
        self.requests: list[tuple[dict[str, str], bytes]] = []
        self.statuses = list(statuses or [])
        self.release = threading.Event()
        self.release.set()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                receiver.requests.append((dict(self.headers.items()), body))
                receiver.release.wait(30)
                code = receiver.statuses.pop(0) if receiver.statuses else 200
                self.send_response(code)
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"ok")

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = _Server(("127.0.0.1", port), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.release.set()
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


def add_webhook(engine: Engine, url: str, events: list[str] | None = None) -> int:
    with db.write_tx(engine) as conn:
        return int(
            conn.execute(
                sa.insert(db.webhooks)
                .values(url=url, events=events or [], secret=SECRET, enabled=True, created_at=T0)
                .returning(db.webhooks.c.id)
            ).scalar_one()
        )


def add_tracker(engine: Engine) -> int:
    with db.write_tx(engine) as conn:
        return int(create_tracker(conn, {"name": "Nightly ETL", "slug": "nightly-etl"})["id"])


def add_run(engine: Engine, tracker_id: int) -> int:
    results = [
        {
            "expression": "records_processed > 0",
            "passed": False,
            "actual": 0,
            "reason": "records_processed was 0, expected > 0",
        },
        {"expression": "errors = 0", "passed": True, "actual": 0, "reason": None},
    ]
    payload = {"status": "success", "records_processed": 0, "errors": 0}
    with db.write_tx(engine) as conn:
        return int(
            conn.execute(
                sa.insert(db.runs)
                .values(
                    tracker_id=tracker_id,
                    ping_id="p-1",
                    run_id="r-1",
                    status="success",
                    passed=False,
                    duration_ms=1500.0,
                    payload=json.dumps(payload),
                    assertions=json.dumps(results),
                    received_at=T0,
                )
                .returning(db.runs.c.id)
            ).scalar_one()
        )


def flip(engine: Engine, tracker_id: int, old: str, new: str, run_id: int | None = None) -> None:
    with db.write_tx(engine) as conn:
        conn.execute(sa.update(db.trackers).where(db.trackers.c.id == tracker_id).values(state=new))
        record_flip(
            conn, tracker_id, old, new, f"{old} to {new}", run_id, T0, listeners=[enqueue_flips]
        )


def outbox(engine: Engine) -> list[Any]:
    with engine.connect() as conn:
        return conn.execute(sa.select(db.webhook_outbox).order_by(db.webhook_outbox.c.id)).all()


def attempts(engine: Engine) -> list[Any]:
    with engine.connect() as conn:
        a = db.webhook_attempts
        return conn.execute(sa.select(a).order_by(a.c.id)).all()


NO_JITTER = RetryPolicy(initial=10, factor=2, max_delay=3600, give_up_after=24 * 3600, jitter=0)


# --- pure parts -----------------------------------------------------------------------------


def test_it_signs_the_timestamp_and_body_with_hmac_sha256() -> None:
    import hashlib
    import hmac

    body = b'{"event":"tracker.down"}'
    header = sign("s3cret", body, 1_780_000_000)
    expected = hmac.new(b"s3cret", b"1780000000." + body, hashlib.sha256).hexdigest()
    assert header == f"t=1780000000,v1={expected}"
    assert verify_signature("s3cret", body, header, now=1_780_000_100)
    assert not verify_signature("wrong", body, header, now=1_780_000_100)
    assert not verify_signature("s3cret", body + b" ", header, now=1_780_000_100)
    assert not verify_signature("s3cret", body, header, now=1_780_000_000 + 301)  # replay
    assert not verify_signature("s3cret", body, "garbage", now=1_780_000_000)


def test_it_maps_state_changes_to_events() -> None:
    assert event_for("up", "failing") == "tracker.failing"
    assert event_for("up", "late") == "tracker.late"
    assert event_for("late", "down") == "tracker.down"
    assert event_for("down", "up") == "tracker.recovered"
    assert event_for("new", "up") is None
    assert event_for("up", "paused") is None
    # late is opt-in, and so is the recovery from it.
    assert not subscribed([], "tracker.late", "up")
    assert not subscribed([], "tracker.recovered", "late")
    assert subscribed(["tracker.late"], "tracker.recovered", "late")
    assert subscribed([], "tracker.recovered", "down")


def test_it_backs_off_exponentially_up_to_a_cap() -> None:
    assert [NO_JITTER.delay(n) for n in range(1, 6)] == [10, 20, 40, 80, 160]
    assert NO_JITTER.delay(30) == 3600
    jittery = RetryPolicy(initial=100, jitter=0.1)
    assert all(90 <= jittery.delay(1) <= 110 for _ in range(50))
    secret = new_secret()
    assert secret.startswith("whsec_")
    assert len(secret) > 40


# --- outbox ---------------------------------------------------------------------------------


def test_it_queues_one_outbox_row_per_subscribed_webhook_in_the_flip_transaction(
    engine: Engine,
) -> None:
    everything = add_webhook(engine, "http://127.0.0.1:9/a", ["tracker.failing", "tracker.late"])
    defaults = add_webhook(engine, "http://127.0.0.1:9/b")
    tid = add_tracker(engine)
    flip(engine, tid, "new", "up")  # not an alert
    flip(engine, tid, "up", "late")  # only the first one asked for late
    flip(engine, tid, "late", "failing")
    rows = outbox(engine)
    assert [(r.webhook_id, r.event) for r in rows] == [
        (everything, "tracker.late"),
        (everything, "tracker.failing"),
        (defaults, "tracker.failing"),
    ]

    # A failed transaction leaves neither the flip nor the alert behind.
    def crash() -> None:
        with db.write_tx(engine) as conn:
            record_flip(conn, tid, "failing", "down", "x", None, T0, listeners=[enqueue_flips])
            raise RuntimeError("crash before commit")

    with pytest.raises(RuntimeError):
        crash()
    assert len(outbox(engine)) == 3


# --- delivery -------------------------------------------------------------------------------


def test_it_delivers_a_signed_body_with_tracker_run_and_failed_assertions(
    engine: Engine, receiver: Receiver
) -> None:
    add_webhook(engine, receiver.url)
    tid = add_tracker(engine)
    flip(engine, tid, "up", "failing", add_run(engine, tid))
    clock = Clock(T0)
    dispatcher = Dispatcher(
        engine, public_url="https://mon.example.com/", policy=NO_JITTER, clock=clock
    )

    async def main() -> int:
        try:
            return await dispatcher.tick()
        finally:
            await dispatcher.aclose()

    assert asyncio.run(main()) == 1
    [(headers, body)] = receiver.requests
    assert verify_signature(SECRET, body, headers["X-TelemHQ-Signature"])
    assert headers["X-TelemHQ-Event"] == "tracker.failing"
    assert headers["Content-Type"] == "application/json"
    doc = json.loads(body)
    assert doc["event"] == "tracker.failing"
    assert doc["tracker"]["name"] == "Nightly ETL"
    assert doc["tracker"]["state"] == "failing"
    assert doc["tracker"]["previous_state"] == "up"
    assert doc["run"]["payload"] == {"status": "success", "records_processed": 0, "errors": 0}
    assert doc["failed_assertions"] == [
        {
            "expression": "records_processed > 0",
            "passed": False,
            "actual": 0,
            "reason": "records_processed was 0, expected > 0",
        }
    ]
    assert doc["dashboard_url"] == f"https://mon.example.com/dashboard/trackers/{tid}"
    assert headers["X-TelemHQ-Delivery"] == str(outbox(engine)[0].id)
    [row] = outbox(engine)
    assert db.as_utc(row.delivered_at) == T0
    assert row.attempts == 1
    [attempt] = attempts(engine)
    assert attempt.status_code == 200
    assert attempt.error is None


def test_it_retries_with_exponential_backoff_until_delivered(engine: Engine) -> None:
    receiver = Receiver(statuses=[500, 503, 502])
    try:
        add_webhook(engine, receiver.url)
        tid = add_tracker(engine)
        flip(engine, tid, "up", "down")
        clock = Clock(T0)
        dispatcher = Dispatcher(engine, policy=NO_JITTER, clock=clock)
        sent_at: list[float] = []

        async def main() -> None:
            # Walk the clock second by second through the first two minutes.
            for second in range(120):
                clock.now = T0 + dt.timedelta(seconds=second)
                if await dispatcher.tick():
                    sent_at.append(second)
            await dispatcher.aclose()

        asyncio.run(main())
    finally:
        receiver.close()
    # Attempt 1 at 0 s fails, then waits 10, 20 and 40 s: attempts at 0, 10, 30, 70.
    assert sent_at == [0, 10, 30, 70]
    assert len(receiver.requests) == 4
    [row] = outbox(engine)
    assert row.attempts == 4
    assert db.as_utc(row.delivered_at) == T0 + dt.timedelta(seconds=70)
    assert [a.status_code for a in attempts(engine)] == [500, 503, 502, 200]
    assert attempts(engine)[0].error.startswith("HTTP 500")
    # Every attempt is signed afresh and verifies.
    assert all(verify_signature(SECRET, b, h["X-TelemHQ-Signature"]) for h, b in receiver.requests)


def test_it_gives_up_after_the_bounded_time_on_a_dead_url(engine: Engine) -> None:
    dead = Receiver()
    url = dead.url
    dead.close()  # nothing listens there any more: connection refused
    add_webhook(engine, url)
    tid = add_tracker(engine)
    flip(engine, tid, "up", "down")
    clock = Clock(T0)
    policy = RetryPolicy(initial=10, factor=2, max_delay=3600, give_up_after=100, jitter=0)
    dispatcher = Dispatcher(engine, policy=policy, clock=clock)

    async def main() -> list[int]:
        sent: list[int] = []
        for second in range(0, 400, 5):
            clock.now = T0 + dt.timedelta(seconds=second)
            if await dispatcher.tick():
                sent.append(second)
        await dispatcher.aclose()
        return sent

    # 0, +10 -> 10, +20 -> 30, +40 -> 70; the next (+80 -> 150) would pass 100 s: give up.
    assert asyncio.run(main()) == [0, 10, 30, 70]
    [row] = outbox(engine)
    assert db.as_utc(row.failed_at) == T0 + dt.timedelta(seconds=70)
    assert row.delivered_at is None
    assert "ConnectError" in row.last_error
    assert [a.status_code for a in attempts(engine)] == [None] * 4


def test_an_alert_written_before_a_crash_is_delivered_after_the_restart(
    engine: Engine, db_url: str, receiver: Receiver
) -> None:
    add_webhook(engine, receiver.url)
    tid = add_tracker(engine)
    flip(engine, tid, "up", "down")
    # The process that wrote it claimed the row and died mid-delivery (lease not released).
    with db.write_tx(engine) as conn:
        conn.execute(
            sa.update(db.webhook_outbox).values(claimed_until=T0 + dt.timedelta(seconds=60))
        )
    engine.dispose()
    restarted = db.make_engine(db_url)
    clock = Clock(T0 + dt.timedelta(seconds=5))
    dispatcher = Dispatcher(restarted, policy=NO_JITTER, clock=clock)

    async def main() -> tuple[int, int]:
        early = await dispatcher.tick()  # still leased by the dead process
        clock.advance(60)
        late = await dispatcher.tick()
        await dispatcher.aclose()
        return early, late

    try:
        assert asyncio.run(main()) == (0, 1)
        assert len(receiver.requests) == 1
        assert outbox(restarted)[0].delivered_at is not None
    finally:
        restarted.dispose()


def test_two_dispatchers_never_send_the_same_row(
    engine: Engine, db_url: str, receiver: Receiver
) -> None:
    add_webhook(engine, receiver.url)
    tid = add_tracker(engine)
    for i in range(15):
        flip(engine, tid, "up", "down" if i % 2 else "failing")
    engines = [db.make_engine(db_url) for _ in range(2)]
    dispatchers = [Dispatcher(e, policy=NO_JITTER, clock=Clock(T0)) for e in engines]

    async def main() -> list[int]:
        try:  # passes until nothing is left (each takes a few rows per receiver)
            counts = [0, 0]
            while True:
                new = await asyncio.gather(*(d.tick() for d in dispatchers))
                if not any(new):
                    return counts
                counts = [c + n for c, n in zip(counts, new, strict=True)]
        finally:
            for d in dispatchers:
                await d.aclose()

    try:
        counts = asyncio.run(main())
    finally:
        for e in engines:
            e.dispose()
    assert sum(counts) == 15
    assert len(receiver.requests) == 15
    assert len({h["X-TelemHQ-Delivery"] for h, _ in receiver.requests}) == 15
    assert all(r.delivered_at is not None and r.attempts == 1 for r in outbox(engine))


def test_a_slow_receiver_does_not_hold_up_other_deliveries(engine: Engine) -> None:
    slow, fast = Receiver(), Receiver()
    slow.release.clear()  # the slow one answers only after the test lets it
    try:
        add_webhook(engine, slow.url)
        add_webhook(engine, fast.url)
        tid = add_tracker(engine)
        flip(engine, tid, "up", "down")
        policy = RetryPolicy(initial=10, jitter=0, timeout=1.0)
        dispatcher = Dispatcher(engine, policy=policy, clock=Clock(T0))

        async def main() -> None:
            await dispatcher.tick()
            await dispatcher.aclose()

        asyncio.run(main())
    finally:
        slow.close()
        fast.close()
    rows = {r.webhook_id: r for r in outbox(engine)}
    assert len(fast.requests) == 1
    by_error = sorted((r.delivered_at is None, r.last_error or "") for r in rows.values())
    assert by_error[0][0] is False  # the fast one was delivered
    assert by_error[1][0] is True  # the slow one timed out...
    assert "Timeout" in by_error[1][1]  # ...and says so


def test_it_forgets_finished_deliveries_after_the_keep_period(
    engine: Engine, receiver: Receiver
) -> None:
    add_webhook(engine, receiver.url)
    tid = add_tracker(engine)
    flip(engine, tid, "up", "down")
    flip(engine, tid, "down", "up")
    dispatcher = Dispatcher(engine, policy=NO_JITTER, clock=Clock(T0))

    async def main() -> None:
        await dispatcher.tick()
        await dispatcher.aclose()

    asyncio.run(main())
    flip(engine, tid, "up", "failing")  # still pending: never pruned
    assert dispatcher.prune(T0 + dt.timedelta(days=KEEP_DAYS - 1)) == 0
    assert dispatcher.prune(T0 + dt.timedelta(days=KEEP_DAYS + 1)) == 2
    assert [r.event for r in outbox(engine)] == ["tracker.failing"]
    assert attempts(engine) == []
