"""Dashboard sign-in: an API key exchanged for a signed, HttpOnly, SameSite cookie.

The cookie holds ``<api key id>.<expiry unix time>.<signature>``; the signature is
HMAC-SHA256 over ``<id>.<expiry>`` with a key derived from that API key's stored hash. So:
no extra secret to configure or share between server processes (they all read the same
database), deleting the API key signs its sessions out at once, and a cookie cannot be forged
without the key (or the database). The cookie never contains the API key itself.
"""

from __future__ import annotations

import hashlib
import hmac
import time
from dataclasses import dataclass
from typing import Final

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from telemhq_server.db import api_keys

__all__ = ["COOKIE_NAME", "SESSION_SECONDS", "Session", "make_cookie", "read_cookie"]

COOKIE_NAME: Final = "telemhq_session"
SESSION_SECONDS: Final = 7 * 24 * 3600
_CONTEXT: Final = b"telemhq dashboard session v1"


@dataclass(frozen=True)
class Session:
    key_id: int
    key_name: str
    expires: int


def _mac(key_hash: str, key_id: int, expires: int) -> str:
    derived = hmac.new(key_hash.encode(), _CONTEXT, hashlib.sha256).digest()
    return hmac.new(derived, f"{key_id}.{expires}".encode(), hashlib.sha256).hexdigest()


def make_cookie(key_id: int, key_hash: str, *, now: float | None = None) -> str:
    """The cookie value for a session of API key ``key_id`` (whose stored hash is given)."""
    expires = int(now if now is not None else time.time()) + SESSION_SECONDS
    return f"{key_id}.{expires}.{_mac(key_hash, key_id, expires)}"


def read_cookie(engine: Engine, value: str | None, *, now: float | None = None) -> Session | None:
    """The session a cookie value stands for, or None (missing, malformed, expired, forged,
    or its API key deleted)."""
    if not value:
        return None
    try:
        raw_id, raw_exp, signature = value.split(".")
        key_id, expires = int(raw_id), int(raw_exp)
    except ValueError:
        return None
    if expires < (now if now is not None else time.time()):
        return None
    with engine.connect() as conn:
        row = conn.execute(
            sa.select(api_keys.c.name, api_keys.c.key_hash).where(api_keys.c.id == key_id)
        ).first()
    if row is None or not hmac.compare_digest(_mac(row.key_hash, key_id, expires), signature):
        return None
    return Session(key_id, row.name, expires)
