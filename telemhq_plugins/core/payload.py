"""The ping payload: a typed :class:`Ping` and its JSON body.

Turning a ping into bytes (:meth:`Ping.to_json`, or :func:`encode_body` from its parts, which
a finished ``Run`` uses without building a ``Ping``) happens on the delivery worker, with
orjson (many times cheaper than the stdlib's ``json``, which a busy Celery worker feels: the
delivery thread shares the job's GIL; see docs/benchmarks.md).
Serialisation never fails: odd values (datetimes, Decimals, NaN, bytes, lone surrogates,
arbitrary objects) are converted or stringified, and the body is bounded: the error message
and traceback are truncated first, then the largest custom fields; whatever was cut is named
in ``_truncated``.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import decimal
import enum
import itertools
import json
import math
import os
import socket
import traceback as tb
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import PurePath
from typing import Any, Final, Literal, Protocol, cast, get_args

import orjson

__all__ = [
    "HOST",
    "MAX_BODY_BYTES",
    "MAX_ERROR_MESSAGE",
    "MAX_TRACEBACK",
    "STATUSES",
    "ErrorInfo",
    "Ping",
    "PingParts",
    "PingSource",
    "Status",
    "as_status",
    "encode_body",
    "jsonable",
    "new_id",
    "ping_dict",
    "stable_ping_id",
    "utcnow",
]

Status = Literal["start", "success", "failure", "retry", "skipped", "cancelled"]
STATUSES: Final[frozenset[str]] = frozenset(get_args(Status))

MAX_ERROR_MESSAGE: Final = 2_000
MAX_TRACEBACK: Final = 8_000
#: The reference server accepts 100 KB by default; stay well under it.
MAX_BODY_BYTES: Final = 64_000
_MAX_DEPTH: Final = 12
_MAX_STRING: Final = 16_000
_MAX_ITEMS: Final = 1_000
#: this machine, the ``host`` of every ping made here.
HOST: Final = socket.gethostname()


def as_status(value: object) -> Status:
    """``value`` as a :data:`Status`; ``ValueError`` naming the allowed values otherwise."""
    if isinstance(value, str) and value in STATUSES:
        return cast(Status, value)
    raise ValueError(f"status {value!r} is not one of {', '.join(sorted(STATUSES))}")


def new_id() -> str:
    """A unique id in UUID form (``ping_id`` and default ``run_id``).

    80 random bits per process plus a 48-bit counter, laid out as an RFC 9562 version-8 UUID:
    as unique as ``uuid4()`` for this purpose at a fraction of its cost (it runs on the job's
    thread for every ping: no system call, one formatting). The random part is drawn again
    in a forked child."""
    return _id_format % (next(_id_counter) & 0xFFFFFFFFFFFF)


#: the namespace of :func:`stable_ping_id` (a fixed, random UUID: never change it, or ids
#: derived before and after the change stop matching).
_STABLE_NAMESPACE: Final = uuid.UUID("5d1c3b0e-8f3a-4c52-9a57-2f6e8b1d4c90")


def stable_ping_id(run_id: str, attempt: int | None, status: str) -> str:
    """A ``ping_id`` derived from what the ping reports (a UUID5 of run id, attempt and
    status), for adapters that can see one event from two places (in-process hooks and a
    watcher of the orchestrator's API): both send the same id and the server stores one run."""
    return str(uuid.uuid5(_STABLE_NAMESPACE, f"{run_id}\x1f{attempt}\x1f{status}"))


def _new_id_format() -> None:
    global _id_format, _id_counter
    raw = bytearray(os.urandom(10))
    raw[6] = (raw[6] & 0x0F) | 0x80  # version 8 (custom)
    raw[8] = (raw[8] & 0x3F) | 0x80  # RFC 9562 variant
    h = raw.hex()  # the random part fills the first four groups: 8-4-4-4 hex digits
    # The random part written into the format once: each id formats only the counter.
    _id_format, _id_counter = f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-%012x", itertools.count()


_id_format: str
_id_counter: itertools.count[int]
_new_id_format()
os.register_at_fork(after_in_child=_new_id_format)


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def _cut(text: str, limit: int, *, keep_tail: bool = False) -> str:
    if len(text) <= limit:
        return text
    marker = f"...[{len(text) - limit} chars cut]..."
    return marker + text[-limit:] if keep_tail else text[:limit] + marker


@dataclass(slots=True)
class ErrorInfo:
    """What went wrong, bounded in size. The traceback keeps its tail (where the error is)."""

    type: str
    message: str
    traceback: str | None = None

    @classmethod
    def from_exception(cls, exc: BaseException) -> ErrorInfo:
        try:
            message = str(exc)
        except Exception:
            message = f"<unprintable {type(exc).__name__}>"
        text = "".join(tb.format_exception(type(exc), exc, exc.__traceback__))
        return cls(type(exc).__qualname__, message, text)

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"type": self.type, "message": _cut(self.message, MAX_ERROR_MESSAGE)}
        if self.traceback:
            out["traceback"] = _cut(self.traceback, MAX_TRACEBACK, keep_tail=True)
        return out


@dataclass(slots=True)
class Ping:
    """One ping. ``fields`` holds metrics and any custom top-level field, e.g.
    ``{"records_processed": 450}`` or the orchestrator block ``{"celery": {...}}``."""

    status: Status = "success"
    job: str | None = None
    orchestrator: str | None = None
    run_id: str = field(default_factory=new_id)
    ping_id: str = field(default_factory=new_id)
    duration: float | None = None  # milliseconds
    started_at: dt.datetime | None = None
    finished_at: dt.datetime | None = None
    attempt: int | None = None
    error: ErrorInfo | None = None
    host: str | None = HOST
    fields: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_json(cls, body: bytes | str) -> Ping:
        """The ping a request body (:meth:`to_json`) was made from: the standard fields back
        in place, every other field in ``fields`` (for plugins told about a ping replayed
        from the spool, where only the body was kept). Raises ``ValueError`` when ``body``
        is not a JSON object."""
        try:
            data = orjson.loads(body)
        except orjson.JSONDecodeError as exc:
            raise ValueError(f"not a ping body: {exc}") from None
        if not isinstance(data, dict):
            raise ValueError("not a ping body: not a JSON object")
        rest = dict(data)

        def text(name: str) -> str | None:
            value = rest.pop(name, None)
            return value if isinstance(value, str) else None

        def number(name: str) -> float | None:
            value = rest.pop(name, None)
            ok = isinstance(value, (int, float)) and not isinstance(value, bool)
            return float(value) if ok else None

        def moment(name: str) -> dt.datetime | None:
            value = text(name)
            try:
                return None if value is None else dt.datetime.fromisoformat(value)
            except ValueError:
                return None

        status = rest.pop("status", "success")
        error = rest.pop("error", None)
        attempt = number("attempt")
        return cls(
            status=status if status in STATUSES else "success",
            job=text("job"),
            orchestrator=text("orchestrator"),
            run_id=text("run_id") or new_id(),
            ping_id=text("ping_id") or new_id(),
            duration=number("duration"),
            started_at=moment("started_at"),
            finished_at=moment("finished_at"),
            attempt=None if attempt is None else int(attempt),
            error=ErrorInfo(
                str(error.get("type", "")),
                str(error.get("message", "")),
                error.get("traceback") if isinstance(error.get("traceback"), str) else None,
            )
            if isinstance(error, dict)
            else None,
            host=text("host"),
            fields=rest,
        )

    def to_ping(self) -> Ping:
        return self

    def encode(self) -> tuple[str, bytes]:
        return self.ping_id, self.to_json()

    def parts(self) -> PingParts:
        """The fields, in their order here (``Ping(*parts)`` makes the ping again)."""
        return (
            self.status,
            self.job,
            self.orchestrator,
            self.run_id,
            self.ping_id,
            self.duration,
            self.started_at,
            self.finished_at,
            self.attempt,
            self.error,
            self.host,
            self.fields,
        )

    def to_dict(self, *, convert: bool = True) -> dict[str, Any]:
        """The JSON object, with custom fields first so the standard ones always win.

        ``convert=False`` leaves custom field values and timestamps as they are (for
        :meth:`to_json`'s fast path: orjson writes datetimes itself and calls ``jsonable`` for
        what it cannot)."""
        return ping_dict(self.parts(), convert)

    def to_json(self, max_bytes: int = MAX_BODY_BYTES) -> bytes:
        """The request body: compact UTF-8 JSON, at most ``max_bytes`` long. Never raises."""
        return encode_body(self.parts(), max_bytes)


#: a ping's fields in :class:`Ping`'s order (:meth:`Ping.parts`): status, job, orchestrator,
#: run_id, ping_id, duration, started_at, finished_at, attempt, error, host, fields.
PingParts = tuple[
    Status,
    "str | None",
    "str | None",
    str,
    str,
    "float | None",
    "dt.datetime | None",
    "dt.datetime | None",
    "int | None",
    "ErrorInfo | None",
    "str | None",
    dict[str, Any],
]


def ping_dict(parts: PingParts, convert: bool = True) -> dict[str, Any]:
    """A ping's JSON object from its parts (:meth:`Ping.to_dict`; a finished ``Run`` encodes
    itself with it on the delivery thread without building a ``Ping``)."""
    (
        status,
        job,
        orchestrator,
        run_id,
        ping_id,
        duration,
        started_at,
        finished_at,
        attempt,
        error,
        host,
        fields,
    ) = parts
    if convert:
        out: dict[str, Any] = {str(k): jsonable(v) for k, v in fields.items()}
    else:
        out = dict(fields)
    out["status"] = status
    out["run_id"] = run_id
    out["ping_id"] = ping_id
    if job is not None:
        out["job"] = job
    if orchestrator is not None:
        out["orchestrator"] = orchestrator
    if duration is not None:
        out["duration"] = round(duration, 3)
    if started_at is not None:
        out["started_at"] = jsonable(started_at) if convert else started_at
    if finished_at is not None:
        out["finished_at"] = jsonable(finished_at) if convert else finished_at
    if attempt is not None:
        out["attempt"] = attempt
    if host is not None:
        out["host"] = host
    if error is not None:
        out["error"] = error.to_dict()
    return out


def encode_body(parts: PingParts, max_bytes: int = MAX_BODY_BYTES) -> bytes:
    """The request body of the ping made of ``parts``: compact UTF-8 JSON, at most
    ``max_bytes`` long. Never raises."""
    try:
        # Fast path (the delivery worker runs this per ping): plain values and datetimes
        # need no conversion; orjson calls ``jsonable`` only for the odd ones.
        data = orjson.dumps(ping_dict(parts, False), default=jsonable, option=_ORJSON_OPTIONS)
    except (ValueError, TypeError, RecursionError):  # odd keys, huge ints, surrogates
        data = b""
    if data and len(data) <= max_bytes:
        return data
    body = ping_dict(parts)
    data = _dumps(body)
    if len(data) <= max_bytes:
        return data
    return _shrink(body, max_bytes)


class PingSource(Protocol):
    """What :meth:`~telemhq_plugins.core.delivery.Client.enqueue` takes: a :class:`Ping`, or
    something that builds its ping on the delivery thread (a finished
    :class:`~telemhq_plugins.core.runs.Run`: the job's thread then only records the end)."""

    def to_ping(self) -> Ping:
        """The ping (what plugin hooks see)."""
        ...

    def encode(self) -> tuple[str, bytes]:
        """Its ``ping_id`` and request body, as ``to_ping()`` would give them, for delivery's
        path without hooks (a ``Run`` skips building the ``Ping``)."""
        ...


#: UTC written as "Z", like ``jsonable``; an aware datetime in another zone keeps its offset.
_ORJSON_OPTIONS: Final = orjson.OPT_UTC_Z


def _dumps(obj: Any) -> bytes:
    """The slow, lenient path for what orjson refused (``obj`` is already ``jsonable``):
    the stdlib takes any int and key, and a lone surrogate becomes ``?``."""
    text = json.dumps(obj, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
    return text.encode("utf-8", "replace")


_PROTECTED: Final = frozenset(
    {"status", "run_id", "ping_id", "job", "orchestrator", "duration", "attempt", "host"}
)


def _shrink(body: dict[str, Any], max_bytes: int) -> bytes:
    """Cut the traceback, then the largest custom fields, until the body fits."""
    cut: list[str] = []
    error = body.get("error")
    if isinstance(error, dict) and "traceback" in error:
        error["traceback"] = _cut(error["traceback"], 1_000, keep_tail=True)
        cut.append("error.traceback")
    while True:
        body["_truncated"] = cut
        data = _dumps(body)
        if len(data) <= max_bytes:
            return data
        sizes = {
            k: len(_dumps(v)) for k, v in body.items() if k not in _PROTECTED and k != "_truncated"
        }
        if not sizes:  # pragma: no cover - protected fields alone are far below any limit
            return data[:max_bytes]
        largest = max(sizes, key=lambda k: sizes[k])
        del body[largest]
        cut.append(largest)


def jsonable(value: Any, depth: int = 0) -> Any:
    """Convert ``value`` into something ``json.dumps(allow_nan=False)`` accepts. Never raises."""
    if value is None or isinstance(value, (bool, int)):
        return value
    if isinstance(value, str):
        return _cut(value, _MAX_STRING)
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if depth >= _MAX_DEPTH:
        return "<nested too deep>"
    try:
        if isinstance(value, Mapping):
            items = list(value.items())[:_MAX_ITEMS]
            return {str(k): jsonable(v, depth + 1) for k, v in items}
        if isinstance(value, (list, tuple, set, frozenset)):
            return [jsonable(v, depth + 1) for v in list(value)[:_MAX_ITEMS]]
        if isinstance(value, dt.datetime):  # as orjson writes it: UTC as "Z", else the offset
            text = value.isoformat()
            return text[:-6] + "Z" if text.endswith("+00:00") else text
        if isinstance(value, (dt.date, dt.time)):
            return value.isoformat()
        if isinstance(value, dt.timedelta):
            return value.total_seconds()
        if isinstance(value, decimal.Decimal):
            return float(value) if value.is_finite() else None
        if isinstance(value, enum.Enum):
            return jsonable(value.value, depth + 1)
        if isinstance(value, (bytes, bytearray, memoryview)):
            return _cut(bytes(value).decode("utf-8", "replace"), _MAX_STRING)
        if isinstance(value, (uuid.UUID, PurePath)):
            return str(value)
        if dataclasses.is_dataclass(value) and not isinstance(value, type):
            return jsonable(dataclasses.asdict(value), depth + 1)
        if hasattr(value, "item") and callable(value.item):  # numpy scalars
            return jsonable(value.item(), depth + 1)
        return _cut(repr(value), 1_000)
    except Exception:
        return f"<unserialisable {type(value).__name__}>"
