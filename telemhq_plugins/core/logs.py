"""Logging helpers: every error the integration meets is logged once, clearly, never raised."""

from __future__ import annotations

import contextlib
import logging
import os
import threading
from collections.abc import Hashable, Iterator
from typing import Any

__all__ = ["capture_internal_errors", "log_once", "logger"]

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
