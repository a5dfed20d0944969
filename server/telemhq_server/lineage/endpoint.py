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
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from telemhq_plugins.core import jsontext
from telemhq_server.bodies import BodyTooLarge, holds_nul, read_body
from telemhq_server.db import ping_keys, runs, trackers
from telemhq_server.ingest import CachedTracker, PingError
from telemhq_server.ingest.errors import NewSlug
from telemhq_server.keys import verify_api_key
from telemhq_server.lineage.mapping import ENDS, Mapped, event_time, map_event, ping_id
from telemhq_server.lineage.schema import InvalidEvent, check_event

if TYPE_CHECKING:
    from telemhq_server.host import TelemHQ

__all__ = ["LINEAGE_PATH", "MAX_EVENT_BYTES", "post_lineage"]

logger = logging.getLogger("telemhq_server.lineage")

LINEAGE_PATH: Final = "/api/v1/lineage"
#: The largest event, after decompression (schema and column-lineage facets can be large).
MAX_EVENT_BYTES: Final = 1_000_000
_KEY_RE: Final = re.compile(r"[A-Za-z0-9_-]{1,200}")


def _error(status: int, reason: str, message: str, app: TelemHQ) -> Response:
    app.metrics.reject(reason)
    return JSONResponse({"ok": False, "error": message}, status)


def _decoded(request: Request, body: bytes) -> bytes:
    """The body without its content encoding (identity or gzip), within the size limit."""
    encoding = request.headers.get("content-encoding", "identity").strip().lower()
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


def _bearer(request: Request) -> str:
    scheme, _, value = request.headers.get("authorization", "").partition(" ")
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
        path = f"{key}/{mapped.slug}"
        try:
            return (await app.pings.resolve(path))[0]
        except NewSlug as new:
            if mapped.status is None:
                return None
            await app.cache.auto_create(new, {"job": mapped.name, "tags": list(mapped.tags)})
            return (await app.pings.resolve(path))[0]
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


async def _paired(app: TelemHQ, tracker: CachedTracker, mapped: Mapped) -> str | None:
    """Pair the event with its run's other events already stored: an end gets the START's
    time and the duration between the two ``eventTime``s; a START whose run has already
    ended is not stored (it would leave a start open). Returns why the event is dropped."""
    types = ("START", *ENDS)
    ids = {t: ping_id(mapped.run_id, t) for t in types}
    stored = await app.run_sync(_stored, app.engine, tracker.id, list(ids.values()))
    if mapped.status == "start":
        if any(ids[t] in stored for t in ENDS) and ids["START"] not in stored:
            return "the run has already ended: a START after its end is not stored"
        return None
    start = stored.get(ids["START"])
    if start is not None:
        started = jsontext.loads(start).get("started_at")
        if isinstance(started, str):
            mapped.payload["started_at"] = started
            elapsed = (mapped.event_time - event_time(started)).total_seconds()
            if elapsed >= 0:
                mapped.payload["duration"] = round(elapsed * 1000, 3)
    return None


async def post_lineage(request: Request) -> Response:
    """``POST /api/v1/lineage`` (see the module's docstring)."""
    app: TelemHQ = request.app.state.telemhq
    started = time.perf_counter()
    try:
        key = _bearer(request)
        event = _parse(_decoded(request, await read_body(request, MAX_EVENT_BYTES)))
        kind = check_event(event)
        if kind != "RunEvent":
            await _check_key(app, key)
            return JSONResponse({"ok": True, "ignored": f"a {kind} changes no run"})
        mapped = map_event(event)
        tracker = await _tracker(app, key, mapped)
        if mapped.status is None or tracker is None:
            if tracker is None:
                await _check_key(app, key)
            return JSONResponse(
                {"ok": True, "ignored": f"a {mapped.event_type} event changes no state"}
            )
        dropped = await _paired(app, tracker, mapped)
        if dropped is not None:
            return JSONResponse({"ok": True, "ignored": dropped})
        text = jsontext.dumps(mapped.payload)
        code, answer = await app.pings.record(tracker, None, mapped.payload, text, started)
        return JSONResponse(answer, code)
    except InvalidEvent as exc:
        return _error(400, "invalid_event", f"not a valid OpenLineage event: {exc}", app)
    except BodyTooLarge as exc:
        return _error(413, "too_large", str(exc), app)
    except PingError as exc:
        return _error(exc.status, exc.reason, exc.message, app)
    except (sa.exc.OperationalError, sa.exc.InterfaceError, sa.exc.TimeoutError):
        logger.warning("database unavailable for an OpenLineage event")
        return _error(503, "storage", "database unavailable; retry", app)
