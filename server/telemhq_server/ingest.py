"""The ping path: a raw ASGI handler, a tracker cache and a group-commit writer.

Request flow for ``POST /ping/...`` (no framework, no ORM):

1. parse the path (``/ping/{token}[/start|/fail]`` or ``/ping/{ping_key}/{slug}[/start|/fail]``);
2. read the body within the size limit, parse it as a JSON object (any or no content type);
3. find the tracker in :class:`TrackerCache` (parsed assertions included; entries are
   re-checked against the database every ``cache_ttl`` seconds, so other processes' changes
   are seen within about a second);
4. evaluate the assertions (core's ``evaluate_all``) and queue the ping to :class:`BatchWriter`;
5. the writer takes every queued ping, writes them in ONE transaction (runs, tracker updates,
   flips) in a dedicated thread, commits, and only then answers each waiting request.

The transaction locks the trackers it changes (``SELECT ... FOR UPDATE`` on PostgreSQL,
``BEGIN IMMEDIATE`` on SQLite) and re-reads their state, so several server processes on one
database compute states in order. A failed transaction rolls back whole: no partial rows, and
every ping in it is answered 503 (the client retries; ``ping_id`` makes that safe).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import datetime as dt
import json
import logging
import threading
import time
import uuid
from collections.abc import Awaitable, Callable, MutableMapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from telemhq_plugins.core.assertions import (
    Assertion,
    AssertionResult,
    evaluate_all,
    parse_assertion,
)
from telemhq_plugins.core.config import slugify
from telemhq_plugins.core.payload import STATUSES
from telemhq_server import states
from telemhq_server.db import as_utc, ping_keys, runs, trackers, utcnow, write_tx
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

    Entries live ``ttl`` seconds; an expired entry is reloaded (one load per key at a time,
    in a thread); when ``updated_at`` did not change, the parsed assertions are kept.
    The API invalidates this process's entries directly on every change.
    """

    def __init__(self, engine: Engine, ttl: float, executor: concurrent.futures.Executor):
        self.engine = engine
        self.ttl = ttl
        self.executor = executor
        self._entries: dict[str, _Entry] = {}
        self._loading: dict[str, asyncio.Future[_Entry]] = {}

    def invalidate(self) -> None:
        self._entries.clear()

    async def get(self, key: str, loader: Callable[[], _Entry]) -> CachedTracker:
        entry = self._entries.get(key)
        if entry is None or entry.expires < time.monotonic():
            entry = await self._load(key, loader)
        if entry.tracker is None:
            assert entry.error is not None
            error = (
                entry.error
            )  # a fresh exception each time: a shared one would grow its traceback
            raise PingError(error.status, error.reason, error.message)
        return entry.tracker

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


class BatchWriter:
    """Group commit: one writer task, one thread, one transaction per batch of pings."""

    def __init__(self, engine: Engine, metrics: Metrics, max_batch: int = 512) -> None:
        self.engine = engine
        self.metrics = metrics
        self.max_batch = max_batch
        self.is_postgres = engine.dialect.name == "postgresql"
        self._queue: list[Pending] = []
        self._wakeup: asyncio.Event | None = None
        self._task: asyncio.Task[None] | None = None
        self._executor = concurrent.futures.ThreadPoolExecutor(1, "telemhq-writer")
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
        """Write what is queued, then stop."""
        if self._task is not None:
            while self._queue:
                await asyncio.sleep(0.01)
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        self._executor.shutdown(wait=True)

    def submit(self, item: Pending) -> asyncio.Future[tuple[int, dict[str, Any]]]:
        if len(self._queue) >= MAX_PENDING:
            raise PingError(503, "overloaded", "server busy: too many pings waiting; retry")
        assert self._wakeup is not None, "BatchWriter.start() was not called"
        item.future = asyncio.get_running_loop().create_future()
        self._queue.append(item)
        self._wakeup.set()
        return item.future

    async def _run(self) -> None:
        assert self._wakeup is not None
        loop = asyncio.get_running_loop()
        while True:
            await self._wakeup.wait()
            self._wakeup.clear()
            while self._queue:
                batch = self._queue[: self.max_batch]
                del self._queue[: self.max_batch]
                try:
                    await loop.run_in_executor(self._executor, self.write, batch)
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

    def write(self, batch: Sequence[Pending]) -> None:
        """Write ``batch`` in one transaction and set each item's ``answer`` (thread side).
        A deadlock or serialization failure on PostgreSQL is retried once."""
        for attempt in (1, 2):
            try:
                with write_tx(self.engine) as conn:
                    self._write(conn, batch)
                break
            except sa.exc.OperationalError:
                if attempt == 2:
                    raise
                logger.warning("batch transaction failed; retrying once", exc_info=True)
        self.metrics.batch(len(batch))

    def _write(self, conn: Connection, batch: Sequence[Pending]) -> None:
        ids = sorted({item.tracker_id for item in batch})
        query = sa.select(
            trackers.c.id,
            trackers.c.token,
            trackers.c.state,
            trackers.c.consecutive_failures,
            trackers.c.failure_threshold,
            trackers.c.paused,
            trackers.c.open_start_at,
            trackers.c.open_start_run_id,
            trackers.c.schedule_kind,
            trackers.c.period_seconds,
            trackers.c.cron,
            trackers.c.timezone,
        ).where(trackers.c.id.in_(ids))
        if self.is_postgres:
            query = query.order_by(trackers.c.id).with_for_update()
        rows = {row["id"]: dict(row) for row in conn.execute(query).mappings()}

        ping_ids = [(i.tracker_id, i.ping_id) for i in batch if i.ping_id and i.tracker_id in rows]
        seen: dict[tuple[int, str], tuple[str, str]] = {}  # -> (run_id, results JSON)
        if ping_ids:
            found = conn.execute(
                sa.select(
                    runs.c.tracker_id, runs.c.ping_id, runs.c.run_id, runs.c.assertions
                ).where(
                    runs.c.tracker_id.in_({t for t, _ in ping_ids}),
                    runs.c.ping_id.in_({p for _, p in ping_ids}),
                )
            )
            for t, p, r, a in found:
                seen[(t, p)] = (r, a)

        # Start times of runs named by an end ping, when not the tracker's open start.
        wanted = {
            (i.tracker_id, i.run_id)
            for i in batch
            if i.run_id and i.status != "start" and i.tracker_id in rows
        }
        starts: dict[tuple[int, str], dt.datetime] = {}
        wanted -= {(t, r["open_start_run_id"]) for t, r in rows.items()}
        if wanted:
            for t, r, at in conn.execute(
                sa.select(runs.c.tracker_id, runs.c.run_id, sa.func.max(runs.c.received_at))
                .where(
                    runs.c.tracker_id.in_({t for t, _ in wanted}),
                    runs.c.run_id.in_({r for _, r in wanted}),
                    runs.c.status == "start",
                )
                .group_by(runs.c.tracker_id, runs.c.run_id)
            ):
                starts[(t, r)] = as_utc(at)  # type: ignore[assignment]

        inserts: list[dict[str, Any]] = []
        inserted: list[Pending] = []
        flip_for: dict[int, tuple[str, str, str]] = {}  # index in inserts -> (old, new, why)
        changed: dict[int, dict[str, Any]] = {}
        for item in batch:
            row = rows.get(item.tracker_id)
            if row is None or row["token"] != item.token:
                item.answer = (404, {"ok": False, "error": "unknown token"})
                continue
            if item.ping_id is not None:
                dup = seen.get((item.tracker_id, item.ping_id))
                if dup is not None:
                    run_id, results_text = dup
                    item.answer = (
                        200,
                        {
                            "ok": True,
                            "duplicate": True,
                            "run_id": run_id,
                            "state": None,  # filled in below, after the batch
                            "assertions": json.loads(results_text),
                        },
                    )
                    continue
            now = item.received_at
            started_at: dt.datetime | None = None
            if item.status == "start":
                run_id = item.run_id or str(uuid.uuid4())
                row["open_start_at"] = now
                row["open_start_run_id"] = run_id
                starts[(item.tracker_id, run_id)] = now
            else:
                run_id = item.run_id or row["open_start_run_id"] or str(uuid.uuid4())
                if run_id == row["open_start_run_id"] and row["open_start_at"] is not None:
                    started_at = as_utc(row["open_start_at"])
                    row["open_start_at"] = None
                    row["open_start_run_id"] = None
                else:
                    started_at = starts.get((item.tracker_id, run_id))
                if item.status not in states.NEUTRAL_STATUSES:
                    row["last_ping_at"] = now
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
            before = states.TrackerStatus(
                row["state"], row["consecutive_failures"], row["failure_threshold"], row["paused"]
            )
            transition = states.on_run(before, item.status, failed)
            if transition.reason is not None:
                flip_for[len(inserts)] = (row["state"], transition.state, transition.reason)
                row["state_changed_at"] = now
            row["state"] = transition.state
            row["consecutive_failures"] = transition.consecutive_failures
            row["last_run_at"] = now
            row["n_new"] = row.get("n_new", 0) + 1
            changed[item.tracker_id] = row
            results = [r.to_dict() for r in item.results]
            inserts.append(
                {
                    "tracker_id": item.tracker_id,
                    "ping_id": item.ping_id,
                    "run_id": run_id,
                    "status": item.status,
                    "passed": states.run_passed(item.status, failed),
                    "duration_ms": duration,
                    "payload": item.body,
                    "assertions": json.dumps(results, default=str),
                    "received_at": now,
                    "started_at": started_at,
                }
            )
            inserted.append(item)
            if item.ping_id is not None:
                seen[(item.tracker_id, item.ping_id)] = (run_id, inserts[-1]["assertions"])
            item.answer = (
                200,
                {
                    "ok": True,
                    "run_id": run_id,
                    "status": item.status,
                    "passed": inserts[-1]["passed"],
                    "state": None,
                    "assertions": results,
                },
            )

        if inserts:
            if flip_for:
                new_ids = conn.execute(
                    runs.insert().returning(runs.c.id, sort_by_parameter_order=True), inserts
                ).scalars()
                run_pks = list(new_ids)
                for index, (old, new, why) in flip_for.items():
                    record_flip(
                        conn,
                        inserts[index]["tracker_id"],
                        old,
                        new,
                        why,
                        run_pks[index],
                        inserts[index]["received_at"],
                    )
            else:
                conn.execute(runs.insert(), inserts)
            self._update_trackers(conn, changed)
            with self._touched_lock:
                self._touched.update(changed)
        for item in batch:
            if item.answer is not None and item.answer[1].get("state", "") is None:
                item.answer[1]["state"] = rows[item.tracker_id]["state"]

    def _update_trackers(self, conn: Connection, changed: dict[int, dict[str, Any]]) -> None:
        b = sa.bindparam
        stmt = (
            trackers.update()
            .where(trackers.c.id == b("b_id"))
            .values(
                state=b("b_state"),
                consecutive_failures=b("b_failures"),
                state_changed_at=sa.func.coalesce(
                    b("b_changed", type_=sa.DateTime(True)), trackers.c.state_changed_at
                ),
                open_start_at=b("b_open_at", type_=sa.DateTime(True)),
                open_start_run_id=b("b_open_run"),
                last_run_at=b("b_last_run", type_=sa.DateTime(True)),
                last_ping_at=sa.func.coalesce(
                    b("b_last_ping", type_=sa.DateTime(True)), trackers.c.last_ping_at
                ),
                next_expected_at=sa.case(
                    (b("b_has_ping", type_=sa.Boolean()), b("b_next", type_=sa.DateTime(True))),
                    else_=trackers.c.next_expected_at,
                ),
                n_runs=trackers.c.n_runs + b("b_n", type_=sa.BigInteger()),
            )
        )
        params = [
            {
                "b_id": tid,
                "b_state": row["state"],
                "b_failures": row["consecutive_failures"],
                "b_changed": row.get("state_changed_at"),
                "b_open_at": row["open_start_at"],
                "b_open_run": row["open_start_run_id"],
                "b_last_run": row["last_run_at"],
                "b_last_ping": row.get("last_ping_at"),
                "b_has_ping": "last_ping_at" in row,
                "b_next": row.get("next_expected_at"),
                "b_n": row["n_new"],
            }
            for tid, row in changed.items()
        ]
        conn.execute(stmt, params)


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


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


def parse_body(body: bytes) -> dict[str, Any]:
    """The ping body as a JSON object ({} when empty); raises :class:`PingError` (400)."""
    if not body.strip():
        return {}
    try:
        value = json.loads(body, parse_constant=_reject_constant)
    except UnicodeDecodeError:
        raise PingError(400, "invalid_json", "body is not valid JSON: not UTF-8 text") from None
    except json.JSONDecodeError as exc:
        raise PingError(400, "invalid_json", f"body is not valid JSON: {exc}") from None
    except ValueError as exc:  # NaN/Infinity, or a too-deep document
        raise PingError(400, "invalid_json", f"body is not valid JSON: {exc}") from None
    except RecursionError:
        raise PingError(400, "invalid_json", "body is not valid JSON: nested too deep") from None
    if not isinstance(value, dict):
        raise PingError(400, "not_object", f"body must be a JSON object, got {_json_type(value)}")
    return value


def _payload_text(body: bytes, payload: dict[str, Any]) -> str:
    """The body to store: as received when it is UTF-8 JSON, else re-encoded."""
    if not payload:
        return "{}"
    try:
        return body.decode()
    except UnicodeDecodeError:  # UTF-16/32 JSON, which json.loads accepts
        return json.dumps(payload)


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

    async def resolve(self, scope: Scope) -> tuple[CachedTracker, str | None]:
        """The tracker the URL names, and the status its suffix implies."""
        path: str = scope["path"]
        parts = path[len("/ping/") :].rstrip("/").split("/")
        if not parts or not parts[0] or len(parts) > 3 or "" in parts:
            raise PingError(404, "unknown_token", "unknown token")
        suffix: str | None = None
        if len(parts) > 1 and parts[-1] in SUFFIXES:
            suffix = SUFFIXES[parts[-1]]
        if len(parts) == 1 or (len(parts) == 2 and suffix is not None):
            token = parts[0]
            try:
                return await self.cache.get(token, self.cache.by_token(token)), suffix
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
        return await self.cache.get(key, self.cache.by_slug(key, ping_key, slug)), suffix

    async def _read_body(self, scope: Scope, receive: Receive) -> bytes:
        limit = self.max_body_bytes
        too_big = PingError(413, "too_large", f"body is larger than the limit of {limit} bytes")
        for name, value in scope["headers"]:
            if name == b"content-length":
                try:
                    if int(value) > limit:
                        raise too_big
                except ValueError:
                    raise PingError(400, "bad_request", "invalid Content-Length") from None
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                raise PingError(400, "disconnected", "client disconnected")
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > limit:
                raise too_big
            chunks.append(chunk)
            if not message.get("more_body", False):
                return b"".join(chunks)

    async def _post(
        self, scope: Scope, receive: Receive, started: float
    ) -> tuple[int, dict[str, Any]]:
        tracker, suffix = await self.resolve(scope)
        body = await self._read_body(scope, receive)
        payload = parse_body(body)
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
            body=_payload_text(body, payload),
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

    async def _instructions(self, scope: Scope, send: Send, *, head: bool) -> None:
        scheme = scope.get("scheme", "http")
        host = next((v.decode("latin-1") for k, v in scope["headers"] if k == b"host"), "")
        url = f"{scheme}://{host}{scope['path']}"
        try:
            await self.resolve(scope)
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
    await _send(send, status, json.dumps(answer, default=str).encode(), b"application/json")


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
