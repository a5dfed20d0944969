"""Recording a tracker's state change: the ONE place that writes to ``flips``.

Callers (the ingest writer, the API's pause/resume, the missed-run detector) decide the new
state with :mod:`telemhq_server.states`, update ``trackers.state``/``state_changed_at``
themselves, and call :func:`record_flip` in the same transaction. Anything that must happen
atomically with a state change (e.g. queueing webhooks in ``webhook_outbox``) belongs here.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from telemhq_server.db import flips

__all__ = ["Flip", "record_flip", "record_flips"]

#: (tracker id, old state, new state, reason, runs.id or None, time) of one change.
Flip = tuple[int, str, str, str, int | None, dt.datetime]


def record_flip(  # noqa: PLR0917 - the positional order is the documented seam
    conn: Connection,
    tracker_id: int,
    old: str,
    new: str,
    reason: str,
    run_id: int | None,
    now: dt.datetime,
) -> None:
    """Store the change ``old`` -> ``new`` of ``tracker_id`` (``run_id``: ``runs.id`` of the run
    that caused it, if any). Runs inside the caller's transaction; no commit here."""
    conn.execute(
        flips.insert().values(
            tracker_id=tracker_id,
            old_state=old,
            new_state=new,
            reason=reason,
            run_id=run_id,
            created_at=now,
        )
    )
    # Part 2 (webhooks): queue the alert in the same transaction as the flip, so an alert
    # exists exactly when the state change does and survives a crash (durable outbox).
    from telemhq_server.webhooks import enqueue_flip

    enqueue_flip(
        conn, tracker_id=tracker_id, old=old, new=new, reason=reason, run_id=run_id, now=now
    )


def record_flips(conn: Connection, changes: Sequence[Flip]) -> None:
    """:func:`record_flip` for many changes at once (the missed-run detector's pass): one
    INSERT for the flips, and their alerts queued together."""
    if not changes:
        return
    conn.execute(
        sa.insert(flips),
        [
            {
                "tracker_id": tracker_id,
                "old_state": old,
                "new_state": new,
                "reason": reason,
                "run_id": run_id,
                "created_at": now,
            }
            for tracker_id, old, new, reason, run_id, now in changes
        ],
    )
    # Queue the alerts in the same transaction (see record_flip), all at once.
    from telemhq_server.webhooks import enqueue_flips

    enqueue_flips(conn, changes)
