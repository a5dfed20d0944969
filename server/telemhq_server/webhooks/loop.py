"""The delivery loop the two outboxes share: the webhooks' :class:`~.dispatcher.Dispatcher`
and the alert channels' :class:`~telemhq_server.alerts.AlertDispatcher` are each an
:class:`OutboxLoop`, which owns what they have in common:

- the background loop (``run``): a pass, an hourly prune of finished rows, then a wait for a
  wake-up (a flip committed, a delivery done) or the polling interval; errors are logged and
  the loop goes on; on cancellation the deliveries under way are cancelled (their rows' leases
  run out and they are sent again later);
- a pass (``tick``): claim as many due rows as there is room for (``max_in_flight``), start
  delivering each as a task without waiting for it, so a slow receiver never holds up the
  next pass;
- the outbox queries both claims are made of (:func:`due_rows`: a few oldest due rows per
  owner; :func:`lease`: the conditional ``UPDATE ... SET claimed_until`` that makes several
  processes on one database send a row once) and :func:`prune_outbox`.

What is claimed, how it is sent and how the attempt is recorded stay with each dispatcher.
"""

from __future__ import annotations

import abc
import asyncio
import collections
import contextlib
import datetime as dt
import logging
import time
from collections.abc import Callable, Hashable, Sequence
from typing import ClassVar, Final, Generic, TypeVar

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from telemhq_server import db

__all__ = ["KEEP_DAYS", "OutboxLoop", "due_rows", "lease", "prune_outbox"]

#: Days a delivered or abandoned row stays visible in the delivery history.
KEEP_DAYS: Final = 30
#: Seconds between prunes of finished rows.
_PRUNE_EVERY: Final = 3600

J = TypeVar("J")


class OutboxLoop(abc.ABC, Generic[J]):
    """Claims and delivers due outbox rows; one per server process and outbox. Subclasses
    say how to :meth:`claim`, :meth:`deliver` and :meth:`prune`, and what deliveries are
    bounded per (:meth:`bound_of`)."""

    #: what the deliveries are called in log lines (``webhook``, ``alert``) and where they go
    what: ClassVar[str]
    log: ClassVar[logging.Logger]

    def __init__(
        self,
        engine: Engine,
        *,
        clock: Callable[[], dt.datetime],
        interval: float,
        max_in_flight: int,
    ) -> None:
        self.engine = engine
        self.clock = clock
        self.interval = interval
        self.max_in_flight = max_in_flight
        self._wake = asyncio.Event()
        #: deliveries under way: task -> what it is bounded per (a receiver, a channel)
        self._in_flight: dict[asyncio.Task[None], Hashable] = {}

    @abc.abstractmethod
    def claim(self, now: dt.datetime, room: int, busy: collections.Counter[Hashable]) -> list[J]:
        """Lease up to ``room`` due rows (in a worker thread); ``busy`` counts the deliveries
        under way per :meth:`bound_of`."""

    @abc.abstractmethod
    async def deliver(self, job: J) -> None:
        """Send one claimed row and record the attempt."""

    @abc.abstractmethod
    def prune(self, now: dt.datetime) -> int:
        """Forget finished rows older than :data:`KEEP_DAYS`; returns how many."""

    @abc.abstractmethod
    def bound_of(self, job: J) -> Hashable:
        """What deliveries are bounded per (a receiver, a channel)."""

    def busy(self) -> collections.Counter[Hashable]:
        """Deliveries under way per :meth:`bound_of`."""
        return collections.Counter(self._in_flight.values())

    async def aclose(self) -> None:
        """Release what the loop holds (run's last step)."""

    def wake(self) -> None:
        """Ask the loop to look at the outbox now (e.g. right after a flip)."""
        self._wake.set()

    async def run(self) -> None:
        """Deliver forever (cancel the task to stop); errors are logged, never raised."""
        next_prune = 0.0
        try:
            while True:
                try:
                    await self.tick(wait=False)
                    if time.monotonic() >= next_prune:
                        next_prune = time.monotonic() + _PRUNE_EVERY
                        await asyncio.to_thread(self.prune, self.clock())
                except Exception:
                    self.log.exception("%s delivery pass failed; retrying", self.what)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), self.interval)
                self._wake.clear()
        finally:
            tasks = list(self._in_flight)
            for task in tasks:
                task.cancel()  # its row's lease runs out and it is sent again later
            await asyncio.gather(*tasks, return_exceptions=True)
            await self.aclose()

    async def tick(self, *, wait: bool = True) -> int:
        """Claim the due rows there is room for and start delivering them; returns how many.
        ``wait``: return only once those deliveries are done (tests); the loop does not wait,
        so a slow receiver never holds up the next pass."""
        now = self.clock()
        room = self.max_in_flight - len(self._in_flight)
        if room <= 0:
            return 0
        jobs = await asyncio.to_thread(self.claim, now, room, self.busy())
        started = []
        for job in jobs:
            task = asyncio.get_running_loop().create_task(self.deliver(job))
            self._in_flight[task] = self.bound_of(job)
            task.add_done_callback(self._delivered)
            started.append(task)
        if wait and started:
            await asyncio.gather(*started, return_exceptions=True)
        return len(jobs)

    def _delivered(self, task: asyncio.Task[None]) -> None:
        self._in_flight.pop(task, None)
        if not task.cancelled() and task.exception() is not None:
            self.log.error("%s delivery failed", self.what, exc_info=task.exception())
        self._wake.set()  # room for another delivery


def due_rows(
    outbox: sa.Table,
    owner: sa.Column[int],
    pending: sa.ColumnElement[bool],
    free: sa.ColumnElement[bool],
    now: dt.datetime,
) -> sa.Subquery:
    """The due rows (``id``, ``rank``) of ``outbox``, ranked per ``owner`` (a webhook, a
    channel) oldest first: a claim takes the first few of each, so an owner with thousands of
    rows waiting never pushes another's out of the pass."""
    o = outbox
    return (
        sa.select(
            o.c.id,
            sa.func.row_number()
            .over(partition_by=owner, order_by=(o.c.next_attempt_at, o.c.id))
            .label("rank"),
        )
        .where(pending, o.c.next_attempt_at <= now, free)
        .subquery()
    )


def lease(
    conn: Connection,
    outbox: sa.Table,
    row_id: int,
    condition: sa.ColumnElement[bool],
    until: dt.datetime,
) -> bool:
    """Claim one row until ``until`` if it still meets ``condition`` (pending, not leased):
    False when another process took it first."""
    done = conn.execute(
        sa.update(outbox).where(outbox.c.id == row_id, condition).values(claimed_until=until)
    )
    return bool(done.rowcount == 1)


def prune_outbox(
    engine: Engine,
    outbox: sa.Table,
    attempts: sa.Table,
    finished: Sequence[sa.Column[dt.datetime]],
    now: dt.datetime,
) -> int:
    """Delete the rows of ``outbox`` (and their ``attempts``) finished, by any column of
    ``finished``, more than :data:`KEEP_DAYS` before ``now``; returns how many rows."""
    cutoff = now - dt.timedelta(days=KEEP_DAYS)
    done = sa.or_(*(column < cutoff for column in finished))
    with db.write_tx(engine) as conn:
        ids = sa.select(outbox.c.id).where(done)
        conn.execute(sa.delete(attempts).where(attempts.c.outbox_id.in_(ids)))
        return int(conn.execute(sa.delete(outbox).where(done)).rowcount)
