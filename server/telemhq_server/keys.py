"""API keys (hashed at rest, read or write scope) and ping keys (name-based pings).

An API key is ``thq_`` + 256 random bits. Only its SHA-256 is stored (the key is random, so a
fast hash is enough; no salt is needed against guessing), plus a short prefix to tell keys
apart in listings. Lookup is by hash; the stored hash is then compared in constant time.

A ping key is 128 random bits, URL-safe (22 characters, no prefix: it is a path segment of
``/ping/<ping_key>/<slug>``). It is stored as it is, since the ping path looks it up on every
ping; it can only send pings (and create trackers when ``auto_create``), never read or change
anything.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import secrets
from dataclasses import dataclass
from typing import Any, Final

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from telemhq_server.db import api_keys, iso, ping_keys, utcnow
from telemhq_server.tokens import url_token

__all__ = [
    "ENV_KEY_NAME",
    "ApiKey",
    "create_api_key",
    "create_ping_key",
    "ensure_admin_key",
    "hash_key",
    "list_ping_keys",
    "ping_key_hint",
    "verify_api_key",
]

logger = logging.getLogger("telemhq_server.keys")

KEY_PREFIX: Final = "thq_"
#: The name of the admin key set through ``TELEMHQ_API_KEY`` (reserved: the API refuses it).
ENV_KEY_NAME: Final = "admin (TELEMHQ_API_KEY)"


@dataclass(frozen=True, slots=True)
class ApiKey:
    id: int
    name: str
    scope: str


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def new_api_key() -> str:
    return KEY_PREFIX + secrets.token_urlsafe(32)


def create_api_key(conn: Connection, name: str, scope: str, key: str | None = None) -> str:
    """Store a new key (or the given one) and return it in clear: shown once, never again."""
    key = key or new_api_key()
    conn.execute(
        api_keys.insert().values(
            name=name,
            prefix=key[:10],
            key_hash=hash_key(key),
            scope=scope,
            created_at=utcnow(),
        )
    )
    return key


def verify_api_key(engine: Engine, key: str) -> ApiKey | None:
    """The key's record, or None when no stored key matches."""
    digest = hash_key(key)
    with engine.connect() as conn:
        row = (
            conn.execute(sa.select(api_keys).where(api_keys.c.key_hash == digest))
            .mappings()
            .first()
        )
    if row is None or not hmac.compare_digest(row["key_hash"], digest):
        return None
    return ApiKey(row["id"], row["name"], row["scope"])


def ensure_admin_key(engine: Engine, env_key: str | None) -> str | None:
    """At start: make ``TELEMHQ_API_KEY`` (if given) the one admin key from the environment
    and return None; else create an admin key when the database has none yet and return it
    (to be printed once).

    Rotation: a key stored from an earlier ``TELEMHQ_API_KEY`` that differs from the current
    one is deleted here, so changing the variable and restarting revokes the old key (and the
    dashboard sessions signed with it). Keys created through the API are left alone."""
    with engine.begin() as conn:
        if env_key:
            digest = hash_key(env_key)
            revoked = conn.execute(
                api_keys.delete().where(
                    api_keys.c.name == ENV_KEY_NAME, api_keys.c.key_hash != digest
                )
            ).rowcount
            if revoked:
                logger.warning(
                    "TELEMHQ_API_KEY changed: the previous admin key from the environment "
                    "was revoked"
                )
            exists = conn.execute(
                sa.select(api_keys.c.id).where(api_keys.c.key_hash == digest)
            ).first()
            if exists is None:
                create_api_key(conn, ENV_KEY_NAME, "write", env_key)
            return None
        if conn.execute(sa.select(api_keys.c.id).limit(1)).first() is not None:
            return None
        return create_api_key(conn, "admin", "write")


def api_key_json(row: Any) -> dict[str, Any]:
    return {
        "id": row["id"],
        "name": row["name"],
        "prefix": row["prefix"],
        "scope": row["scope"],
        "created_at": iso(row["created_at"]),
    }


def create_ping_key(conn: Connection, name: str, auto_create: bool) -> dict[str, Any]:
    """Store a new ping key; returns it as the API shows it (the key included)."""
    key = url_token(16)
    new_id = conn.execute(
        ping_keys.insert()
        .values(name=name, key=key, auto_create=auto_create, created_at=utcnow())
        .returning(ping_keys.c.id)
    ).scalar_one()
    row = conn.execute(sa.select(ping_keys).where(ping_keys.c.id == new_id)).mappings().one()
    return ping_key_json(row)


def ping_key_json(row: Any) -> dict[str, Any]:
    return {
        "id": row["id"],
        "name": row["name"],
        "key": row["key"],
        "auto_create": bool(row["auto_create"]),
        "created_at": iso(row["created_at"]),
    }


def list_ping_keys(conn: Connection) -> list[dict[str, Any]]:
    """Every ping key, oldest first, as the API shows them (the keys included)."""
    rows = conn.execute(sa.select(ping_keys).order_by(ping_keys.c.id)).mappings().all()
    return [ping_key_json(row) for row in rows]


def ping_key_hint(key: str) -> str:
    """Enough of a ping key to tell it apart in a listing, not enough to use it."""
    return key[:4] + "..."
