"""JSON text to Python values with integers kept exact: one parser for every payload.

``telemhq check`` on a laptop and the reference server read a ping's body with this function,
so an assertion sees the same values in both (and :mod:`telemhq_plugins.core.assertions`
compares them the same way). orjson does the parsing; it turns an integer beyond 64 bits into
a float, so a document holding a long run of digits is read again by the standard library,
which keeps every integer exact. orjson has validated it by then, so both accept and reject
the same documents: UTF-8 only, no NaN or Infinity, no lone surrogates, no number that is
infinite as a float, at most 1024 levels of nesting.
"""

from __future__ import annotations

import json
from typing import Any, Final

import orjson

__all__ = ["JSONDecodeError", "dumpb", "dumps", "loads"]

JSONDecodeError = json.JSONDecodeError  # orjson's error is a subclass of it

#: 19 digits or more may be an integer orjson cannot hold exactly (it keeps 64 bits). They are
#: found as 19 zeros in the text with every digit turned into a zero: a byte translation and a
#: substring search, several times cheaper than the regular expression ``\d{19}`` on a body of
#: a kilobyte with many digits (timestamps, UUIDs).
_DIGITS_AS_ZERO: Final = bytes.maketrans(b"123456789", b"000000000")
_LONG_DIGITS: Final = b"0" * 19


def loads(data: bytes | str) -> Any:
    """The value of the JSON document ``data``; raises :class:`JSONDecodeError`."""
    value = orjson.loads(data)
    raw = data.encode() if isinstance(data, str) else data
    if _LONG_DIGITS not in raw.translate(_DIGITS_AS_ZERO):
        return value
    return json.loads(raw.decode())


def dumps(value: Any) -> str:
    """Compact JSON text of ``value``, integers of any size kept (other values JSON cannot
    hold are written as ``str()`` of them)."""
    return dumpb(value).decode()


def dumpb(value: Any) -> bytes:
    """:func:`dumps` as UTF-8 bytes."""
    try:
        return orjson.dumps(value, default=str)
    except TypeError:  # an integer beyond 64 bits
        text = json.dumps(value, ensure_ascii=False, separators=(",", ":"), default=str)
        return text.encode()
