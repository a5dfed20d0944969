"""The ASGI callable for ``/ping/...``: resolve the tracker, read and check the body, evaluate
the assertions, queue the ping to the writer and answer once it is stored."""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any, Final

from telemhq_plugins.core import jsontext
from telemhq_plugins.core.assertions import evaluate_all
from telemhq_plugins.core.batching import BATCH_MAX_PINGS, BATCH_PATH
from telemhq_plugins.core.config import slugify
from telemhq_plugins.core.payload import STATUSES
from telemhq_server.db import utcnow
from telemhq_server.ingest.cache import CachedTracker, TrackerCache
from telemhq_server.ingest.errors import NewSlug, PingError
from telemhq_server.ingest.writer import BatchWriter, Pending
from telemhq_server.metrics import Metrics
from telemhq_server.types import Receive, Scope, Send

__all__ = [
    "BATCH_BODY_FACTOR",
    "BATCH_MAX_PINGS",
    "BATCH_PATH",
    "MAX_ID_LENGTH",
    "SUFFIXES",
    "PingHandler",
    "parse_body",
]

MAX_ID_LENGTH: Final = 200
BATCH_BODY_FACTOR: Final = 10  # a batch request may be 10x the single-ping body limit
SUFFIXES: Final = {"start": "start", "fail": "failure"}
_STATUS_LIST: Final = ", ".join(sorted(STATUSES))


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
        value = jsontext.loads(body)  # the reading `telemhq check` does: exact integers
    except jsontext.JSONDecodeError as exc:
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
    return body.decode()  # the parser accepted it, so it is UTF-8


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
    if "\x00" in value:  # PostgreSQL cannot store it; refused on SQLite too, alike
        raise PingError(400, "invalid_field", f"{name} must not contain NUL characters")
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
        if not parts or not parts[0] or len(parts) > 3 or "" in parts or "\x00" in path:
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
        return await self.by_slug(ping_key, slug), suffix

    async def by_slug(self, ping_key: str, slug: str) -> CachedTracker:
        """The tracker ``slug`` (already a valid slug) names under ``ping_key``; raises
        :class:`NewSlug` when the key may create it."""
        key = f"{ping_key}/{slug}"
        return await self.cache.get(key, lambda: self.cache.by_slug(key, ping_key, slug))

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
        path = scope["path"][len("/ping/") :]
        try:
            tracker, suffix = await self.resolve(path)
        except NewSlug as new:
            body = await self._read_body(receive, self.max_body_bytes)
            payload = parse_body(body)
            await self.cache.auto_create(new, payload)
            tracker, suffix = await self.resolve(path)
        else:
            body = await self._read_body(receive, self.max_body_bytes)
            payload = parse_body(body)
        return await self.record(tracker, suffix, payload, _payload_text(body, payload), started)

    async def record(
        self,
        tracker: CachedTracker,
        suffix: str | None,
        payload: dict[str, Any],
        text: str,
        started: float,
        *,
        start_ping_id: str | None = None,
    ) -> tuple[int, dict[str, Any]]:
        """Check the standard fields, evaluate, and queue the ping; its answer once stored.
        Every way in stores a ping through here (``/ping/...``, the batch, OpenLineage
        events), so they are judged alike. ``start_ping_id``: the ping id the run's start
        was stored under, when the caller knows it (see ``Pending.start_ping_id``)."""
        status = payload.get("status", "success")
        if not isinstance(status, str) or status not in STATUSES:
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
            results=[]
            if status == "start" or tracker.historical
            else evaluate_all(tracker.assertions, payload),
            received_at=utcnow(),
            historical=tracker.historical,
            judge=tracker.assertions if tracker.historical and status != "start" else (),
            payload=payload if tracker.historical else None,
            start_ping_id=start_ping_id,
        )
        if tracker.historical:
            self.writer.speculate(pending, tracker.timezone)
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
                text = jsontext.dumps(body) if body else "{}"
                if len(text) > self.max_body_bytes:
                    raise PingError(
                        413,
                        "too_large",
                        f"body is larger than the limit of {self.max_body_bytes} bytes",
                    )
                try:
                    tracker, suffix = await self.resolve(item["ping"])
                except NewSlug as new:
                    await self.cache.auto_create(new, body)
                    tracker, suffix = await self.resolve(item["ping"])
                code, answer = await self.record(tracker, suffix, body, text, started)
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
    await _send(send, status, jsontext.dumpb(answer), b"application/json")


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
