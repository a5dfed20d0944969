"""Token (or ``ping_key/slug``) -> tracker, with parsed assertions, cached per process."""

from __future__ import annotations

import asyncio
import concurrent.futures
import datetime as dt
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Final

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from telemhq_plugins.core.assertions import AnyAssertion, parse_assertion
from telemhq_server.db import as_utc, ping_keys, trackers, write_tx
from telemhq_server.ingest.errors import NewSlug, PingError
from telemhq_server.trackers import create_tracker, from_first_ping

__all__ = ["CachedTracker", "TrackerCache"]

logger = logging.getLogger("telemhq_server.ingest")


@dataclass(frozen=True, slots=True)
class CachedTracker:
    id: int
    token: str
    updated_at: dt.datetime
    assertions: tuple[AnyAssertion, ...]
    #: some assertion reads the tracker's history: the writer evaluates them all
    historical: bool = False
    #: the schedule's timezone (same weekday / same hour read it)
    timezone: str | None = None


@dataclass(slots=True)
class _Entry:
    tracker: CachedTracker | None  # None: known not to exist (negative cache)
    error: PingError | None
    expires: float


class TrackerCache:
    """Token (or ``ping_key/slug``) -> tracker config with parsed assertions.

    Entries are trusted for ``ttl`` seconds, then refreshed in the background (one load per
    key at a time, in a thread); when ``updated_at`` did not change, the parsed assertions
    are kept. The API invalidates this process's entries directly on every change, and the
    writer checks the token inside its transaction, so a stale entry never writes to a
    tracker whose token was rotated or that was deleted.
    """

    def __init__(self, engine: Engine, ttl: float, executor: concurrent.futures.Executor):
        self.engine = engine
        self.ttl = ttl
        self.executor = executor
        self._entries: dict[str, _Entry] = {}
        self._loading: dict[str, asyncio.Future[_Entry]] = {}
        self._creating: dict[str, asyncio.Future[None]] = {}
        self._refreshing: set[asyncio.Task[_Entry]] = set()

    def invalidate(self) -> None:
        self._entries.clear()

    async def get(self, key: str, make_loader: Callable[[], Callable[[], _Entry]]) -> CachedTracker:
        """The tracker for ``key``. A missing entry is loaded (the caller waits); an expired
        one is still served while one background load refreshes it, so no request waits for
        a refresh (stale by at most ``ttl`` + one query)."""
        entry = self._entries.get(key)
        if entry is None:
            entry = await self._load(key, make_loader())
        elif entry.expires < time.monotonic() and key not in self._loading:
            task = asyncio.get_running_loop().create_task(self._load(key, make_loader()))
            self._refreshing.add(task)
            task.add_done_callback(self._refreshed)
        if entry.tracker is None:
            error = entry.error
            assert error is not None
            # A fresh exception each time: raising a shared one would grow its traceback.
            if isinstance(error, NewSlug):
                raise NewSlug(error.key, error.slug)
            raise PingError(error.status, error.reason, error.message)
        return entry.tracker

    def _refreshed(self, task: asyncio.Task[_Entry]) -> None:
        self._refreshing.discard(task)
        if not task.cancelled() and task.exception() is not None:
            logger.warning("refreshing a cached tracker failed", exc_info=task.exception())

    async def _load(self, key: str, loader: Callable[[], _Entry]) -> _Entry:
        pending = self._loading.get(key)
        if pending is not None:
            return await asyncio.shield(pending)
        loop = asyncio.get_running_loop()
        future: asyncio.Future[_Entry] = loop.create_future()
        self._loading[key] = future
        try:
            entry = await loop.run_in_executor(self.executor, loader)
            if len(self._entries) > 100_000:  # bound the memory an unknown-token flood can use
                self._entries.clear()
            self._entries[key] = entry
            future.set_result(entry)
        except BaseException as exc:
            future.set_exception(exc)
            future.exception()  # retrieved: no "never retrieved" warning when nobody waits
            raise
        finally:
            del self._loading[key]
        return entry

    def _entry_from_row(self, key: str, row: Any) -> _Entry:
        expires = time.monotonic() + self.ttl
        old = self._entries.get(key)
        updated_at = as_utc(row["updated_at"])
        assert updated_at is not None
        if old is not None and old.tracker is not None and old.tracker.updated_at == updated_at:
            return _Entry(old.tracker, None, expires)
        parsed = tuple(parse_assertion(text) for text in row["assertions"])
        historical = any(a.needs_history for a in parsed)
        tracker = CachedTracker(
            row["id"], row["token"], updated_at, parsed, historical, row["timezone"]
        )
        return _Entry(tracker, None, expires)

    def _missing(self, error: PingError) -> _Entry:
        return _Entry(None, error, time.monotonic() + self.ttl)

    _COLUMNS: Final = (
        trackers.c.id,
        trackers.c.token,
        trackers.c.updated_at,
        trackers.c.assertions,
        trackers.c.timezone,
    )

    def by_token(self, token: str) -> Callable[[], _Entry]:
        def load() -> _Entry:
            with self.engine.connect() as conn:
                row = (
                    conn.execute(sa.select(*self._COLUMNS).where(trackers.c.token == token))
                    .mappings()
                    .first()
                )
            if row is None:
                return self._missing(PingError(404, "unknown_token", "unknown token"))
            return self._entry_from_row(token, row)

        return load

    def by_slug(self, key: str, ping_key: str, slug: str) -> Callable[[], _Entry]:
        def load() -> _Entry:
            with self.engine.connect() as conn:
                pk = conn.execute(
                    sa.select(ping_keys.c.auto_create).where(ping_keys.c.key == ping_key)
                ).first()
                if pk is None:
                    return self._missing(
                        PingError(404, "unknown_token", "unknown token or ping key")
                    )
                row = (
                    conn.execute(sa.select(*self._COLUMNS).where(trackers.c.slug == slug))
                    .mappings()
                    .first()
                )
            if row is None and pk.auto_create:
                return self._missing(NewSlug(key, slug))
            if row is None:
                return self._missing(
                    PingError(
                        404,
                        "unknown_slug",
                        f"no tracker with slug {slug!r} (this ping key does not create trackers)",
                    )
                )
            return self._entry_from_row(key, row)

        return load

    async def auto_create(
        self, new: NewSlug, payload: dict[str, Any], *, seed: dict[str, Any] | None = None
    ) -> None:
        """Create the tracker ``new`` names, as the ping's payload describes it
        (:func:`~telemhq_server.trackers.from_first_ping`) with ``seed``'s columns (validated
        values, e.g. a schedule an OpenLineage event carries), and forget the cached miss.

        One creation per key at a time, from the first ping's payload: pings that arrive
        meanwhile wait for it and go on in their order (a batch's ``start`` before its end)."""
        pending = self._creating.get(new.key)
        if pending is not None:
            await asyncio.shield(pending)
            return
        loop = asyncio.get_running_loop()
        future: asyncio.Future[None] = loop.create_future()
        self._creating[new.key] = future
        try:
            await loop.run_in_executor(self.executor, self._create, new.slug, payload, seed)
            self._entries.pop(new.key, None)
            future.set_result(None)
        except BaseException as exc:
            future.set_exception(exc)
            future.exception()  # retrieved: no "never retrieved" warning when nobody waits
            raise
        finally:
            del self._creating[new.key]

    def _create(self, slug: str, payload: dict[str, Any], seed: dict[str, Any] | None) -> None:
        try:
            with write_tx(self.engine) as conn:
                create_tracker(conn, {**from_first_ping(slug, payload), **(seed or {})})
            logger.info("tracker created by ping key", extra={"slug": slug})
        except sa.exc.IntegrityError:
            pass  # another request or process created it first
