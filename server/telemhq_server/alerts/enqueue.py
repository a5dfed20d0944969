"""The alert outbox's writing side: a flip listener that queues one message per channel that
wants the change, inside the transaction that records the flip (so a notification exists
exactly when the state change does, and survives a crash).

Whether a queued message is still worth sending (the tracker still bad, the channel told of
the problem before a recovery, no silence) is decided when it comes due, by
:mod:`telemhq_server.alerts.delivery`.
"""

from __future__ import annotations

import datetime as dt
import fnmatch
import json
from collections.abc import Mapping, Sequence
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from telemhq_plugins.core.config import slugify
from telemhq_server import db
from telemhq_server.alerts.policy import DEFAULT_CHANNEL_EVENTS, matches
from telemhq_server.alerts.tables import alert_outbox, channels
from telemhq_server.flips import Flip
from telemhq_server.webhooks import build_body
from telemhq_server.webhooks.outbox import load_json

__all__ = [
    "BAD_STATES",
    "channel_event",
    "enqueue_alerts",
    "group_key",
    "orchestrator_of",
    "wants",
]

BAD_STATES = ("failing", "late", "down")


def channel_event(old: str, new: str) -> str | None:
    """``failing``/``late``/``down`` (the new state), ``recovered`` (back up from one of
    them), or ``None`` when the change tells nobody anything."""
    if new in BAD_STATES:
        return new
    if new == "up" and old in BAD_STATES:
        return "recovered"
    return None


def wants(events: Sequence[str] | None, event: str, old: str) -> bool:
    """Does a channel with ``events`` get this change? (``late -> up`` only if told of late.)"""
    wanted = events or DEFAULT_CHANNEL_EVENTS
    if event == "recovered" and old == "late":
        return "late" in wanted and "recovered" in wanted
    return event in wanted


def group_key(
    event: str,
    payload: Any,
    orchestrator: str | None,
    tags: Sequence[str] = (),
    late_tags: Sequence[str] = (),
) -> str | None:
    """What a message may be folded with: a task's failure with the other failures of its
    parent run (an Airflow DAG run, a Dagster run, a Prefect flow run, read from what the
    adapters send; an OpenLineage run's parent run facet), a tracker going late with the
    others of its first tag matching ``late_tags`` (tags or globs) going late, else with the
    others of its orchestrator."""
    if event == "late":
        tag = next((t for t in tags if any(fnmatch.fnmatchcase(t, p) for p in late_tags)), None)
        return f"late:tag:{tag}"[:400] if tag else f"late:{orchestrator or ''}"
    if event != "failing" or not isinstance(payload, Mapping):
        return None
    airflow, dagster, prefect = (payload.get(k) for k in ("airflow", "dagster", "prefect"))
    if isinstance(airflow, Mapping) and airflow.get("dag_id") and airflow.get("run_id"):
        return f"run:airflow:{airflow['dag_id']}:{airflow['run_id']}"[:400]
    if isinstance(dagster, Mapping) and dagster.get("run_id"):
        return f"run:dagster:{dagster.get('job_name') or ''}:{dagster['run_id']}"[:400]
    if isinstance(prefect, Mapping) and prefect.get("flow_run_id"):
        return f"run:prefect:{prefect.get('flow_name') or ''}:{prefect['flow_run_id']}"[:400]
    if payload.get("orchestrator") == "openlineage":
        return _lineage_key(payload)
    return None


def _lineage_key(payload: Mapping[str, Any]) -> str | None:
    """An OpenLineage run's group: its ``parent`` run (a dbt model's dbt run, an Airflow
    task's DAG run), else the run itself, so a parent that fails with its children is told
    with them. The job's slug, not its name, goes in the key: a namespace may hold a colon."""
    parent = payload.get("parent")
    if isinstance(parent, Mapping):
        slug, run_id = parent.get("slug"), parent.get("run_id")
    else:
        job = payload.get("job")
        slug = slugify(job) if isinstance(job, str) else None
        run_id = payload.get("run_id")
    if not (isinstance(slug, str) and slug and isinstance(run_id, str) and run_id):
        return None
    return f"run:openlineage:{slug}:{run_id}"[:400]


def orchestrator_of(conn: Connection, tracker_id: int, run_id: int | None) -> str | None:
    """The orchestrator the run ``run_id`` (else the tracker's latest run) says it came from."""
    r = db.runs
    query = sa.select(r.c.payload).where(r.c.tracker_id == tracker_id)
    query = query.where(r.c.id == run_id) if run_id is not None else query.order_by(r.c.id.desc())
    payload = load_json(conn.execute(query.limit(1)).scalar())
    value = payload.get("orchestrator") if isinstance(payload, dict) else None
    return value if isinstance(value, str) else None


def enqueue_alerts(
    conn: Connection, changes: Sequence[Flip], *, late_tags: Sequence[str] = ()
) -> int:
    """Queue a message per enabled channel that wants each change; returns how many.

    A flip listener (``app.flip_listeners``). A channel's ``delay`` puts the first attempt
    that far after the change; a recovery goes out at once. ``late_tags``: see
    :func:`group_key`.
    """
    chans = conn.execute(sa.select(channels).where(channels.c.enabled)).mappings().all()
    if not chans:
        return 0
    rows: list[dict[str, Any]] = []
    trackers: dict[int, Mapping[Any, Any]] = {}
    for flip in changes:
        event = channel_event(flip.old, flip.new)
        if event is None:
            continue
        takers = [c for c in chans if wants(c["events"], event, flip.old)]
        if not takers:
            continue
        if flip.tracker_id not in trackers:
            trackers[flip.tracker_id] = (
                conn.execute(sa.select(db.trackers).where(db.trackers.c.id == flip.tracker_id))
                .mappings()
                .one()
            )
        tracker = trackers[flip.tracker_id]
        orchestrator = orchestrator_of(conn, flip.tracker_id, flip.run_id)
        takers = [c for c in takers if matches(c["selector"] or {}, tracker, orchestrator)]
        if not takers:
            continue
        document = build_body(
            conn,
            event=f"tracker.{event}",
            tracker_id=flip.tracker_id,
            old=flip.old,
            new=flip.new,
            reason=flip.reason,
            run_id=flip.run_id,
            now=flip.at,
        )
        document["orchestrator"] = orchestrator
        run = document.get("run") or {}
        group = group_key(event, run.get("payload"), orchestrator, tracker["tags"] or [], late_tags)
        body = json.dumps(document, separators=(",", ":"), default=str)
        for channel in takers:
            delay = 0 if event == "recovered" else channel["delay_seconds"]
            rows.append(
                {
                    "channel_id": channel["id"],
                    "tracker_id": flip.tracker_id,
                    "event": event,
                    "state": flip.new,
                    "repeat_no": 0,
                    "body": body,
                    "created_at": flip.at,
                    "next_attempt_at": flip.at + dt.timedelta(seconds=delay),
                    "attempts": 0,
                    "group_key": group,
                }
            )
    if rows:
        conn.execute(sa.insert(alert_outbox), rows)
    return len(rows)
