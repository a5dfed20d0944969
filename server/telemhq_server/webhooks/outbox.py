"""The webhook outbox's writing side: which change alerts whom, and the alert's document,
written inside the transaction that records the flip (so an alert exists exactly when the
state change does, and survives a crash).

Events: ``tracker.failing``, ``tracker.late``, ``tracker.down`` (the new state) and
``tracker.recovered`` (back to ``up`` from one of those).
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Callable, Sequence
from typing import Any, Final

import sqlalchemy as sa
from sqlalchemy.engine import Connection, RowMapping

from telemhq_server import db
from telemhq_server.flips import Flip

__all__ = [
    "DEFAULT_EVENTS",
    "EVENTS",
    "build_body",
    "enqueue_flip",
    "enqueue_flips",
    "event_for",
    "load_json",
    "read_deliveries",
    "subscribed",
]

EVENTS: Final = ("tracker.failing", "tracker.late", "tracker.down", "tracker.recovered")
#: What a webhook created without ``events`` receives: ``late`` is opt-in, because a job that
#: pings at its end is briefly "late" by design (inside its grace) on every run.
DEFAULT_EVENTS: Final = ("tracker.failing", "tracker.down", "tracker.recovered")


def event_for(old: str, new: str) -> str | None:
    """The webhook event for a state change, or ``None`` when it alerts nobody."""
    if new in ("failing", "late", "down"):
        return f"tracker.{new}"
    if new == "up" and old in ("failing", "late", "down"):
        return "tracker.recovered"
    return None


def subscribed(events: list[str] | None, event: str, old: str) -> bool:
    """Does a webhook with ``events`` (empty: :data:`DEFAULT_EVENTS`) get this change?

    ``late -> up`` is a recovery only for those who were told about ``late``.
    """
    wanted = events or DEFAULT_EVENTS
    if event == "tracker.recovered" and old == "late":
        return "tracker.late" in wanted
    return event in wanted


def load_json(text: str | None) -> Any:
    """A stored JSON column's value (``None`` when empty; the text itself if not JSON)."""
    if not text:
        return None
    try:
        return json.loads(text)
    except ValueError:
        return text


def _iso(value: dt.datetime | None) -> str | None:
    return db.iso(value)


def _schedule(row: Any) -> dict[str, Any]:
    return {
        "kind": row["schedule_kind"],
        "period_seconds": row["period_seconds"],
        "cron": row["cron"],
        "timezone": row["timezone"],
        "grace_seconds": row["grace_seconds"],
        "max_runtime_seconds": row["max_runtime_seconds"],
    }


def build_body(
    conn: Connection,
    *,
    event: str,
    tracker_id: int,
    old: str,
    new: str,
    reason: str,
    run_id: int | None,
    now: dt.datetime,
) -> dict[str, Any]:
    """The JSON document sent for one state change (see the README for its fields)."""
    tracker = conn.execute(sa.select(db.trackers).where(db.trackers.c.id == tracker_id)).one()
    run = None
    if run_id is not None:
        run = conn.execute(sa.select(db.runs).where(db.runs.c.id == run_id)).one_or_none()
    return _document(
        tracker._mapping,
        None if run is None else run._mapping,
        event=event,
        old=old,
        new=new,
        reason=reason,
        now=now,
    )


def _document(
    t: Any, r: Any, *, event: str, old: str, new: str, reason: str, now: dt.datetime
) -> dict[str, Any]:
    """:func:`build_body` from the tracker's row ``t`` and the run's row ``r`` (or None)."""
    run: dict[str, Any] | None = None
    failed: list[Any] = []
    if r is not None:
        results = load_json(r["assertions"]) or []
        failed = [a for a in results if isinstance(a, dict) and not a.get("passed", True)]
        run = {
            "id": r["id"],
            "run_id": r["run_id"],
            "ping_id": r["ping_id"],
            "status": r["status"],
            "passed": r["passed"],
            "duration_ms": r["duration_ms"],
            "received_at": _iso(r["received_at"]),
            "assertions": results,
            "payload": load_json(r["payload"]),
        }
    return {
        "event": event,
        "created_at": _iso(now),
        "tracker": {
            "id": t["id"],
            "name": t["name"],
            "slug": t["slug"],
            "state": new,
            "previous_state": old,
            "tags": t["tags"],
            "schedule": _schedule(t),
            "last_ping_at": _iso(t["last_ping_at"]),
            "next_expected_at": _iso(t["next_expected_at"]),
        },
        "reason": reason,
        "run": run,
        "failed_assertions": failed,
        # Made absolute with the server's public URL when sent (see Dispatcher).
        "dashboard_url": f"/dashboard/trackers/{t['id']}",
    }


def enqueue_flips(conn: Connection, changes: Sequence[Flip]) -> int:
    """Write one outbox row per enabled webhook subscribed to each change; returns how many.

    A flip listener (``app.flip_listeners``): it runs inside the transaction that records
    the flips. The webhooks, trackers and runs are read once for all of them and the outbox
    rows written in one INSERT.
    """
    hooks = conn.execute(
        sa.select(db.webhooks.c.id, db.webhooks.c.events).where(db.webhooks.c.enabled)
    ).all()
    wanted: list[tuple[Flip, str, list[int]]] = []
    for flip in changes:
        event = event_for(flip.old, flip.new)
        if event is None:
            continue
        ids = [h.id for h in hooks if subscribed(h.events, event, flip.old)]
        if ids:
            wanted.append((flip, event, ids))
    if not wanted:
        return 0
    t, r = db.trackers, db.runs
    tracker_ids = sorted({flip.tracker_id for flip, _, _ in wanted})
    run_ids = sorted({flip.run_id for flip, _, _ in wanted if flip.run_id is not None})
    tracker_rows = {
        row["id"]: row
        for row in conn.execute(sa.select(t).where(t.c.id.in_(tracker_ids))).mappings()
    }
    run_rows = (
        {row["id"]: row for row in conn.execute(sa.select(r).where(r.c.id.in_(run_ids))).mappings()}
        if run_ids
        else {}
    )
    rows: list[dict[str, Any]] = []
    for flip, event, ids in wanted:
        tracker_id, now = flip.tracker_id, flip.at
        document = _document(
            tracker_rows[tracker_id],
            None if flip.run_id is None else run_rows.get(flip.run_id),
            event=event,
            old=flip.old,
            new=flip.new,
            reason=flip.reason,
            now=now,
        )
        body = json.dumps(document, separators=(",", ":"), default=str)
        rows.extend(
            {
                "webhook_id": hook_id,
                "event": event,
                "tracker_id": tracker_id,
                "body": body,
                "created_at": now,
                "next_attempt_at": now,
                "attempts": 0,
            }
            for hook_id in ids
        )
    conn.execute(sa.insert(db.webhook_outbox), rows)
    return len(rows)


def enqueue_flip(conn: Connection, flip: Flip) -> int:
    """:func:`enqueue_flips` for one change."""
    return enqueue_flips(conn, [flip])


def read_deliveries(
    conn: Connection,
    outbox: sa.Table,
    attempts: sa.Table,
    owner: sa.ColumnElement[bool],
    *,
    limit: int,
    cursor: int | None,
    attempt_json: Callable[[RowMapping], dict[str, Any]],
) -> tuple[list[RowMapping], dict[int, list[dict[str, Any]]], bool]:
    """One page of an outbox's rows for ``owner`` (a webhook's or a channel's), newest first
    and older than ``cursor``: the rows, each row's attempts (oldest first, rendered by
    ``attempt_json``) by row id, and whether more rows follow. Shared by the delivery-history
    routes of webhooks and alert channels, whose outboxes have the same shape."""
    query = sa.select(outbox).where(owner).order_by(outbox.c.id.desc())
    if cursor is not None:
        query = query.where(outbox.c.id < cursor)
    rows = list(conn.execute(query.limit(limit + 1)).mappings().all())
    page = rows[:limit]
    tries: dict[int, list[dict[str, Any]]] = {r["id"]: [] for r in page}
    if tries:
        for t in conn.execute(
            sa.select(attempts).where(attempts.c.outbox_id.in_(list(tries))).order_by(attempts.c.id)
        ).mappings():
            tries[t["outbox_id"]].append(attempt_json(t))
    return page, tries, len(rows) > limit
