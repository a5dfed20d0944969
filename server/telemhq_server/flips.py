"""Recording a tracker's state change: the ONE place that writes to ``flips``.

Callers (the ingest writer, the API's pause/resume, the missed-run detector) decide the new
state with :mod:`telemhq_server.states`, update ``trackers.state``/``state_changed_at``
themselves, and call :func:`record_flip` (or :func:`record_flips` for many) in the same
transaction, with the app's :class:`FlipListeners`. Anything that must happen atomically with
a state change (e.g. queueing webhooks in ``webhook_outbox``) is a listener:
``app.flip_listeners.add(fn)``.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from telemhq_server.db import flips

__all__ = ["Flip", "FlipListener", "FlipListeners", "record_flip", "record_flips"]

logger = logging.getLogger("telemhq_server.flips")


@dataclass(frozen=True, slots=True)
class Flip:
    """One state change of a tracker (``run_id``: ``runs.id`` of the run that caused it)."""

    tracker_id: int
    old: str
    new: str
    reason: str
    run_id: int | None
    at: dt.datetime


#: ``listener(conn, flips)``: runs inside the transaction that recorded ``flips`` (one or
#: more, in order), after their rows are written.
FlipListener = Callable[[Connection, Sequence[Flip]], object]


class FlipListeners:
    """What runs on every state change, registered by the server's parts (``app.flip_listeners``).

    A listener runs inside the transaction that records the flips, so what it writes exists
    exactly when the state change does; an exception from it rolls the whole change back.
    A ``committed`` callback runs on the event loop after the ping writer or the missed-run
    detector has committed a state change (e.g. to wake a sender that reads what the
    listener wrote); changes made elsewhere are found by the sender's own polling.
    """

    def __init__(self) -> None:
        self._listeners: list[FlipListener] = []
        self._committed: list[Callable[[], None]] = []

    def add(self, listener: FlipListener, *, committed: Callable[[], None] | None = None) -> None:
        self._listeners.append(listener)
        if committed is not None:
            self._committed.append(committed)

    def __iter__(self) -> Iterator[FlipListener]:
        return iter(self._listeners)

    def __len__(self) -> int:
        return len(self._listeners)

    def committed(self) -> None:
        """Tell the ``committed`` callbacks that flips were committed (never raises)."""
        for callback in self._committed:
            try:
                callback()
            except Exception:
                logger.exception("a flip listener's commit callback failed")


def record_flip(  # noqa: PLR0917 - the positional order is the documented seam
    conn: Connection,
    tracker_id: int,
    old: str,
    new: str,
    reason: str,
    run_id: int | None,
    now: dt.datetime,
    *,
    listeners: Iterable[FlipListener] = (),
) -> None:
    """Store the change ``old`` -> ``new`` of ``tracker_id`` (``run_id``: ``runs.id`` of the run
    that caused it, if any) and run ``listeners`` (the app's :class:`FlipListeners`). Runs
    inside the caller's transaction; no commit here."""
    record_flips(conn, [Flip(tracker_id, old, new, reason, run_id, now)], listeners=listeners)


def record_flips(
    conn: Connection, changes: Sequence[Flip], *, listeners: Iterable[FlipListener] = ()
) -> None:
    """:func:`record_flip` for many changes at once (the missed-run detector's pass): one
    INSERT for the flips, then each listener once with all of them."""
    if not changes:
        return
    conn.execute(
        sa.insert(flips),
        [
            {
                "tracker_id": f.tracker_id,
                "old_state": f.old,
                "new_state": f.new,
                "reason": f.reason,
                "run_id": f.run_id,
                "created_at": f.at,
            }
            for f in changes
        ],
    )
    for listener in listeners:
        listener(conn, changes)
