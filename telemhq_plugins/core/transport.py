"""The HTTP transport of delivery: one ping POSTed with retries within a time budget, and a
batch request over the lightest client that may send it.

Single pings (and ``Client.send``) go through httpx, retrying connection errors, 5xx and 429
with exponential backoff and jitter (``Retry-After`` honoured); other 4xx are not retried.
Batch requests go over the standard library's ``http.client`` where httpx would connect
directly (see :mod:`~telemhq_plugins.core.direct_http`), else through httpx (a custom
transport, or a proxy named by the environment).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Final

import httpx

from telemhq_plugins.core.batching import json_object
from telemhq_plugins.core.config import Settings
from telemhq_plugins.core.direct_http import DirectPoster, proxied
from telemhq_plugins.core.logs import log_once
from telemhq_plugins.core.results import DeliveryResult
from telemhq_plugins.core.retry import backoff, origin, retry_after

__all__ = ["HEADERS", "HttpTransport", "Tried"]

logger = logging.getLogger("telemhq")

HEADERS: Final = {"User-Agent": "telemhq-plugins/0.1", "Content-Type": "application/json"}
MIN_ATTEMPT_TIMEOUT: Final = 0.05


@dataclass(frozen=True, slots=True)
class Tried:
    """The outcome of :meth:`HttpTransport.attempt` (delivered, rejected or failed)."""

    result: DeliveryResult
    retry_after: float | None = None  # the server's last Retry-After, if any


class HttpTransport:
    """The HTTP clients of one process's delivery, created on first use.

    ``transport`` (an ``httpx`` transport, for tests) also sends the batches; ``sleep`` is
    the backoff sleep; ``backoff_base`` the first backoff step in seconds.
    """

    def __init__(
        self,
        settings: Settings,
        *,
        transport: httpx.BaseTransport | None = None,
        sleep: Callable[[float], Any] = time.sleep,
        backoff_base: float,
    ) -> None:
        self.settings = settings
        self._transport = transport
        self._sleep = sleep
        self._backoff_base = backoff_base
        self.http: httpx.Client | None = None
        #: batch requests where httpx would connect directly (see ``post_batch``).
        self.direct: DirectPoster | None = None
        #: batch URL -> whether the environment names a proxy for it (then httpx sends).
        self._proxied: dict[str, bool] = {}

    def client(self) -> httpx.Client:
        if self.http is None:
            self.http = httpx.Client(
                timeout=self.settings.timeout, transport=self._transport, headers=HEADERS
            )
        return self.http

    def close(self) -> None:
        if self.http is not None:
            self.http.close()
            self.http = None
        if self.direct is not None:
            self.direct.close()
            self.direct = None

    def abandon(self) -> list[object]:
        """In a forked child: forget the parent's connections without closing them (they
        are the parent's); returns them, for the caller to keep referenced."""
        kept: list[object] = [c for c in (self.http, self.direct) if c is not None]
        self.http = None
        self.direct = None
        self._proxied = {}
        return kept

    def post_batch(self, url: str, body: bytes) -> tuple[int, bytes]:
        """One batch request: the standard library's ``http.client`` where httpx would
        connect directly (far less CPU per request than httpx, which the job's thread feels:
        see :mod:`~telemhq_plugins.core.direct_http`), httpx with a custom transport or a
        proxy from the environment."""
        if self._transport is None:
            try:
                direct = not self._proxied[url]
            except KeyError:
                direct = not self._proxied.setdefault(url, proxied(url))
            if direct:
                if self.direct is None:
                    self.direct = DirectPoster(self.settings.timeout, HEADERS)
                return self.direct.post(url, body)
        response = self.client().post(url, content=body)
        return response.status_code, response.content

    def attempt(
        self,
        url: str,
        body: bytes,
        max_attempts: int,
        budget: float,
        before_wait: Callable[[], None] | None,
    ) -> Tried:
        """Up to ``max_attempts`` POSTs within ``budget`` seconds. The outcome is
        delivered, rejected or failed; counters are the caller's business."""
        deadline = time.monotonic() + budget
        attempts = 0
        error: str | None = None
        status: int | None = None
        wait_hint: float | None = None
        while True:
            attempts += 1
            timeout = min(
                self.settings.timeout, max(MIN_ATTEMPT_TIMEOUT, deadline - time.monotonic())
            )
            wait_hint = None
            try:
                response = self.client().post(url, content=body, timeout=timeout)
            except httpx.HTTPError as exc:
                status, error = None, f"{type(exc).__name__}: {exc}"
            else:
                status = response.status_code
                if 200 <= status < 300:
                    return Tried(
                        DeliveryResult("delivered", status, attempts, json_object(response.content))
                    )
                error = f"HTTP {status}: {response.text[:300]}"
                if 300 <= status < 400:
                    where = response.headers.get("Location", "elsewhere")
                    error = f"HTTP {status}: redirected to {where}; use the final URL"
                if status != 429 and status < 500:
                    log_once(
                        logger,
                        logging.ERROR,
                        ("rejected", origin(url), status),
                        "TelemHQ: server rejected a ping (%s); not retried",
                        error,
                    )
                    return Tried(
                        DeliveryResult(
                            "rejected", status, attempts, json_object(response.content), error
                        )
                    )
                wait_hint = retry_after(response)
            if attempts >= max_attempts:
                break
            wait = wait_hint if wait_hint is not None else backoff(attempts, self._backoff_base)
            if time.monotonic() + wait + MIN_ATTEMPT_TIMEOUT >= deadline:
                break  # out of budget: the spool (or the next ping) will try again
            if before_wait is not None:
                before_wait()
            self._sleep(wait)
        log_once(
            logger,
            logging.WARNING,
            ("undeliverable", origin(url)),
            "TelemHQ: could not deliver a ping to %s after %d attempt(s) (%s)",
            origin(url),
            attempts,
            error,
        )
        return Tried(DeliveryResult("failed", status, attempts, None, error), wait_hint)
