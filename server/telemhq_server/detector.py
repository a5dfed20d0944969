"""Missed-run detection: trackers whose expected ping is overdue turn ``late``, then ``down``.

One :class:`Detector` runs in every server process (``run()`` is its background loop). Each
``tick(now)``:

1. **refreshes expectations**: a scheduled tracker whose ``next_expected_at`` is unset or not
   after its ``last_ping_at`` (a ping arrived since) gets the next expected time from
   :func:`telemhq_server.schedules.next_expected_after`;
2. **claims overdue trackers**: ``late`` from the expected time, ``down`` from the expected time
   plus grace (``failing`` trackers go ``down`` but not ``late``: a failure says more);
3. **claims hung runs**: a ``start`` with no end within ``max_runtime_seconds`` is ``down``.

All state lives in the database, so detection carries on across restarts. Several processes
may tick at once on one database: every state change is a conditional
``UPDATE trackers SET state = :new WHERE id = :id AND state = :old AND <what we saw>`` and only
the process whose update hit a row records the flip (and queues its webhooks) in the same
transaction; the others see rowcount 0 and move on. No duplicate flips, no duplicate alerts.

The clock is injected (``clock`` / ``tick(now)``), so tests move time instead of sleeping.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Final

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from telemhq_server import db, states
from telemhq_server.flips import record_flip
from telemhq_server.schedules import (
    Schedule,
    ScheduleError,
    expected_state,
    next_expected_after,
    runtime_exceeded,
)

if TYPE_CHECKING:
    from telemhq_server.app import TelemHQ

__all__ = ["DETECT_INTERVAL", "Detector", "TickResult", "register", "schedule_of"]

logger = logging.getLogger("telemhq_server.detector")

#: States from which a missed ping turns the tracker late / down.
_CAN_BE_LATE: Final = ("up", "late")
_CAN_BE_DOWN: Final = ("up", "late", "failing")
_BATCH: Final = 500
#: Seconds between detection passes in the server: how late a late/down can be noticed.
DETECT_INTERVAL: Final = 5.0


@dataclass
class TickResult:
    """What one pass did (for tests and logs)."""

    refreshed: int = 0
    flips: list[tuple[int, str, str]] = field(default_factory=list)


def schedule_of(row: Any) -> Schedule | None:
    """The :class:`Schedule` of a tracker row, or ``None`` (logged) when it is unusable."""
    try:
        return Schedule(
            kind=row.schedule_kind,
            period_seconds=row.period_seconds,
            cron=row.cron,
            timezone=row.timezone or "UTC",
            grace_seconds=row.grace_seconds or 0,
            max_runtime_seconds=row.max_runtime_seconds,
        )
    except ScheduleError as exc:
        logger.warning("tracker %s has an unusable schedule: %s", row.id, exc)
        return None


class Detector:
    """Marks overdue trackers late/down; safe to run in several processes at once."""

    def __init__(
        self,
        engine: Engine,
        *,
        clock: Callable[[], dt.datetime] = db.utcnow,
        interval: float = 5.0,
        on_flip: Callable[[], None] | None = None,
    ) -> None:
        self.engine = engine
        self.clock = clock
        self.interval = interval
        #: Called after a tick that flipped something (the app wakes the webhook dispatcher).
        self.on_flip = on_flip

    async def run(self) -> None:
        """Tick every ``interval`` seconds until cancelled; errors are logged, never raised."""
        while True:
            try:
                result = await asyncio.to_thread(self.tick)
                if result.flips and self.on_flip is not None:
                    self.on_flip()
            except Exception:
                logger.exception("missed-run detection pass failed; retrying")
            await asyncio.sleep(self.interval)

    def tick(self, now: dt.datetime | None = None) -> TickResult:
        """One detection pass at ``now`` (default: the clock)."""
        now = self.clock() if now is None else now
        result = TickResult()
        result.refreshed = self._refresh(now)
        self._overdue(now, result)
        self._hung(now, result)
        return result

    # -- 1. expectations ---------------------------------------------------------------------

    def _refresh(self, now: dt.datetime) -> int:
        t = db.trackers
        with self.engine.connect() as conn:
            rows = conn.execute(
                sa.select(t)
                .where(
                    t.c.schedule_kind != "none",
                    t.c.last_ping_at.is_not(None),
                    sa.or_(
                        t.c.next_expected_at.is_(None),
                        t.c.next_expected_at <= t.c.last_ping_at,
                    ),
                )
                .limit(_BATCH)
            ).all()
        count = 0
        for row in rows:
            schedule = schedule_of(row)
            if schedule is None:
                continue
            expected = next_expected_after(schedule, row.last_ping_at)
            if expected is None:
                continue
            with db.write_tx(self.engine) as conn:
                # Conditional on what we read, so a newer ping's refresh is never overwritten.
                count += conn.execute(
                    sa.update(t)
                    .where(t.c.id == row.id, _same(t.c.last_ping_at, row.last_ping_at))
                    .values(next_expected_at=expected)
                ).rowcount
        return count

    # -- 2. overdue pings ---------------------------------------------------------------------

    def _overdue(self, now: dt.datetime, result: TickResult) -> None:
        t = db.trackers
        with self.engine.connect() as conn:
            rows = conn.execute(
                sa.select(t)
                .where(
                    t.c.schedule_kind != "none",
                    t.c.paused.is_(False),
                    t.c.state.in_(_CAN_BE_DOWN),
                    t.c.next_expected_at <= now,
                    # A ping since the expectation was computed makes it stale, not overdue.
                    sa.or_(t.c.last_ping_at.is_(None), t.c.next_expected_at > t.c.last_ping_at),
                )
                .order_by(t.c.next_expected_at)
                .limit(_BATCH)
            ).all()
        for row in rows:
            schedule = schedule_of(row)
            if schedule is None:
                continue
            expected = db.as_utc(row.next_expected_at)
            # The schedule may have been edited since the expectation was stored: recompute.
            if row.last_ping_at is not None:
                fresh = next_expected_after(schedule, row.last_ping_at)
                if fresh is None or fresh > now:
                    self._set_expected(row, fresh)
                    continue
                expected = fresh
            target = expected_state(schedule, expected, now)
            if target is None or target == row.state:
                continue
            allowed = _CAN_BE_LATE if target == "late" else _CAN_BE_DOWN
            if row.state not in allowed:
                continue
            assert expected is not None
            if target == "late":
                reason = f"expected a ping at {db.iso(expected)}; none yet"
            else:
                deadline = expected + schedule.grace
                reason = (
                    f"expected a ping at {db.iso(expected)}; none by {db.iso(deadline)} "
                    f"(grace {schedule.grace_seconds}s)"
                )
            self._claim(row, target, reason, now, result=result, witness=t.c.next_expected_at)

    def _set_expected(self, row: Any, expected: dt.datetime | None) -> None:
        t = db.trackers
        with db.write_tx(self.engine) as conn:
            conn.execute(
                sa.update(t)
                .where(t.c.id == row.id, _same(t.c.last_ping_at, row.last_ping_at))
                .values(next_expected_at=expected)
            )

    # -- 3. hung runs -------------------------------------------------------------------------

    def _hung(self, now: dt.datetime, result: TickResult) -> None:
        t = db.trackers
        with self.engine.connect() as conn:
            rows = conn.execute(
                sa.select(t)
                .where(
                    t.c.open_start_at.is_not(None),
                    t.c.max_runtime_seconds.is_not(None),
                    t.c.paused.is_(False),
                    t.c.state.in_(("new", *_CAN_BE_DOWN)),
                )
                .order_by(t.c.open_start_at)
                .limit(_BATCH)
            ).all()
        for row in rows:
            schedule = schedule_of(row)
            if schedule is None or not runtime_exceeded(schedule, row.open_start_at, now):
                continue
            reason = (
                f"run started at {db.iso(row.open_start_at)} has not ended within the max "
                f"runtime of {schedule.max_runtime_seconds}s"
            )
            self._claim(row, "down", reason, now, result=result, witness=t.c.open_start_at)

    # -- the claim ------------------------------------------------------------------------------

    def _claim(
        self,
        row: Any,
        target: str,
        reason: str,
        now: dt.datetime,
        *,
        result: TickResult,
        witness: sa.Column[Any],
    ) -> None:
        """Flip ``row`` to ``target`` unless anything we based the verdict on has changed."""
        transition = states.on_missed(
            states.TrackerStatus(
                state=row.state,
                consecutive_failures=row.consecutive_failures,
                failure_threshold=row.failure_threshold,
                paused=row.paused,
            ),
            target,
            reason,
        )
        if not transition.changed:
            return
        t = db.trackers
        with db.write_tx(self.engine) as conn:
            hit = conn.execute(
                sa.update(t)
                .where(
                    t.c.id == row.id,
                    t.c.state == row.state,
                    t.c.paused.is_(False),
                    _same(t.c.last_ping_at, row.last_ping_at),
                    _same(witness, getattr(row, witness.name)),
                )
                .values(state=transition.state, state_changed_at=now)
            ).rowcount
            if hit != 1:
                return  # another process (or a ping) got there first
            record_flip(conn, row.id, row.state, transition.state, reason, None, now)
        logger.info("tracker %s: %s -> %s (%s)", row.id, row.state, transition.state, reason)
        result.flips.append((row.id, row.state, transition.state))


def _same(column: sa.Column[Any], value: Any) -> sa.ColumnElement[bool]:
    """``column = value``, or ``column IS NULL`` for None."""
    return column.is_(None) if value is None else column == value


def register(app: TelemHQ) -> None:
    """Run one detector per server process (see :mod:`telemhq_server.app`)."""

    async def loop(app: TelemHQ) -> None:
        dispatcher = getattr(app, "webhook_dispatcher", None)
        wake = dispatcher.wake if dispatcher is not None else None
        await Detector(app.engine, interval=DETECT_INTERVAL, on_flip=wake).run()

    app.add_background(loop)
