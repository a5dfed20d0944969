"""The ping path: a raw ASGI handler, a tracker cache and a group-commit writer.

Request flow for ``POST /ping/...`` (no framework, no ORM):

1. find the tracker the path names (``/ping/{token}[/start|/fail]`` or
   ``/ping/{ping_key}/{slug}[/start|/fail]``) in :class:`TrackerCache` (parsed assertions
   included; refreshed in the background every ``cache_ttl`` seconds, so other processes'
   changes are seen within about a second);
2. read the body within the size limit and parse it as a JSON object (any or no content type);
3. evaluate the assertions (core's ``evaluate_all``) and queue the ping to :class:`BatchWriter`;
4. the writer takes every queued ping, writes them in ONE transaction (runs, tracker updates,
   flips) with driver SQL, commits, and only then answers each waiting request.

``POST /ping/_batch`` takes several pings in one request (the delivery worker of
``telemhq_plugins`` uses it) and answers each as if it had come alone.

The transaction locks the trackers it changes (``SELECT ... FOR UPDATE`` on PostgreSQL; the
write lock and ``BEGIN IMMEDIATE`` on SQLite) and re-reads their state, so several server
processes on one database compute states in order. A failed transaction rolls back whole: no
partial rows, and every ping in it is answered 503 (the client retries; ``ping_id`` makes that
safe).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import datetime as dt
import functools
import json
import logging
import random
import threading
import time
from collections.abc import Awaitable, Callable, MutableMapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

import orjson
import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine, RootTransaction

from telemhq_plugins.core.assertions import (
    Assertion,
    AssertionResult,
    evaluate_all,
    parse_assertion,
)
from telemhq_plugins.core.config import slugify
from telemhq_plugins.core.payload import STATUSES
from telemhq_server import states
from telemhq_server.db import as_utc, ping_keys, trackers, utcnow, write_lock, write_tx
from telemhq_server.flips import record_flip
from telemhq_server.metrics import Metrics
from telemhq_server.trackers import create_tracker, next_expected_at

__all__ = ["BatchWriter", "PingHandler", "TrackerCache"]

logger = logging.getLogger("telemhq_server.ingest")

Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]

MAX_ID_LENGTH: Final = 200
MAX_PENDING: Final = 50_000
INSERT_CHUNK: Final = 500  # rows per INSERT statement (10 parameters each)
BATCH_PATH: Final = "/ping/_batch"
BATCH_MAX_PINGS: Final = 1000
BATCH_BODY_FACTOR: Final = 10  # a batch request may be 10x the single-ping body limit
SUFFIXES: Final = {"start": "start", "fail": "failure"}
_STATUS_LIST: Final = ", ".join(sorted(STATUSES))


class PingError(Exception):
    """A ping refused with ``status`` and ``message``; ``reason`` labels the metric."""

    def __init__(self, status: int, reason: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.reason = reason
        self.message = message


# --- tracker cache ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class CachedTracker:
    id: int
    token: str
    updated_at: dt.datetime
    assertions: tuple[Assertion, ...]


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
        return _Entry(CachedTracker(row["id"], row["token"], updated_at, parsed), None, expires)

    def _missing(self, error: PingError) -> _Entry:
        return _Entry(None, error, time.monotonic() + self.ttl)

    _COLUMNS: Final = (
        trackers.c.id,
        trackers.c.token,
        trackers.c.updated_at,
        trackers.c.assertions,
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
                row = self._auto_create(slug)
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

    def _auto_create(self, slug: str) -> Any:
        try:
            with write_tx(self.engine) as conn:
                create_tracker(conn, {"name": slug, "slug": slug})
            logger.info("tracker created by ping key", extra={"slug": slug})
        except sa.exc.IntegrityError:
            pass  # another request or process created it first
        with self.engine.connect() as conn:
            return (
                conn.execute(sa.select(*self._COLUMNS).where(trackers.c.slug == slug))
                .mappings()
                .first()
            )


# --- the writer ------------------------------------------------------------------------------


@dataclass(slots=True)
class Pending:
    """One accepted ping waiting for its transaction."""

    tracker_id: int
    token: str
    status: str
    body: str
    ping_id: str | None
    run_id: str | None
    duration: float | None
    results: list[AssertionResult]
    received_at: dt.datetime
    future: asyncio.Future[tuple[int, dict[str, Any]]] | None = None
    answer: tuple[int, dict[str, Any]] | None = field(default=None)


#: rows to insert; index in them -> (old state, new state, reason, time); trackers to update
_Writes = tuple[
    list[tuple[Any, ...]],
    dict[int, tuple[str, str, str, dt.datetime]],
    dict[int, dict[str, Any]],
]


class BatchWriter:
    """Group commit: one writer task, one transaction per batch of pings (see :meth:`_run`
    for where the statements and the COMMIT run)."""

    def __init__(self, engine: Engine, metrics: Metrics, max_batch: int = 512) -> None:
        self.engine = engine
        self.metrics = metrics
        self.max_batch = max_batch
        self.is_postgres = engine.dialect.name == "postgresql"
        self.sql = _Sql(engine.dialect.name)
        self._executor = concurrent.futures.ThreadPoolExecutor(1, "telemhq-writer")
        self._queue: list[Pending] = []
        self._wakeup: asyncio.Event | None = None
        self._task: asyncio.Task[None] | None = None
        self._conn: Connection | None = None  # the writer's own connection
        self._stopping = False
        self._touched: set[int] = set()  # tracker ids written since take_touched()
        self._touched_lock = threading.Lock()

    @property
    def pending(self) -> int:
        return len(self._queue)

    def take_touched(self) -> set[int]:
        """Tracker ids written to since the last call (for the retention pass)."""
        with self._touched_lock:
            touched, self._touched = self._touched, set()
        return touched

    def start(self) -> None:
        self._wakeup = asyncio.Event()
        self._task = asyncio.get_running_loop().create_task(self._run(), name="telemhq-writer")

    async def stop(self) -> None:
        """Write and answer what is queued, then stop."""
        if self._task is not None and self._wakeup is not None:
            self._stopping = True
            self._wakeup.set()
            await self._task
        await asyncio.get_running_loop().run_in_executor(self._executor, self._close)
        self._executor.shutdown(wait=True)

    def submit(self, item: Pending) -> asyncio.Future[tuple[int, dict[str, Any]]]:
        if len(self._queue) >= MAX_PENDING:
            raise PingError(503, "overloaded", "server busy: too many pings waiting; retry")
        if self._stopping:
            raise PingError(503, "stopping", "server shutting down; retry")
        assert self._wakeup is not None, "BatchWriter.start() was not called"
        item.future = asyncio.get_running_loop().create_future()
        self._queue.append(item)
        self._wakeup.set()
        return item.future

    async def _run(self) -> None:
        """Take everything queued, write it in one transaction, answer; repeat.

        On SQLite the statements run on the event loop's thread (in-process CPU work: a
        writer thread was measured slower, as it contends with the loop for the GIL on every
        statement), and only the COMMIT, which waits for the fsync with the GIL released,
        runs in a thread while the loop goes on reading the next pings. On PostgreSQL the
        transaction mostly waits for the database server, so all of it runs in the writer
        thread."""
        assert self._wakeup is not None
        loop = asyncio.get_running_loop()
        while not self._stopping or self._queue:
            await self._wakeup.wait()
            self._wakeup.clear()
            while self._queue:
                batch = self._queue[: self.max_batch]
                del self._queue[: self.max_batch]
                try:
                    if self.is_postgres:
                        await loop.run_in_executor(self._executor, self.write, batch)
                    else:
                        await self.write_sqlite(batch)
                except Exception:
                    logger.exception("writing a batch of %d pings failed", len(batch))
                    for item in batch:
                        item.answer = (
                            503,
                            {"ok": False, "error": "storage unavailable, nothing was recorded"},
                        )
                for item in batch:
                    if item.future is not None and not item.future.done():
                        assert item.answer is not None
                        item.future.set_result(item.answer)
                await asyncio.sleep(0)  # more than max_batch queued: let the loop breathe

    def write(self, batch: Sequence[Pending]) -> None:
        """Write ``batch`` in one transaction and set each item's ``answer`` (blocking: the
        PostgreSQL writer thread, and tests).

        The writer keeps one connection for itself (no pool checkout per batch) and speaks
        driver SQL (:class:`_Sql`). A failed transaction is rolled back whole and retried
        once (SQLite busy, PostgreSQL deadlock or serialization failure, lost connection)."""
        started = time.perf_counter()
        for attempt in (1, 2):
            conn = self._connection()
            try:
                with write_lock(self.engine):
                    transaction = self._begin_and_write(conn, batch)
                    committing = time.perf_counter()
                    self._commit(transaction)
                break
            except sa.exc.DBAPIError as exc:
                if not self._retryable(exc, conn, attempt):
                    raise
        done = time.perf_counter()
        self.metrics.batch(len(batch), done - started, done - committing)

    async def write_sqlite(self, batch: Sequence[Pending]) -> None:
        """:meth:`write` on the event loop (SQLite): the statements run here, the COMMIT,
        which waits for the fsync, in the writer thread (see :meth:`_run`)."""
        loop = asyncio.get_running_loop()
        started = time.perf_counter()
        for attempt in (1, 2):
            conn = self._connection()
            try:
                with write_lock(self.engine):
                    transaction = self._begin_and_write(conn, batch)
                    committing = time.perf_counter()
                    driver = conn.connection.dbapi_connection
                    assert driver is not None
                    # The driver's COMMIT (the fsync, without the GIL) in the thread; then
                    # SQLAlchemy's bookkeeping here, whose COMMIT finds nothing left to do.
                    try:
                        await loop.run_in_executor(self._executor, driver.commit)
                    except BaseException:
                        transaction.rollback()
                        raise
                    self._commit(transaction)
                break
            except sa.exc.DBAPIError as exc:
                if not self._retryable(exc, conn, attempt):
                    raise
        done = time.perf_counter()
        self.metrics.batch(len(batch), done - started, done - committing)

    def _begin_and_write(self, conn: Connection, batch: Sequence[Pending]) -> RootTransaction:
        transaction = conn.begin()
        try:
            self._write(conn, batch)
        except BaseException:
            transaction.rollback()
            raise
        return transaction

    @staticmethod
    def _commit(transaction: RootTransaction) -> None:
        try:
            transaction.commit()
        except BaseException:
            if transaction.is_active:
                transaction.rollback()
            raise

    def _retryable(self, exc: sa.exc.DBAPIError, conn: Connection, attempt: int) -> bool:
        if exc.connection_invalidated or conn.invalidated:
            self._close()
        if attempt == 2 or not isinstance(exc, sa.exc.OperationalError):
            return False
        logger.warning("batch transaction failed; retrying once", exc_info=True)
        return True

    def _connection(self) -> Connection:
        if self._conn is None or self._conn.closed:
            conn = self.engine.connect()
            if not self.is_postgres:
                conn = conn.execution_options(sqlite_immediate=True)
            self._conn = conn
        return self._conn

    def _close(self) -> None:
        if self._conn is not None:
            with contextlib.suppress(Exception):
                self._conn.close()
            self._conn = None

    def _write(self, conn: Connection, batch: Sequence[Pending]) -> None:
        # The driver's own connection and cursors, inside the SQLAlchemy transaction: no
        # result machinery. On PostgreSQL the reads go in one pipelined round trip, and the
        # writes in another.
        driver = conn.connection.dbapi_connection
        assert driver is not None
        pipeline = driver.pipeline if self.is_postgres else contextlib.nullcontext
        sql = self.sql
        ids = sorted({item.tracker_id for item in batch})
        ping_ids = {(i.tracker_id, i.ping_id) for i in batch if i.ping_id}
        wanted = {(i.tracker_id, i.run_id) for i in batch if i.run_id and i.status != "start"}
        cursors = [driver.cursor() for _ in range(3)]
        try:
            with pipeline():
                cursors[0].execute(sql.lock_trackers(len(ids)), tuple(ids))
                if ping_ids:
                    tids, pids = sorted({t for t, _ in ping_ids}), sorted({p for _, p in ping_ids})
                    cursors[1].execute(sql.find_ping_ids(len(tids), len(pids)), (*tids, *pids))
                if wanted:
                    tids, rids = sorted({t for t, _ in wanted}), sorted({r for _, r in wanted})
                    cursors[2].execute(sql.find_starts(len(tids), len(rids)), (*tids, *rids))
            rows = {
                r[0]: dict(zip(_Sql.TRACKER_COLUMNS, r, strict=True)) for r in cursors[0].fetchall()
            }
            # ping_id -> (run_id, results JSON) of runs already stored
            seen = {(t, p): (r, a) for t, p, r, a in cursors[1].fetchall()} if ping_ids else {}
            # start times of runs named by an end ping (used unless it is the open start)
            starts = (
                {(t, r): sql.from_db(at) for t, r, at in cursors[2].fetchall()} if wanted else {}
            )
            writes = self._apply(batch, rows, seen, starts)
            if writes is not None:
                inserts, flip_for, changed = writes
                # record_flip() runs through SQLAlchemy, which wants each result at once: no
                # pipeline when the batch changes a state (rare).
                with pipeline() if not flip_for else contextlib.nullcontext():
                    self._insert_runs(conn, cursors[0], inserts, flip_for)
                    cursors[0].executemany(
                        sql.update_tracker,
                        [_tracker_params(sql, t, r) for t, r in changed.items()],
                    )
                with self._touched_lock:
                    self._touched.update(changed)
        finally:
            for cursor in cursors:
                cursor.close()

    def _apply(
        self,
        batch: Sequence[Pending],
        rows: dict[int, dict[str, Any]],
        seen: dict[tuple[int, str], tuple[str, str]],
        starts: dict[tuple[int, str], dt.datetime],
    ) -> _Writes | None:
        """Run each ping through the state machine, in order, against the locked rows; set
        each item's answer; return the rows to insert and the trackers to update."""
        sql = self.sql
        inserts: list[tuple[Any, ...]] = []
        # index in inserts -> (old state, new state, reason, time)
        flip_for: dict[int, tuple[str, str, str, dt.datetime]] = {}
        changed: dict[int, dict[str, Any]] = {}
        for item in batch:
            row = rows.get(item.tracker_id)
            if row is None or row["token"] != item.token:
                item.answer = (404, {"ok": False, "error": "unknown token"})
                continue
            if item.ping_id is not None:
                dup = seen.get((item.tracker_id, item.ping_id))
                if dup is not None:
                    item.answer = (
                        200,
                        {
                            "ok": True,
                            "duplicate": True,
                            "run_id": dup[0],
                            "state": row["state"],
                            "assertions": orjson.loads(dup[1]),
                        },
                    )
                    continue
            now = item.received_at
            started_at: dt.datetime | None = None
            if item.status == "start":
                run_id = item.run_id or _new_run_id()
                row["open_start_at"] = now
                row["open_start_run_id"] = run_id
                starts[(item.tracker_id, run_id)] = now
            else:
                run_id = item.run_id or row["open_start_run_id"] or _new_run_id()
                if run_id == row["open_start_run_id"] and row["open_start_at"] is not None:
                    started_at = sql.from_db(row["open_start_at"])
                    row["open_start_at"] = None
                    row["open_start_run_id"] = None
                else:
                    started_at = starts.get((item.tracker_id, run_id))
                # Any end of a run (retry and skipped too: the job did run) is the ping
                # the schedule waited for; a start is not.
                row["last_ping_at"] = now
                if row["schedule_kind"] != "none":
                    row["next_expected_at"] = next_expected_at(
                        row["schedule_kind"],
                        row["period_seconds"],
                        row["cron"],
                        row["timezone"],
                        now,
                    )
            duration = item.duration
            if duration is None and started_at is not None:
                duration = round((now - started_at).total_seconds() * 1000, 3)
            failed = [r.reason for r in item.results if not r.passed]
            transition = states.on_run(
                states.TrackerStatus(
                    row["state"],
                    row["consecutive_failures"],
                    row["failure_threshold"],
                    bool(row["paused"]),
                ),
                item.status,
                failed,
            )
            if transition.reason is not None:
                flip_for[len(inserts)] = (row["state"], transition.state, transition.reason, now)
                row["state_changed_at"] = now
            row["state"] = transition.state
            row["consecutive_failures"] = transition.consecutive_failures
            row["last_run_at"] = now
            row["n_new"] = row.get("n_new", 0) + 1
            changed[item.tracker_id] = row
            results = [r.to_dict() for r in item.results]
            results_text = _dumps(results)
            passed = states.run_passed(item.status, failed)
            inserts.append(
                (
                    item.tracker_id,
                    item.ping_id,
                    run_id,
                    item.status,
                    passed,
                    duration,
                    item.body,
                    results_text,
                    sql.to_db(now),
                    sql.to_db(started_at),
                )
            )
            if item.ping_id is not None:
                seen[(item.tracker_id, item.ping_id)] = (run_id, results_text)
            item.answer = (
                200,
                {
                    "ok": True,
                    "run_id": run_id,
                    "status": item.status,
                    "passed": passed,
                    "state": transition.state,  # as this run left it, even mid-batch
                    "assertions": results,
                },
            )

        return (inserts, flip_for, changed) if inserts else None

    def _insert_runs(
        self,
        conn: Connection,
        cursor: Any,
        inserts: list[tuple[Any, ...]],
        flip_for: dict[int, tuple[str, str, str, dt.datetime]],
    ) -> None:
        """executemany the run rows, in order; a row that flips its tracker is inserted on its
        own with RETURNING, so its flip can name it."""
        sql = self.sql
        start = 0
        for index in sorted(flip_for):
            self._insert_many(cursor, inserts[start:index])
            cursor.execute(sql.insert_runs(1) + " RETURNING id", inserts[index])
            run_pk = cursor.fetchone()[0]
            old, new, why, now = flip_for[index]
            record_flip(conn, inserts[index][0], old, new, why, run_pk, now)
            start = index + 1
        self._insert_many(cursor, inserts[start:])

    def _insert_many(self, cursor: Any, rows: list[tuple[Any, ...]]) -> None:
        """One multi-row INSERT per chunk: a single statement step (SQLite) or round trip
        (PostgreSQL), rather than one per row as ``executemany`` would do; with SQLite this
        also releases the GIL once per chunk instead of once per row."""
        for i in range(0, len(rows), INSERT_CHUNK):
            chunk = rows[i : i + INSERT_CHUNK]
            flat = tuple(value for row in chunk for value in row)
            cursor.execute(self.sql.insert_runs(len(chunk)), flat)


class _Sql:
    """The writer's statements as driver SQL: no SQLAlchemy compilation or type processing
    per batch. Datetimes cross as SQLAlchemy stores them (SQLite: ISO text without offset,
    always UTC; PostgreSQL: timestamptz)."""

    TRACKER_COLUMNS: Final = (
        "id",
        "token",
        "state",
        "consecutive_failures",
        "failure_threshold",
        "paused",
        "open_start_at",
        "open_start_run_id",
        "schedule_kind",
        "period_seconds",
        "cron",
        "timezone",
    )

    def __init__(self, dialect: str) -> None:
        self.sqlite = dialect == "sqlite"
        self.p = p = "?" if self.sqlite else "%s"
        ts = p if self.sqlite else "%s::timestamptz"
        columns = (
            "tracker_id, ping_id, run_id, status, passed, duration_ms, payload, assertions, "
            "received_at, started_at"
        )
        self._insert_head = f"INSERT INTO runs ({columns}) VALUES "
        self._insert_row = f"({', '.join([p] * 10)})"
        self.update_tracker = (
            f"UPDATE trackers SET state = {p}, consecutive_failures = {p}, "
            f"state_changed_at = COALESCE({ts}, state_changed_at), "
            f"open_start_at = {ts}, open_start_run_id = {p}, last_run_at = {ts}, "
            f"last_ping_at = COALESCE({ts}, last_ping_at), "
            f"next_expected_at = CASE WHEN {p} THEN {ts} ELSE next_expected_at END, "
            f"n_runs = n_runs + {p} WHERE id = {p}"
        )

    @functools.cache  # noqa: B019 - a few instances, one per dialect, live as long as the app
    def insert_runs(self, n: int) -> str:
        return self._insert_head + ", ".join([self._insert_row] * n)

    def _list(self, n: int) -> str:
        return ", ".join([self.p] * n)

    def lock_trackers(self, n: int) -> str:
        lock = "" if self.sqlite else " ORDER BY id FOR UPDATE"
        return (
            f"SELECT {', '.join(self.TRACKER_COLUMNS)} FROM trackers "
            f"WHERE id IN ({self._list(n)}){lock}"
        )

    def find_ping_ids(self, n_trackers: int, n_pings: int) -> str:
        return (
            "SELECT tracker_id, ping_id, run_id, assertions FROM runs "
            f"WHERE tracker_id IN ({self._list(n_trackers)}) "
            f"AND ping_id IN ({self._list(n_pings)})"
        )

    def find_starts(self, n_trackers: int, n_runs: int) -> str:
        return (
            "SELECT tracker_id, run_id, MAX(received_at) FROM runs "
            f"WHERE tracker_id IN ({self._list(n_trackers)}) "
            f"AND run_id IN ({self._list(n_runs)}) AND status = 'start' "
            "GROUP BY tracker_id, run_id"
        )

    def to_db(self, value: dt.datetime | None) -> Any:
        """An aware UTC datetime as a statement parameter."""
        if value is None or not self.sqlite:
            return value
        return value.replace(tzinfo=None).isoformat(" ", "microseconds")

    def from_db(self, value: Any) -> dt.datetime:
        """A datetime column as read by driver SQL, as an aware UTC datetime."""
        if isinstance(value, str):
            value = dt.datetime.fromisoformat(value)
        aware = as_utc(value)
        assert aware is not None
        return aware


def _tracker_params(sql: _Sql, tracker_id: int, row: dict[str, Any]) -> tuple[Any, ...]:
    return (
        row["state"],
        row["consecutive_failures"],
        sql.to_db(row.get("state_changed_at")),
        sql.to_db(_aware_or_none(sql, row["open_start_at"])),
        row["open_start_run_id"],
        sql.to_db(row["last_run_at"]),
        sql.to_db(row.get("last_ping_at")),
        "last_ping_at" in row,
        sql.to_db(row.get("next_expected_at")),
        row["n_new"],
        tracker_id,
    )


def _aware_or_none(sql: _Sql, value: Any) -> dt.datetime | None:
    return None if value is None else sql.from_db(value)


_random_bits = random.getrandbits  # reseeded after fork by the random module


def _new_run_id() -> str:
    """A random version-4 UUID string (run ids need uniqueness, not secrecy; this is
    several times cheaper than ``str(uuid.uuid4())``)."""
    h = f"{_random_bits(128):032x}"
    return f"{h[:8]}-{h[8:12]}-4{h[13:16]}-{'89ab'[int(h[16], 16) & 3]}{h[17:20]}-{h[20:32]}"


def _dumps(value: Any) -> str:
    return orjson.dumps(value, default=str).decode()


# --- the ASGI handler ------------------------------------------------------------------------

_INSTRUCTIONS_TEXT: Final = """\
This is a TelemHQ ping URL{known}.

Record a run with a POST (a GET like this one records nothing):

  curl -X POST {url}
  curl -X POST {url} -H "Content-Type: application/json" \\
       -d '{{"status": "success", "duration": 1500, "records_processed": 450, "errors": 0}}'

Append /start before a job and POST the plain URL (or /fail) after it to time the run.
The body is optional; when present it must be a JSON object. Fields: status (start, success,
failure, retry, skipped, cancelled), duration (ms), run_id, ping_id, and any metric you like.
"""


def _instructions_html(text: str) -> str:
    escaped = text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    return (
        "<!doctype html><html><head><meta charset='utf-8'><title>TelemHQ ping URL</title>"
        "<style>body{font-family:system-ui,sans-serif;max-width:46rem;margin:3rem auto;"
        "padding:0 1rem}pre{background:#f4f4f4;padding:1rem;overflow-x:auto}</style></head>"
        f"<body><h1>TelemHQ ping URL</h1><pre>{escaped}</pre></body></html>"
    )


def _json_type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, (int, float)):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "an array"
    return type(value).__name__


def parse_body(body: bytes) -> dict[str, Any]:
    """The ping body as a JSON object ({} when empty); raises :class:`PingError` (400)."""
    if not body.strip():
        return {}
    try:
        value = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise PingError(400, "invalid_json", f"body is not valid JSON: {exc}") from None
    if not isinstance(value, dict):
        raise PingError(400, "not_object", f"body must be a JSON object, got {_json_type(value)}")
    return value


def _too_large(limit: int) -> PingError:
    return PingError(413, "too_large", f"body is larger than the limit of {limit} bytes")


def _payload_text(body: bytes, payload: dict[str, Any]) -> str:
    """The body to store: as received when it is UTF-8 JSON, else re-encoded."""
    if not payload:
        return "{}"
    return body.decode()  # orjson accepted it, so it is UTF-8


def _string_field(payload: dict[str, Any], name: str) -> str | None:
    value = payload.get(name)
    if value is None:
        return None
    if not isinstance(value, str) or not value or len(value) > MAX_ID_LENGTH:
        raise PingError(
            400,
            "invalid_field",
            f"{name} must be a non-empty string of at most {MAX_ID_LENGTH} characters",
        )
    return value


class PingHandler:
    """The ASGI callable for ``/ping/...``."""

    def __init__(
        self,
        cache: TrackerCache,
        writer: BatchWriter,
        metrics: Metrics,
        max_body_bytes: int,
    ) -> None:
        self.cache = cache
        self.writer = writer
        self.metrics = metrics
        self.max_body_bytes = max_body_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        started = time.perf_counter()
        method = scope["method"]
        try:
            if method == "POST":
                if scope["path"] == BATCH_PATH:
                    await _send_json(send, 200, await self._post_batch(scope, receive, started))
                    return
                status_code, answer = await self._post(scope, receive, started)
                await _send_json(send, status_code, answer)
                return
            if method in ("GET", "HEAD"):
                await self._instructions(scope, send, head=method == "HEAD")
                return
            if method == "OPTIONS":
                await _send(send, 204, b"", b"text/plain", cors_preflight=True)
                return
            raise PingError(
                405,
                "method_not_allowed",
                f"method {method} is not allowed on a ping URL: POST records a run, "
                "GET shows instructions",
            )
        except PingError as exc:
            self.metrics.reject(exc.reason)
            await _send_json(send, exc.status, {"ok": False, "error": exc.message})

    async def resolve(self, path: str) -> tuple[CachedTracker, str | None]:
        """The tracker ``path`` (what follows ``/ping/`` in the URL) names, and the status its
        suffix implies."""
        parts = path.rstrip("/").split("/")
        if not parts or not parts[0] or len(parts) > 3 or "" in parts:
            raise PingError(404, "unknown_token", "unknown token")
        suffix: str | None = None
        if len(parts) > 1 and parts[-1] in SUFFIXES:
            suffix = SUFFIXES[parts[-1]]
        if len(parts) == 1 or (len(parts) == 2 and suffix is not None):
            token = parts[0]
            try:
                return await self.cache.get(token, lambda: self.cache.by_token(token)), suffix
            except PingError:
                if len(parts) == 1:
                    raise
        # /ping/{ping_key}/{slug}[/start|/fail]
        if len(parts) == 3 and suffix is None:
            raise PingError(404, "unknown_token", "unknown token")
        if len(parts) == 2 and suffix is not None:
            suffix = None  # e.g. /ping/{ping_key}/start: a job slugged "start"
        ping_key, slug = parts[0], parts[1]
        if slugify(slug) != slug:
            raise PingError(
                400,
                "invalid_slug",
                f"invalid slug {slug!r}: use lowercase letters, digits and single dashes "
                f"(e.g. {slugify(slug)!r})",
            )
        key = f"{ping_key}/{slug}"
        loader = lambda: self.cache.by_slug(key, ping_key, slug)  # noqa: E731
        return await self.cache.get(key, loader), suffix

    async def _read_body(self, receive: Receive, limit: int) -> bytes:
        """The request body, refused (413) as soon as it passes ``limit`` bytes. (Headers are
        not read: building them costs the ASGI server more than counting the bytes.)"""
        message = await receive()
        body: bytes = message.get("body", b"")
        if not message.get("more_body", False) and message["type"] == "http.request":
            if len(body) > limit:
                raise _too_large(limit)
            return body  # the usual case: one chunk
        chunks = [body]
        size = len(body)
        while True:
            if message["type"] == "http.disconnect":
                raise PingError(400, "disconnected", "client disconnected")
            if size > limit:
                raise _too_large(limit)
            if not message.get("more_body", False):
                return b"".join(chunks)
            message = await receive()
            chunk = message.get("body", b"")
            size += len(chunk)
            chunks.append(chunk)

    async def _post(
        self, scope: Scope, receive: Receive, started: float
    ) -> tuple[int, dict[str, Any]]:
        tracker, suffix = await self.resolve(scope["path"][len("/ping/") :])
        body = await self._read_body(receive, self.max_body_bytes)
        payload = parse_body(body)
        return await self._record(tracker, suffix, payload, _payload_text(body, payload), started)

    async def _record(
        self,
        tracker: CachedTracker,
        suffix: str | None,
        payload: dict[str, Any],
        text: str,
        started: float,
    ) -> tuple[int, dict[str, Any]]:
        """Check the standard fields, evaluate, and queue the ping; its answer once stored."""
        status = payload.get("status", "success")
        if status not in STATUSES:
            raise PingError(
                400,
                "invalid_field",
                f"status must be one of {_STATUS_LIST}; got {json.dumps(status)}",
            )
        if suffix is not None:
            status = suffix
        duration = payload.get("duration")
        if duration is not None and (
            isinstance(duration, bool) or not isinstance(duration, (int, float)) or duration < 0
        ):
            raise PingError(
                400, "invalid_field", "duration must be a non-negative number of milliseconds"
            )
        pending = Pending(
            tracker_id=tracker.id,
            token=tracker.token,
            status=status,
            body=text,
            ping_id=_string_field(payload, "ping_id"),
            run_id=_string_field(payload, "run_id"),
            duration=None if duration is None else float(duration),
            results=[] if status == "start" else evaluate_all(tracker.assertions, payload),
            received_at=utcnow(),
        )
        status_code, answer = await self.writer.submit(pending)
        if status_code == 200:
            self.metrics.accept(status, time.perf_counter() - started)
        else:
            self.metrics.reject("storage" if status_code == 503 else "unknown_token")
        return status_code, answer

    async def _post_batch(self, scope: Scope, receive: Receive, started: float) -> dict[str, Any]:
        """``POST /ping/_batch``: ``{"pings": [{"ping": "<token>[/start|/fail]", "body":
        {...}}, ...]}`` -> ``{"results": [{"status": <HTTP status>, ...its answer}, ...]}``,
        in order (the run's own status is ``run_status`` there). Each ping is checked and
        answered as if posted alone; all of them go to the writer together (one transaction
        unless the batch is larger than max_batch)."""
        limit = self.max_body_bytes * BATCH_BODY_FACTOR
        document = parse_body(await self._read_body(receive, limit))
        pings = document.get("pings")
        if not isinstance(pings, list) or len(pings) > BATCH_MAX_PINGS:
            raise PingError(
                400,
                "invalid_batch",
                f'a batch is {{"pings": [{{"ping": "<token>", "body": {{...}}}}, ...]}} '
                f"with at most {BATCH_MAX_PINGS} pings",
            )

        async def one(item: Any) -> dict[str, Any]:
            try:
                if not isinstance(item, dict) or not isinstance(item.get("ping"), str):
                    raise PingError(
                        400, "invalid_batch", 'each batch entry needs "ping": "<token>"'
                    )
                body = item.get("body") or {}
                if not isinstance(body, dict):
                    raise PingError(
                        400, "not_object", f"body must be a JSON object, got {_json_type(body)}"
                    )
                text = orjson.dumps(body).decode() if body else "{}"
                if len(text) > self.max_body_bytes:
                    raise PingError(
                        413,
                        "too_large",
                        f"body is larger than the limit of {self.max_body_bytes} bytes",
                    )
                tracker, suffix = await self.resolve(item["ping"])
                code, answer = await self._record(tracker, suffix, body, text, started)
            except PingError as exc:
                self.metrics.reject(exc.reason)
                code, answer = exc.status, {"ok": False, "error": exc.message}
            if "status" in answer:  # the run's status; "status" is the HTTP one here
                answer["run_status"] = answer.pop("status")
            return {"status": code, **answer}

        return {"results": await asyncio.gather(*(one(item) for item in pings))}

    async def _instructions(self, scope: Scope, send: Send, *, head: bool) -> None:
        scheme = scope.get("scheme", "http")
        host = next((v.decode("latin-1") for k, v in scope["headers"] if k == b"host"), "")
        url = f"{scheme}://{host}{scope['path']}"
        try:
            await self.resolve(scope["path"][len("/ping/") :])
            known, code = "", 200
        except PingError as exc:
            known, code = f" ({exc.message}: check the URL)", 404
        text = _INSTRUCTIONS_TEXT.format(url=url, known=known)
        accept = next((v for k, v in scope["headers"] if k == b"accept"), b"")
        if b"text/html" in accept:
            body, kind = _instructions_html(text).encode(), b"text/html; charset=utf-8"
        else:
            body, kind = text.encode(), b"text/plain; charset=utf-8"
        await _send(send, code, body, kind, head=head)


async def _send_json(send: Send, status: int, answer: dict[str, Any]) -> None:
    await _send(send, status, orjson.dumps(answer, default=str), b"application/json")


async def _send(
    send: Send,
    status: int,
    body: bytes,
    content_type: bytes,
    *,
    head: bool = False,
    cors_preflight: bool = False,
) -> None:
    headers = [
        (b"content-type", content_type),
        (b"content-length", str(len(body)).encode()),
        (b"access-control-allow-origin", b"*"),
    ]
    if status == 405 or cors_preflight:
        headers.append((b"allow", b"GET, HEAD, POST, OPTIONS"))
    if cors_preflight:
        headers.append((b"access-control-allow-methods", b"POST, GET, HEAD, OPTIONS"))
        headers.append((b"access-control-allow-headers", b"content-type"))
        headers.append((b"access-control-max-age", b"86400"))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": b"" if head else body})
