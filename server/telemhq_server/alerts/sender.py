"""Sending one message through Apprise, off the event loop and under our own deadline.

Apprise calls block (they do their own HTTP/SMTP); each send runs in its own daemon thread, and
the caller stops waiting at the deadline. A thread still stuck past the deadline keeps
counting against its channel (:meth:`Sender.busy`), so a hanging channel cannot pile up
threads, and it holds up no other channel.

Apprise's own log lines are captured per sending thread (they become the attempt's error) and
do not reach the server's log: they may quote a response that echoes a secret, and the URL's
secrets are never logged. Every part of the URL is masked from the captured text.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import re
import threading
import time
from dataclasses import dataclass
from typing import Final
from urllib.parse import unquote

import apprise

__all__ = ["Outcome", "Sender", "send_blocking", "url_hint", "valid_url"]

_MAX_ERROR: Final = 500
_local = threading.local()


class _Capture(logging.Handler):
    """Keeps the apprise log records of the thread that asked for them."""

    def emit(self, record: logging.LogRecord) -> None:
        lines: list[str] | None = getattr(_local, "lines", None)
        if lines is not None and record.levelno >= logging.WARNING:
            lines.append(record.getMessage())


def _quiet_apprise() -> None:
    log = logging.getLogger("apprise")
    if not any(isinstance(h, _Capture) for h in log.handlers):
        log.addHandler(_Capture())
    log.propagate = False  # its lines may carry what a service echoed back
    log.setLevel(logging.WARNING)


_quiet_apprise()


@dataclass(frozen=True, slots=True)
class Outcome:
    ok: bool
    error: str | None
    duration_ms: float


def valid_url(url: str) -> bool:
    """Does Apprise know this URL's service and accept its form?"""
    return apprise.Apprise.instantiate(url) is not None


def url_hint(url: str) -> str:
    """The URL with its secrets masked (Apprise's privacy form), safe to show."""
    plugin = apprise.Apprise.instantiate(url)
    if plugin is None:
        return url.split(":", 1)[0] + "://..."
    return str(plugin.url(privacy=True))  # type: ignore[no-untyped-call]


def _secrets(url: str) -> list[str]:
    """The pieces of ``url`` that might be secret, longest first."""
    pieces = {p for p in re.split(r"[/:@?&=#]+", url) if len(p) >= 4}
    pieces |= {unquote(p) for p in pieces}
    return sorted(pieces, key=len, reverse=True)


def _scrub(text: str, url: str) -> str:
    for piece in _secrets(url.split("://", 1)[-1]):
        text = text.replace(piece, "***")
    return text[:_MAX_ERROR]


def send_blocking(url: str, title: str, body: str) -> Outcome:
    """Send through Apprise in this thread; the error says what went wrong, secrets masked."""
    t0 = time.perf_counter()
    _local.lines = []
    try:
        sender = apprise.Apprise()
        if not sender.add(url):
            return Outcome(False, "Apprise does not accept this URL", 0.0)
        ok = bool(sender.notify(body=body, title=title))
        error = None if ok else ("; ".join(_local.lines) or "Apprise reported a failure")
    except Exception as exc:  # a plugin's bug is this attempt's failure, nothing more
        ok, error = False, f"{type(exc).__name__}: {exc}"
    finally:
        _local.lines = None
    elapsed = (time.perf_counter() - t0) * 1000
    return Outcome(ok, None if error is None else _scrub(error, url), elapsed)


class Sender:
    """Runs :func:`send_blocking` in a thread per message with a deadline; counts the threads
    still running per channel (past their deadline too)."""

    def __init__(self, timeout: float) -> None:
        self.timeout = timeout
        self._busy: collections.Counter[int] = collections.Counter()
        self._lock = threading.Lock()

    def busy(self, channel_id: int) -> int:
        with self._lock:
            return self._busy[channel_id]

    def busy_counts(self) -> collections.Counter[int]:
        with self._lock:
            return collections.Counter(+self._busy)

    async def send(self, channel_id: int, url: str, title: str, body: str) -> Outcome:
        loop = asyncio.get_running_loop()
        done: asyncio.Future[Outcome] = loop.create_future()

        def deliver(outcome: Outcome) -> None:
            if not done.done():
                done.set_result(outcome)

        def work() -> None:
            try:
                outcome = send_blocking(url, title, body)
            finally:
                with self._lock:
                    self._busy[channel_id] -= 1
            # RuntimeError: the loop closed meanwhile, nobody waits any more
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(deliver, outcome)

        with self._lock:
            self._busy[channel_id] += 1
        t0 = time.perf_counter()
        threading.Thread(target=work, name=f"telemhq-alert-{channel_id}", daemon=True).start()
        try:
            return await asyncio.wait_for(asyncio.shield(done), self.timeout)
        except TimeoutError:
            elapsed = (time.perf_counter() - t0) * 1000
            return Outcome(False, f"Timeout: not sent within {self.timeout:g} s", elapsed)
