"""Logging helpers: every error the integration meets is logged once, clearly, never raised."""

from __future__ import annotations

import contextlib
import logging
import os
import threading
from collections.abc import Hashable, Iterator
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

__all__ = ["capture_internal_errors", "log_once", "logger", "redact_url"]

logger = logging.getLogger("telemhq")
_seen: set[Hashable] = set()
_seen_lock = threading.Lock()


def _new_lock_in_child() -> None:
    # A fork while another thread holds the lock would leave the child's copy locked forever.
    global _seen_lock
    _seen_lock = threading.Lock()


os.register_at_fork(after_in_child=_new_lock_in_child)


def log_once(
    log: logging.Logger, level: int, key: Hashable, message: str, *args: Any, **kw: Any
) -> bool:
    """Log ``message`` the first time ``key`` is seen in this process; True if it was logged."""
    with _seen_lock:
        if key in _seen:
            return False
        _seen.add(key)
    log.log(level, message, *args, **kw)
    return True


@contextlib.contextmanager
def capture_internal_errors(where: str) -> Iterator[None]:
    """Wrap integration code that runs inside the user's job: our bugs are logged (once per
    place and error type, with the traceback), never raised into the user's code."""
    try:
        yield
    except Exception as exc:
        log_once(
            logger,
            logging.ERROR,
            ("internal", where, type(exc)),
            "TelemHQ integration error in %s (the job itself is unaffected)",
            where,
            exc_info=True,
        )


#: what a ping URL's secret part is cut to before it is shown.
_SHOWN = 4


def redact_url(url: str) -> str:
    """``url`` fit for logs and CLI output: the token or ping key after ``/ping/`` cut to its
    first four characters and ``...`` (a ping key's job slug after it is kept), credentials
    (``user:password@``) dropped and every query value replaced with ``...``. A string that is
    not a URL is cut the same way, never returned whole."""
    try:
        parts = urlsplit(url)
        netloc = parts.netloc.rpartition("@")[2]
        query = urlencode(
            [(key, "...") for key, _ in parse_qsl(parts.query, keep_blank_values=True)],
            safe=".",
        )
        head, sep, secret = parts.path.partition("/ping/")
        path = head + sep + _cut(secret) if sep else parts.path
        if not (parts.scheme or netloc):
            return _cut(url) if not sep else path
        return urlunsplit((parts.scheme, netloc, path, query, ""))
    except ValueError:  # an unparsable netloc (a broken IPv6 literal): cut everything after it
        head = url.partition("://")[0]
        return f"{head}://..." if head != url else _cut(url)


def _cut(secret: str) -> str:
    """``abcdefgh/etl-load`` -> ``abcd.../etl-load``: the first segment shortened."""
    first, sep, rest = secret.partition("/")
    return (first[:_SHOWN] + "..." if first else "") + sep + rest
