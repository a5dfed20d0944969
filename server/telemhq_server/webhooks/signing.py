"""Webhook signatures: how a request is signed, and how a receiver checks it.

Every request carries::

    X-TelemHQ-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256(secret, "<t>.<body>")>

A receiver recomputes the HMAC over the timestamp, a dot and the raw body bytes with its
secret, compares in constant time (:func:`verify_signature` does all of it) and rejects old
timestamps (replays). The timestamp is the time of the attempt, so each retry is signed anew.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time
from typing import Final

__all__ = ["SIGNATURE_HEADER", "new_secret", "sign", "verify_signature"]

SIGNATURE_HEADER: Final = "X-TelemHQ-Signature"


def new_secret() -> str:
    """A fresh signing secret (``whsec_`` + 32 random bytes, URL-safe)."""
    return "whsec_" + secrets.token_urlsafe(32)


def sign(secret: str, body: bytes, timestamp: int) -> str:
    """The ``X-TelemHQ-Signature`` header value for ``body`` sent at ``timestamp``."""
    mac = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256)
    return f"t={timestamp},v1={mac.hexdigest()}"


def verify_signature(
    secret: str, body: bytes, header: str, *, now: float | None = None, tolerance: int = 300
) -> bool:
    """True when ``header`` is a valid signature of ``body`` made within ``tolerance`` seconds.

    For receivers (and tests): parses ``t=...,v1=...``, recomputes the HMAC and compares in
    constant time; several ``v1`` values are accepted (secret rotation).
    """
    try:
        parts = [p.split("=", 1) for p in header.split(",")]
        timestamp = int(next(v for k, v in parts if k.strip() == "t"))
        candidates = [v for k, v in parts if k.strip() == "v1"]
    except (StopIteration, ValueError):
        return False
    current = time.time() if now is None else now
    if abs(current - timestamp) > tolerance:
        return False
    expected = sign(secret, body, timestamp).split("v1=", 1)[1]
    return any(hmac.compare_digest(expected, c) for c in candidates)
