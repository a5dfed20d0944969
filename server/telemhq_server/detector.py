"""Missed-run detection: trackers whose expected ping is overdue turn ``late``, then ``down``.

One :class:`Detector` runs in every server process (``run()`` is its background loop). Each
``tick(now)``:

1. **refreshes expectations**: a scheduled tracker whose ``next_expected_at`` is unset or not
   after its ``last_ping_at`` (a ping arrived since) gets the next expected time from
   :mod:`telemhq_server.schedules` (which owns every schedule rule); one that has never been
   pinged gets the first scheduled time after its ``schedule_set_at`` (when its schedule was
   set or it was resumed), so that a job whose very first run never comes is caught too;
2. **claims overdue trackers**: ``late`` from the expected time, ``down`` from the expected time
   plus grace (``failing`` trackers go ``down`` but not ``late``: a failure says more; ``new``
   ones, never pinged or just resumed, go ``late`` and ``down`` like ``up`` ones). The
   expected time follows the later of the last ping and the last resume
   (:func:`~telemhq_server.schedules.anchor_of`): a resume restarts the clock;
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
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Final, TypeVar

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from telemhq_server import db, states
from telemhq_server.flips import Flip, FlipListeners, record_flips
from telemhq_server.schedules import (
    Schedule,
    ScheduleError,
    anchor_of,
    expected_state,
    next_expected_after,
    runtime_exceeded,
)

if TYPE_CHECKING:
    from telemhq_server.host import TelemHQ

__all__ = ["CHUNK", "DETECT_INTERVAL", "Detector", "TickResult", "register"]

logger = logging.getLogger("telemhq_server.detector")

T = TypeVar("T")

#: States from which a missed ping turns the tracker late / down.
_CAN_BE_LATE: Final = ("up", "late")
_CAN_BE_DOWN: Final = ("up", "late", "failing")
#: Trackers read per query; a pass goes on reading pages until none is left.
_PAGE: Final = 1000
#: State changes (or refreshed expectations) written per transaction, by default.
CHUNK: Final = 200
#: Seconds between detection passes in the server: how late a late/down can be noticed.
DETECT_INTERVAL: Final = 5.0


@dataclass
class TickResult:
    """What one pass did (for tests and logs)."""

    refreshed: int = 0
    flips: list[tuple[int, str, str]] = field(default_factory=list)


def _schedule_of(row: Any) -> Schedule | None:
    """The :class:`Schedule` of a tracker row, or ``None`` (logged) when it is unusable."""
    try:
        return Schedule.from_row(row._mapping)
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
        listeners: FlipListeners | None = None,
        chunk: int = CHUNK,
    ) -> None:
        self.engine = engine
        #: State changes (or refreshed expectations) written per transaction.
        self.chunk = chunk
        self.clock = clock
        self.interval = interval
        #: Run on every flip (inside its transaction); told after a tick that flipped something.
        self.listeners = listeners if listeners is not None else FlipListeners()

    async def run(self) -> None:
        """Tick every ``interval`` seconds until cancelled; errors are logged, never raised."""
        while True:
            try:
                result = await asyncio.to_thread(self.tick)
                if result.flips:
                    self.listeners.committed()
            except Exception:
                logger.exception("missed-run detection pass failed; retrying")
            await asyncio.sleep(self.interval)

    def tick(self, now: dt.datetime | None = None) -> TickResult:
        """One detection pass at ``now`` (default: the clock): every tracker due by then is
        handled in this pass, however many there are."""
        now = self.clock() if now is None else now
        result = TickResult()
        result.refreshed = self._refresh(now)
        self._overdue(now, result)
        self._hung(now, result)
        return result

    def _pages(self, query: sa.Select[Any]) -> Iterator[Sequence[Any]]:
        """The rows of ``query`` (on trackers) in pages of :data:`_PAGE`, by id: every
        matching tracker once, and a page's changes never hide the rows after it."""
        t = db.trackers
        after = 0
        while True:
            with self.engine.connect() as conn:
                rows = conn.execute(query.where(t.c.id > after).order_by(t.c.id).limit(_PAGE)).all()
            if rows:
                yield rows
            if len(rows) < _PAGE:
                return
            after = rows[-1].id

    def _chunks(self, items: Sequence[T]) -> Iterator[Sequence[T]]:
        for i in range(0, len(items), self.chunk):
            yield items[i : i + self.chunk]

    # -- 1. expectations ---------------------------------------------------------------------

    def _refresh(self, now: dt.datetime) -> int:
        t = db.trackers
        query = sa.select(t).where(
            t.c.schedule_kind != "none",
            sa.or_(
                sa.and_(
                    t.c.last_ping_at.is_not(None),
                    sa.or_(
                        t.c.next_expected_at.is_(None),
                        t.c.next_expected_at <= t.c.last_ping_at,
                    ),
                ),
                sa.and_(
                    t.c.last_ping_at.is_(None),
                    t.c.schedule_set_at.is_not(None),
                    t.c.next_expected_at.is_(None),
                ),
            ),
        )
        count = 0
        for rows in self._pages(query):
            updates: list[tuple[Any, dt.datetime]] = []
            for row in rows:
                schedule = _schedule_of(row)
                anchor = anchor_of(row._mapping)
                if schedule is None or anchor is None:
                    continue
                expected = next_expected_after(schedule, anchor)
                if expected is not None:
                    updates.append((row, expected))
            for chunk in self._chunks(updates):
                with db.write_tx(self.engine) as conn:
                    count += self._set_expected_many(conn, chunk)
        return count

    # -- 2. overdue pings ---------------------------------------------------------------------

    def _overdue(self, now: dt.datetime, result: TickResult) -> None:
        t = db.trackers
        query = sa.select(t).where(
            t.c.schedule_kind != "none",
            t.c.paused.is_(False),
            # ``new``: never pinged, or resumed (its clock restarted at the resume)
            t.c.state.in_(("new", *_CAN_BE_DOWN)),
            t.c.next_expected_at <= now,
            # A ping since the expectation was computed makes it stale, not overdue.
            sa.or_(t.c.last_ping_at.is_(None), t.c.next_expected_at > t.c.last_ping_at),
        )
        for rows in self._pages(query):
            stale: list[tuple[Any, dt.datetime | None]] = []
            claims: list[_Claim] = []
            for row in rows:
                self._judge_overdue(row, now, stale, claims)
            for chunk in self._chunks(stale):
                with db.write_tx(self.engine) as conn:
                    for row, expected in chunk:
                        self._set_expected(conn, row, expected)
            self._claim_all(claims, now, result, witness=t.c.next_expected_at)

    def _judge_overdue(
        self,
        row: Any,
        now: dt.datetime,
        stale: list[tuple[Any, dt.datetime | None]],
        claims: list[_Claim],
    ) -> None:
        """Decide what ``row`` needs: a fresh expectation (``stale``) or a flip (``claims``)."""
        schedule = _schedule_of(row)
        if schedule is None:
            return
        expected = db.as_utc(row.next_expected_at)
        # The schedule may have been edited since the expectation was stored: recompute.
        anchor = anchor_of(row._mapping)
        if anchor is not None:
            fresh = next_expected_after(schedule, anchor)
            if fresh is None or fresh > now:
                stale.append((row, fresh))
                return
            expected = fresh
        target = expected_state(schedule, expected, now)
        if target is None or target == row.state:
            return
        first = row.last_ping_at is None
        allowed = _CAN_BE_LATE if target == "late" else _CAN_BE_DOWN
        if row.state not in allowed and row.state != "new":
            return
        assert expected is not None
        what = "a first ping" if first else "a ping"
        if target == "late":
            reason = f"expected {what} at {db.iso(expected)}; none yet"
        else:
            deadline = expected + schedule.grace
            reason = (
                f"expected {what} at {db.iso(expected)}; none by {db.iso(deadline)} "
                f"(grace {schedule.grace_seconds}s)"
            )
        claims.append((row, target, reason))

    def _set_expected(self, conn: Connection, row: Any, expected: dt.datetime | None) -> int:
        """Store ``row``'s next expected time, unless a newer ping (or a new schedule, or a
        resume) came meanwhile."""
        t = db.trackers
        return int(
            conn.execute(
                sa.update(t)
                .where(
                    t.c.id == row.id,
                    _same(t.c.last_ping_at, row.last_ping_at),
                    _same(t.c.schedule_set_at, row.schedule_set_at),
                )
                .values(next_expected_at=expected)
            ).rowcount
        )

    def _set_expected_many(
        self, conn: Connection, items: Sequence[tuple[Any, dt.datetime | None]]
    ) -> int:
        """:meth:`_set_expected` for many rows in one statement, executed once per row by the
        driver (a pass may store thousands of expectations: after an upgrade, every
        never-pinged tracker's first one)."""
        t = db.trackers
        statement = (
            sa.update(t)
            .where(
                t.c.id == sa.bindparam("b_id"),
                t.c.last_ping_at.is_not_distinct_from(sa.bindparam("b_ping")),
                t.c.schedule_set_at.is_not_distinct_from(sa.bindparam("b_set")),
            )
            .values(next_expected_at=sa.bindparam("b_expected"))
        )
        params = [
            {
                "b_id": row.id,
                "b_ping": row.last_ping_at,
                "b_set": row.schedule_set_at,
                "b_expected": expected,
            }
            for row, expected in items
        ]
        return int(conn.execute(statement, params).rowcount) if params else 0

    # -- 3. hung runs -------------------------------------------------------------------------

    def _hung(self, now: dt.datetime, result: TickResult) -> None:
        t = db.trackers
        query = sa.select(t).where(
            t.c.open_start_at.is_not(None),
            t.c.max_runtime_seconds.is_not(None),
            t.c.paused.is_(False),
            t.c.state.in_(("new", *_CAN_BE_DOWN)),
        )
        for rows in self._pages(query):
            claims: list[_Claim] = []
            for row in rows:
                schedule = _schedule_of(row)
                if schedule is None or not runtime_exceeded(schedule, row.open_start_at, now):
                    continue
                reason = (
                    f"run started at {db.iso(row.open_start_at)} has not ended within the max "
                    f"runtime of {schedule.max_runtime_seconds}s"
                )
                claims.append((row, "down", reason))
            self._claim_all(claims, now, result, witness=t.c.open_start_at)

    # -- the claim ------------------------------------------------------------------------------

    def _claim_all(
        self,
        claims: Sequence[_Claim],
        now: dt.datetime,
        result: TickResult,
        *,
        witness: sa.Column[Any],
    ) -> None:
        """Flip the claimed rows, ``chunk`` per transaction (few statements and one
        commit for many flips; short enough that the ping writer never waits long)."""
        for chunk in self._chunks(claims):
            with db.write_tx(self.engine) as conn:
                done = self._claim_chunk(conn, chunk, now, witness)
            for row, new, reason in done:
                logger.info("tracker %s: %s -> %s (%s)", row.id, row.state, new, reason)
                result.flips.append((row.id, row.state, new))

    def _claim_chunk(
        self,
        conn: Connection,
        chunk: Sequence[_Claim],
        now: dt.datetime,
        witness: sa.Column[Any],
    ) -> list[_Claim]:
        """Inside one transaction: re-read the rows (locked), keep the claims whose tracker
        is still as we saw it (no ping, no edit, no other process since), flip those."""
        t = db.trackers
        query = (
            sa.select(t.c.id, t.c.state, t.c.paused, t.c.last_ping_at, t.c.schedule_set_at, witness)
            .where(t.c.id.in_([row.id for row, _, _ in chunk]))
            .order_by(t.c.id)  # the ingest writer locks in id order too: no deadlock
        )
        if self.engine.dialect.name == "postgresql":
            query = query.with_for_update()  # SQLite: write_tx already holds the write lock
        now_rows = {r.id: r for r in conn.execute(query)}
        done: list[_Claim] = []
        for row, target, reason in chunk:
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
            current = now_rows.get(row.id)
            if (
                not transition.changed
                or current is None
                or current.state != row.state
                or current.paused
                or current.last_ping_at != row.last_ping_at
                or current.schedule_set_at != row.schedule_set_at
                or getattr(current, witness.name) != getattr(row, witness.name)
            ):
                continue  # another process (or a ping, or an edit) got there first
            done.append((row, transition.state, reason))
        for new in {new for _, new, _ in done}:
            ids = [row.id for row, state, _ in done if state == new]
            conn.execute(
                sa.update(t).where(t.c.id.in_(ids)).values(state=new, state_changed_at=now)
            )
        record_flips(
            conn,
            [Flip(row.id, row.state, new, reason, None, now) for row, new, reason in done],
            listeners=self.listeners,
        )
        return done


#: (tracker row, target state, reason) of one flip to make.
_Claim = tuple[Any, str, str]


def _same(column: sa.Column[Any], value: Any) -> sa.ColumnElement[bool]:
    """``column = value``, or ``column IS NULL`` for None."""
    return column.is_(None) if value is None else column == value


def register(app: TelemHQ) -> None:
    """Run one detector per server process (see :mod:`telemhq_server.host`)."""

    async def loop(app: TelemHQ) -> None:
        await Detector(app.engine, interval=DETECT_INTERVAL, listeners=app.flip_listeners).run()

    app.add_background(loop)
