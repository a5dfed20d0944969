"""Storage: the schema (SQLAlchemy Core tables), engines and a few shared helpers.

Seams for other modules (schedules, detector, webhooks, badges, dashboard):

- **Tables** are module-level :class:`sqlalchemy.Table` objects here (``trackers``, ``runs``,
  ``flips``, ``api_keys``, ``ping_keys``, ``webhooks``, ``webhook_outbox``,
  ``webhook_attempts``). Use SQLAlchemy Core (``select(trackers)...``), not an ORM.
- **The schema changes only through Alembic** (``telemhq_server/migrations/versions``); the
  tables below must match the migrations (``tests/server/test_db.py`` checks it on SQLite and
  PostgreSQL). ``migrate(engine)`` brings a database to head; ``serve`` calls it at start, under
  a PostgreSQL advisory lock so that several processes may start at once.
- **Engines** come from :func:`make_engine` (SQLite: WAL, ``synchronous=FULL``, foreign keys,
  busy timeout; PostgreSQL: psycopg 3, pre-ping). A write transaction that reads and then
  writes must begin with :func:`write_tx` (``BEGIN IMMEDIATE`` on SQLite, so that two processes
  never deadlock on lock upgrade; on PostgreSQL lock the rows you change with
  ``SELECT ... FOR UPDATE`` or use conditional ``UPDATE ... WHERE state = :old``).
- **Times** are timezone-aware UTC datetimes (``utcnow()``); SQLite hands back naive ones,
  so wrap every datetime you read with :func:`as_utc`.
- **JSON columns**: ``runs.payload`` and ``runs.assertions`` are JSON *text* (the ping path
  stores the request body as received, without re-encoding); read them with ``json.loads``.
  ``trackers.assertions``/``tags`` and ``webhooks.events`` use ``sa.JSON``.
- State changes of a tracker go through :func:`telemhq_server.flips.record_flip` only.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import logging
import os
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Final

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

__all__ = [
    "STATES",
    "SqliteWriteLock",
    "api_keys",
    "as_id",
    "as_utc",
    "flips",
    "make_engine",
    "metadata",
    "migrate",
    "ping_keys",
    "runs",
    "trackers",
    "utcnow",
    "webhook_attempts",
    "webhook_outbox",
    "webhooks",
    "write_tx",
]

logger = logging.getLogger("telemhq_server.db")

#: Every tracker state. ``late``/``down`` are set by the missed-run detector.
STATES: Final = ("new", "up", "failing", "late", "down", "paused")
SCHEDULE_KINDS: Final = ("none", "period", "cron")
API_SCOPES: Final = ("read", "write")
#: PostgreSQL advisory lock key held while migrations run ("telemhq" in ASCII).
MIGRATION_LOCK_KEY: Final = 0x74656C656D6871

# Big integers on PostgreSQL, SQLite's INTEGER PRIMARY KEY (rowid) on SQLite.
BigId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
TZ = sa.DateTime(timezone=True)

metadata = sa.MetaData()

trackers = sa.Table(
    "trackers",
    metadata,
    sa.Column("id", BigId, primary_key=True, autoincrement=True),
    sa.Column("name", sa.String(200), nullable=False),
    sa.Column("slug", sa.String(100), nullable=False),
    sa.Column("token", sa.String(64), nullable=False),
    sa.Column("badge_key", sa.String(64), nullable=False),
    sa.Column("assertions", sa.JSON(), nullable=False),
    sa.Column("schedule_kind", sa.String(10), nullable=False, server_default="none"),
    sa.Column("period_seconds", sa.Integer(), nullable=True),
    sa.Column("cron", sa.String(200), nullable=True),
    sa.Column("timezone", sa.String(64), nullable=False, server_default="UTC"),
    sa.Column("grace_seconds", sa.Integer(), nullable=False, server_default="300"),
    sa.Column("max_runtime_seconds", sa.Integer(), nullable=True),
    sa.Column("failure_threshold", sa.Integer(), nullable=False, server_default="1"),
    sa.Column("consecutive_failures", sa.Integer(), nullable=False, server_default="0"),
    sa.Column("tags", sa.JSON(), nullable=False),
    sa.Column("paused", sa.Boolean(), nullable=False, server_default=sa.false()),
    sa.Column("state", sa.String(16), nullable=False, server_default="new"),
    sa.Column("state_changed_at", TZ, nullable=True),
    sa.Column("last_ping_at", TZ, nullable=True),
    sa.Column("last_run_at", TZ, nullable=True),
    sa.Column("open_start_at", TZ, nullable=True),
    sa.Column("open_start_run_id", sa.String(200), nullable=True),
    sa.Column("next_expected_at", TZ, nullable=True),
    sa.Column("n_runs", sa.BigInteger(), nullable=False, server_default="0"),
    sa.Column("created_at", TZ, nullable=False),
    sa.Column("updated_at", TZ, nullable=False),
    # When the schedule (kind, period or cron, timezone) was last set, or the tracker resumed:
    # a tracker that has never been pinged expects its first ping at the first scheduled time
    # after it (see telemhq_server.detector).
    sa.Column("schedule_set_at", TZ, nullable=True),
    # When the tracker was last resumed: its clock restarts there, pinged before or not (the
    # next ping is due after the later of its last ping and this; see schedules.anchor_of).
    sa.Column("resumed_at", TZ, nullable=True),
    sa.UniqueConstraint("token", name="uq_trackers_token"),
    sa.UniqueConstraint("slug", name="uq_trackers_slug"),
    sa.UniqueConstraint("badge_key", name="uq_trackers_badge_key"),
    sa.Index("ix_trackers_next_expected_at", "next_expected_at"),
    sa.Index("ix_trackers_updated_at", "updated_at"),
)

runs = sa.Table(
    "runs",
    metadata,
    sa.Column("id", BigId, primary_key=True, autoincrement=True),
    sa.Column(
        "tracker_id",
        BigId,
        sa.ForeignKey("trackers.id", ondelete="CASCADE", name="fk_runs_tracker"),
        nullable=False,
    ),
    sa.Column("ping_id", sa.String(200), nullable=True),
    sa.Column("run_id", sa.String(200), nullable=False),
    sa.Column("status", sa.String(16), nullable=False),
    # None for a `start` (no verdict yet); else status is not failure and every assertion passed.
    sa.Column("passed", sa.Boolean(), nullable=True),
    sa.Column("duration_ms", sa.Float(), nullable=True),
    sa.Column("payload", sa.Text(), nullable=False),
    sa.Column("assertions", sa.Text(), nullable=False),
    sa.Column("received_at", TZ, nullable=False),
    sa.Column("started_at", TZ, nullable=True),
    # Run history paging and retention walk (tracker_id, id). There is deliberately no index
    # on run_id: an end naming an older start (not the tracker's open one) is rare and finds
    # it among the tracker's retained runs, and every random run_id would dirty a random index
    # page on each insert (the ping path's cost). Where it is the rule (OpenLineage: runs of
    # one job overlap), the end names its start's ping id, found through (tracker_id, ping_id).
    sa.Index("ix_runs_tracker_id_id", "tracker_id", "id"),
    sa.Index("uq_runs_tracker_ping_id", "tracker_id", "ping_id", unique=True),
)

flips = sa.Table(
    "flips",
    metadata,
    sa.Column("id", BigId, primary_key=True, autoincrement=True),
    sa.Column(
        "tracker_id",
        BigId,
        sa.ForeignKey("trackers.id", ondelete="CASCADE", name="fk_flips_tracker"),
        nullable=False,
    ),
    sa.Column("old_state", sa.String(16), nullable=False),
    sa.Column("new_state", sa.String(16), nullable=False),
    sa.Column("reason", sa.Text(), nullable=False),
    # runs.id of the run that caused it (None for API actions and the detector); runs may
    # since have been pruned, so this is no foreign key.
    sa.Column("run_id", sa.BigInteger(), nullable=True),
    sa.Column("created_at", TZ, nullable=False),
    sa.Index("ix_flips_tracker_id_id", "tracker_id", "id"),
)

api_keys = sa.Table(
    "api_keys",
    metadata,
    sa.Column("id", BigId, primary_key=True, autoincrement=True),
    sa.Column("name", sa.String(200), nullable=False),
    sa.Column("prefix", sa.String(16), nullable=False),
    sa.Column("key_hash", sa.String(64), nullable=False),
    sa.Column("scope", sa.String(8), nullable=False),
    sa.Column("created_at", TZ, nullable=False),
    sa.Column("last_used_at", TZ, nullable=True),
    sa.UniqueConstraint("key_hash", name="uq_api_keys_key_hash"),
)

ping_keys = sa.Table(
    "ping_keys",
    metadata,
    sa.Column("id", BigId, primary_key=True, autoincrement=True),
    sa.Column("name", sa.String(200), nullable=False),
    sa.Column("key", sa.String(64), nullable=False),
    sa.Column("auto_create", sa.Boolean(), nullable=False, server_default=sa.true()),
    sa.Column("created_at", TZ, nullable=False),
    sa.UniqueConstraint("key", name="uq_ping_keys_key"),
)

webhooks = sa.Table(
    "webhooks",
    metadata,
    sa.Column("id", BigId, primary_key=True, autoincrement=True),
    sa.Column("url", sa.Text(), nullable=False),
    sa.Column("events", sa.JSON(), nullable=False),
    sa.Column("secret", sa.String(200), nullable=False),
    sa.Column("enabled", sa.Boolean(), nullable=False, server_default=sa.true()),
    sa.Column("created_at", TZ, nullable=False),
)

webhook_outbox = sa.Table(
    "webhook_outbox",
    metadata,
    sa.Column("id", BigId, primary_key=True, autoincrement=True),
    sa.Column(
        "webhook_id",
        BigId,
        sa.ForeignKey("webhooks.id", ondelete="CASCADE", name="fk_outbox_webhook"),
        nullable=False,
    ),
    sa.Column("event", sa.String(64), nullable=False),
    sa.Column("tracker_id", sa.BigInteger(), nullable=True),
    sa.Column("body", sa.Text(), nullable=False),
    sa.Column("created_at", TZ, nullable=False),
    sa.Column("next_attempt_at", TZ, nullable=False),
    sa.Column("attempts", sa.Integer(), nullable=False, server_default="0"),
    sa.Column("delivered_at", TZ, nullable=True),
    sa.Column("failed_at", TZ, nullable=True),
    sa.Column("last_error", sa.Text(), nullable=True),
    sa.Column("claimed_until", TZ, nullable=True),
    sa.Index("ix_outbox_pending", "delivered_at", "failed_at", "next_attempt_at"),
)

webhook_attempts = sa.Table(
    "webhook_attempts",
    metadata,
    sa.Column("id", BigId, primary_key=True, autoincrement=True),
    sa.Column(
        "outbox_id",
        BigId,
        sa.ForeignKey("webhook_outbox.id", ondelete="CASCADE", name="fk_attempts_outbox"),
        nullable=False,
    ),
    sa.Column("attempted_at", TZ, nullable=False),
    sa.Column("status_code", sa.Integer(), nullable=True),
    sa.Column("error", sa.Text(), nullable=True),
    sa.Column("duration_ms", sa.Float(), nullable=True),
    sa.Index("ix_attempts_outbox_id", "outbox_id"),
)


#: The largest id either database stores (a signed 64-bit integer).
MAX_ID: Final = 2**63 - 1


def as_id(raw: str) -> int | None:
    """``raw`` (from a URL) as a row id or cursor, or None when it cannot be one: ASCII digits
    only (``str.isdigit`` also admits "²", which ``int`` refuses), within 64 bits."""
    if not raw.isascii() or not raw.isdigit() or len(raw) > 19:
        return None
    value = int(raw)
    return value if value <= MAX_ID else None


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def as_utc(value: dt.datetime | None) -> dt.datetime | None:
    """A datetime read from the database as an aware UTC datetime (SQLite returns naive)."""
    if value is None:
        return None
    if value.tzinfo is None:
        return value.replace(tzinfo=dt.UTC)
    return value.astimezone(dt.UTC)


def iso(value: dt.datetime | None) -> str | None:
    """``2026-01-02T03:04:05.123456Z`` for API answers."""
    aware = as_utc(value)
    return None if aware is None else aware.isoformat().replace("+00:00", "Z")


# --- engines ---------------------------------------------------------------------------------


def make_engine(url: str, **kwargs: Any) -> Engine:
    """An engine for ``url`` set up for this server (see the module docstring)."""
    if url.startswith("sqlite"):
        return _sqlite_engine(url, **kwargs)
    kwargs.setdefault("pool_pre_ping", True)
    kwargs.setdefault("pool_size", 5)
    kwargs.setdefault("max_overflow", 10)
    if url.startswith("postgresql"):
        # An unreachable database fails a batch (503, the clients retry) instead of hanging.
        kwargs.setdefault("connect_args", {}).setdefault("connect_timeout", 10)
    return sa.create_engine(url, **kwargs)


def _sqlite_engine(url: str, **kwargs: Any) -> Engine:
    parsed = sa.engine.make_url(url)
    if parsed.database and parsed.database != ":memory:":
        Path(parsed.database).expanduser().parent.mkdir(parents=True, exist_ok=True)
    connect_args = kwargs.pop("connect_args", {})
    connect_args.setdefault("check_same_thread", False)
    connect_args.setdefault("timeout", 30)
    engine = sa.create_engine(url, connect_args=connect_args, **kwargs)

    @sa.event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn: Any, _record: Any) -> None:
        # Let SQLAlchemy (below) emit BEGIN itself, so that BEGIN IMMEDIATE is possible.
        dbapi_conn.isolation_level = None
        cursor = dbapi_conn.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=FULL")  # durable: a commit is on disk when answered
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute("PRAGMA busy_timeout=30000")
        cursor.close()

    @sa.event.listens_for(engine, "begin")
    def _on_begin(conn: Connection) -> None:
        immediate = conn.get_execution_options().get("sqlite_immediate", False)
        conn.exec_driver_sql("BEGIN IMMEDIATE" if immediate else "BEGIN")

    return engine


class SqliteWriteLock:
    """Writers to one SQLite file take turns on an exclusive ``flock`` on ``<db>.write-lock``
    (plus a thread lock, since ``flock`` is per open file). Unlike SQLite's busy handler,
    which polls with sleeps of up to 100 ms, a waiter wakes as soon as the lock is free: this
    keeps write latency low when several server processes share the file."""

    _by_path: dict[str, SqliteWriteLock] = {}
    _guard = threading.Lock()

    def __init__(self, path: str) -> None:
        self._pid = os.getpid()
        self._thread_lock = threading.Lock()
        self._file = open(f"{path}.write-lock", "a+b")  # noqa: SIM115 - lives with the process

    @classmethod
    def for_engine(cls, engine: Engine) -> SqliteWriteLock | None:
        database = engine.url.database if engine.dialect.name == "sqlite" else None
        if not database or database == ":memory:":
            return None
        path = str(Path(database).resolve())
        with cls._guard:
            lock = cls._by_path.get(path)
            # A forked child must not share its parent's open file: flock would not exclude.
            if lock is None or lock._pid != os.getpid():
                lock = cls._by_path[path] = cls(path)
            return lock

    @contextlib.contextmanager
    def held(self) -> Iterator[None]:
        self.acquire()
        try:
            yield
        finally:
            self.release()

    def acquire(self) -> None:
        """Take the lock (blocking). It may be released from another thread."""
        import fcntl

        self._thread_lock.acquire()
        try:
            fcntl.flock(self._file, fcntl.LOCK_EX)
        except BaseException:
            self._thread_lock.release()
            raise

    def release(self) -> None:
        import fcntl

        try:
            fcntl.flock(self._file, fcntl.LOCK_UN)
        finally:
            self._thread_lock.release()


@contextlib.contextmanager
def write_lock(engine: Engine) -> Iterator[None]:
    """Hold the SQLite write lock of ``engine``'s file (a no-op on PostgreSQL)."""
    lock = SqliteWriteLock.for_engine(engine)
    if lock is None:
        yield
        return
    with lock.held():
        yield


@contextlib.contextmanager
def write_tx(engine: Engine) -> Iterator[Connection]:
    """A read-then-write transaction: committed on exit, rolled back on an exception.

    On SQLite it holds :func:`write_lock` and starts with ``BEGIN IMMEDIATE``, so writers in
    other threads and processes queue instead of failing or polling. On PostgreSQL lock the
    rows you read-then-write (``SELECT ... FOR UPDATE``) or use conditional updates.
    Blocking: call it from a thread (``asyncio.to_thread``/``app.run_sync``), never on the
    event loop, where the ping writer may hold the SQLite write lock across an ``await``.
    """
    with write_lock(engine), engine.connect() as plain:
        conn = (
            plain.execution_options(sqlite_immediate=True)
            if engine.dialect.name == "sqlite"
            else plain
        )
        with conn.begin():
            yield conn


# --- migrations ------------------------------------------------------------------------------

MIGRATIONS_DIR: Final = Path(__file__).with_name("migrations")


def alembic_config(connection: Connection | None = None) -> Any:
    """An Alembic ``Config`` for the bundled migrations (no alembic.ini needed)."""
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    if connection is not None:
        cfg.attributes["connection"] = connection
    return cfg


def migrate(engine: Engine) -> None:
    """Bring the database to the newest schema; safe when several processes run it at once
    on PostgreSQL (they queue on an advisory lock; the later ones find nothing to do)."""
    from alembic import command

    with _sqlite_migration_lock(engine), engine.connect() as conn:
        if engine.dialect.name == "postgresql":
            conn.execute(sa.text("SELECT pg_advisory_lock(:k)"), {"k": MIGRATION_LOCK_KEY})
            conn.commit()
        try:
            command.upgrade(alembic_config(conn), "head")
            conn.commit()
        finally:
            if engine.dialect.name == "postgresql":
                conn.rollback()
                conn.execute(sa.text("SELECT pg_advisory_unlock(:k)"), {"k": MIGRATION_LOCK_KEY})
                conn.commit()


@contextlib.contextmanager
def _sqlite_migration_lock(engine: Engine) -> Iterator[None]:
    """On SQLite, one migrator at a time (processes or threads): an exclusive ``flock`` on a
    file beside the database. Elsewhere a no-op (PostgreSQL uses an advisory lock)."""
    database = engine.url.database if engine.dialect.name == "sqlite" else None
    if not database or database == ":memory:":
        yield
        return
    import fcntl

    with open(f"{database}.migrate-lock", "a+b") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def check_database(engine: Engine) -> None:
    """Raise unless the database answers a trivial query (``/healthz``)."""
    with engine.connect() as conn:
        conn.execute(sa.text("SELECT 1"))
