"""Delivery: get pings to the server without ever hurting the job that sent them.

* :meth:`Client.enqueue` is what integrations call on the job's thread: it puts the ping on a
  bounded queue and returns; a full queue drops the ping and counts it, it never blocks.
* A daemon worker thread sends (hooks, serialisation and HTTP all happen there), retrying
  connection errors, 5xx and 429 with exponential backoff and jitter (``Retry-After`` is
  honoured); other 4xx are not retried.
* After ``fork`` the child gets a fresh queue and worker (Celery prefork, Airflow runners).
* At interpreter exit pending pings are flushed within ``flush_timeout`` seconds.
* :meth:`Client.send` is the synchronous path for callers that need the answer (the CLI).
"""

from __future__ import annotations

import atexit
import email.utils
import json
import logging
import os
import queue
import random
import threading
import time
from dataclasses import dataclass
from typing import Any, Final, Literal

import httpx

from telemhq_plugins.core.config import Settings, load_settings
from telemhq_plugins.core.logs import log_once
from telemhq_plugins.core.payload import Ping
from telemhq_plugins.core.plugins import run_before_send_hooks, run_result_hooks

__all__ = ["Client", "DeliveryResult", "get_client", "set_client"]

logger = logging.getLogger("telemhq")

Outcome = Literal["delivered", "rejected", "failed", "dropped", "filtered", "spooled"]
_BACKOFF_BASE: Final = 0.5
_BACKOFF_CAP: Final = 30.0
_RETRY_AFTER_CAP: Final = 60.0
_USER_AGENT: Final = "telemhq-plugins/0.1"


@dataclass(frozen=True, slots=True)
class DeliveryResult:
    """What happened to one ping. ``response`` is the server's JSON answer when there was one."""

    outcome: Outcome
    status_code: int | None = None
    attempts: int = 0
    response: dict[str, Any] | None = None
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.outcome == "delivered"


class Client:
    """Sends pings for one process. Use :func:`get_client` rather than building one."""

    def __init__(
        self,
        settings: Settings | None = None,
        *,
        transport: httpx.BaseTransport | None = None,
        sleep: Any = time.sleep,
    ) -> None:
        self.settings = settings or load_settings()
        self._transport = transport
        self._sleep = sleep
        self.dropped = 0
        self.delivered = 0
        self.failed = 0
        self._reset()

    # -- lifecycle --------------------------------------------------------------------------

    def _reset(self) -> None:
        """(Re)create per-process state: called at start and in a forked child."""
        self._pid = os.getpid()
        self._queue: queue.Queue[tuple[Ping, str] | None] = queue.Queue(self.settings.queue_size)
        self._lock = threading.Lock()
        self._worker: threading.Thread | None = None
        self._http: httpx.Client | None = None
        self._closed = False

    def _ensure_worker(self) -> None:
        if self._pid != os.getpid():
            self._reset()
        if self._worker is None or not self._worker.is_alive():
            with self._lock:
                if self._worker is None or not self._worker.is_alive():
                    self._worker = threading.Thread(
                        target=self._run, name="telemhq-delivery", daemon=True
                    )
                    self._worker.start()

    def _client(self) -> httpx.Client:
        if self._http is None:
            self._http = httpx.Client(
                timeout=self.settings.timeout,
                transport=self._transport,
                headers={"User-Agent": _USER_AGENT, "Content-Type": "application/json"},
            )
        return self._http

    # -- the job's side ---------------------------------------------------------------------

    def enqueue(self, ping: Ping, url: str) -> bool:
        """Queue ``ping`` for ``url``; never blocks, never raises. False if it was dropped."""
        try:
            self._ensure_worker()
            self._queue.put_nowait((ping, url))
        except queue.Full:
            self.dropped += 1
            log_once(
                logger,
                logging.WARNING,
                "queue-full",
                "TelemHQ: delivery queue full (%d pings); dropping pings until it drains",
                self.settings.queue_size,
            )
            return False
        except Exception:
            self.dropped += 1
            log_once(logger, logging.ERROR, "enqueue", "TelemHQ: enqueue failed", exc_info=True)
            return False
        return True

    def flush(self, timeout: float | None = None) -> bool:
        """Wait until every queued ping was handled, at most ``timeout`` seconds (default
        ``settings.flush_timeout``). True when the queue drained in time."""
        if self._pid != os.getpid() or self._worker is None or not self._worker.is_alive():
            return self._queue.unfinished_tasks == 0
        deadline = time.monotonic() + (self.settings.flush_timeout if timeout is None else timeout)
        with self._queue.all_tasks_done:
            while self._queue.unfinished_tasks:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False
                self._queue.all_tasks_done.wait(remaining)
        return True

    def close(self, timeout: float | None = None) -> None:
        """Flush, then stop the worker. Pings enqueued afterwards restart it."""
        if self._closed or self._pid != os.getpid():
            return
        self.flush(timeout)
        self._closed = True
        if self._http is not None:
            self._http.close()
            self._http = None

    # -- the worker's side ------------------------------------------------------------------

    def _run(self) -> None:
        while True:
            item = self._queue.get()
            try:
                if item is None:
                    return
                ping, url = item
                self._deliver(ping, url)
            except Exception:
                log_once(logger, logging.ERROR, "worker", "TelemHQ: delivery error", exc_info=True)
            finally:
                self._queue.task_done()

    def _deliver(self, ping: Ping, url: str) -> DeliveryResult:
        if not run_before_send_hooks(ping):
            result = DeliveryResult("filtered")
        else:
            result = self.send(ping, url)
        run_result_hooks(ping, result)
        return result

    def send(self, ping: Ping, url: str) -> DeliveryResult:
        """POST ``ping`` to ``url`` now, with retries; returns the outcome, never raises."""
        body = ping.to_json()
        attempts = 0
        error: str | None = None
        status: int | None = None
        while True:
            attempts += 1
            wait: float | None = None
            try:
                response = self._client().post(url, content=body)
            except httpx.HTTPError as exc:
                error = f"{type(exc).__name__}: {exc}"
            else:
                status = response.status_code
                if status < 400:
                    self.delivered += 1
                    return DeliveryResult("delivered", status, attempts, _json_or_none(response))
                error = f"HTTP {status}: {response.text[:300]}"
                if status != 429 and status < 500:
                    self.failed += 1
                    log_once(
                        logger,
                        logging.ERROR,
                        ("rejected", url.rsplit("/", 1)[0], status),
                        "TelemHQ: server rejected a ping (%s); not retried",
                        error,
                    )
                    return DeliveryResult(
                        "rejected", status, attempts, _json_or_none(response), error
                    )
                wait = _retry_after(response)
            if attempts > self.settings.max_retries:
                break
            if wait is None:
                wait = random.uniform(0, min(_BACKOFF_CAP, _BACKOFF_BASE * 2 ** (attempts - 1)))
            self._sleep(wait)
        self.failed += 1
        log_once(
            logger,
            logging.WARNING,
            ("undeliverable", url.rsplit("/", 1)[0]),
            "TelemHQ: could not deliver a ping after %d attempts (%s)",
            attempts,
            error,
        )
        return DeliveryResult("failed", status, attempts, None, error)


def _retry_after(response: httpx.Response) -> float | None:
    value = response.headers.get("Retry-After")
    if not value:
        return None
    try:
        seconds = float(value)
    except ValueError:
        parsed = email.utils.parsedate_to_datetime(value) if value else None
        if parsed is None:
            return None
        seconds = parsed.timestamp() - time.time()
    return max(0.0, min(seconds, _RETRY_AFTER_CAP))


def _json_or_none(response: httpx.Response) -> dict[str, Any] | None:
    try:
        data = response.json()
    except (json.JSONDecodeError, UnicodeDecodeError):
        return None
    return data if isinstance(data, dict) else None


_client: Client | None = None
_client_lock = threading.Lock()


def get_client() -> Client:
    """The process-wide client, built from :func:`load_settings` on first use."""
    global _client
    if _client is None:
        with _client_lock:
            if _client is None:
                _client = Client()
    return _client


def set_client(client: Client | None) -> Client | None:
    """Replace the process-wide client (``None``: rebuild from settings on next use)."""
    global _client
    with _client_lock:
        previous, _client = _client, client
    return previous


@atexit.register
def _flush_at_exit() -> None:
    client = _client
    if client is not None:
        client.close()
