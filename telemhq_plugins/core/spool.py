"""The on-disk spool: pings that could not be delivered yet, kept in a SQLite file.

Enabled by ``TELEMHQ_SPOOL_DIR``. Several processes (Celery prefork children, Airflow task
runners, cron scripts) may share one directory, so every step is safe under concurrency:

* the file is opened in WAL mode with a busy timeout, so writers queue instead of failing;
* rows are keyed by ``ping_id`` (``INSERT OR IGNORE``): a ping is stored at most once;
* a process that wants to replay *claims* due rows in one ``UPDATE ... RETURNING``
  (``claimed_by``/``claimed_until``); a claim expires, so a process that dies mid-replay
  does not strand its rows;
* a row is deleted after a 2xx or a non-retryable 4xx, or released with a later
  ``next_at`` after another retryable failure.

Replaying twice is harmless anyway: the server drops a duplicate ``ping_id``.

The spool is bounded (``max_rows``, and ``max_bytes`` of ping bodies): when full, the oldest
rows are dropped, counted in
:attr:`Spool.dropped` and logged once. Every method logs and swallows ``sqlite3`` errors (a
broken disk must never break a job); the return values say what happened.
"""

from __future__ import annotations

import logging
import os
import sqlite3
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Final, TypeVar

from telemhq_plugins.core.logs import log_once
from telemhq_plugins.core.payload import Ping

__all__ = ["SPOOL_FILENAME", "Spool", "SpooledPing"]

logger = logging.getLogger("telemhq")
T = TypeVar("T")

SPOOL_FILENAME: Final = "telemhq-spool.sqlite3"
#: In a forked child: the parent's connections, abandoned but never closed (SQLite forbids
#: using a connection across fork, and closing it could disturb the parent's locks).
_inherited: list[sqlite3.Connection] = []
_SCHEMA: Final = """
CREATE TABLE IF NOT EXISTS pings (
    ping_id       TEXT PRIMARY KEY,
    url           TEXT NOT NULL,
    body          BLOB NOT NULL,
    created_at    REAL NOT NULL,
    attempts      INTEGER NOT NULL DEFAULT 0,
    next_at       REAL NOT NULL,
    claimed_by    TEXT,
    claimed_until REAL
);
CREATE INDEX IF NOT EXISTS pings_due ON pings (next_at);
CREATE INDEX IF NOT EXISTS pings_age ON pings (created_at);
"""


@dataclass(frozen=True, slots=True)
class SpooledPing:
    """A claimed row: the request to replay, exactly as it was first attempted. It is also
    a ping source (``encode``, ``to_ping``) that delivery's outbox takes."""

    ping_id: str
    url: str
    body: bytes
    attempts: int = 0

    def encode(self) -> tuple[str, bytes]:
        return self.ping_id, self.body

    def to_ping(self) -> Ping:
        """The ping its body was made from (ValueError when it is not a ping body)."""
        return Ping.from_json(self.body)


class Spool:
    """One process's handle on the spool file in ``directory`` (created if missing).

    Thread-safe; after ``fork`` the child opens its own connection (SQLite connections must
    not cross a fork). ``clock`` is wall-clock time (``time.time``) because rows outlive the
    process that wrote them. ``durable``: every write is synced to disk before it returns
    (``synchronous=FULL``; the agent acknowledges pings only then), instead of at WAL
    checkpoints (a power loss may then lose the last writes; a crashed process does not).
    """

    def __init__(
        self,
        directory: str | os.PathLike[str],
        *,
        max_rows: int = 10_000,
        max_bytes: int = 0,
        busy_timeout: float = 5.0,
        clock: Callable[[], float] = time.time,
        durable: bool = False,
    ) -> None:
        self.path = Path(directory) / SPOOL_FILENAME
        self.max_rows = max_rows
        #: the most bytes of ping bodies kept (0: no byte bound)
        self.max_bytes = max_bytes
        self.dropped = 0
        self._busy_timeout = busy_timeout
        self._synchronous = "FULL" if durable else "NORMAL"
        self._clock = clock
        self._lock = threading.Lock()
        self._conn: sqlite3.Connection | None = None
        self._pid = os.getpid()
        self._owner = f"{os.getpid()}-{uuid.uuid4().hex[:8]}"

    # -- connection ---------------------------------------------------------------------------

    def _connect(self) -> sqlite3.Connection:
        if self._pid != os.getpid():  # forked without the at-fork hook
            if self._conn is not None:
                _inherited.append(self._conn)
            self._pid, self._conn = os.getpid(), None
            self._owner = f"{os.getpid()}-{uuid.uuid4().hex[:8]}"
        if self._conn is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            conn = sqlite3.connect(
                self.path,
                timeout=self._busy_timeout,
                isolation_level=None,  # autocommit; explicit BEGIN IMMEDIATE where it matters
                check_same_thread=False,  # guarded by self._lock
            )
            try:
                conn.execute("PRAGMA journal_mode=WAL")
                conn.execute(f"PRAGMA synchronous={self._synchronous}")
                conn.executescript(_SCHEMA)
            except BaseException:
                conn.close()
                raise
            self._conn = conn
        return self._conn

    def _run(self, what: str, default: T, fn: Callable[[sqlite3.Connection], T]) -> T:
        """Run ``fn`` on the connection under the lock; log and return ``default`` on error."""
        try:
            with self._lock:
                return fn(self._connect())
        except (sqlite3.Error, OSError):
            log_once(
                logger,
                logging.ERROR,
                ("spool", what, str(self.path)),
                "TelemHQ: spool %s failed (%s); pings may be lost while this persists",
                what,
                self.path,
                exc_info=True,
            )
            return default

    def reset_after_fork(self) -> None:
        """In a forked child: new lock (the parent's may have been held at fork time), and
        the parent's connection abandoned (never closed: it is still the parent's)."""
        self._lock = threading.Lock()
        if self._conn is not None:
            _inherited.append(self._conn)  # not even garbage collection may close it here
        self._pid, self._conn = os.getpid(), None
        self._owner = f"{os.getpid()}-{uuid.uuid4().hex[:8]}"

    def close(self) -> None:
        with self._lock:
            if self._conn is not None and self._pid == os.getpid():
                self._conn.close()
            self._conn = None

    def __del__(self) -> None:
        # A handle dropped without close(): close this process's connection quietly.
        conn = getattr(self, "_conn", None)
        if conn is not None and getattr(self, "_pid", None) == os.getpid():
            conn.close()

    # -- writing ------------------------------------------------------------------------------

    def add(
        self,
        ping_id: str,
        url: str,
        body: bytes,
        *,
        delay: float = 0.0,
        claim_for: float | None = None,
    ) -> bool:
        """Store a ping (once per ``ping_id``), due for replay after ``delay`` seconds.

        ``claim_for``: the caller is still retrying it and holds the claim that long, so no
        other process replays it meanwhile. False when the spool could not be written.
        """
        return self.add_many([(ping_id, url, body)], delay=delay, claim_for=claim_for)

    def add_many(
        self,
        pings: list[tuple[str, str, bytes]],
        *,
        delay: float = 0.0,
        claim_for: float | None = None,
    ) -> bool:
        """:meth:`add` for several ``(ping_id, url, body)`` in one transaction: all are
        stored or none (False)."""

        def add(conn: sqlite3.Connection) -> bool:
            now = self._clock()
            claimed_by = self._owner if claim_for is not None else None
            claimed_until = now + claim_for if claim_for is not None else None
            conn.execute("BEGIN IMMEDIATE")
            try:
                conn.executemany(
                    "INSERT OR IGNORE INTO pings"
                    " (ping_id, url, body, created_at, next_at, claimed_by, claimed_until)"
                    " VALUES (?, ?, ?, ?, ?, ?, ?)",
                    [
                        (ping_id, url, body, now, now + delay, claimed_by, claimed_until)
                        for ping_id, url, body in pings
                    ],
                )
                (count,) = conn.execute("SELECT count(*) FROM pings").fetchone()
                # Both bounds drop the oldest rows: as many as the tighter one needs.
                excess = max(count - self.max_rows, self._over_bytes(conn))
                if excess > 0:
                    conn.execute(
                        "DELETE FROM pings WHERE ping_id IN"
                        " (SELECT ping_id FROM pings ORDER BY created_at LIMIT ?)",
                        (excess,),
                    )
                conn.execute("COMMIT")
            except BaseException:
                if conn.in_transaction:  # a failed COMMIT (a full disk) has rolled back
                    conn.execute("ROLLBACK")
                raise
            if excess > 0:
                self.dropped += excess
                log_once(
                    logger,
                    logging.WARNING,
                    ("spool-full", str(self.path)),
                    "TelemHQ: spool %s is full (at most %d pings, %s); dropping the oldest",
                    self.path,
                    self.max_rows,
                    f"{self.max_bytes} bytes" if self.max_bytes else "any size",
                )
            return True

        return self._run("write", False, add)

    def _over_bytes(self, conn: sqlite3.Connection) -> int:
        """How many of the oldest rows must go for the rest to fit in ``max_bytes`` (the
        newest row is always kept: a ping larger than the bound alone replaces the others)."""
        if not self.max_bytes:
            return 0
        total: int = conn.execute("SELECT coalesce(sum(length(body)), 0) FROM pings").fetchone()[0]
        if total <= self.max_bytes:
            return 0
        drop, freed = 0, 0
        for (size,) in conn.execute("SELECT length(body) FROM pings ORDER BY created_at"):
            if total - freed <= self.max_bytes:
                break
            drop += 1
            freed += size
        count: int = conn.execute("SELECT count(*) FROM pings").fetchone()[0]
        return min(drop, max(0, count - 1))

    def claim(self, limit: int = 100, lease: float = 60.0) -> list[SpooledPing]:
        """Atomically claim up to ``limit`` due rows (oldest first) for ``lease`` seconds."""

        def claim(conn: sqlite3.Connection) -> list[SpooledPing]:
            now = self._clock()
            rows = conn.execute(
                "UPDATE pings SET claimed_by = ?, claimed_until = ?"
                " WHERE ping_id IN (SELECT ping_id FROM pings"
                "   WHERE next_at <= ? AND (claimed_until IS NULL OR claimed_until < ?)"
                "   ORDER BY created_at LIMIT ?)"
                " RETURNING ping_id, url, body, attempts, created_at",
                (self._owner, now + lease, now, now, limit),
            ).fetchall()
            rows.sort(key=lambda row: row[4])  # RETURNING order is unspecified
            return [SpooledPing(r[0], r[1], bytes(r[2]), r[3]) for r in rows]

        return self._run("claim", [], claim)

    def delete(self, ping_id: str) -> None:
        """Forget a ping: it was delivered, or the server refused it for good."""
        self._execute("delete", "DELETE FROM pings WHERE ping_id = ?", (ping_id,))

    def delete_many(self, ping_ids: list[str]) -> None:
        """:meth:`delete` for several pings, in one transaction."""

        def delete(conn: sqlite3.Connection) -> None:
            conn.execute("BEGIN IMMEDIATE")
            try:
                conn.executemany("DELETE FROM pings WHERE ping_id = ?", [(i,) for i in ping_ids])
                conn.execute("COMMIT")
            except BaseException:
                if conn.in_transaction:  # a failed COMMIT (a full disk) has rolled back
                    conn.execute("ROLLBACK")
                raise

        self._run("delete", None, delete)

    def unclaim_all(self) -> None:
        """Release every claim, due at once: for the spool's only user (the agent, which
        holds its lock) at start, when no claim of an earlier process can still be live."""
        self._execute(
            "release",
            "UPDATE pings SET claimed_by = NULL, claimed_until = NULL, next_at = ?",
            (self._clock(),),
        )

    def release(self, ping_id: str, delay: float, *, attempted: bool = True) -> None:
        """Give a claimed ping back, due again in ``delay`` seconds (``attempted``: it was just
        tried and failed, count it; False: it was not tried, e.g. the endpoint is cooling down)."""
        self._execute(
            "release",
            "UPDATE pings SET claimed_by = NULL, claimed_until = NULL,"
            " next_at = ?, attempts = attempts + ? WHERE ping_id = ?",
            (self._clock() + delay, int(attempted), ping_id),
        )

    def _execute(self, what: str, sql: str, params: tuple[object, ...]) -> None:
        def execute(conn: sqlite3.Connection) -> None:
            conn.execute(sql, params)

        self._run(what, None, execute)

    # -- reading ------------------------------------------------------------------------------

    def count(self) -> int:
        """Rows in the spool, claimed or not (-1 when the file cannot be read)."""
        return self._run(
            "count", -1, lambda conn: int(conn.execute("SELECT count(*) FROM pings").fetchone()[0])
        )

    def body_bytes(self) -> int:
        """Bytes of ping bodies in the spool (-1 when the file cannot be read)."""
        return self._run(
            "count",
            -1,
            lambda conn: int(
                conn.execute("SELECT coalesce(sum(length(body)), 0) FROM pings").fetchone()[0]
            ),
        )

    def reusable_bytes(self) -> int:
        """Bytes of the file's free pages (left by deleted rows): room for new rows that the
        file takes without growing (0 when the file cannot be read)."""

        def reusable(conn: sqlite3.Connection) -> int:
            (pages,) = conn.execute("PRAGMA freelist_count").fetchone()
            (size,) = conn.execute("PRAGMA page_size").fetchone()
            return int(pages) * int(size)

        return self._run("read", 0, reusable)

    def next_due(self) -> float | None:
        """Seconds until the next unclaimed row is due (0 if one is due now), None if empty."""

        def next_due(conn: sqlite3.Connection) -> float | None:
            now = self._clock()
            (due,) = conn.execute(
                "SELECT min(max(next_at, coalesce(claimed_until, 0))) FROM pings"
            ).fetchone()
            return None if due is None else max(0.0, due - now)

        return self._run("read", None, next_due)
