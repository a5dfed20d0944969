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
from urllib.parse import quote, unquote

import apprise

__all__ = [
    "KINDS",
    "Message",
    "Outcome",
    "Sender",
    "send_blocking",
    "url_hint",
    "valid_url",
    "with_extras",
]

#: What a message is to Apprise (its ``NotifyType``): the colour or severity a service shows,
#: and for Opsgenie whether it opens (failure, warning) or closes (success) an alert.
KINDS: Final = {
    "failure": apprise.NotifyType.FAILURE,
    "warning": apprise.NotifyType.WARNING,
    "success": apprise.NotifyType.SUCCESS,
    "info": apprise.NotifyType.INFO,
}
#: Services that de-duplicate on an id of ours, and the URL argument Apprise reads it from:
#: Opsgenie folds alerts with one ``alias`` into one; the JSON, form and XML posts carry it
#: in an ``X-TelemHQ-Incident`` header (``+name=value`` sets a header in those URLs).
_INCIDENT_ARG: Final = {
    "opsgenie": "alias",
    **dict.fromkeys(("json", "jsons", "form", "forms", "xml", "xmls"), "+X-TelemHQ-Incident"),
}
#: Services that take a click-through link as a URL argument.
_LINK_ARG: Final = {"ntfy": "click", "ntfys": "click", "pagerduty": "click"}

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
class Message:
    """What one notification says. ``kind``: a :data:`KINDS` key; ``incident``: the id a
    de-duplicating service folds repeats of one incident on; ``link``: a click-through link
    (see :func:`with_extras`)."""

    title: str
    body: str
    kind: str = "info"
    incident: str | None = None
    link: str | None = None


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


def with_extras(url: str, *, incident: str | None = None, link: str | None = None) -> str:
    """``url`` with the message's incident id and link as the arguments its service reads
    them from (see :data:`_INCIDENT_ARG`, :data:`_LINK_ARG`); an argument the channel's URL
    sets itself is left as it is. Other services get ``url`` unchanged."""
    scheme = url.split("://", 1)[0].lower()
    base, _, query = url.partition("?")
    given = {part.split("=", 1)[0].lower() for part in query.split("&") if part}
    extra = [
        f"{arg}={quote(value, safe='')}"
        for arg, value in ((_INCIDENT_ARG.get(scheme), incident), (_LINK_ARG.get(scheme), link))
        if arg and value and arg.lower() not in given
    ]
    if not extra:
        return url
    return f"{base}?{'&'.join([query, *extra] if query else extra)}"


def send_blocking(url: str, message: Message) -> Outcome:
    """Send through Apprise in this thread; the error says what went wrong, secrets masked."""
    t0 = time.perf_counter()
    _local.lines = []
    m = message
    try:
        sender = apprise.Apprise()
        if not sender.add(with_extras(url, incident=m.incident, link=m.link)):
            return Outcome(False, "Apprise does not accept this URL", 0.0)
        ok = bool(sender.notify(body=m.body, title=m.title, notify_type=KINDS[m.kind]))
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

    async def send(self, channel_id: int, url: str, message: Message) -> Outcome:
        loop = asyncio.get_running_loop()
        done: asyncio.Future[Outcome] = loop.create_future()

        def deliver(outcome: Outcome) -> None:
            if not done.done():
                done.set_result(outcome)

        def work() -> None:
            try:
                outcome = send_blocking(url, message)
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
