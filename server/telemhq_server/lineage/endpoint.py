"""``POST /api/v1/lineage``: OpenLineage events in, runs stored through the ping path.

The request is what the official clients' HTTP transport sends: a JSON event, optionally
gzip-compressed (``Content-Encoding: gzip``), with ``Authorization: Bearer <key>``. The key is
a ping key (trackers are created by their first event, as by a first ping) or a read-write API
key (existing trackers only). The event is checked against the spec version it declares
(:mod:`.schema`; 400 naming what is wrong, nothing stored), turned into a ping (:mod:`.mapping`)
and stored by the same code as a ping (``PingHandler.record``): same assertions, states, flips
and duplicate check. DatasetEvents and JobEvents, and RunEvents of type RUNNING or OTHER, are
acknowledged and stored nowhere.
"""

from __future__ import annotations

import logging
import re
import time
import zlib
from typing import TYPE_CHECKING, Any, Final

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from telemhq_plugins.core import jsontext
from telemhq_server.bodies import BodyTooLarge, holds_nul
from telemhq_server.db import ping_keys, runs, trackers
from telemhq_server.ingest import CachedTracker, PingError
from telemhq_server.ingest.errors import NewSlug
from telemhq_server.keys import verify_api_key
from telemhq_server.lineage.mapping import Mapped, event_time, map_event, ping_id
from telemhq_server.lineage.schema import InvalidEvent, check_event
from telemhq_server.lineage.seeding import airflow_schedule
from telemhq_server.types import Receive, Scope, Send

if TYPE_CHECKING:
    from telemhq_server.host import TelemHQ

__all__ = ["LINEAGE_PATH", "MAX_EVENT_BYTES", "LineageEndpoint", "RunMemory"]

logger = logging.getLogger("telemhq_server.lineage")

LINEAGE_PATH: Final = "/api/v1/lineage"
#: The largest event, after decompression (schema and column-lineage facets can be large).
MAX_EVENT_BYTES: Final = 1_000_000
_KEY_RE: Final = re.compile(r"[A-Za-z0-9_-]{1,200}")


async def _answer(send: Send, status: int, answer: dict[str, Any]) -> None:
    body = jsontext.dumpb(answer)
    headers = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(body)).encode()),
    ]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


def _header(scope: Scope, name: bytes) -> str:
    """A request header's value ("" when absent)."""
    for key, value in scope["headers"]:
        if key == name:
            return str(value.decode("latin-1"))
    return ""


async def _read_body(scope: Scope, receive: Receive) -> bytes:
    """The whole body, or :class:`BodyTooLarge` as soon as it is known to pass the limit."""
    declared = _header(scope, b"content-length")
    if declared.isdigit() and int(declared) > MAX_EVENT_BYTES:
        raise BodyTooLarge(MAX_EVENT_BYTES)
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise PingError(400, "disconnected", "client disconnected")
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > MAX_EVENT_BYTES:
            raise BodyTooLarge(MAX_EVENT_BYTES)
        chunks.append(chunk)
        if not message.get("more_body", False):
            return b"".join(chunks)


def _decoded(scope: Scope, body: bytes) -> bytes:
    """The body without its content encoding (identity or gzip), within the size limit."""
    encoding = (_header(scope, b"content-encoding") or "identity").strip().lower()
    if encoding in ("", "identity"):
        return body
    if encoding not in ("gzip", "x-gzip"):
        raise PingError(
            415, "encoding", f"Content-Encoding {encoding!r} is not supported: send gzip or none"
        )
    inflater = zlib.decompressobj(wbits=31)  # gzip framing
    try:
        data = inflater.decompress(body, MAX_EVENT_BYTES + 1)
    except zlib.error as exc:
        raise PingError(400, "invalid_gzip", f"body is not valid gzip: {exc}") from None
    if len(data) > MAX_EVENT_BYTES or inflater.unconsumed_tail:
        raise BodyTooLarge(MAX_EVENT_BYTES)
    return data


def _parse(raw: bytes) -> Any:
    try:
        value = jsontext.loads(raw)
    except (jsontext.JSONDecodeError, UnicodeDecodeError) as exc:
        raise PingError(400, "invalid_json", f"body is not valid JSON: {exc}") from None
    if holds_nul(raw, value):
        raise PingError(400, "invalid_json", "strings must not hold NUL (\\u0000)")
    return value


def _bearer(scope: Scope) -> str:
    scheme, _, value = _header(scope, b"authorization").partition(" ")
    if scheme.lower() != "bearer" or not value.strip():
        raise PingError(
            401,
            "unauthorised",
            "missing key: send 'Authorization: Bearer <ping key or API key>' "
            "(the OpenLineage client's api_key)",
        )
    return value.strip()


def _is_ping_key(engine: Engine, key: str) -> bool:
    with engine.connect() as conn:
        return (
            conn.execute(sa.select(ping_keys.c.id).where(ping_keys.c.key == key)).first()
            is not None
        )


def _token_of(engine: Engine, slug: str) -> str | None:
    with engine.connect() as conn:
        row = conn.execute(sa.select(trackers.c.token).where(trackers.c.slug == slug)).first()
    return None if row is None else str(row[0])


def _stored(engine: Engine, tracker_id: int, ids: list[str]) -> dict[str, str]:
    """ping id -> stored payload, for those of ``ids`` this tracker has (an indexed look-up)."""
    with engine.connect() as conn:
        rows = conn.execute(
            sa.select(runs.c.ping_id, runs.c.payload).where(
                runs.c.tracker_id == tracker_id, runs.c.ping_id.in_(ids)
            )
        ).all()
    return {str(r[0]): str(r[1]) for r in rows}


async def _check_key(app: TelemHQ, key: str) -> None:
    """For events that store nothing: the key must still be a ping key or an API key."""
    if _KEY_RE.fullmatch(key) is not None and await app.run_sync(_is_ping_key, app.engine, key):
        return
    if await app.run_sync(verify_api_key, app.engine, key) is None:
        raise PingError(401, "unauthorised", "invalid key: send a ping key or an API key")


async def _tracker(app: TelemHQ, key: str, mapped: Mapped) -> CachedTracker | None:
    """The event's tracker: through a ping key (created on its first stored event) or an
    API key (existing trackers only). None: it does not exist and the event creates nothing."""
    if _KEY_RE.fullmatch(key):
        try:
            return await app.pings.by_slug(key, mapped.slug)
        except NewSlug as new:
            if mapped.status is None:
                return None
            seed = airflow_schedule(mapped.run_facets, mapped.name)
            await app.cache.auto_create(
                new, {"job": mapped.name, "tags": list(mapped.tags)}, seed=seed
            )
            return await app.pings.by_slug(key, mapped.slug)
        except PingError as exc:
            if exc.reason != "unknown_token":
                raise  # a ping key that does not create trackers, and no such tracker
    api_key = await app.run_sync(verify_api_key, app.engine, key)
    if api_key is None:
        raise PingError(401, "unauthorised", "invalid key: send a ping key or an API key")
    if api_key.scope != "write":
        raise PingError(403, "forbidden", "this API key is read-only; events need a read-write key")
    token = await app.run_sync(_token_of, app.engine, mapped.slug)
    if token is None:
        raise PingError(
            404,
            "unknown_slug",
            f"no tracker {mapped.name!r} (slug {mapped.slug!r}): an API key reaches existing "
            "trackers only; send a ping key to create it from its first event",
        )
    return await app.cache.get(token, lambda: app.cache.by_token(token))


class RunMemory:
    """What this process stored of recent runs: each START's time and which runs ended,
    keyed by (tracker id, run id), bounded. An end's duration comes from its START's
    ``eventTime`` found here, else in the database (the START may have gone to another
    process); a START arriving after its run's end (producers that send asynchronously can
    reorder them) is dropped when this process stored the end."""

    LIMIT: Final = 100_000

    def __init__(self) -> None:
        self.starts: dict[tuple[int, str], str] = {}
        self.ended: set[tuple[int, str]] = set()

    def remember(self, tracker_id: int, mapped: Mapped) -> None:
        if len(self.starts) > self.LIMIT:
            self.starts.clear()
        if len(self.ended) > self.LIMIT:
            self.ended.clear()
        key = (tracker_id, mapped.run_id)
        if mapped.status == "start":
            self.starts[key] = mapped.payload["started_at"]
        else:
            self.starts.pop(key, None)
            self.ended.add(key)

    async def pair(self, app: TelemHQ, tracker: CachedTracker, mapped: Mapped) -> str | None:
        """Give an end its START's time and the duration between the two ``eventTime``s;
        returns why a START is not stored, if it is not."""
        key = (tracker.id, mapped.run_id)
        if mapped.status == "start":
            if key in self.ended:
                return "the run has already ended: a START after its end is not stored"
            return None
        started = self.starts.get(key)
        if started is None:
            start_id = ping_id(mapped.run_id, "START")
            stored = await app.run_sync(_stored, app.engine, tracker.id, [start_id])
            if start_id in stored:
                value = jsontext.loads(stored[start_id]).get("started_at")
                started = value if isinstance(value, str) else None
        if started is not None:
            mapped.payload["started_at"] = started
            elapsed = (mapped.event_time - event_time(started)).total_seconds()
            if elapsed >= 0:
                mapped.payload["duration"] = round(elapsed * 1000, 3)
        return None


class LineageEndpoint:
    """``POST /api/v1/lineage`` (see the module's docstring) as a plain ASGI app (a Starlette
    endpoint's request and response objects cost more than the rest of the work on an event),
    with this process's memory of recent runs."""

    def __init__(self, app: TelemHQ) -> None:
        self.app = app
        self.memory = RunMemory()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        started = time.perf_counter()
        try:
            status, answer = await self._post(scope, receive, started)
        except InvalidEvent as exc:
            status, answer = self._refused(
                400, "invalid_event", f"not a valid OpenLineage event: {exc}"
            )
        except BodyTooLarge as exc:
            status, answer = self._refused(413, "too_large", str(exc))
        except PingError as exc:
            status, answer = self._refused(exc.status, exc.reason, exc.message)
        except (sa.exc.OperationalError, sa.exc.InterfaceError, sa.exc.TimeoutError):
            logger.warning("database unavailable for an OpenLineage event")
            status, answer = self._refused(503, "storage", "database unavailable; retry")
        await _answer(send, status, answer)

    def _refused(self, status: int, reason: str, message: str) -> tuple[int, dict[str, Any]]:
        self.app.metrics.reject(reason)
        return status, {"ok": False, "error": message}

    async def _post(
        self, scope: Scope, receive: Receive, started: float
    ) -> tuple[int, dict[str, Any]]:
        app = self.app
        key = _bearer(scope)
        event = _parse(_decoded(scope, await _read_body(scope, receive)))
        kind = check_event(event)
        if kind != "RunEvent":
            await _check_key(app, key)
            return 200, {"ok": True, "ignored": f"a {kind} changes no run"}
        mapped = map_event(event)
        tracker = await _tracker(app, key, mapped)
        if mapped.status is None or tracker is None:
            if tracker is None:
                await _check_key(app, key)
            return 200, {"ok": True, "ignored": f"a {mapped.event_type} event changes no state"}
        dropped = await self.memory.pair(app, tracker, mapped)
        if dropped is not None:
            return 200, {"ok": True, "ignored": dropped}
        text = jsontext.dumps(mapped.payload)
        # An end's START was stored under a ping id derived from the run id: the writer finds
        # it through that index rather than among the tracker's runs.
        start_id = None if mapped.status == "start" else ping_id(mapped.run_id, "START")
        code, answer = await app.pings.record(
            tracker, None, mapped.payload, text, started, start_ping_id=start_id
        )
        if code == 200:
            self.memory.remember(tracker.id, mapped)
        return code, answer
