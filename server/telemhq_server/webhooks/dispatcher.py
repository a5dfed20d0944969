"""Webhook delivery: a :class:`Dispatcher` per server process claims due outbox rows, POSTs
them with httpx (async) and records every attempt in ``webhook_attempts``.

No receiver can hold up another's alerts. Each attempt has an overall deadline
(``RetryPolicy.timeout``: connecting, sending and reading the whole answer, so a receiver that
answers one byte at a time is cut off too), at most ``max_in_flight`` deliveries run at once
and at most ``per_receiver`` of them to one receiver (scheme, host and port), and the loop
goes on claiming due alerts while earlier deliveries are still under way. A receiver that
hangs, drips, redirects or fails therefore delays nobody else's alert, and its own alert is
retried.

Retries. A non-2xx answer, a timeout or a connection error is retried after
``initial * factor**(attempt-1)`` seconds (capped at ``max_delay``, with optional jitter),
until ``give_up_after`` seconds have passed since the alert was written; then the row gets
``failed_at``. Several processes may run a dispatcher on one database: a row is claimed with a
conditional ``UPDATE ... SET claimed_until`` (a lease), so it is never sent by two at once.
The loop, the pass and those queries are the :class:`~.loop.OutboxLoop` the alert channels'
sender shares.
"""

from __future__ import annotations

import asyncio
import collections
import datetime as dt
import json
import logging
import random
import time
from collections.abc import Callable, Hashable
from dataclasses import dataclass
from typing import Any, Final
from urllib.parse import urlsplit

import httpx
import sqlalchemy as sa
from sqlalchemy.engine import Engine

from telemhq_server import db
from telemhq_server.webhooks.loop import KEEP_DAYS, OutboxLoop, due_rows, lease, prune_outbox
from telemhq_server.webhooks.signing import SIGNATURE_HEADER, sign

__all__ = ["KEEP_DAYS", "Dispatcher", "RetryPolicy"]

logger = logging.getLogger("telemhq_server.webhooks")

_USER_AGENT: Final = "telemhq-server-webhooks/1"
#: Most characters of an error or response kept in ``webhook_attempts``/``last_error``.
_MAX_ERROR: Final = 500
#: Most bytes of a receiver's answer read (its start goes into the error of a non-2xx).
_MAX_ANSWER: Final = 1024


@dataclass(frozen=True)
class RetryPolicy:
    """When to retry a failed delivery and when to give up (all in seconds)."""

    initial: float = 10.0
    factor: float = 2.0
    max_delay: float = 3600.0
    give_up_after: float = 24 * 3600.0
    #: Each delay is multiplied by a random factor in [1 - jitter, 1 + jitter].
    jitter: float = 0.1
    #: Overall deadline of one attempt, from connecting to the last byte of the answer.
    timeout: float = 5.0

    def delay(self, attempts: int) -> float:
        """Seconds to wait after the ``attempts``-th failed attempt (1-based)."""
        base = min(self.initial * self.factor ** max(attempts - 1, 0), self.max_delay)
        if self.jitter:
            base *= random.uniform(1 - self.jitter, 1 + self.jitter)  # jitter, not crypto
        return base


@dataclass(frozen=True)
class _Job:
    outbox_id: int
    event: str
    body: str
    created_at: dt.datetime
    attempts: int
    url: str
    secret: str


class Dispatcher(OutboxLoop[_Job]):
    """Delivers due outbox rows; one per server process (``run()`` is its background loop).

    ``clock`` is injectable so tests can drive the retry schedule without waiting; ``tick()``
    does one claim-and-deliver pass and returns how many rows it attempted.
    """

    what = "webhook"
    log = logger

    def __init__(
        self,
        engine: Engine,
        *,
        public_url: str | None = None,
        policy: RetryPolicy | None = None,
        clock: Callable[[], dt.datetime] = db.utcnow,
        interval: float = 1.0,
        batch: int = 50,
        lease: float = 60.0,
        client: httpx.AsyncClient | None = None,
        max_in_flight: int = 64,
        per_receiver: int = 4,
    ) -> None:
        super().__init__(engine, clock=clock, interval=interval, max_in_flight=max_in_flight)
        self.public_url = (public_url or "").rstrip("/")
        self.policy = policy or RetryPolicy()
        self.batch = batch
        self.lease = dt.timedelta(seconds=max(lease, self.policy.timeout * 2))
        self._client = client
        self._own_client = client is None
        self.per_receiver = per_receiver

    def prune(self, now: dt.datetime) -> int:
        """Forget finished deliveries (and their attempt logs) older than :data:`KEEP_DAYS`."""
        o = db.webhook_outbox
        return prune_outbox(
            self.engine, o, db.webhook_attempts, (o.c.delivered_at, o.c.failed_at), now
        )

    async def aclose(self) -> None:
        if self._own_client and self._client is not None:
            await self._client.aclose()
            self._client = None

    def _http(self) -> httpx.AsyncClient:
        if self._client is None:
            self._client = httpx.AsyncClient(
                timeout=self.policy.timeout,
                follow_redirects=False,
                # identity: the start of an error answer is kept as sent, nothing to inflate
                headers={"User-Agent": _USER_AGENT, "Accept-Encoding": "identity"},
            )
        return self._client

    def bound_of(self, job: _Job) -> Hashable:
        return _receiver(job.url)

    def claim(
        self, now: dt.datetime, room: int, busy: collections.Counter[Hashable] | None = None
    ) -> list[_Job]:
        """Lease up to ``room`` due rows, leaving those whose receiver already has
        ``per_receiver`` deliveries under way (``busy`` counts them) for a later pass."""
        o, w = db.webhook_outbox, db.webhooks
        free = sa.or_(o.c.claimed_until.is_(None), o.c.claimed_until < now)
        pending = sa.and_(o.c.delivered_at.is_(None), o.c.failed_at.is_(None))
        due = due_rows(o, o.c.webhook_id, pending, free, now)
        with self.engine.connect() as conn:
            rows = conn.execute(
                sa.select(o.c.id, o.c.event, o.c.body, o.c.created_at, o.c.attempts, w.c.url)
                .add_columns(w.c.secret, w.c.enabled)
                .join(due, due.c.id == o.c.id)
                .join(w, w.c.id == o.c.webhook_id)
                .where(due.c.rank <= self.per_receiver)
                .order_by(o.c.next_attempt_at, o.c.id)
                .limit(self.batch)
            ).all()
        taken: collections.Counter[Hashable] = collections.Counter(busy or {})
        jobs: list[_Job] = []
        for row in rows:
            if len(jobs) >= room:
                break
            receiver = _receiver(row.url)
            if row.enabled and taken[receiver] >= self.per_receiver:
                continue
            with db.write_tx(self.engine) as conn:
                if not lease(conn, o, row.id, sa.and_(pending, free), now + self.lease):
                    continue  # another process took it first
                if not row.enabled:
                    conn.execute(
                        sa.update(o)
                        .where(o.c.id == row.id)
                        .values(failed_at=now, last_error="webhook disabled", claimed_until=None)
                    )
                    continue
            taken[receiver] += 1
            created = db.as_utc(row.created_at)
            assert created is not None
            jobs.append(
                _Job(row.id, row.event, row.body, created, row.attempts, row.url, row.secret)
            )
        return jobs

    def _body(self, job: _Job) -> bytes:
        if not self.public_url:
            return job.body.encode()
        doc = json.loads(job.body)
        link = doc.get("dashboard_url")
        if isinstance(link, str) and link.startswith("/"):
            doc["dashboard_url"] = self.public_url + link
        return json.dumps(doc, separators=(",", ":")).encode()

    async def deliver(self, job: _Job) -> None:
        body = self._body(job)
        started = self.clock()
        headers = {
            "Content-Type": "application/json",
            SIGNATURE_HEADER: sign(job.secret, body, int(time.time())),
            "X-TelemHQ-Event": job.event,
            "X-TelemHQ-Delivery": str(job.outbox_id),
        }
        status: int | None = None
        error: str | None = None
        t0 = time.perf_counter()
        try:
            async with asyncio.timeout(self.policy.timeout):
                status, answer = await self._post(job.url, body, headers)
            if not 200 <= status < 300:
                error = f"HTTP {status}: {answer[:200]}"
        except TimeoutError:
            error = f"Timeout: no complete answer within {self.policy.timeout:g} s"
        except httpx.HTTPError as exc:
            error = f"{type(exc).__name__}: {exc}"[:_MAX_ERROR] or type(exc).__name__
        except Exception as exc:  # never let one bad URL stop the loop
            error = f"{type(exc).__name__}: {exc}"[:_MAX_ERROR]
        elapsed_ms = (time.perf_counter() - t0) * 1000
        await asyncio.to_thread(self._record, job, started, status, error, elapsed_ms)

    async def _post(self, url: str, body: bytes, headers: dict[str, str]) -> tuple[int, str]:
        """POST and read at most :data:`_MAX_ANSWER` bytes of the answer."""
        async with self._http().stream("POST", url, content=body, headers=headers) as response:
            answer = b""
            async for chunk in response.aiter_raw():
                answer += chunk
                if len(answer) >= _MAX_ANSWER:
                    break
        return response.status_code, answer[:_MAX_ANSWER].decode("utf-8", "replace")

    def _record(
        self,
        job: _Job,
        attempted_at: dt.datetime,
        status: int | None,
        error: str | None,
        elapsed_ms: float,
    ) -> None:
        o = db.webhook_outbox
        attempts = job.attempts + 1
        values: dict[str, Any] = {"attempts": attempts, "claimed_until": None}
        if error is None:
            values["delivered_at"] = attempted_at
            values["last_error"] = None
        else:
            values["last_error"] = error[:_MAX_ERROR]
            retry_at = attempted_at + dt.timedelta(seconds=self.policy.delay(attempts))
            deadline = job.created_at + dt.timedelta(seconds=self.policy.give_up_after)
            if retry_at > deadline:
                values["failed_at"] = attempted_at
                logger.warning(
                    "webhook %s to %s failed for good after %d attempts: %s",
                    job.outbox_id,
                    job.url,
                    attempts,
                    error,
                )
            else:
                values["next_attempt_at"] = retry_at
        with db.write_tx(self.engine) as conn:
            if conn.execute(sa.update(o).where(o.c.id == job.outbox_id).values(**values)).rowcount:
                conn.execute(
                    sa.insert(db.webhook_attempts).values(
                        outbox_id=job.outbox_id,
                        attempted_at=attempted_at,
                        status_code=status,
                        error=None if error is None else error[:_MAX_ERROR],
                        duration_ms=round(elapsed_ms, 3),
                    )
                )
            # else: the webhook (and its outbox, by cascade) was deleted meanwhile


def _receiver(url: str) -> str:
    """What deliveries are bounded per: the URL's scheme, host and port."""
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}"
