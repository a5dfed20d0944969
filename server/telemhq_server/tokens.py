"""Random URL-safe tokens that also survive a command line."""

from __future__ import annotations

import secrets

__all__ = ["url_token"]


def url_token(nbytes: int) -> str:
    """``secrets.token_urlsafe(nbytes)`` that never starts with ``-``: a leading dash makes a
    token read as an option by ``telemhq ping TOKEN``, curl and most other command lines.
    Redrawing costs under one bit of the ``8 * nbytes`` bits of randomness."""
    while True:
        token = secrets.token_urlsafe(nbytes)
        if not token.startswith("-"):
            return token
