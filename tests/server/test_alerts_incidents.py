"""One incident per problem: the incident id a message carries through its retries, reminders
and recovery; reminders and recoveries of grouped messages; the "N jobs are late" rule by
tag with its thresholds. On a real database (SQLite and PostgreSQL), clock injected, real
Apprise (``json://``) to a loopback HTTP receiver.
"""

from __future__ import annotations

import datetime as dt
import functools

import sqlalchemy as sa
from sqlalchemy.engine import Engine
from telemhq_server import db
from telemhq_server.alerts import enqueue_alerts
from telemhq_server.config import load_settings
from telemhq_server.flips import record_flip
from telemhq_server.trackers import create_tracker

from tests.server.test_alerts import (
    T0,
    Clock,
    Receiver,
    add_channel,
    add_run,
    add_tracker,
    dispatcher,
    flip,
    statuses,
    tick,
)
from tests.server.test_alerts import receiver as receiver  # noqa: PLC0414 - the fixture

INCIDENT = "X-TelemHQ-Incident"


def test_a_retry_reminders_and_the_recovery_carry_one_incident(
    engine: Engine, receiver: Receiver
) -> None:
    clock = Clock(T0)
    add_channel(engine, receiver.url, repeat_every="1h", max_repeats=2)
    tracker = add_tracker(engine)
    flip(engine, tracker, "up", "down", T0)
    d = dispatcher(engine, clock)
    receiver.status = 500  # the first attempt fails: the retry must be the same incident
    tick(d)
    receiver.status = 200
    clock.advance(11)
    tick(d)
    for _ in range(2):
        clock.advance(3600)
        tick(d)
    clock.advance(60)
    flip(engine, tracker, "down", "up", clock.now)
    tick(d)
    assert [m["title"] for m in receiver.messages] == [
        "Nightly ETL is down",
        "Nightly ETL is down",
        "Reminder 1: Nightly ETL is down",
        "Reminder 2: Nightly ETL is down",
        "Nightly ETL has recovered",
    ]
    incidents = {h[INCIDENT] for h in receiver.headers}
    assert incidents == {f"telemhq-{tracker}-{int(T0.timestamp() * 1000)}"}
    # Apprise's message type: a failure opens the incident, a success resolves it
    assert [m["type"] for m in receiver.messages] == ["failure"] * 4 + ["success"]
    # the next problem is another incident
    clock.advance(60)
    flip(engine, tracker, "up", "failing", clock.now)
    tick(d)
    assert receiver.headers[-1][INCIDENT] not in incidents


def fail_tasks(engine: Engine, names: list[str]) -> list[int]:
    """Trackers of one failed DAG run's tasks, each flipped to failing a second apart."""
    trackers = []
    for offset, name in enumerate(names):
        tracker = add_tracker(engine, name)
        at = T0 + dt.timedelta(seconds=offset)
        run = add_run(engine, tracker, at, {"dag_id": "etl", "task_id": name, "run_id": "run-7"})
        flip(engine, tracker, "up", "failing", at, run)
        trackers.append(tracker)
    return trackers


def test_a_grouped_message_is_reminded_of_and_its_recoveries_go_to_the_channel(
    engine: Engine, receiver: Receiver
) -> None:
    clock = Clock(T0)
    add_channel(engine, receiver.url, repeat_every="1h", max_repeats=3)
    names = [f"etl.task_{i}" for i in range(5)]
    trackers = fail_tasks(engine, names)
    d = dispatcher(engine, clock, group_window=60)
    clock.advance(60)
    for _ in range(4):
        tick(d)
    assert [m["title"] for m in receiver.messages] == ["Airflow run etl run-7 failed: 5 failing"]
    # two tasks are fixed before the first reminder: it lists the three still failing
    for tracker in trackers[:2]:
        clock.advance(60)
        flip(engine, tracker, "failing", "up", clock.now)
        tick(d)
    clock.advance(3600)
    tick(d)
    titles = [m["title"] for m in receiver.messages]
    assert titles[1:] == [
        "etl.task_0 has recovered",
        "etl.task_1 has recovered",
        "Reminder 1: Airflow run etl run-7 failed: 3 failing",
    ]
    reminder = receiver.messages[-1]["message"]
    assert "etl.task_0" not in reminder
    assert all(f"- {name}:" in reminder for name in names[2:])
    # one incident throughout; a recovery resolves it only when the last task recovers
    assert len({h[INCIDENT] for h in receiver.headers}) == 1
    for tracker in trackers[2:]:
        clock.advance(60)
        flip(engine, tracker, "failing", "up", clock.now)
        tick(d)
    assert [m["type"] for m in receiver.messages[1:3]] == ["info", "info"]
    assert [m["type"] for m in receiver.messages[-3:]] == ["info", "info", "success"]
    assert len({h[INCIDENT] for h in receiver.headers}) == 1
    # all recovered: no more reminders
    clock.advance(7200)
    tick(d)
    assert len(receiver.messages) == 7
    assert ("failing", "dropped") in statuses(engine)


def scheduled(engine: Engine, name: str, tags: list[str]) -> int:
    with db.write_tx(engine) as conn:
        row = create_tracker(
            conn,
            {
                "name": name,
                "slug": name,
                "tags": tags,
                "schedule_kind": "period",
                "period_seconds": 3600,
            },
        )
    return int(row["id"])


def test_twenty_of_thirty_trackers_of_a_tag_late_is_one_message(
    engine: Engine, receiver: Receiver
) -> None:
    settings = load_settings(
        {
            "TELEMHQ_ALERT_LATE_MIN": "10",
            "TELEMHQ_ALERT_LATE_FRACTION": "0.6",
            "TELEMHQ_ALERT_LATE_TAGS": "team:*",
        }
    )
    assert (settings.alert_late_min, settings.alert_late_fraction) == (10, 0.6)
    clock = Clock(T0)
    add_channel(engine, receiver.url, events=["late"])
    # no orchestrator in common: they share a tag
    trackers = [scheduled(engine, f"job{i:02}", ["nightly", "team:data"]) for i in range(30)]
    others = [scheduled(engine, f"web{i}", ["team:web"]) for i in range(3)]
    enqueue = functools.partial(enqueue_alerts, late_tags=["team:*"])
    late = [*trackers[:20], *others]
    with db.write_tx(engine) as conn:
        t = db.trackers
        conn.execute(sa.update(t).where(t.c.id.in_(late)).values(state="late", state_changed_at=T0))
        for tracker in late:
            record_flip(conn, tracker, "up", "late", "overdue", None, T0, listeners=[enqueue])
    d = dispatcher(
        engine,
        clock,
        group_window=60,
        late_group_min=settings.alert_late_min,
        late_group_fraction=settings.alert_late_fraction,
    )
    clock.advance(60)
    for _ in range(4):
        tick(d)
    # three of team:web late is below the minimum: told one by one
    assert sorted(m["title"] for m in receiver.messages) == [
        "20 jobs tagged team:data are late: is their scheduler running?",
        *(f"web{i} is late" for i in range(3)),
    ]


def test_ntfy_opens_the_dashboard_when_the_runs_link_is_unknown(
    engine: Engine, receiver: Receiver
) -> None:
    clock = Clock(T0)
    port = receiver.url.split(":")[2].split("/")[0]
    add_channel(engine, f"ntfy://127.0.0.1:{port}/ops")
    tracker = add_tracker(engine)
    flip(engine, tracker, "up", "failing", T0, add_run(engine, tracker, T0))
    tick(dispatcher(engine, clock))
    [message], [headers] = receiver.messages, receiver.headers
    assert (message["topic"], message["title"]) == ("ops", "Nightly ETL is failing")
    assert "Run in" not in message["message"]  # no UI link known for this run
    assert headers["X-Click"] == f"https://telemhq.example/dashboard/trackers/{tracker}"
