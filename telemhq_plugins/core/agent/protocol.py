"""The agent's wire protocol: length-prefixed frames on a stream socket.

A request is ``>II`` (the header's length, the body's length), a JSON object header, then
the body bytes. A reply is ``>I`` (its length) then a JSON object. A connection carries any
number of request/reply pairs, one at a time.

Requests (``op`` in the header):

* ``{"op": "pings", "pings": [[ping_id, url, size], ...]}``: the body is the pings' JSON
  bodies one after the other (``size`` bytes each). The reply ``{"ok": true, "acked": N}``
  means all N are written to the agent's spool and synced to disk; ``{"ok": false,
  "error": "...", "cool_down": bool}`` means none was kept (the sender delivers them
  itself); ``cool_down`` false: the refusal is about these pings (a URL the agent does not
  serve), not the agent's state, so the next batch may be handed over at once.
* ``{"op": "status"}``: the reply is ``{"ok": true, "status": {...counters}}``.
"""

from __future__ import annotations

import socket
import struct
from typing import Any, Final

import orjson

__all__ = [
    "MAX_BODY",
    "MAX_HEADER",
    "ProtocolError",
    "encode_reply",
    "encode_request",
    "pings_request",
    "read_reply",
    "read_request",
    "split_pings",
]

REQUEST: Final = struct.Struct(">II")
REPLY: Final = struct.Struct(">I")
#: the largest header and body one request may carry (a batch of pings stays far below)
MAX_HEADER: Final = 1 << 20
MAX_BODY: Final = 32 << 20


class ProtocolError(ValueError):
    """A frame that breaks the protocol: the connection is closed."""


def encode_request(header: dict[str, Any], body: bytes = b"") -> bytes:
    head = orjson.dumps(header)
    return REQUEST.pack(len(head), len(body)) + head + body


def pings_request(pings: list[tuple[str, str, bytes]]) -> bytes:
    """The ``pings`` request for ``(ping_id, url, body)`` triples."""
    header = {"op": "pings", "pings": [[ping_id, url, len(body)] for ping_id, url, body in pings]}
    return encode_request(header, b"".join(body for _, _, body in pings))


def split_pings(header: dict[str, Any], body: bytes) -> list[tuple[str, str, bytes]]:
    """The ``(ping_id, url, body)`` triples of a ``pings`` request; ProtocolError if the
    header does not describe the body."""
    items = header.get("pings")
    if not isinstance(items, list):
        raise ProtocolError("pings: expected a list")
    out: list[tuple[str, str, bytes]] = []
    at = 0
    for item in items:
        if (
            not isinstance(item, list)
            or len(item) != 3
            or not isinstance(item[0], str)
            or not isinstance(item[1], str)
            or type(item[2]) is not int
            or item[2] < 0
        ):
            raise ProtocolError("pings: expected [ping_id, url, size] items")
        out.append((item[0], item[1], body[at : at + item[2]]))
        at += item[2]
    if at != len(body):
        raise ProtocolError("pings: the sizes do not add up to the body")
    return out


def _read_exactly(sock: socket.socket, size: int) -> bytes | None:
    """``size`` bytes, or None at a clean end of stream before the first byte."""
    chunks: list[bytes] = []
    got = 0
    while got < size:
        chunk = sock.recv(min(size - got, 1 << 20))
        if not chunk:
            if got == 0:
                return None
            raise ProtocolError("connection closed mid-frame")
        chunks.append(chunk)
        got += len(chunk)
    return b"".join(chunks)


def read_request(sock: socket.socket) -> tuple[dict[str, Any], bytes] | None:
    """The next request on ``sock``, None when the peer closed the connection."""
    prefix = _read_exactly(sock, REQUEST.size)
    if prefix is None:
        return None
    head_size, body_size = REQUEST.unpack(prefix)
    if head_size > MAX_HEADER or body_size > MAX_BODY:
        raise ProtocolError("frame too large")
    head = _read_exactly(sock, head_size) or b""
    body = _read_exactly(sock, body_size) or b"" if body_size else b""
    try:
        header = orjson.loads(head)
    except orjson.JSONDecodeError:
        raise ProtocolError("the header is not JSON") from None
    if not isinstance(header, dict):
        raise ProtocolError("the header is not a JSON object")
    return header, body


def encode_reply(reply: dict[str, Any]) -> bytes:
    data = orjson.dumps(reply)
    return REPLY.pack(len(data)) + data


def read_reply(sock: socket.socket) -> dict[str, Any]:
    """The reply to the request just sent; ProtocolError if there is none."""
    prefix = _read_exactly(sock, REPLY.size)
    if prefix is None:
        raise ProtocolError("the agent closed the connection")
    (size,) = REPLY.unpack(prefix)
    if size > MAX_HEADER:
        raise ProtocolError("reply too large")
    try:
        reply = orjson.loads(_read_exactly(sock, size) or b"")
    except orjson.JSONDecodeError:
        raise ProtocolError("the reply is not JSON") from None
    if not isinstance(reply, dict):
        raise ProtocolError("the reply is not a JSON object")
    return reply
