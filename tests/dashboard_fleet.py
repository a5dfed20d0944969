"""A fleet of trackers as the adapters make them, written straight into a server's database.

For the dashboard's browser test and its benchmark: ``populate(engine, n, runs)`` adds ``n``
trackers spread over Airflow (``dag.task``), Prefect (``flow.task``), Dagster (``job.op``),
Celery (``app.tasks.name``) and plain ones, each with ``runs`` runs whose payloads carry the
orchestrator's block as the adapters send it. A few trackers are in each problem state, with
the error or the failed assertion (with a baseline) that put them there. Deterministic: the
same ``n`` always gives the same fleet, so tests can name what they expect.
"""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import dataclass
from typing import Any, Final

import sqlalchemy as sa
from telemhq_server import db

__all__ = ["KINDS", "TASKS_PER_GROUP", "Member", "member", "populate"]

KINDS: Final = ("airflow", "prefect", "dagster", "celery", "plain")
TASKS_PER_GROUP: Final = 10
#: Minutes between two runs of a tracker (its last run ended ten minutes ago).
EVERY: Final = 10


@dataclass(frozen=True, slots=True)
class Member:
    """What the ``i``-th tracker of a fleet is."""

    index: int
    kind: str
    group: str
    name: str
    slug: str
    state: str
    #: ``error`` (the last run raised), ``assertion`` (it failed one), or None.
    cause: str | None
    tags: tuple[str, ...]


def member(i: int) -> Member:
    kind = KINDS[i % len(KINDS)]
    k = i // len(KINDS)
    unit, task = divmod(k, TASKS_PER_GROUP)
    group, name = {
        "airflow": (f"etl_{unit:03}", f"etl_{unit:03}.load_{task}"),
        "prefect": (f"ingest-{unit:03}", f"ingest-{unit:03}.fetch_{task}"),
        "dagster": (f"assets_{unit:03}", f"assets_{unit:03}.op_{task}"),
        "celery": (f"shop{unit:03}.tasks", f"shop{unit:03}.tasks.send_{task}"),
        "plain": ("", f"backup {k:04}"),
    }[kind]
    state, cause = "up", None
    if i % 97 == 3:
        state, cause = "failing", "error"
    elif i % 89 == 7:
        state, cause = "failing", "assertion"
    elif i % 83 == 11:
        state = "late"
    elif i % 79 == 13:
        state = "down"
    elif i % 73 == 17:
        state = "paused"
    elif i % 71 == 19:
        state = "new"
    tags = (kind, "team:data" if unit % 2 == 0 else "team:web") if kind != "plain" else ()
    slug = name.replace(".", "-").replace("_", "-").replace(" ", "-")
    return Member(i, kind, group, name, slug, state, cause, tags)


def _block(m: Member, run: int) -> dict[str, Any] | None:
    task = m.name.rpartition(".")[2]
    if m.kind == "airflow":
        return {
            "dag_id": m.group,
            "task_id": task,
            "run_id": f"scheduled__2026-06-01T{run:02}:00:00+00:00",
            "try_number": 1,
            "map_index": -1,
            "operator": "PythonOperator",
        }
    if m.kind == "prefect":
        return {
            "flow_run_id": f"00000000-0000-4000-8000-{m.index:06}{run:06}",
            "task_run_id": f"11111111-0000-4000-8000-{m.index:06}{run:06}",
            "flow_name": m.group,
            "task_name": task,
        }
    if m.kind == "dagster":
        return {
            "run_id": f"dddddddd-{m.index:04}-4000-8000-{run:012}",
            "job_name": m.group,
            "op": task,
            "step_key": task,
        }
    if m.kind == "celery":
        return {"task_id": f"cccccccc-{m.index:04}-{run:04}", "retries": 0}
    return None


def _run(m: Member, run: int, at: dt.datetime, last: bool) -> dict[str, Any]:
    payload: dict[str, Any] = {"duration": 1000 + (m.index * 37 + run * 11) % 900}
    payload["records_processed"] = 100 + run
    if m.kind != "plain":
        payload["orchestrator"] = m.kind
        payload["job"] = m.name
        payload[m.kind] = _block(m, run)
    status, passed = "success", True
    results: list[dict[str, Any]] = []
    if last and m.cause == "error":
        status, passed = "failure", False
        payload["error"] = {
            "type": "ConnectionError",
            "message": f"could not reach the warehouse for {m.name} <db-7>",
            "traceback": 'Traceback (most recent call last):\n  File "job.py", line 3\n'
            "ConnectionError: could not reach the warehouse",
        }
    if last and m.cause == "assertion":
        passed = False
        payload["records_processed"] = 3
        results.append(
            {
                "expression": "records_processed >= 0.5 * avg(records_processed, 7)",
                "passed": False,
                "actual": 3,
                "reason": "records_processed was 3, expected >= 55.5",
                "baseline": {"value": 111, "text": "mean 111 of the last 7 runs"},
                "evaluated": True,
            }
        )
    return {
        "run_id": f"run-{m.index}-{run}",
        "ping_id": f"ping-{m.index}-{run}",
        "status": status,
        "passed": passed,
        "duration_ms": float(payload["duration"]),
        "payload": json.dumps(payload),
        "assertions": json.dumps(results),
        "received_at": at,
        "started_at": at - dt.timedelta(milliseconds=payload["duration"]),
    }


def populate(engine: sa.Engine, n: int, runs: int) -> list[Member]:
    """Add ``n`` trackers with ``runs`` runs each (none for a ``new`` one); returns them.

    Times are relative to now, so that a live server's missed-run detector leaves the states
    as they are: healthy trackers expect their next ping in the coming hour, late and down
    ones have no schedule (their state is as the detector left it)."""
    members = [member(i) for i in range(n)]
    now = db.utcnow()
    last_ping = {"late": dt.timedelta(minutes=70), "down": dt.timedelta(hours=3)}
    with engine.begin() as conn:
        tracker_rows = [
            {
                "name": m.name,
                "slug": m.slug,
                "token": f"tok{m.index:08}{'x' * 20}",
                "badge_key": f"bdg{m.index:08}",
                "assertions": [],
                "tags": list(m.tags),
                "schedule_kind": "none" if m.state in last_ping else "period",
                "period_seconds": None if m.state in last_ping else 3600,
                "grace_seconds": 300,
                "paused": m.state == "paused",
                "state": m.state,
                "state_changed_at": now - dt.timedelta(minutes=5 + m.index % 300),
                "last_ping_at": _last(m, now, last_ping),
                "last_run_at": _last(m, now, last_ping),
                "next_expected_at": None
                if m.state in last_ping
                else now + dt.timedelta(minutes=50 - m.index % 30),
                "schedule_set_at": now - dt.timedelta(days=1),
                "n_runs": 0 if m.state == "new" else runs,
                "created_at": now - dt.timedelta(days=1),
                "updated_at": now,
            }
            for m in members
        ]
        conn.execute(sa.insert(db.trackers), tracker_rows)
        ids = {
            row.slug: row.id
            for row in conn.execute(sa.select(db.trackers.c.slug, db.trackers.c.id))
        }
        run_rows = []
        for m in members:
            if m.state == "new":
                continue
            end = _last(m, now, last_ping) or now
            for r in range(runs):
                at = end - dt.timedelta(minutes=EVERY * (runs - 1 - r))
                run_rows.append({"tracker_id": ids[m.slug], **_run(m, r, at, r == runs - 1)})
            if len(run_rows) >= 5000:
                conn.execute(sa.insert(db.runs), run_rows)
                run_rows = []
        if run_rows:
            conn.execute(sa.insert(db.runs), run_rows)
    return members


def _last(m: Member, now: dt.datetime, ago: dict[str, dt.timedelta]) -> dt.datetime | None:
    if m.state == "new":
        return None
    return now - ago.get(m.state, dt.timedelta(minutes=EVERY))
