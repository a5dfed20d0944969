"""Delivery: get pings to the server without ever hurting the job that sent them.

* :meth:`Client.enqueue` is what integrations call on the job's thread: it puts the ping in a
  bounded :class:`~telemhq_plugins.core.outbox.Outbox` and returns; a full outbox drops the
  ping and counts it, it never blocks.
* A daemon worker thread sends (hooks, serialisation and HTTP all happen there), retrying
  connection errors, 5xx and 429 with exponential backoff and jitter (``Retry-After`` is
  honoured; :mod:`~telemhq_plugins.core.transport`, :mod:`~telemhq_plugins.core.retry`);
  other 4xx are not retried. One ping occupies the worker for at most
  ``ping_budget`` seconds (default twice the per-attempt timeout), retries included.
* A circuit breaker per server: once a ping has failed all its retries, the pings for that
  server during the next cool-down (5 s, doubling up to 5 min while it stays down) are not
  tried; they go to the spool, or are dropped and counted when there is none. A dead or
  black-holed server therefore costs one ping's budget per cool-down, not one per ping.
* With ``TELEMHQ_SPOOL_DIR`` (see :mod:`telemhq_plugins.core.spool`) a ping is written to the
  spool before the worker first sleeps to retry it, deleted when it is delivered, and replayed
  by the worker (at start, every ``replay_interval`` seconds and after a successful delivery)
  otherwise, from whichever process sharing the directory gets there first.
* After ``fork`` the child gets a fresh queue and worker (Celery prefork, Airflow runners);
  the parent's pending pings stay the parent's.
* At interpreter exit (and at the exit of a ``multiprocessing`` child) pending pings are
  flushed within ``flush_timeout`` seconds; with a spool, what is left is written to it.
* :meth:`Client.send` is the synchronous path for callers that need the answer (the CLI): the
  same retries, budget and plugin hooks, no breaker, no spool.
* Batching: when several pings are waiting for the same server, the worker sends them in one
  ``POST <base>/ping/_batch`` (the reference server's batch endpoint;
  :mod:`~telemhq_plugins.core.batching`). An HTTP request costs the sending process about the
  same CPU whatever its size, which a busy Celery worker feels; one request per batch makes
  that cost per ping small. A server without the endpoint
  (404/405) is remembered and gets one request per ping, as does any ping the batch did not
  settle (each then takes the normal path: retries, breaker, spool). Batch requests go over
  the standard library's ``http.client`` where httpx would connect directly (see
  :mod:`~telemhq_plugins.core.direct_http`: far less CPU per request than httpx).
* A finished :class:`~telemhq_plugins.core.runs.Run` is queued as it is; the worker encodes it
  (``encode``; a ``Ping`` via ``to_ping`` only for plugin hooks), so the job's thread only
  records the end.
* With ``TELEMHQ_AGENT`` (see :mod:`telemhq_plugins.core.agent`) the worker hands each batch
  to the local agent instead, which acknowledges it once it is on its disk; when the agent is
  absent, refuses or does not answer within 50 ms, the batch takes the path above.
"""

from __future__ import annotations

import atexit
import contextlib
import http.client
import logging
import os
import ssl  # noqa: F401  (see the certifi import)
import sys
import threading
import time
import weakref
from collections.abc import Callable
from typing import Any, Final

# certifi, httpcore and ssl: httpx imports them lazily, from the delivery thread, on its first
# request. A fork in the middle of that import (Celery prefork replacing a child) leaves the
# child a half-initialised module it can never send with; importing them at import time (on
# the importing thread, before any fork) closes that window for every adapter.
import certifi  # noqa: F401
import httpcore  # noqa: F401
import httpx

from telemhq_plugins.core.agent.handoff import AgentLink
from telemhq_plugins.core.agent.paths import parse_agent
from telemhq_plugins.core.batching import (
    BATCH_MAX_BYTES,
    BATCH_MAX_PINGS,
    Entry,
    batch_requests,
    batch_url,
    item_result,
    read_answers,
)
from telemhq_plugins.core.config import Settings, settings_or_disabled
from telemhq_plugins.core.logs import log_once
from telemhq_plugins.core.outbox import Outbox
from telemhq_plugins.core.payload import Ping, PingSource
from telemhq_plugins.core.plugins import (
    has_before_send_hooks,
    has_result_hooks,
    run_before_send_hooks,
    run_result_hooks,
)
from telemhq_plugins.core.results import DeliveryResult
from telemhq_plugins.core.retry import CircuitBreaker, origin
from telemhq_plugins.core.spool import Spool
from telemhq_plugins.core.transport import HttpTransport

__all__ = [
    "PRESTORED_LEASE",
    "Client",
    "DeliveryResult",
    "current_client",
    "get_client",
    "keep_replaying",
    "set_client",
]

logger = logging.getLogger("telemhq")

_BACKOFF_BASE: Final = 0.5
_BREAKER_BASE: Final = 5.0
_REPLAY_AFTER_SUCCESS: Final = 1.0  # at most one replay pass per second triggered by successes
_REPLAY_BATCH: Final = 20
_LINGER: Final = 0.05  # one linger step: seconds the worker waits for more pings to batch
_MAX_LINGER: Final = 1.0  # the longest the worker lingers for a full batch, in all
#: seconds a prestored client's row stays claimed while it waits in the outbox or is sent (it
#: is released sooner once tried); the claim keeps the replay from queuing it twice
PRESTORED_LEASE: Final = 300.0


class _TooLarge(Exception):
    """A batch request answered 413: over the server's size limit."""


_clients: weakref.WeakSet[Client] = weakref.WeakSet()
#: In a forked child: the parent's HTTP clients, kept alive so they are never closed here.
_inherited: list[object] = []


class Client:
    """Sends pings for one process. Use :func:`get_client` rather than building one.

    The keyword arguments after ``settings`` exist for tests and benchmarks: ``transport``
    (an ``httpx`` transport), ``sleep`` (the backoff sleep), ``spool`` (default: one in
    ``settings.spool_dir`` when set), ``ping_budget`` (seconds one ping may occupy the
    worker), ``backoff_base``, ``breaker_base``, ``replay_interval`` (default
    ``settings.replay_interval``), ``linger`` and ``max_linger`` (seconds).

    ``prestored`` is the agent's own client: every ping it is given is already a row of
    ``spool`` (written before the agent acknowledged it), so a settled ping (delivered,
    rejected, filtered) is deleted from the spool and one not delivered is released there
    for replay; it never hands pings to an agent itself.
    """

    def __init__(
        self,
        settings: Settings | None = None,
        *,
        transport: httpx.BaseTransport | None = None,
        sleep: Callable[[float], Any] = time.sleep,
        spool: Spool | None = None,
        ping_budget: float | None = None,
        backoff_base: float = _BACKOFF_BASE,
        breaker_base: float = _BREAKER_BASE,
        replay_interval: float | None = None,
        linger: float = _LINGER,
        max_linger: float = _MAX_LINGER,
        prestored: bool = False,
    ) -> None:
        # A setting that cannot be used turns this client off (one ERROR line), never raises.
        self.settings = settings or settings_or_disabled()
        self._transport = transport
        self._sleep = sleep
        self._backoff_base = backoff_base
        if spool is None and self.settings.spool_dir:
            spool = Spool(self.settings.spool_dir, max_bytes=self.settings.spool_max_bytes)
        self.spool = spool
        self.ping_budget = ping_budget or 2 * self.settings.timeout
        self._breaker_base = breaker_base
        self._replay_interval = replay_interval or self.settings.replay_interval
        self._linger = linger
        self._max_linger = max_linger
        self._prestored = prestored
        if prestored and spool is None:
            raise ValueError("prestored needs a spool")
        self._reset()
        _clients.add(self)

    # -- lifecycle --------------------------------------------------------------------------

    def _reset(self) -> None:
        """(Re)create per-process state: called at start and in a forked child."""
        self._pid = os.getpid()
        self._outbox: Outbox[tuple[PingSource, str]] = Outbox(self.settings.queue_size)
        self._lock = threading.Lock()
        #: callers waiting in flush(); while there are any, the worker does not linger.
        self._flushers = 0
        self._worker: threading.Thread | None = None
        self.transport = HttpTransport(
            self.settings,
            transport=self._transport,
            sleep=self._sleep,
            backoff_base=self._backoff_base,
        )
        self.breaker = CircuitBreaker(self._breaker_base)
        self.agent = self._agent_link()
        self._inflight: tuple[str, str, bytes] | None = None
        self._inflight_batch: list[Entry] = []
        #: batch URL -> the most bytes of one batch request to it (it answered 413 above).
        self._batch_bytes: dict[str, int] = {}
        #: batch URLs that answered 404/405: that server takes one request per ping.
        self._no_batch: set[str] = set()
        self._exit_hooked = False
        self.dropped = 0
        self.delivered = 0
        self.rejected = 0
        self.failed = 0
        self.filtered = 0
        self.spooled = 0
        self.replayed = 0
        self.handed = 0

    def _agent_link(self) -> AgentLink | None:
        """The link to the agent ``settings.agent`` names (checked when the settings were
        loaded), None when there is none or this client is the agent's own."""
        if self._prestored or not self.settings.agent or self.settings.disabled:
            return None
        try:
            address = parse_agent(self.settings.agent)
        except ValueError:  # settings built by hand, unchecked: deliver directly
            return None
        return None if address is None else AgentLink(address)

    def _after_fork_in_child(self) -> None:
        # Abandon what the parent owns (its sockets, queue, thread): never close it, and keep
        # it referenced so garbage collection does not close it either.
        _inherited.extend(self.transport.abandon())
        if self.agent is not None:
            _inherited.extend(self.agent.abandon())
        self._reset()
        if self.spool is not None:
            self.spool.reset_after_fork()

    def _ensure_worker(self) -> None:
        """Start the worker thread unless it runs. The per-ping path (``enqueue``) only asks
        whether ``_worker`` is set: the thread clears it when it ends, and a fork resets it
        (``os.register_at_fork``, which CPython runs for every ``os.fork``)."""
        if self._pid != os.getpid():  # a fork that skipped those hooks (a C extension)
            self._after_fork_in_child()
        with self._lock:
            if self._worker is None or not self._worker.is_alive():
                self._worker = threading.Thread(
                    target=self._run, name="telemhq-delivery", daemon=True
                )
                self._worker.start()
                self._hook_child_exit()

    def _hook_child_exit(self) -> None:
        """A ``multiprocessing``/``billiard`` child ends with ``os._exit``, which skips
        ``atexit``; their own exit finalizers do run, so flush from one of those."""
        if self._exit_hooked:
            return
        self._exit_hooked = True
        for name in ("multiprocessing.util", "billiard.util"):
            module = sys.modules.get(name)
            if module is not None:
                try:
                    module.Finalize(self, self.close, exitpriority=10)
                except Exception:  # pragma: no cover - a foreign or patched module
                    logger.debug("TelemHQ: cannot hook %s exit", name, exc_info=True)

    def start(self) -> None:
        """Start the worker now rather than at the first ping; with a spool, its first job is
        to replay what earlier processes left there. Never raises."""
        try:
            self._ensure_worker()
        except Exception:
            log_once(logger, logging.ERROR, "start", "TelemHQ: start failed", exc_info=True)

    # -- the job's side ---------------------------------------------------------------------

    def enqueue(self, ping: PingSource, url: str) -> bool:
        """Queue ``ping`` for ``url``; never blocks, never raises. False if it was dropped.
        ``ping`` may be a source that the delivery thread encodes (``encode``, ``to_ping``)."""
        try:
            # No Thread.is_alive() here: three Python calls, which inside a busy Celery worker
            # (its own work evicts ours from the CPU caches between tasks) cost µs each.
            if self._worker is None:
                self._ensure_worker()
            if self._outbox.put((ping, url)):
                return True
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

    def flush(self, timeout: float | None = None) -> bool:
        """Wait until every queued ping was handled, at most ``timeout`` seconds (default
        ``settings.flush_timeout``). True when the queue drained in time."""
        if self._pid != os.getpid() or self._worker is None or not self._worker.is_alive():
            return self._outbox.pending() == 0
        with self._lock:
            self._flushers += 1
            self._outbox.hurry()
        try:
            return self._outbox.wait_done(
                self.settings.flush_timeout if timeout is None else timeout
            )
        finally:
            with self._lock:
                self._flushers -= 1
                if not self._flushers:
                    self._outbox.hurry(False)

    def flush_or_spool(self, timeout: float | None = None) -> bool:
        """:meth:`flush` within ``timeout``; then, with a spool, write what is still pending
        to it (for a process about to end without ``atexit``, and for a short
        ``TELEMHQ_FLUSH_TIMEOUT``: a long-lived process replays it). True when the queue
        drained in time. Never raises."""
        try:
            drained = self.flush(timeout)
            if not drained and self.spool is not None and self._pid == os.getpid():
                self._spool_pending()
            return drained
        except Exception:
            log_once(logger, logging.ERROR, "close", "TelemHQ: close failed", exc_info=True)
            return False

    def close(self, timeout: float | None = None) -> None:
        """Flush within ``timeout`` (default ``settings.flush_timeout``); with a spool, write
        what is still pending to it. The worker stays parked (a daemon thread): pings
        enqueued afterwards are still sent. Never raises."""
        if self._pid != os.getpid():
            return
        try:
            self.flush_or_spool(timeout)
            if self._outbox.pending() == 0:
                self.transport.close()
                if self.agent is not None:
                    self.agent.close()
        except Exception:
            log_once(logger, logging.ERROR, "close", "TelemHQ: close failed", exc_info=True)

    def _spool_pending(self) -> None:
        """Exit with a slow or dead server: keep the in-flight ping and the queue on disk."""
        assert self.spool is not None
        if self._prestored:
            # Every ping is a row already; the next start of the agent releases their claims.
            self._outbox.pop_all()
            return
        inflight = self._inflight
        if inflight is not None:
            self.spool.add(*inflight)
            # Written ahead with this process's claim: free it for any process to replay.
            self.spool.release(inflight[0], 0.0, attempted=False)
        for ping_id, url, body, _ in self._inflight_batch:
            self.spool.add(ping_id, url, body)
        for source, url in self._outbox.pop_all():
            ping = source.to_ping()
            if run_before_send_hooks(ping) and self.spool.add(ping.ping_id, url, ping.to_json()):
                self.spooled += 1

    def stats(self) -> dict[str, int]:
        """Counters for this process: what happened to the pings it enqueued."""
        return {
            "queued": len(self._outbox),
            "delivered": self.delivered,
            "rejected": self.rejected,
            "failed": self.failed,
            "spooled": self.spooled,
            "replayed": self.replayed,
            "handed": self.handed,
            "filtered": self.filtered,
            "dropped": self.dropped,
        }

    # -- the worker's side ------------------------------------------------------------------

    def _run(self) -> None:
        try:
            self._loop()
        except Exception:
            log_once(
                logger,
                logging.ERROR,
                "worker-ended",
                "TelemHQ: the delivery worker stopped; the next ping starts another",
                exc_info=True,
            )
        finally:  # the next enqueue sees no worker and starts another
            with self._lock:
                if self._worker is threading.current_thread():
                    self._worker = None

    def _loop(self) -> None:
        outbox = self._outbox
        next_replay = time.monotonic()  # replay what earlier processes left, first thing
        while True:
            timeout = None if self.spool is None else max(0.0, next_replay - time.monotonic())
            if not outbox.wait(timeout):
                if self.spool is not None and time.monotonic() >= next_replay:
                    next_replay = self._replay()
                continue
            items: list[tuple[PingSource, str]] = []
            outbox.take(items, BATCH_MAX_PINGS)
            if self._linger > 0:
                self._linger_for_more(items)
            try:
                if self._deliver_many(items) and self.spool is not None:
                    # The server is back: replay soon (once the queue is idle).
                    next_replay = min(next_replay, time.monotonic() + _REPLAY_AFTER_SUCCESS)
            except Exception:
                log_once(logger, logging.ERROR, "worker", "TelemHQ: delivery error", exc_info=True)
            finally:
                self._inflight = None
                outbox.done(len(items))

    def _linger_for_more(self, items: list[tuple[PingSource, str]]) -> None:
        """Not a full batch yet: wait for more pings to share the request (as Kafka's
        linger.ms), because an HTTP request costs about the same CPU whatever its
        size, and every wake-up of this thread takes the GIL from the job. One ``linger``
        step tells whether pings keep coming: a lone ping waits only that. If they do, wait
        once more, for a full batch (the outbox wakes this thread when one is waiting) or
        ``max_linger`` in all, whichever is first. A flush ends the wait at once."""
        outbox = self._outbox
        deadline = time.monotonic() + self._max_linger
        step = self._linger
        while len(items) < BATCH_MAX_PINGS:
            outbox.wait(step, at_least=BATCH_MAX_PINGS - len(items))
            if not outbox.take(items, BATCH_MAX_PINGS) or outbox.urgent:
                return
            step = deadline - time.monotonic()
            if step <= 0:
                return

    def _deliver_many(self, items: list[tuple[PingSource, str]]) -> bool:
        """Deliver ``items`` (batched per server where it can); True if any was delivered.

        The pings are made here, not on the job's thread (``Run.finish`` queues the run): as
        ``Ping`` objects only when a plugin hook wants them, else straight to their bodies."""
        if len(items) == 1 and self.agent is None and not self._prestored:
            source, url = items[0]
            return self._deliver(source.to_ping(), url).ok
        want_results = has_result_hooks()
        entries = self._entries(items, want_results)
        if self.agent is not None and entries and self._hand_off(entries, want_results):
            return False  # nothing reached the server from here: no reason to replay sooner
        return self._send_entries(entries, want_results)

    def _entries(self, items: list[tuple[PingSource, str]], want_results: bool) -> list[Entry]:
        """``items`` encoded, after the plugins' enrich and filter hooks (a filtered ping is
        settled here)."""
        before_send = has_before_send_hooks()
        if not (want_results or before_send):
            entries: list[Entry] = []
            for source, url in items:
                ping_id, body = source.encode()
                entries.append((ping_id, url, body, None))
            return entries
        entries = []
        for source, url in items:
            ping = source.to_ping()
            if before_send and not run_before_send_hooks(ping):
                self._filtered(ping.ping_id)
                if want_results:
                    run_result_hooks(ping, DeliveryResult("filtered"))
                continue
            entries.append((ping.ping_id, url, ping.to_json(), ping))
        return entries

    def _filtered(self, ping_id: str) -> None:
        self.filtered += 1
        if self._prestored and self.spool is not None:
            self.spool.delete(ping_id)

    def _hand_off(self, entries: list[Entry], want_results: bool) -> bool:
        """Give ``entries`` to the agent; True once it acknowledged them (they are on its
        disk and its to deliver)."""
        assert self.agent is not None
        if not self.agent.hand_off([(ping_id, url, body) for ping_id, url, body, _ in entries]):
            return False
        self.handed += len(entries)
        if want_results:
            for _, _, _, ping in entries:
                if ping is not None:
                    run_result_hooks(ping, DeliveryResult("handed"))
        return True

    def _send_entries(self, entries: list[Entry], want_results: bool) -> bool:
        """Send ``entries`` over HTTP, in batch requests per server where it can; True if
        any was delivered."""
        groups: dict[str | None, list[Entry]] = {}
        batch_urls: dict[str, str | None] = {}  # most pings of a batch share one URL
        for entry in entries:
            url = entry[1]
            try:
                batch_url = batch_urls[url]
            except KeyError:
                batch_url = batch_urls[url] = self._batch_url(url)
            try:
                groups[batch_url].append(entry)
            except KeyError:
                groups[batch_url] = [entry]
        delivered = False
        #: a prestored client's pings the batch answers settled: deleted from the spool at once
        settled: list[str] | None = [] if self._prestored else None
        for batch_url, group in groups.items():
            answers: list[Any] = [None] * len(group)
            if batch_url is not None and len(group) > 1:
                answers = self._send_batch(batch_url, group)
            for (ping_id, url, body, ping), answer in zip(group, answers, strict=True):
                # The common case, without building a result (nor a call: this runs per ping).
                status = answer.get("status") if type(answer) is dict else None
                if not want_results and type(status) is int and 200 <= status < 300:
                    self.delivered += 1
                    delivered = True
                    if settled is not None:
                        settled.append(ping_id)
                    continue
                result = item_result(answer)
                if result is None:  # not settled by a batch: the one-ping path decides
                    result = self._deliver_now(ping_id, url, body)
                else:
                    if result.ok:
                        self.delivered += 1
                    else:
                        self.rejected += 1
                    if settled is not None:
                        settled.append(ping_id)
                delivered = delivered or result.ok
                if want_results and ping is not None:
                    run_result_hooks(ping, result)
        if settled and self.spool is not None:
            self.spool.delete_many(settled)
        return delivered

    def _batch_url(self, url: str) -> str | None:
        """``<base>/ping/_batch`` for a ping URL ``<base>/ping/...``; None when that server
        has no batch endpoint or its circuit is open (then each ping takes its own path)."""
        server = origin(url)
        found = batch_url(url, server)
        if found is None or found in self._no_batch or self.breaker.cooling(server) is not None:
            return None
        return found

    def _send_batch(self, batch_url: str, group: list[Entry]) -> list[Any]:
        """One attempt to send ``group`` in batch requests: the server's answer for each
        ping, or None where there is none (the request failed, or found no batch endpoint).

        A request answered 413 means that server's limit is below ours, not that every ping
        must go alone: what is left is sent again in requests of half that size, which later
        batches to it keep. A lone ping still too large is left to its own request."""
        answers: list[Any] = [None] * len(group)
        limit = self._batch_bytes.get(batch_url, BATCH_MAX_BYTES)
        for start, end, body in batch_requests(batch_url, group, limit):
            self._inflight_batch = group[start:end]
            try:
                got = self._post_batch(batch_url, body, end - start)
            except _TooLarge:
                if end - start == 1:
                    continue
                self._batch_bytes[batch_url] = len(body) // 2
                answers[start:] = self._send_batch(batch_url, group[start:])
                break
            finally:
                self._inflight_batch = []
            if got is None:
                break
            answers[start:end] = got
        return answers

    def _post_batch(self, batch_url: str, body: bytes, count: int) -> list[Any] | None:
        try:
            status, content = self.transport.post_batch(batch_url, body)
        except (httpx.HTTPError, OSError, http.client.HTTPException):
            return None  # each ping now takes its own path, with retries, breaker and spool
        if status == 413:
            raise _TooLarge
        if status in (404, 405):
            self._no_batch.add(batch_url)
            logger.debug("TelemHQ: %s has no batch endpoint; one request per ping", batch_url)
            return None
        if status != 200:
            return None  # a server error or 429: the one-ping path retries (and backs off)
        answers = read_answers(content, count)
        if answers is None:
            # 200 with some other answer: not the batch endpoint we know; don't ask again.
            self._no_batch.add(batch_url)
        return answers

    def _deliver(self, ping: Ping, url: str) -> DeliveryResult:
        if not run_before_send_hooks(ping):
            self._filtered(ping.ping_id)
            result = DeliveryResult("filtered")
        else:
            result = self._deliver_now(ping.ping_id, url, ping.to_json())
        run_result_hooks(ping, result)
        return result

    def _deliver_now(self, ping_id: str, url: str, body: bytes) -> DeliveryResult:
        spool = self.spool
        server = origin(url)
        cooling = self.breaker.cooling(server)
        if cooling is not None:
            error = f"circuit open for {server} (recent failures); {cooling:.0f}s left"
            never_tried = DeliveryResult("failed")
            return self._give_up(
                ping_id,
                url,
                body,
                stored=self._prestored,
                delay=cooling,
                result=never_tried,
                error=error,
            )
        self._inflight = (ping_id, url, body)
        stored = self._prestored  # the agent's pings are in the spool already

        def before_wait() -> None:
            # Write-ahead: from here on the ping survives the process dying mid-retry.
            nonlocal stored
            if spool is not None and not stored:
                stored = spool.add(ping_id, url, body, claim_for=self.ping_budget + 5.0)

        tried = self.transport.attempt(
            url, body, self.settings.max_retries + 1, self.ping_budget, before_wait
        )
        result = tried.result
        if result.outcome != "failed":
            self.breaker.close(server)
            if stored and spool is not None:
                spool.delete(ping_id)
            if result.ok:
                self.delivered += 1
            else:
                self.rejected += 1
            return result
        cooldown = self.breaker.trip(server, tried.retry_after)
        return self._give_up(
            ping_id, url, body, stored=stored, delay=cooldown, result=result, error=result.error
        )

    def _give_up(
        self,
        ping_id: str,
        url: str,
        body: bytes,
        *,
        stored: bool,
        delay: float,
        result: DeliveryResult,
        error: str | None,
    ) -> DeliveryResult:
        """Not delivered now: keep it in the spool for later, or count it as lost."""
        spool = self.spool
        if spool is not None:
            if stored:
                spool.release(ping_id, delay)
                kept = True
            else:
                kept = spool.add(ping_id, url, body, delay=delay)
            if kept:
                self.spooled += 1
                return DeliveryResult("spooled", result.status_code, result.attempts, None, error)
        if result.attempts == 0:  # never tried: the circuit was open
            self.dropped += 1
            log_once(
                logger,
                logging.WARNING,
                ("circuit", origin(url)),
                "TelemHQ: %s; pings to it are dropped while it cools down "
                "(set TELEMHQ_SPOOL_DIR to keep them)",
                error,
            )
            return DeliveryResult("dropped", None, 0, None, error)
        self.failed += 1
        return DeliveryResult("failed", result.status_code, result.attempts, None, error)

    def _replay(self) -> float:
        """Replay due spooled pings (one attempt each; the spool is the retry loop). Stops
        early when live pings are waiting. Returns the monotonic time of the next pass."""
        spool = self.spool
        assert spool is not None
        now = time.monotonic()
        if self._prestored:
            return self._requeue(spool, now)
        batch = spool.claim(_REPLAY_BATCH, lease=_REPLAY_BATCH * self.settings.timeout + 10.0)
        want_results = has_result_hooks()
        for item in batch:
            server = origin(item.url)
            cooling = self.breaker.cooling(server)
            if cooling is not None or len(self._outbox):
                spool.release(item.ping_id, cooling or 0.0, attempted=False)
                continue
            tried = self.transport.attempt(item.url, item.body, 1, self.ping_budget, None)
            if tried.result.outcome == "failed":
                cooldown = self.breaker.trip(server, tried.retry_after)
                spool.release(item.ping_id, cooldown)
            else:
                self.breaker.close(server)
                spool.delete(item.ping_id)
                self.replayed += 1
                if tried.result.ok:
                    self.delivered += 1
                else:
                    self.rejected += 1
                if want_results:
                    self._replayed_result(item.body, tried.result)
        due = spool.next_due()
        wait = self._replay_interval if due is None else min(self._replay_interval, due)
        # Never spin: a full batch or a row due right now still waits a little.
        return max(now + 0.1, time.monotonic() + wait)

    def _requeue(self, spool: Spool, now: float) -> float:
        """A prestored client's replay: due rows go back through the outbox (claimed while
        they are there), so they are sent in batches like live pings, with the same retries
        and breaker. Returns the monotonic time of the next pass."""
        room = min(self.settings.queue_size - len(self._outbox), BATCH_MAX_PINGS)
        if room > 0:
            for item in spool.claim(room, lease=PRESTORED_LEASE):
                self._outbox.put((item, item.url))
                self.replayed += 1
        due = spool.next_due()
        wait = self._replay_interval if due is None else min(self._replay_interval, due)
        return max(now + 0.1, time.monotonic() + wait)

    @staticmethod
    def _replayed_result(body: bytes, result: DeliveryResult) -> None:
        """The result hook for a replayed ping, with the ping its stored body was made from."""
        try:
            ping = Ping.from_json(body)
        except ValueError:
            return  # not a body this package wrote: nothing a hook could be told about
        run_result_hooks(ping, result)

    # -- HTTP -------------------------------------------------------------------------------

    def send(self, ping: Ping, url: str) -> DeliveryResult:
        """POST ``ping`` to ``url`` now, with retries (no breaker, no spool), after the
        plugins' enrich and filter hooks and before their result hook, as for a queued ping;
        returns the outcome, never raises."""
        try:
            if not run_before_send_hooks(ping):
                self.filtered += 1
                result = DeliveryResult("filtered")
            else:
                result = self.transport.attempt(
                    url, ping.to_json(), self.settings.max_retries + 1, self.ping_budget, None
                ).result
                if result.ok:
                    self.delivered += 1
                elif result.outcome == "rejected":
                    self.rejected += 1
                else:
                    self.failed += 1
        except Exception as exc:
            log_once(logger, logging.ERROR, "send", "TelemHQ: send failed", exc_info=True)
            result = DeliveryResult("failed", error=f"{type(exc).__name__}: {exc}")
        run_result_hooks(ping, result)
        return result


_client: Client | None = None
_client_lock = threading.Lock()


def get_client() -> Client:
    """The process-wide client, built from the settings on first use (disabled, with one
    ERROR line, when a setting cannot be used: see :func:`settings_or_disabled`)."""
    global _client
    if _client is None:
        with _client_lock:
            if _client is None:
                _client = Client()
    return _client


def current_client() -> Client | None:
    """The process-wide client if one exists (``None`` before first use); creates nothing."""
    return _client


def set_client(client: Client | None) -> Client | None:
    """Replace the process-wide client (``None``: rebuild from settings on next use)."""
    global _client
    with _client_lock:
        previous, _client = _client, client
    return previous


def keep_replaying(client: Client | None = None) -> bool:
    """For a long-lived process (a scheduler, a daemon, a watcher): start ``client``'s (default
    the process's) delivery thread now when a spool is set, so it replays what ended
    processes left there every ``TELEMHQ_REPLAY_INTERVAL`` seconds, before this process has
    a ping of its own to send. True when it replays; never raises."""
    try:
        current = client or get_client()
        if current.spool is None or current.settings.disabled:
            return False
        current.start()
        return True
    except Exception:
        log_once(logger, logging.ERROR, "replay", "TelemHQ: cannot start replaying", exc_info=True)
        return False


def _after_fork_in_child() -> None:
    global _client_lock
    _client_lock = threading.Lock()
    for client in list(_clients):
        with contextlib.suppress(Exception):  # never break the forked child
            client._after_fork_in_child()


os.register_at_fork(after_in_child=_after_fork_in_child)


@atexit.register
def _flush_at_exit() -> None:
    clients = list(_clients)
    if not clients:
        return
    # One bound for the whole exit, however many clients there are.
    deadline = time.monotonic() + max(c.settings.flush_timeout for c in clients)
    for client in clients:
        client.close(max(0.0, deadline - time.monotonic()))
