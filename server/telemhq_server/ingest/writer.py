"""Group commit: the queued pings of a moment written in one transaction, then answered.

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
import logging
import random
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Final

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine, RootTransaction

from telemhq_plugins.core import jsontext
from telemhq_plugins.core.assertions import AnyAssertion, AssertionResult, History, evaluate_all
from telemhq_plugins.core.history import PastRun
from telemhq_server import states
from telemhq_server.db import SqliteWriteLock, write_lock
from telemhq_server.flips import FlipListeners, record_flip
from telemhq_server.ingest.errors import PingError
from telemhq_server.ingest.history import HistoryCache, Speculation
from telemhq_server.ingest.sql import Statements
from telemhq_server.metrics import Metrics
from telemhq_server.schedules import due_after

__all__ = ["BatchWriter", "Pending"]

logger = logging.getLogger("telemhq_server.ingest")

MAX_PENDING: Final = 50_000
INSERT_CHUNK: Final = 500  # rows per INSERT statement (10 parameters each)


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
    #: committed (its answer stands even if a later part of the batch fails)
    stored: bool = False
    #: the tracker judges runs against its history: the writer evaluates ``judge`` (its
    #: assertions; none for a start) against the runs stored before, in its transaction
    historical: bool = False
    judge: tuple[AnyAssertion, ...] = ()
    payload: dict[str, Any] | None = None
    #: the ping judged when it was queued (SQLite; see ingest.history)
    speculation: Speculation | None = None
    #: the ping id its run's start was stored under, when the sender knows it (OpenLineage
    #: derives both from the run id): an end finds its start through that index instead of
    #: among its tracker's runs
    start_ping_id: str | None = None


@dataclass(slots=True)
class _Writes:
    """What one batch writes, gathered in ping order."""

    #: the run rows to insert
    inserts: list[tuple[Any, ...]] = field(default_factory=list)
    #: index in ``inserts`` of a run that changes its tracker's state -> (old state, new
    #: state, reason, time)
    flip_for: dict[int, tuple[str, str, str, dt.datetime]] = field(default_factory=dict)
    #: tracker id -> its row as the batch leaves it
    changed: dict[int, dict[str, Any]] = field(default_factory=dict)


class BatchWriter:
    """Group commit: one writer task, one transaction per batch of pings (see :meth:`_run`
    for where the statements and the COMMIT run)."""

    def __init__(
        self,
        engine: Engine,
        metrics: Metrics,
        max_batch: int = 512,
        *,
        listeners: FlipListeners | None = None,
        history_limit: int = 1000,
    ) -> None:
        self.engine = engine
        self.metrics = metrics
        self.max_batch = max_batch
        #: run on every flip a batch records, inside its transaction
        self.listeners = listeners if listeners is not None else FlipListeners()
        self.is_postgres = engine.dialect.name == "postgresql"
        self.sql = Statements(engine.dialect.name)
        #: the trackers' histories, for history-relative assertions (see ingest.history)
        self.histories = HistoryCache(history_limit)
        self._executor = concurrent.futures.ThreadPoolExecutor(1, "telemhq-writer")
        self._queue: list[Pending] = []
        self._wakeup: asyncio.Event | None = None
        self._task: asyncio.Task[None] | None = None
        self._conn: Connection | None = None  # the writer's own connection
        self._stopping = False
        self._flipped = False  # a state change was written since the last committed()
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

    def speculate(self, item: Pending, timezone: str | None) -> None:
        """Judge a ping of a tracker with history-relative assertions as it is queued, so
        that its transaction only checks the speculation (:class:`HistoryCache`). Only on
        SQLite, where the writer's statements run on this thread too: on PostgreSQL they run
        in the writer's thread, and the ping is judged there."""
        if self.is_postgres or not item.historical:
            return

        def judge(history: History) -> tuple[list[AssertionResult], PastRun]:
            results = _judge(item, history, timezone) if item.judge else []
            passed = states.run_passed(item.status, [r.reason for r in results if not r.passed])
            return results, PastRun(item.received_at, item.status, passed, item.payload or {})

        item.speculation = self.histories.speculate(item.tracker_id, item.token, timezone, judge)

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
        while not self._stopping or self._queue:
            await self._wakeup.wait()
            self._wakeup.clear()
            while self._queue:
                batch = self._queue[: self.max_batch]
                del self._queue[: self.max_batch]
                try:
                    await self._write_isolating(batch)
                    if self._flipped:
                        self._flipped = False
                        self.listeners.committed()
                except Exception:
                    logger.exception("writing a batch of %d pings failed", len(batch))
                    for item in batch:
                        if not item.stored:
                            item.answer = (
                                503,
                                {"ok": False, "error": "storage unavailable, nothing was recorded"},
                            )
                for item in batch:
                    if item.future is not None and not item.future.done():
                        assert item.answer is not None
                        item.future.set_result(item.answer)
                await asyncio.sleep(0)  # more than max_batch queued: let the loop breathe

    async def _write_isolating(self, batch: Sequence[Pending]) -> None:
        """Write ``batch``; when the database refuses it for what a ping holds (not for being
        unavailable), write each half on its own, down to the ping that cannot be stored,
        which alone is answered 400. One sender's bad ping never fails anyone else's."""
        try:
            if self.is_postgres:
                loop = asyncio.get_running_loop()
                await loop.run_in_executor(self._executor, self.write, batch)
            else:
                await self.write_sqlite(batch)
        except Exception as exc:
            if not self._refused_for_data(exc):
                raise
            if len(batch) > 1:
                middle = len(batch) // 2
                await self._write_isolating(batch[:middle])
                await self._write_isolating(batch[middle:])
                return
            logger.warning("a ping the database cannot store was refused: %s", exc)
            batch[0].answer = (
                400,
                {"ok": False, "error": "the ping holds a value the database cannot store"},
            )
            return
        for item in batch:
            item.stored = True

    def _refused_for_data(self, exc: BaseException) -> bool:
        """Did the database refuse the statements' values (rather than fail to answer)?"""
        if isinstance(exc, sa.exc.DBAPIError):
            if exc.connection_invalidated:
                return False
            exc = exc.orig if exc.orig is not None else exc
        dbapi = self.engine.dialect.dbapi
        unavailable = (dbapi.OperationalError, dbapi.InterfaceError) if dbapi else ()
        if isinstance(exc, (*unavailable, sa.exc.OperationalError, sa.exc.InterfaceError)):
            return False
        return isinstance(exc, (ValueError, TypeError)) or (
            dbapi is not None and isinstance(exc, (dbapi.DataError, dbapi.IntegrityError))
        )

    def write(self, batch: Sequence[Pending]) -> None:
        """Write ``batch`` in one transaction and set each item's ``answer`` (blocking: the
        PostgreSQL writer thread, and tests).

        The writer keeps one connection for itself (no pool checkout per batch) and speaks
        driver SQL (:class:`Statements`). A failed transaction is rolled back whole and retried
        once (SQLite busy, PostgreSQL deadlock or serialization failure, lost connection)."""
        started = time.perf_counter()
        for attempt in (1, 2):
            conn = self._connection()
            try:
                with write_lock(self.engine):
                    transaction = self._begin_and_write(conn, batch)
                    committing = time.perf_counter()
                    self._commit(transaction)
                self.histories.commit()
                break
            except sa.exc.DBAPIError as exc:
                self.histories.rollback()
                if not self._retryable(exc, conn, attempt):
                    raise
            except BaseException:
                self.histories.rollback()
                raise
        done = time.perf_counter()
        self.metrics.batch(len(batch), done - started, done - committing)

    async def write_sqlite(self, batch: Sequence[Pending]) -> None:
        """:meth:`write` for SQLite. What may wait runs in the writer thread: taking the write
        lock and ``BEGIN IMMEDIATE`` (another process may hold the database's lock for long),
        and the COMMIT (the fsync). The statements in between, which no lock can hold up once
        the transaction has begun, run here on the event loop (see :meth:`_run`). So a locked
        database makes the pings wait, never the server: reads and errors are answered."""
        loop = asyncio.get_running_loop()
        lock = SqliteWriteLock.for_engine(self.engine)
        started = time.perf_counter()
        for attempt in (1, 2):
            conn = self._connection()
            try:
                transaction = await loop.run_in_executor(self._executor, self._lock_and_begin, conn)
                try:
                    try:
                        self._write(conn, batch)
                    except BaseException:
                        transaction.rollback()
                        raise
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
                finally:
                    if lock is not None:
                        lock.release()
                self.histories.commit()
                break
            except sa.exc.DBAPIError as exc:
                self.histories.rollback()
                if not self._retryable(exc, conn, attempt):
                    raise
            except BaseException:
                self.histories.rollback()
                raise
        done = time.perf_counter()
        self.metrics.batch(len(batch), done - started, done - committing)

    def _lock_and_begin(self, conn: Connection) -> RootTransaction:
        """Take the SQLite write lock and begin (``BEGIN IMMEDIATE``): both may wait."""
        lock = SqliteWriteLock.for_engine(self.engine)
        if lock is not None:
            lock.acquire()
        try:
            return conn.begin()
        except BaseException:
            if lock is not None:
                lock.release()
            raise

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
        ends = [i for i in batch if i.run_id and i.status != "start"]
        # An end whose start's ping id is known looks it up with the ping ids (an index).
        by_ping_id = {(i.tracker_id, p) for i in ends if (p := i.start_ping_id) is not None}
        ping_ids = {(i.tracker_id, p) for i in batch if (p := i.ping_id)} | by_ping_id
        cursors = [driver.cursor() for _ in range(3)]
        try:
            with pipeline():
                cursors[0].execute(sql.lock_trackers(len(ids)), tuple(ids))
                if ping_ids:
                    tids, pids = sorted({t for t, _ in ping_ids}), sorted({p for _, p in ping_ids})
                    cursors[1].execute(sql.find_ping_ids(len(tids), len(pids)), (*tids, *pids))
            rows = {
                r[0]: dict(zip(sql.TRACKER_COLUMNS, r, strict=True)) for r in cursors[0].fetchall()
            }
            # Any other end that names its run searches its tracker's runs for the start (no
            # index on run_id: see db.py), unless the run is the tracker's open one or opened
            # in this batch, which is the rule for an adapter's start and end.
            wanted = _searched_starts(batch, rows)
            if wanted:
                tids, rids = sorted({t for t, _ in wanted}), sorted({r for _, r in wanted})
                cursors[2].execute(sql.find_starts(len(tids), len(rids)), (*tids, *rids))
            found = cursors[1].fetchall() if ping_ids else []
            # ping_id -> (run_id, results JSON) of runs already stored
            seen = {(t, p): (r, a) for t, p, r, a, _, _ in found}
            # start times of runs named by an end ping (used unless it is the open start)
            starts = (
                {(t, r): sql.from_db(at) for t, r, at in cursors[2].fetchall()} if wanted else {}
            )
            if by_ping_id:
                starts.update(
                    {(t, r): sql.from_db(at) for t, p, r, _, s, at in found if s == "start"}
                )
            historical = {i.tracker_id for i in batch if i.historical}
            histories = (
                self.histories.prepare(cursors[1], sql, rows, sorted(historical))
                if historical
                else {}
            )
            writes = self._apply(batch, rows, seen, starts, histories)
            if writes is not None:
                inserts, flip_for, changed = writes.inserts, writes.flip_for, writes.changed
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
        histories: dict[int, History],
    ) -> _Writes | None:
        """Run each ping through the state machine, in order, against the locked rows; set
        each item's answer; return the rows to insert and the trackers to update. A tracker
        with history-relative assertions judges each run against the runs stored before it,
        this batch's included."""
        writes = _Writes()
        for item in batch:
            row = rows.get(item.tracker_id)
            if row is None or row["token"] != item.token:
                item.answer = (404, {"ok": False, "error": "unknown token"})
                continue
            if item.ping_id is not None and self._answer_duplicate(item, row, seen):
                continue
            history = histories.get(item.tracker_id)
            speculated = None
            if history is not None:
                speculated = self.histories.take(item.tracker_id, item.speculation, row["timezone"])
                if speculated is not None:
                    item.results = speculated
                elif item.judge:
                    item.results = _judge(item, history, row["timezone"])
            run_id, started_at = self._match_run(item, row, starts)
            failed = [r.reason for r in item.results if not r.passed]
            state = self._change_state(item, row, failed, writes)
            passed = self._add_run(
                item,
                run_id=run_id,
                started_at=started_at,
                failed=failed,
                state=state,
                writes=writes,
                seen=seen,
            )
            if history is not None and speculated is None:
                run = PastRun(item.received_at, item.status, passed, item.payload or {})
                self.histories.append(item.tracker_id, run)
        return writes if writes.inserts else None

    @staticmethod
    def _answer_duplicate(
        item: Pending, row: dict[str, Any], seen: dict[tuple[int, str], tuple[str, str]]
    ) -> bool:
        """A ``ping_id`` already stored (a client's retry): answer with the stored run."""
        assert item.ping_id is not None
        dup = seen.get((item.tracker_id, item.ping_id))
        if dup is None:
            return False
        item.answer = (
            200,
            {
                "ok": True,
                "duplicate": True,
                "run_id": dup[0],
                "state": row["state"],
                "assertions": jsontext.loads(dup[1]),
            },
        )
        return True

    def _match_run(
        self,
        item: Pending,
        row: dict[str, Any],
        starts: dict[tuple[int, str], dt.datetime],
    ) -> tuple[str, dt.datetime | None]:
        """The ping's run id and the time its run started: a start opens a run; an end
        closes the open one (or the start it names) and is the ping the schedule waited for."""
        now = item.received_at
        if item.status == "start":
            run_id = item.run_id or _new_run_id()
            row["open_start_at"] = now
            row["open_start_run_id"] = run_id
            starts[(item.tracker_id, run_id)] = now
            return run_id, None
        started_at: dt.datetime | None
        run_id = item.run_id or row["open_start_run_id"] or _new_run_id()
        if run_id == row["open_start_run_id"] and row["open_start_at"] is not None:
            started_at = self.sql.from_db(row["open_start_at"])
            row["open_start_at"] = None
            row["open_start_run_id"] = None
        else:
            started_at = starts.get((item.tracker_id, run_id))
        # Any end of a run (retry and skipped too: the job did run) is the ping the schedule
        # waited for; a start is not.
        row["last_ping_at"] = now
        if row["schedule_kind"] != "none":
            row["next_expected_at"] = due_after(row, now)
        return run_id, started_at

    @staticmethod
    def _change_state(
        item: Pending, row: dict[str, Any], failed: list[str], writes: _Writes
    ) -> str:
        """Apply the run to the tracker's row; a state change is noted for the run about to
        be added (its flip names it). Returns the state the run leaves."""
        now = item.received_at
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
            writes.flip_for[len(writes.inserts)] = (
                row["state"],
                transition.state,
                transition.reason,
                now,
            )
            row["state_changed_at"] = now
        row["state"] = transition.state
        row["consecutive_failures"] = transition.consecutive_failures
        row["last_run_at"] = now
        row["n_new"] = row.get("n_new", 0) + 1
        writes.changed[item.tracker_id] = row
        return transition.state

    def _add_run(
        self,
        item: Pending,
        *,
        run_id: str,
        started_at: dt.datetime | None,
        failed: list[str],
        state: str,
        writes: _Writes,
        seen: dict[tuple[int, str], tuple[str, str]],
    ) -> bool | None:
        """The run's row to insert, and the ping's answer; returns the run's verdict."""
        now = item.received_at
        duration = item.duration
        if duration is None and started_at is not None:
            duration = round((now - started_at).total_seconds() * 1000, 3)
        results = [r.to_dict() for r in item.results]
        results_text = _dumps(results)
        passed = states.run_passed(item.status, failed)
        writes.inserts.append(
            (
                item.tracker_id,
                item.ping_id,
                run_id,
                item.status,
                passed,
                duration,
                item.body,
                results_text,
                self.sql.to_db(now),
                self.sql.to_db(started_at),
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
                "state": state,  # as this run left it, even mid-batch
                "assertions": results,
            },
        )
        return passed

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
            record_flip(
                conn, inserts[index][0], old, new, why, run_pk, now, listeners=self.listeners
            )
            start = index + 1
        self._flipped = self._flipped or bool(flip_for)
        self._insert_many(cursor, inserts[start:])

    def _insert_many(self, cursor: Any, rows: list[tuple[Any, ...]]) -> None:
        """One multi-row INSERT per chunk: a single statement step (SQLite) or round trip
        (PostgreSQL), rather than one per row as ``executemany`` would do; with SQLite this
        also releases the GIL once per chunk instead of once per row."""
        for i in range(0, len(rows), INSERT_CHUNK):
            chunk = rows[i : i + INSERT_CHUNK]
            flat = tuple(value for row in chunk for value in row)
            cursor.execute(self.sql.insert_runs(len(chunk)), flat)


def _judge(item: Pending, history: History, timezone: str | None) -> list[AssertionResult]:
    """Evaluate the item's assertions against its tracker's history, at the time it arrived.
    A ``/fail`` suffix sets the run's status, which ``count(failure, ...)`` reads."""
    payload = item.payload or {}
    if payload.get("status", "success") != item.status:
        payload = {**payload, "status": item.status}
    return evaluate_all(item.judge, payload, history, now=item.received_at, timezone=timezone)


def _tracker_params(sql: Statements, tracker_id: int, row: dict[str, Any]) -> tuple[Any, ...]:
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


def _aware_or_none(sql: Statements, value: Any) -> dt.datetime | None:
    return None if value is None else sql.from_db(value)


_random_bits = random.getrandbits  # reseeded after fork by the random module


def _searched_starts(
    batch: Sequence[Pending], rows: dict[int, dict[str, Any]]
) -> set[tuple[int, str]]:
    """(tracker id, run id) of the ends whose start must be searched among stored runs: not
    found by its ping id, not the tracker's open start (the first end of that run in the
    batch closes it) and not opened by a start earlier in the batch."""
    opened: set[tuple[int, str]] = set()
    closed: set[tuple[int, str]] = set()
    wanted: set[tuple[int, str]] = set()
    for item in batch:
        if not item.run_id:
            continue
        key = (item.tracker_id, item.run_id)
        if item.status == "start":
            opened.add(key)
            continue
        row = rows.get(item.tracker_id)
        is_open = row is not None and row["open_start_run_id"] == item.run_id
        if item.start_ping_id is None and key not in opened and (not is_open or key in closed):
            wanted.add(key)
        closed.add(key)
    return wanted


def _new_run_id() -> str:
    """A random version-4 UUID string (run ids need uniqueness, not secrecy; this is
    several times cheaper than ``str(uuid.uuid4())``)."""
    h = f"{_random_bits(128):032x}"
    return f"{h[:8]}-{h[8:12]}-4{h[13:16]}-{'89ab'[int(h[16], 16) & 3]}{h[17:20]}-{h[20:32]}"


def _dumps(value: Any) -> str:
    return jsontext.dumps(value)  # an assertion's actual value may be an integer beyond 64 bits
