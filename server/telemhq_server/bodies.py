"""Request bodies read within a size limit, for the Starlette routes that read one.

A body is refused (:class:`BodyTooLarge`, answered 413) before anything is read when its
declared ``Content-Length`` is over the limit, and otherwise as soon as the bytes received pass
it: no route holds more than its limit in memory, whatever the client sends. (The ping path,
a raw ASGI handler, applies the same rule itself.)
"""

from __future__ import annotations

from typing import Any, Final

from starlette.requests import Request

__all__ = [
    "MAX_API_BODY",
    "MAX_FORM_BODY",
    "BodyTooLarge",
    "declared_too_large",
    "holds_nul",
    "read_body",
]

#: Largest JSON body of a management API request.
MAX_API_BODY: Final = 1_000_000
#: Largest urlencoded form (the dashboard's sign-in: an API key and a return path).
MAX_FORM_BODY: Final = 8 * 1024


class BodyTooLarge(Exception):
    """A body over ``limit`` bytes (declared or received)."""

    def __init__(self, limit: int) -> None:
        super().__init__(f"body is larger than the limit of {limit} bytes")
        self.limit = limit


def declared_too_large(request: Request, limit: int) -> bool:
    """Does the request declare (``Content-Length``) a body over ``limit`` bytes?"""
    declared = request.headers.get("content-length", "")
    return declared.isdigit() and int(declared) > limit


async def read_body(request: Request, limit: int) -> bytes:
    """The whole body, or :class:`BodyTooLarge` as soon as it is known to pass ``limit``."""
    if declared_too_large(request, limit):
        raise BodyTooLarge(limit)
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise BodyTooLarge(limit)
        chunks.append(chunk)
    return b"".join(chunks)


def holds_nul(raw: bytes, value: Any) -> bool:
    """Does the JSON document ``raw`` (parsed: ``value``) hold a NUL character in a string
    or key? PostgreSQL cannot store one, so both databases refuse it alike."""
    if b"\\u0000" not in raw:  # JSON can only write it as this escape
        return False
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            if "\x00" in item:
                return True
        elif isinstance(item, dict):
            stack.extend(item.keys())
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
    return False
