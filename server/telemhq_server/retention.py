"""Retention: each tracker keeps its newest ``TELEMHQ_RETENTION_RUNS`` runs; older ones are
deleted in the background, off the ping path.

The first pass of a process looks at every tracker with more runs than that; later passes,
every ``TELEMHQ_PRUNE_INTERVAL`` seconds, only at the trackers the ping writer has given runs
since (``app.writer.take_touched()``). Deletes go in small transactions, so the ping writer
never waits long for the database.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Iterable
from typing import TYPE_CHECKING, Final

import sqlalchemy as sa

from telemhq_server.db import runs, trackers, write_tx

if TYPE_CHECKING:
    from telemhq_server.host import TelemHQ

__all__ = ["PRUNE_CHUNK", "prune", "prune_tracker", "register"]

logger = logging.getLogger("telemhq_server.retention")

PRUNE_CHUNK: Final = 2_000


def prune_tracker(
    engine: sa.Engine, tracker_id: int, keep: int, stop: threading.Event | None = None
) -> int:
    """Delete all but the newest ``keep`` runs of one tracker, in small transactions (so the
    ping writer never waits long); returns how many were deleted."""
    with engine.connect() as conn:
        cutoff = conn.execute(
            sa.select(runs.c.id)
            .where(runs.c.tracker_id == tracker_id)
            .order_by(runs.c.id.desc())
            .offset(keep - 1)
            .limit(1)
        ).scalar()
    if cutoff is None:
        return 0
    deleted = 0
    while True:
        with write_tx(engine) as conn:
            doomed = (
                sa.select(runs.c.id)
                .where(runs.c.tracker_id == tracker_id, runs.c.id < cutoff)
                .order_by(runs.c.id)
                .limit(PRUNE_CHUNK)
                .scalar_subquery()
            )
            count = conn.execute(runs.delete().where(runs.c.id.in_(doomed))).rowcount
        deleted += count
        if count < PRUNE_CHUNK or (stop is not None and stop.is_set()):
            return deleted


def prune(
    engine: sa.Engine,
    tracker_ids: Iterable[int] | None,
    keep: int,
    stop: threading.Event | None = None,
) -> int:
    """Apply retention to ``tracker_ids`` (None: every tracker with more runs than ``keep``)."""
    if tracker_ids is None:
        with engine.connect() as conn:
            tracker_ids = list(
                conn.execute(sa.select(trackers.c.id).where(trackers.c.n_runs > keep)).scalars()
            )
    deleted = 0
    for tracker_id in tracker_ids:
        if stop is not None and stop.is_set():
            break
        deleted += prune_tracker(engine, tracker_id, keep, stop)
    return deleted


async def _loop(app: TelemHQ) -> None:
    keep, interval = app.settings.retention_runs, app.settings.prune_interval
    ids: Iterable[int] | None = None  # first pass: everything
    while True:
        try:
            deleted = await app.run_sync(prune, app.engine, ids, keep, app.stopping)
            if deleted:
                logger.info("retention pass", extra={"deleted_runs": deleted, "keep": keep})
        except Exception:
            logger.exception("retention pass failed; will retry")
        await asyncio.sleep(interval)
        ids = app.writer.take_touched()


def register(app: TelemHQ) -> None:
    """Apply retention in the background of every server process (see
    :mod:`telemhq_server.host`)."""
    app.add_background(_loop)
