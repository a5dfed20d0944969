"""The missed-run detector against a real database (SQLite file and PostgreSQL), clock injected.

Pings are simulated by :func:`ping`, which does to the tracker row what the ingest writer does
(``last_ping_at``, and a success turning the tracker ``up`` with a flip), so that these tests
exercise the detector alone; the end-to-end path over HTTP is covered in test_webhooks_e2e.
"""

from __future__ import annotations

import datetime as dt
import json
import threading
import time
import uuid
from typing import Any
from zoneinfo import ZoneInfo

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import Engine
from telemhq_server import db, states
from telemhq_server.app import TelemHQ
from telemhq_server.detector import DETECT_INTERVAL, Detector
from telemhq_server.flips import record_flip
from telemhq_server.trackers import create_tracker

from tests.server.helpers import AppClient, make_tracker, tracker_of

UTC = dt.UTC
T0 = dt.datetime(2026, 6, 1, 12, 0, tzinfo=UTC)


def tracker(engine: Engine, **fields: Any) -> int:
    values: dict[str, Any] = {"name": f"job {uuid.uuid4().hex[:6]}", **fields}
    values.setdefault("slug", values["name"].replace(" ", "-"))
    with db.write_tx(engine) as conn:
        return int(create_tracker(conn, values)["id"])


def ping(engine: Engine, tracker_id: int, at: dt.datetime, *, start: bool = False) -> None:
    """What the ingest writer does to the tracker row for a success (or a ``start``)."""
    t = db.trackers
    with db.write_tx(engine) as conn:
        row = conn.execute(sa.select(t).where(t.c.id == tracker_id)).one()
        values: dict[str, Any] = {"last_ping_at": at}
        if start:
            values["open_start_at"] = at
        else:
            values.update(last_run_at=at, open_start_at=None)
            move = states.on_run(
                states.TrackerStatus(row.state, row.consecutive_failures, row.failure_threshold),
                "success",
                [],
            )
            if move.changed:
                assert move.reason is not None
                values.update(state=move.state, state_changed_at=at)
                record_flip(conn, tracker_id, row.state, move.state, move.reason, None, at)
        conn.execute(sa.update(t).where(t.c.id == tracker_id).values(**values))


def set_state(engine: Engine, tracker_id: int, **values: Any) -> None:
    with db.write_tx(engine) as conn:
        conn.execute(sa.update(db.trackers).where(db.trackers.c.id == tracker_id).values(**values))


def state(engine: Engine, tracker_id: int) -> str:
    with engine.connect() as conn:
        return str(
            conn.execute(
                sa.select(db.trackers.c.state).where(db.trackers.c.id == tracker_id)
            ).scalar_one()
        )


def flips(engine: Engine, tracker_id: int | None = None) -> list[tuple[str, str, str]]:
    f = db.flips
    query = sa.select(f.c.old_state, f.c.new_state, f.c.reason).order_by(f.c.id)
    if tracker_id is not None:
        query = query.where(f.c.tracker_id == tracker_id)
    with engine.connect() as conn:
        return [(r.old_state, r.new_state, r.reason) for r in conn.execute(query)]


def detector_flips(engine: Engine, tracker_id: int | None = None) -> list[tuple[str, str]]:
    return [(o, n) for o, n, _ in flips(engine, tracker_id) if n in ("late", "down")]


PERIOD = {"schedule_kind": "period", "period_seconds": 3600, "grace_seconds": 600}


def test_it_marks_a_tracker_late_then_down_as_time_passes(engine: Engine) -> None:
    tid = tracker(engine, **PERIOD)
    ping(engine, tid, T0)
    detector = Detector(engine)
    hour = dt.timedelta(hours=1)
    assert detector.tick(T0 + hour - dt.timedelta(seconds=1)).flips == []
    assert state(engine, tid) == "up"
    assert detector.tick(T0 + hour).flips == [(tid, "up", "late")]
    assert detector.tick(T0 + hour + dt.timedelta(minutes=9)).flips == []
    assert detector.tick(T0 + hour + dt.timedelta(minutes=10)).flips == [(tid, "late", "down")]
    assert detector.tick(T0 + 5 * hour).flips == []
    assert state(engine, tid) == "down"
    late, down = [f for f in flips(engine, tid) if f[1] in ("late", "down")]
    assert late[2] == "expected a ping at 2026-06-01T13:00:00Z; none yet"
    assert down[2] == (
        "expected a ping at 2026-06-01T13:00:00Z; none by 2026-06-01T13:10:00Z (grace 600s)"
    )
    # The next ping brings it back, and the expectation moves on from that ping.
    ping(engine, tid, T0 + 6 * hour)
    assert state(engine, tid) == "up"
    assert detector.tick(T0 + 6 * hour + dt.timedelta(minutes=59)).flips == []
    with engine.connect() as conn:
        nxt = conn.execute(sa.select(db.trackers.c.next_expected_at)).scalar_one()
    assert db.as_utc(nxt) == T0 + 7 * hour


def test_it_goes_straight_to_down_when_it_wakes_up_past_grace(engine: Engine) -> None:
    tid = tracker(engine, **PERIOD)
    ping(engine, tid, T0)
    assert Detector(engine).tick(T0 + dt.timedelta(days=1)).flips == [(tid, "up", "down")]


def test_it_leaves_paused_and_unscheduled_trackers_alone(engine: Engine) -> None:
    paused = tracker(engine, **PERIOD, schedule_set_at=T0)
    ping(engine, paused, T0)
    set_state(engine, paused, paused=True, state="paused")
    paused_never_pinged = tracker(engine, **PERIOD, schedule_set_at=T0)
    set_state(engine, paused_never_pinged, paused=True, state="paused")
    unscheduled = tracker(engine)
    ping(engine, unscheduled, T0)
    unscheduled_never_pinged = tracker(engine)
    assert Detector(engine).tick(T0 + dt.timedelta(days=30)).flips == []
    assert state(engine, paused) == "paused"
    assert state(engine, paused_never_pinged) == "paused"
    assert state(engine, unscheduled) == "up"
    assert state(engine, unscheduled_never_pinged) == "new"


# -- trackers never pinged: their first run is expected too -------------------------------------


def next_expected(engine: Engine, tracker_id: int) -> dt.datetime | None:
    with engine.connect() as conn:
        value = conn.execute(
            sa.select(db.trackers.c.next_expected_at).where(db.trackers.c.id == tracker_id)
        ).scalar_one()
    return db.as_utc(value)


def alerting_detector(engine: Engine) -> Detector:
    """A detector that queues webhooks on its flips, as the app's does."""
    from telemhq_server.flips import FlipListeners
    from telemhq_server.webhooks import enqueue_flips

    listeners = FlipListeners()
    listeners.add(enqueue_flips)
    return Detector(engine, listeners=listeners)


def add_webhook(engine: Engine) -> None:
    with db.write_tx(engine) as conn:
        conn.execute(
            sa.insert(db.webhooks).values(
                url="http://127.0.0.1:9/hook",
                events=["tracker.late", "tracker.down", "tracker.up"],
                secret="whsec_detector_test_secret_0123456789",
                enabled=True,
                created_at=T0,
            )
        )


def outbox(engine: Engine) -> list[tuple[int, str, str, str]]:
    """(tracker id, event, previous state, state) of every queued webhook, in order."""
    o = db.webhook_outbox
    with engine.connect() as conn:
        rows = conn.execute(sa.select(o.c.tracker_id, o.c.event, o.c.body).order_by(o.c.id))
        bodies = [(r.tracker_id, r.event, json.loads(r.body)["tracker"]) for r in rows]
    return [(tid, event, t["previous_state"], t["state"]) for tid, event, t in bodies]


def test_a_never_pinged_cron_tracker_goes_late_then_down_after_its_first_fire_time(
    engine: Engine,
) -> None:
    add_webhook(engine)
    # Set at 14:00 Berlin time (CEST); the first 02:30 after that is the next night's.
    tid = tracker(
        engine,
        schedule_kind="cron",
        cron="30 2 * * *",
        timezone="Europe/Berlin",
        grace_seconds=600,
        schedule_set_at=T0,
    )
    first = berlin(2026, 6, 2, 2, 30)
    assert first == dt.datetime(2026, 6, 2, 0, 30, tzinfo=UTC)
    detector = alerting_detector(engine)
    assert detector.tick(T0 + dt.timedelta(minutes=1)).flips == []
    assert next_expected(engine, tid) == first  # stored by the first pass
    second = dt.timedelta(seconds=1)
    assert detector.tick(first - second).flips == []
    assert state(engine, tid) == "new"
    assert detector.tick(first).flips == [(tid, "new", "late")]
    assert detector.tick(first).flips == []
    assert detector.tick(first + dt.timedelta(minutes=10) - second).flips == []
    assert detector.tick(first + dt.timedelta(minutes=10)).flips == [(tid, "late", "down")]
    assert detector.tick(first + dt.timedelta(days=3)).flips == []
    assert state(engine, tid) == "down"
    assert flips(engine, tid) == [
        ("new", "late", "expected a first ping at 2026-06-02T00:30:00Z; none yet"),
        (
            "late",
            "down",
            "expected a first ping at 2026-06-02T00:30:00Z; none by 2026-06-02T00:40:00Z "
            "(grace 600s)",
        ),
    ]
    assert outbox(engine) == [
        (tid, "tracker.late", "new", "late"),
        (tid, "tracker.down", "late", "down"),
    ]
    # Its first ping, however late, brings it up, and the schedule goes on from that ping.
    ping(engine, tid, first + dt.timedelta(days=3, hours=1))
    assert state(engine, tid) == "up"
    assert detector.tick(berlin(2026, 6, 6, 2, 29)).flips == []
    assert detector.tick(berlin(2026, 6, 6, 2, 30)).flips == [(tid, "up", "late")]


def test_a_never_pinged_period_tracker_goes_late_then_down_one_period_after_it_was_set(
    engine: Engine,
) -> None:
    add_webhook(engine)
    tid = tracker(engine, **PERIOD, schedule_set_at=T0)
    detector = alerting_detector(engine)
    hour, second = dt.timedelta(hours=1), dt.timedelta(seconds=1)
    assert detector.tick(T0 + hour - second).flips == []
    assert next_expected(engine, tid) == T0 + hour
    assert state(engine, tid) == "new"
    assert detector.tick(T0 + hour).flips == [(tid, "new", "late")]
    assert detector.tick(T0 + hour + dt.timedelta(minutes=10) - second).flips == []
    assert detector.tick(T0 + hour + dt.timedelta(minutes=10)).flips == [(tid, "late", "down")]
    assert detector_flips(engine, tid) == [("new", "late"), ("late", "down")]
    assert outbox(engine) == [
        (tid, "tracker.late", "new", "late"),
        (tid, "tracker.down", "late", "down"),
    ]


def test_a_never_pinged_tracker_found_past_its_grace_goes_straight_to_down(
    engine: Engine,
) -> None:
    tid = tracker(engine, **PERIOD, schedule_set_at=T0)
    assert Detector(engine).tick(T0 + dt.timedelta(days=1)).flips == [(tid, "new", "down")]
    assert flips(engine, tid)[0][2] == (
        "expected a first ping at 2026-06-01T13:00:00Z; none by 2026-06-01T13:10:00Z (grace 600s)"
    )


def test_a_first_ping_in_time_keeps_it_from_flipping(engine: Engine) -> None:
    tid = tracker(engine, **PERIOD, schedule_set_at=T0)
    detector = Detector(engine)
    detector.tick(T0 + dt.timedelta(minutes=1))  # stores the first expectation, T0 + 1 h
    ping(engine, tid, T0 + dt.timedelta(minutes=50))
    assert state(engine, tid) == "up"
    # The next ping is now due one period after that first one, not one after T0.
    for minutes in (60, 70, 109):
        assert detector.tick(T0 + dt.timedelta(minutes=minutes)).flips == [], minutes
    assert detector.tick(T0 + dt.timedelta(minutes=110)).flips == [(tid, "up", "late")]
    assert detector_flips(engine, tid) == [("up", "late")]
    assert [f[:2] for f in flips(engine, tid)] == [("new", "up"), ("up", "late")]


def test_a_ping_between_the_read_and_the_claim_wins(engine: Engine) -> None:
    """The claim sees the row again inside its transaction: a first ping that arrived after
    the detector read the tracker (another process, or the ingest writer) is not overruled."""
    tid = tracker(engine, **PERIOD, schedule_set_at=T0)
    detector = Detector(engine)
    detector.tick(T0)
    real_pages = detector._pages

    def pages_then_ping(query: Any) -> Any:
        for rows in real_pages(query):
            if any(r.id == tid and r.state == "new" for r in rows):
                ping(engine, tid, T0 + dt.timedelta(minutes=59))
            yield rows

    detector._pages = pages_then_ping  # type: ignore[method-assign]
    assert detector.tick(T0 + dt.timedelta(hours=2)).flips == []
    assert state(engine, tid) == "up"
    assert detector_flips(engine, tid) == []


def test_an_auto_created_tracker_is_unaffected(engine: Engine) -> None:
    """A tracker a ping key creates has no schedule: its first ping made it, nothing is
    expected of it, and a later sync that adds a schedule counts from its last ping."""
    from telemhq_server.trackers import from_first_ping

    with db.write_tx(engine) as conn:
        row = create_tracker(conn, from_first_ping("etl-load", {"job": "etl.load"}))
    tid = int(row["id"])
    assert row["schedule_set_at"] is None
    ping(engine, tid, T0)
    detector = Detector(engine)
    assert detector.tick(T0 + dt.timedelta(days=30)).flips == []
    assert state(engine, tid) == "up"
    # One created by a `start` (no end yet, so never pinged) stays `new` without a schedule.
    with db.write_tx(engine) as conn:
        started = int(create_tracker(conn, from_first_ping("etl-start", {}))["id"])
    ping(engine, started, T0, start=True)
    assert detector.tick(T0 + dt.timedelta(days=30)).flips == []
    assert state(engine, started) == "new"
    assert next_expected(engine, tid) is None


def test_it_takes_a_failing_tracker_down_but_not_late(engine: Engine) -> None:
    tid = tracker(engine, **PERIOD)
    ping(engine, tid, T0)
    set_state(engine, tid, state="failing")
    detector = Detector(engine)
    assert detector.tick(T0 + dt.timedelta(minutes=65)).flips == []
    assert detector.tick(T0 + dt.timedelta(minutes=70)).flips == [(tid, "failing", "down")]


def test_it_marks_a_start_without_end_down_after_the_max_runtime(engine: Engine) -> None:
    tid = tracker(engine, max_runtime_seconds=900)
    ping(engine, tid, T0)
    ping(engine, tid, T0 + dt.timedelta(hours=1), start=True)
    detector = Detector(engine)
    assert detector.tick(T0 + dt.timedelta(hours=1, minutes=14)).flips == []
    assert detector.tick(T0 + dt.timedelta(hours=1, minutes=15)).flips == [(tid, "up", "down")]
    assert "has not ended within the max runtime of 900s" in flips(engine, tid)[-1][2]
    assert detector.tick(T0 + dt.timedelta(hours=9)).flips == []


def test_it_does_not_flag_a_run_that_ended_in_time(engine: Engine) -> None:
    tid = tracker(engine, max_runtime_seconds=900)
    ping(engine, tid, T0, start=True)
    ping(engine, tid, T0 + dt.timedelta(minutes=10))
    assert Detector(engine).tick(T0 + dt.timedelta(hours=5)).flips == []


def test_it_uses_an_edited_schedule_rather_than_a_stale_expectation(engine: Engine) -> None:
    tid = tracker(engine, **PERIOD)
    ping(engine, tid, T0)
    detector = Detector(engine)
    detector.tick(T0 + dt.timedelta(minutes=1))  # stores next_expected_at = T0 + 1 h
    set_state(engine, tid, period_seconds=24 * 3600)  # the user relaxes the schedule
    assert detector.tick(T0 + dt.timedelta(hours=3)).flips == []
    assert detector.tick(T0 + dt.timedelta(hours=24)).flips == [(tid, "up", "late")]


def test_it_keeps_detecting_across_a_restart(engine: Engine, db_url: str) -> None:
    tid = tracker(engine, **PERIOD)
    ping(engine, tid, T0)
    assert Detector(engine).tick(T0 + dt.timedelta(minutes=61)).flips == [(tid, "up", "late")]
    # A new process: new engine, new detector, nothing shared but the database.
    restarted = db.make_engine(db_url)
    try:
        assert Detector(restarted).tick(T0 + dt.timedelta(minutes=61)).flips == []
        later = T0 + dt.timedelta(minutes=71)
        assert Detector(restarted).tick(later).flips == [(tid, "late", "down")]
    finally:
        restarted.dispose()


@pytest.mark.parametrize("first", ["up", "new"], ids=["pinged", "never-pinged"])
def test_two_detectors_on_one_database_never_flip_twice(
    engine: Engine, db_url: str, first: str
) -> None:
    """Two detectors with their own engines (own connections, as two processes would have)
    tick at the same instants, side by side; every change is recorded exactly once."""
    ids = [tracker(engine, **PERIOD, schedule_set_at=T0) for _ in range(20)]
    if first == "up":
        for tid in ids:
            ping(engine, tid, T0)
    engines = [db.make_engine(db_url) for _ in range(2)]
    detectors = [Detector(e) for e in engines]
    claimed: list[list[tuple[int, str, str]]] = [[], []]
    try:
        for now in (T0 + dt.timedelta(minutes=60), T0 + dt.timedelta(minutes=70)):
            barrier = threading.Barrier(2)
            errors: list[BaseException] = []

            def work(
                i: int,
                at: dt.datetime = now,
                gate: threading.Barrier = barrier,
                errors: list[BaseException] = errors,
            ) -> None:
                try:
                    gate.wait()
                    claimed[i].extend(detectors[i].tick(at).flips)
                except BaseException as exc:  # surfaced below
                    errors.append(exc)

            threads = [threading.Thread(target=work, args=(i,)) for i in range(2)]
            for th in threads:
                th.start()
            for th in threads:
                th.join(60)
            assert errors == []
    finally:
        for e in engines:
            e.dispose()
    stored = detector_flips(engine)
    assert len(stored) == 40  # 20 x up->late, 20 x late->down
    assert sorted(claimed[0] + claimed[1]) == sorted(
        [(tid, first, "late") for tid in ids] + [(tid, "late", "down") for tid in ids]
    )
    for tid in ids:
        assert detector_flips(engine, tid) == [(first, "late"), ("late", "down")]


BERLIN = ZoneInfo("Europe/Berlin")


def berlin(*args: int, fold: int = 0) -> dt.datetime:
    return dt.datetime(*args, tzinfo=BERLIN, fold=fold).astimezone(UTC)


@pytest.mark.parametrize(
    ("night", "job_runs"),
    [
        # Spring forward 2026-03-29: 02:30 does not exist; cron runs the job at 03:00 CEST.
        ("spring", [berlin(2026, 3, d, 2, 30) for d in (27, 28)] + [berlin(2026, 3, 29, 3, 0)]),
        # Fall back 2026-10-25: 02:30 happens twice; the job runs at the first one...
        (
            "fall-1st",
            [berlin(2026, 10, d, 2, 30) for d in (23, 24)] + [berlin(2026, 10, 25, 2, 30)],
        ),
        # ...or, with another scheduler, at the second one.
        (
            "fall-2nd",
            [berlin(2026, 10, d, 2, 30) for d in (23, 24)] + [berlin(2026, 10, 25, 2, 30, fold=1)],
        ),
    ],
)
def test_it_raises_no_false_alert_for_a_daily_0230_job_across_dst(
    engine: Engine, night: str, job_runs: list[dt.datetime]
) -> None:
    tid = tracker(
        engine,
        schedule_kind="cron",
        cron="30 2 * * *",
        timezone="Europe/Berlin",
        grace_seconds=600,
    )
    last = job_runs[-1]
    runs = [*job_runs, berlin(last.year, last.month, last.day + 1, 2, 30)]
    detector = Detector(engine)
    now = runs[0] - dt.timedelta(minutes=1)
    end = runs[-1] + dt.timedelta(hours=1)
    pending = list(runs)
    while now <= end:  # every 5 minutes for three days, pinging when the job runs
        while pending and pending[0] <= now:
            ping(engine, tid, pending.pop(0))
        detector.tick(now)
        now += dt.timedelta(minutes=5)
    assert detector_flips(engine, tid) == [], night
    assert state(engine, tid) == "up"


def test_it_alerts_when_the_job_really_misses_the_dst_night(engine: Engine) -> None:
    tid = tracker(
        engine,
        schedule_kind="cron",
        cron="30 2 * * *",
        timezone="Europe/Berlin",
        grace_seconds=600,
    )
    ping(engine, tid, berlin(2026, 3, 28, 2, 30))
    detector = Detector(engine)
    assert detector.tick(berlin(2026, 3, 29, 3, 29)).flips == []
    assert detector.tick(berlin(2026, 3, 29, 3, 30)).flips == [(tid, "up", "late")]
    assert detector.tick(berlin(2026, 3, 29, 3, 40)).flips == [(tid, "late", "down")]


def test_two_server_processes_on_one_postgresql_alert_once(postgres_url: str) -> None:
    """The real thing: ``telemhq-server`` with two worker processes (each running its own
    detector and webhook sender) on one PostgreSQL; a missed ping makes one flip per state
    and one webhook, not two."""
    from tests.live_server import LiveServer
    from tests.server.test_webhooks import Receiver

    schema = f"t_detector_{uuid.uuid4().hex[:10]}"
    admin = sa.create_engine(postgres_url)
    with admin.begin() as conn:
        conn.execute(sa.text(f'CREATE SCHEMA "{schema}"'))
    receiver = Receiver()
    try:
        url = f"{postgres_url}?options=-csearch_path%3D{schema}"
        with LiveServer(database_url=url, workers=2) as live:
            live.api("POST", "/webhooks", json={"url": receiver.url})
            tracker = live.create_tracker(
                name="every second",
                schedule={"kind": "period", "period_seconds": 1, "grace_seconds": 1},
            )
            assert live.ping(tracker).status_code == 200
            deadline = time.monotonic() + 60
            while live.tracker(tracker["id"])["state"] != "down":
                assert time.monotonic() < deadline, "the tracker never went down"
                time.sleep(0.2)
            while not receiver.requests:
                assert time.monotonic() < deadline, "no webhook arrived"
                time.sleep(0.1)
            # Give both processes' detectors and senders another pass each.
            time.sleep(DETECT_INTERVAL + 1)
            changes = [(f["old_state"], f["new_state"]) for f in live.flips(tracker["id"])]
        missed = [c for c in changes if c[1] in ("late", "down")]
        assert missed in ([("up", "down")], [("up", "late"), ("late", "down")]), changes
        events = [json.loads(body)["event"] for _, body in receiver.requests]
        assert events == ["tracker.down"]
    finally:
        receiver.close()
        with admin.begin() as conn:
            conn.execute(sa.text(f'DROP SCHEMA "{schema}" CASCADE'))
        admin.dispose()


def test_a_detector_flip_queues_the_same_alert_as_a_single_flip(engine: Engine) -> None:
    from telemhq_server.flips import FlipListeners
    from telemhq_server.webhooks import build_body, enqueue_flips

    with db.write_tx(engine) as conn:
        conn.execute(
            sa.insert(db.webhooks).values(
                url="http://127.0.0.1:9/h",
                events=["tracker.late", "tracker.down"],
                secret="whsec_detector_test_secret_01",
                enabled=True,
                created_at=T0,
            )
        )
    tid = tracker(engine, **PERIOD)
    ping(engine, tid, T0)
    at = T0 + dt.timedelta(hours=1)
    listeners = FlipListeners()
    listeners.add(enqueue_flips)  # as the app's webhooks register it
    assert Detector(engine, listeners=listeners).tick(at).flips == [(tid, "up", "late")]
    with engine.connect() as conn:
        [row] = conn.execute(sa.select(db.webhook_outbox)).all()
        expected = build_body(
            conn,
            event="tracker.late",
            tracker_id=tid,
            old="up",
            new="late",
            reason="expected a ping at 2026-06-01T13:00:00Z; none yet",
            run_id=None,
            now=at,
        )
    assert row.event == "tracker.late"
    assert json.loads(row.body) == json.loads(json.dumps(expected, default=str))


def _when(value: str | None) -> dt.datetime:
    assert value is not None
    return dt.datetime.fromisoformat(value.replace("Z", "+00:00"))


def test_a_new_schedule_restarts_the_clock_of_a_never_pinged_tracker(
    app: TelemHQ, client: AppClient
) -> None:
    engine = app.engine
    made = make_tracker(client, schedule={"kind": "period", "period_seconds": 3600})
    tid = made["id"]
    assert made["state"] == "new"
    created = _when(made["created_at"])
    assert _when(made["next_expected_at"]) == created + dt.timedelta(hours=1)
    # As if it had been created 50 minutes ago: its first ping is due in 10 minutes.
    earlier = created - dt.timedelta(minutes=50)
    set_state(
        engine, tid, schedule_set_at=earlier, next_expected_at=earlier + dt.timedelta(hours=1)
    )
    # A grace change does not move when the first ping is due...
    relaxed = client.patch(
        f"/api/v1/trackers/{tid}",
        json={"schedule": {"kind": "period", "period_seconds": 3600, "grace_seconds": 60}},
    ).json()
    assert _when(relaxed["next_expected_at"]) == earlier + dt.timedelta(hours=1)
    # ...a new period does: the first ping is now due one new period after the change.
    changed = client.patch(
        f"/api/v1/trackers/{tid}",
        json={"schedule": {"kind": "period", "period_seconds": 1800, "grace_seconds": 60}},
    ).json()
    at = _when(changed["updated_at"])
    assert _when(changed["next_expected_at"]) == at + dt.timedelta(minutes=30)
    detector = Detector(engine)
    # The old clock would have it down by now (due at earlier + 30 min, grace 60 s).
    assert detector.tick(at + dt.timedelta(minutes=30) - dt.timedelta(seconds=1)).flips == []
    assert state(engine, tid) == "new"
    assert detector.tick(at + dt.timedelta(minutes=30)).flips == [(tid, "new", "late")]
    assert detector.tick(at + dt.timedelta(minutes=31)).flips == [(tid, "late", "down")]
    # Once down, a new schedule restarts the clock but the state waits for a ping.
    again = client.patch(
        f"/api/v1/trackers/{tid}",
        json={"schedule": {"kind": "cron", "cron": "0 3 * * *", "grace_seconds": 60}},
    ).json()
    assert again["state"] == "down"
    assert _when(again["next_expected_at"]) > _when(again["updated_at"])
    assert client.post(f"/ping/{made['token']}").status_code == 200
    assert tracker_of(client, tid)["state"] == "up"


def test_resuming_a_never_pinged_tracker_restarts_its_clock(
    app: TelemHQ, client: AppClient
) -> None:
    engine = app.engine
    made = make_tracker(
        client, schedule={"kind": "period", "period_seconds": 600, "grace_seconds": 60}
    )
    tid = made["id"]
    assert client.post(f"/api/v1/trackers/{tid}/pause").json()["state"] == "paused"
    # Paused for a day: no alert while paused...
    earlier = _when(made["created_at"]) - dt.timedelta(days=1)
    set_state(engine, tid, schedule_set_at=earlier, next_expected_at=earlier)
    detector = Detector(engine)
    assert detector.tick(db.utcnow()).flips == []
    # ...nor for the pause once resumed: the first ping is due one period after the resume.
    resumed = client.post(f"/api/v1/trackers/{tid}/resume").json()
    assert resumed["state"] == "new"
    at = _when(resumed["state_changed_at"])
    assert _when(resumed["next_expected_at"]) == at + dt.timedelta(minutes=10)
    assert detector.tick(at + dt.timedelta(minutes=10) - dt.timedelta(seconds=1)).flips == []
    assert detector.tick(at + dt.timedelta(minutes=10)).flips == [(tid, "new", "late")]


def test_resuming_a_pinged_tracker_restarts_its_clock(app: TelemHQ, client: AppClient) -> None:
    engine = app.engine
    made = make_tracker(
        client, schedule={"kind": "period", "period_seconds": 600, "grace_seconds": 60}
    )
    tid = made["id"]
    # Last pinged a day ago, then paused: its next ping was due long before the resume.
    earlier = _when(made["created_at"]) - dt.timedelta(days=1)
    ping(engine, tid, earlier)
    set_state(engine, tid, next_expected_at=earlier + dt.timedelta(minutes=10))
    assert client.post(f"/api/v1/trackers/{tid}/pause").json()["state"] == "paused"
    detector = Detector(engine)
    assert detector.tick(db.utcnow()).flips == []
    # Resumed: the next ping is due one period after the resume, not a day ago.
    resumed = client.post(f"/api/v1/trackers/{tid}/resume").json()
    assert resumed["state"] == "new"
    at = _when(resumed["state_changed_at"])
    assert _when(resumed["next_expected_at"]) == at + dt.timedelta(minutes=10)
    assert detector.tick(at).flips == []
    assert detector.tick(at + dt.timedelta(minutes=10) - dt.timedelta(seconds=1)).flips == []


@pytest.mark.parametrize("before", ["up", "late", "down", "failing"])
def test_a_resumed_tracker_is_judged_from_its_resume(
    app: TelemHQ, client: AppClient, before: str
) -> None:
    """Pinged long ago, paused in any state, resumed: no alert at the resume; ``late`` one
    period after it and ``down`` a grace later, with no ping in between."""
    engine = app.engine
    made = make_tracker(
        client, schedule={"kind": "period", "period_seconds": 600, "grace_seconds": 60}
    )
    tid = made["id"]
    earlier = _when(made["created_at"]) - dt.timedelta(days=1)
    ping(engine, tid, earlier)
    set_state(engine, tid, state=before, next_expected_at=earlier + dt.timedelta(minutes=10))
    assert client.post(f"/api/v1/trackers/{tid}/pause").json()["state"] == "paused"
    detector = Detector(engine)
    resumed = client.post(f"/api/v1/trackers/{tid}/resume").json()
    at = _when(resumed["state_changed_at"])
    period, grace = dt.timedelta(minutes=10), dt.timedelta(minutes=1)
    assert detector.tick(at).flips == []
    assert detector.tick(at + period / 2).flips == []
    assert state(engine, tid) == "new"
    assert detector.tick(at + period).flips == [(tid, "new", "late")]
    assert detector.tick(at + period + grace - dt.timedelta(seconds=1)).flips == []
    assert detector.tick(at + period + grace).flips == [(tid, "late", "down")]
    reasons = [reason for _, new, reason in flips(engine, tid) if new in ("late", "down")]
    assert db.iso(at + period) in reasons[-1]


def test_a_resumed_tracker_that_pings_is_judged_from_the_ping(
    app: TelemHQ, client: AppClient
) -> None:
    engine = app.engine
    made = make_tracker(client, schedule={"kind": "period", "period_seconds": 600})
    tid = made["id"]
    client.post(f"/api/v1/trackers/{tid}/pause")
    at = _when(client.post(f"/api/v1/trackers/{tid}/resume").json()["state_changed_at"])
    detector = Detector(engine)
    pinged = at + dt.timedelta(minutes=5)
    ping(engine, tid, pinged)
    assert detector.tick(at + dt.timedelta(minutes=10)).flips == []
    assert detector.tick(pinged + dt.timedelta(minutes=10)).flips == [(tid, "up", "late")]
