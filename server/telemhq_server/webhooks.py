"""Outgoing webhooks: signed JSON POSTs on state changes, from a durable outbox.

Flow. :func:`enqueue_flip` runs inside the transaction that records a flip (it is called by
:func:`telemhq_server.flips.record_flip`), so an alert exists exactly when the state change
does. A :class:`Dispatcher` per server process then claims due outbox rows, POSTs them with
httpx (async, short timeout) and records every attempt in ``webhook_attempts``. An alert
written before a crash is still in the outbox after the restart and is delivered then.

Events: ``tracker.failing``, ``tracker.late``, ``tracker.down`` (the new state) and
``tracker.recovered`` (back to ``up`` from one of those).

Signature. Every request carries::

    X-TelemHQ-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256(secret, "<t>.<body>")>
    X-TelemHQ-Event: tracker.down
    X-TelemHQ-Delivery: <outbox id>

A receiver recomputes the HMAC over the timestamp, a dot and the raw body bytes with its
secret, compares in constant time (:func:`verify_signature` does all of it) and rejects old
timestamps (replays). The timestamp is the time of the attempt, so each retry is signed anew.

Retries. A non-2xx answer, a timeout or a connection error is retried after
``initial * factor**(attempt-1)`` seconds (capped at ``max_delay``, with optional jitter),
until ``give_up_after`` seconds have passed since the alert was written; then the row gets
``failed_at``. Several processes may run a dispatcher on one database: a row is claimed with a
conditional ``UPDATE ... SET claimed_until`` (a lease), so it is never sent by two at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import hashlib
import hmac
import json
import logging
import random
import secrets
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final

import httpx
import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from telemhq_server import db

if TYPE_CHECKING:
    from telemhq_server.app import TelemHQ

__all__ = [
    "DEFAULT_EVENTS",
    "EVENTS",
    "KEEP_DAYS",
    "SIGNATURE_HEADER",
    "Dispatcher",
    "RetryPolicy",
    "api_routes",
    "enqueue_flip",
    "event_for",
    "new_secret",
    "register",
    "sign",
    "subscribed",
    "validate_webhook",
    "verify_signature",
]

logger = logging.getLogger("telemhq_server.webhooks")

EVENTS: Final = ("tracker.failing", "tracker.late", "tracker.down", "tracker.recovered")
#: What a webhook created without ``events`` receives: ``late`` is opt-in, because a job that
#: pings at its end is briefly "late" by design (inside its grace) on every run.
DEFAULT_EVENTS: Final = ("tracker.failing", "tracker.down", "tracker.recovered")
SIGNATURE_HEADER: Final = "X-TelemHQ-Signature"
_USER_AGENT: Final = "telemhq-server-webhooks/1"
#: Days a delivered or abandoned alert stays visible in ``/api/v1/webhooks/{id}/deliveries``.
KEEP_DAYS: Final = 30
#: Most characters of an error or response kept in ``webhook_attempts``/``last_error``.
_MAX_ERROR: Final = 500


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


def event_for(old: str, new: str) -> str | None:
    """The webhook event for a state change, or ``None`` when it alerts nobody."""
    if new in ("failing", "late", "down"):
        return f"tracker.{new}"
    if new == "up" and old in ("failing", "late", "down"):
        return "tracker.recovered"
    return None


def subscribed(events: list[str] | None, event: str, old: str) -> bool:
    """Does a webhook with ``events`` (empty: :data:`DEFAULT_EVENTS`) get this change?

    ``late -> up`` is a recovery only for those who were told about ``late``.
    """
    wanted = events or DEFAULT_EVENTS
    if event == "tracker.recovered" and old == "late":
        return "tracker.late" in wanted
    return event in wanted


@dataclass(frozen=True)
class RetryPolicy:
    """When to retry a failed delivery and when to give up (all in seconds)."""

    initial: float = 10.0
    factor: float = 2.0
    max_delay: float = 3600.0
    give_up_after: float = 24 * 3600.0
    #: Each delay is multiplied by a random factor in [1 - jitter, 1 + jitter].
    jitter: float = 0.1
    timeout: float = 5.0

    def delay(self, attempts: int) -> float:
        """Seconds to wait after the ``attempts``-th failed attempt (1-based)."""
        base = min(self.initial * self.factor ** max(attempts - 1, 0), self.max_delay)
        if self.jitter:
            base *= random.uniform(1 - self.jitter, 1 + self.jitter)  # jitter, not crypto
        return base


# --- enqueue (inside the flip's transaction) -------------------------------------------------


def _json_loads(text: str | None) -> Any:
    if not text:
        return None
    try:
        return json.loads(text)
    except ValueError:
        return text


def _iso(value: dt.datetime | None) -> str | None:
    return db.iso(value)


def _schedule(row: Any) -> dict[str, Any]:
    return {
        "kind": row["schedule_kind"],
        "period_seconds": row["period_seconds"],
        "cron": row["cron"],
        "timezone": row["timezone"],
        "grace_seconds": row["grace_seconds"],
        "max_runtime_seconds": row["max_runtime_seconds"],
    }


def build_body(
    conn: Connection,
    *,
    event: str,
    tracker_id: int,
    old: str,
    new: str,
    reason: str,
    run_id: int | None,
    now: dt.datetime,
) -> dict[str, Any]:
    """The JSON document sent for one state change (see the README for its fields)."""
    tracker = conn.execute(sa.select(db.trackers).where(db.trackers.c.id == tracker_id)).one()
    t = tracker._mapping
    run: dict[str, Any] | None = None
    failed: list[Any] = []
    if run_id is not None:
        row = conn.execute(sa.select(db.runs).where(db.runs.c.id == run_id)).one_or_none()
        if row is not None:
            r = row._mapping
            results = _json_loads(r["assertions"]) or []
            failed = [a for a in results if isinstance(a, dict) and not a.get("passed", True)]
            run = {
                "id": r["id"],
                "run_id": r["run_id"],
                "ping_id": r["ping_id"],
                "status": r["status"],
                "passed": r["passed"],
                "duration_ms": r["duration_ms"],
                "received_at": _iso(r["received_at"]),
                "assertions": results,
                "payload": _json_loads(r["payload"]),
            }
    return {
        "event": event,
        "created_at": _iso(now),
        "tracker": {
            "id": t["id"],
            "name": t["name"],
            "slug": t["slug"],
            "state": new,
            "previous_state": old,
            "tags": t["tags"],
            "schedule": _schedule(t),
            "last_ping_at": _iso(t["last_ping_at"]),
            "next_expected_at": _iso(t["next_expected_at"]),
        },
        "reason": reason,
        "run": run,
        "failed_assertions": failed,
        # Made absolute with the server's public URL when sent (see Dispatcher).
        "dashboard_url": f"/dashboard/trackers/{t['id']}",
    }


def enqueue_flip(
    conn: Connection,
    *,
    tracker_id: int,
    old: str,
    new: str,
    reason: str,
    run_id: int | None,
    now: dt.datetime,
) -> int:
    """Write one outbox row per enabled webhook subscribed to this change; returns how many.

    Call it inside the transaction that records the flip (``record_flip`` does).
    """
    event = event_for(old, new)
    if event is None:
        return 0
    hooks = [
        h
        for h in conn.execute(
            sa.select(db.webhooks.c.id, db.webhooks.c.events).where(db.webhooks.c.enabled)
        )
        if subscribed(h.events, event, old)
    ]
    if not hooks:
        return 0
    body = json.dumps(
        build_body(
            conn,
            event=event,
            tracker_id=tracker_id,
            old=old,
            new=new,
            reason=reason,
            run_id=run_id,
            now=now,
        ),
        separators=(",", ":"),
        default=str,
    )
    conn.execute(
        sa.insert(db.webhook_outbox),
        [
            {
                "webhook_id": h.id,
                "event": event,
                "tracker_id": tracker_id,
                "body": body,
                "created_at": now,
                "next_attempt_at": now,
                "attempts": 0,
            }
            for h in hooks
        ],
    )
    return len(hooks)


# --- delivery ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Job:
    outbox_id: int
    event: str
    body: str
    created_at: dt.datetime
    attempts: int
    url: str
    secret: str


class Dispatcher:
    """Delivers due outbox rows; one per server process (``run()`` is its background loop).

    ``clock`` is injectable so tests can drive the retry schedule without waiting; ``tick()``
    does one claim-and-deliver pass and returns how many rows it attempted.
    """

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
    ) -> None:
        self.engine = engine
        self.public_url = (public_url or "").rstrip("/")
        self.policy = policy or RetryPolicy()
        self.clock = clock
        self.interval = interval
        self.batch = batch
        self.lease = dt.timedelta(seconds=max(lease, self.policy.timeout * 2))
        self._client = client
        self._own_client = client is None
        self._wake = asyncio.Event()

    def wake(self) -> None:
        """Ask the loop to look at the outbox now (e.g. right after a flip)."""
        self._wake.set()

    async def run(self) -> None:
        """Deliver forever (cancel the task to stop); errors are logged, never raised."""
        next_prune = 0.0
        try:
            while True:
                try:
                    await self.tick()
                    if time.monotonic() >= next_prune:
                        next_prune = time.monotonic() + 3600
                        await asyncio.to_thread(self.prune, self.clock())
                except Exception:
                    logger.exception("webhook delivery pass failed; retrying")
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), self.interval)
                self._wake.clear()
        finally:
            await self.aclose()

    def prune(self, now: dt.datetime) -> int:
        """Forget finished deliveries (and their attempt logs) older than :data:`KEEP_DAYS`."""
        o, a = db.webhook_outbox, db.webhook_attempts
        cutoff = now - dt.timedelta(days=KEEP_DAYS)
        done = sa.or_(o.c.delivered_at < cutoff, o.c.failed_at < cutoff)
        with db.write_tx(self.engine) as conn:
            conn.execute(sa.delete(a).where(a.c.outbox_id.in_(sa.select(o.c.id).where(done))))
            return int(conn.execute(sa.delete(o).where(done)).rowcount)

    async def aclose(self) -> None:
        if self._own_client and self._client is not None:
            await self._client.aclose()
            self._client = None

    def _http(self) -> httpx.AsyncClient:
        if self._client is None:
            self._client = httpx.AsyncClient(
                timeout=self.policy.timeout,
                follow_redirects=False,
                headers={"User-Agent": _USER_AGENT},
            )
        return self._client

    async def tick(self) -> int:
        now = self.clock()
        jobs = await asyncio.to_thread(self._claim, now)
        if jobs:
            await asyncio.gather(*(self._deliver(job) for job in jobs))
        return len(jobs)

    def _claim(self, now: dt.datetime) -> list[_Job]:
        o, w = db.webhook_outbox, db.webhooks
        free = sa.or_(o.c.claimed_until.is_(None), o.c.claimed_until < now)
        pending = sa.and_(o.c.delivered_at.is_(None), o.c.failed_at.is_(None))
        with self.engine.connect() as conn:
            rows = conn.execute(
                sa.select(o.c.id, o.c.event, o.c.body, o.c.created_at, o.c.attempts, w.c.url)
                .add_columns(w.c.secret, w.c.enabled)
                .join(w, w.c.id == o.c.webhook_id)
                .where(pending, o.c.next_attempt_at <= now, free)
                .order_by(o.c.next_attempt_at, o.c.id)
                .limit(self.batch)
            ).all()
        jobs: list[_Job] = []
        for row in rows:
            with db.write_tx(self.engine) as conn:
                claimed = conn.execute(
                    sa.update(o)
                    .where(o.c.id == row.id, pending, free)
                    .values(claimed_until=now + self.lease)
                ).rowcount
                if claimed != 1:
                    continue  # another process took it first
                if not row.enabled:
                    conn.execute(
                        sa.update(o)
                        .where(o.c.id == row.id)
                        .values(failed_at=now, last_error="webhook disabled", claimed_until=None)
                    )
                    continue
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

    async def _deliver(self, job: _Job) -> None:
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
            response = await self._http().post(job.url, content=body, headers=headers)
            status = response.status_code
            if not 200 <= status < 300:
                error = f"HTTP {status}: {response.text[:200]}"
        except httpx.HTTPError as exc:
            error = f"{type(exc).__name__}: {exc}"[:_MAX_ERROR] or type(exc).__name__
        except Exception as exc:  # never let one bad URL stop the loop
            error = f"{type(exc).__name__}: {exc}"[:_MAX_ERROR]
        elapsed_ms = (time.perf_counter() - t0) * 1000
        await asyncio.to_thread(self._record, job, started, status, error, elapsed_ms)

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


# --- management API: /api/v1/webhooks ---------------------------------------------------------


def _webhook_json(row: Any, *, with_secret: bool = False) -> dict[str, Any]:
    out: dict[str, Any] = {
        "id": row["id"],
        "url": row["url"],
        "events": list(row["events"]) or list(DEFAULT_EVENTS),
        "enabled": bool(row["enabled"]),
        "created_at": db.iso(row["created_at"]),
        "secret_hint": row["secret"][:10] + "...",
    }
    if with_secret:
        out["secret"] = row["secret"]
    return out


def validate_webhook(body: Any, *, creating: bool) -> dict[str, Any]:
    """Column values from an API body; raises ``trackers.ValidationError`` (answered 422)."""
    from urllib.parse import urlsplit

    from telemhq_server.trackers import ValidationError

    if not isinstance(body, Mapping):
        raise ValidationError("body", "must be a JSON object")
    unknown = sorted(set(body) - {"url", "events", "secret", "enabled"})
    if unknown:
        raise ValidationError(unknown[0], "unknown field; known: url, events, secret, enabled")
    values: dict[str, Any] = {}
    if "url" in body or creating:
        url = body.get("url")
        parts = urlsplit(url) if isinstance(url, str) else None
        if parts is None or parts.scheme not in ("http", "https") or not parts.netloc:
            raise ValidationError("url", f"must be an http(s) URL, got {url!r}")
        values["url"] = url
    if "events" in body:
        events = body["events"]
        if not isinstance(events, list) or not all(e in EVENTS for e in events):
            raise ValidationError("events", f"must be a list drawn from {list(EVENTS)}")
        values["events"] = list(dict.fromkeys(events))
    elif creating:
        values["events"] = list(DEFAULT_EVENTS)
    if body.get("secret") is not None:
        secret = body["secret"]
        if not isinstance(secret, str) or not 16 <= len(secret) <= 200:
            raise ValidationError("secret", "must be a string of 16 to 200 characters")
        values["secret"] = secret
    elif creating:
        values["secret"] = new_secret()
    if "enabled" in body:
        if not isinstance(body["enabled"], bool):
            raise ValidationError("enabled", "must be true or false")
        values["enabled"] = body["enabled"]
    return values


def api_routes() -> list[Any]:
    """``/api/v1/webhooks`` routes, served through the management API's key handling."""
    from starlette.responses import JSONResponse, Response
    from starlette.routing import Route

    from telemhq_server.api import ApiError, Ctx, _endpoint

    w, o, a = db.webhooks, db.webhook_outbox, db.webhook_attempts

    def _row(conn: Connection, ctx: Ctx) -> Any:
        hook_id = ctx.path_int("webhook_id")
        row = conn.execute(sa.select(w).where(w.c.id == hook_id)).mappings().first()
        if row is None:
            raise ApiError(404, f"no such webhook: {hook_id}")
        return row

    def list_hooks(ctx: Ctx) -> Response:
        with ctx.app.engine.connect() as conn:
            rows = conn.execute(sa.select(w).order_by(w.c.id)).mappings().all()
        return JSONResponse({"items": [_webhook_json(r) for r in rows], "next": None})

    def create_hook(ctx: Ctx) -> Response:
        values = validate_webhook(ctx.body if ctx.body is not None else {}, creating=True)
        with db.write_tx(ctx.app.engine) as conn:
            new_id = conn.execute(
                sa.insert(w)
                .values(**values, enabled=values.get("enabled", True), created_at=db.utcnow())
                .returning(w.c.id)
            ).scalar_one()
            row = conn.execute(sa.select(w).where(w.c.id == new_id)).mappings().one()
        return JSONResponse(_webhook_json(row, with_secret=True), 201)

    def get_hook(ctx: Ctx) -> Response:
        with ctx.app.engine.connect() as conn:
            return JSONResponse(_webhook_json(_row(conn, ctx)))

    def update_hook(ctx: Ctx) -> Response:
        values = validate_webhook(ctx.body if ctx.body is not None else {}, creating=False)
        with db.write_tx(ctx.app.engine) as conn:
            row = _row(conn, ctx)
            if values:
                conn.execute(sa.update(w).where(w.c.id == row["id"]).values(**values))
                row = _row(conn, ctx)
        return JSONResponse(_webhook_json(row, with_secret="secret" in values))

    def delete_hook(ctx: Ctx) -> Response:
        with db.write_tx(ctx.app.engine) as conn:
            row = _row(conn, ctx)
            ids = sa.select(o.c.id).where(o.c.webhook_id == row["id"])
            conn.execute(sa.delete(a).where(a.c.outbox_id.in_(ids)))
            conn.execute(sa.delete(o).where(o.c.webhook_id == row["id"]))
            conn.execute(sa.delete(w).where(w.c.id == row["id"]))
        return Response(status_code=204)

    def deliveries(ctx: Ctx) -> Response:
        limit, cursor = ctx.limit(), ctx.cursor()
        with ctx.app.engine.connect() as conn:
            hook = _row(conn, ctx)
            query = sa.select(o).where(o.c.webhook_id == hook["id"]).order_by(o.c.id.desc())
            if cursor is not None:
                query = query.where(o.c.id < cursor)
            rows = conn.execute(query.limit(limit + 1)).mappings().all()
            ids = [r["id"] for r in rows[:limit]]
            tries: dict[int, list[dict[str, Any]]] = {i: [] for i in ids}
            if ids:
                for t in conn.execute(
                    sa.select(a).where(a.c.outbox_id.in_(ids)).order_by(a.c.id)
                ).mappings():
                    tries[t["outbox_id"]].append(
                        {
                            "attempted_at": db.iso(t["attempted_at"]),
                            "status_code": t["status_code"],
                            "error": t["error"],
                            "duration_ms": t["duration_ms"],
                        }
                    )
        items = [
            {
                "id": r["id"],
                "event": r["event"],
                "tracker_id": r["tracker_id"],
                "status": "delivered"
                if r["delivered_at"]
                else "failed"
                if r["failed_at"]
                else "pending",
                "created_at": db.iso(r["created_at"]),
                "attempts": r["attempts"],
                "next_attempt_at": None
                if r["delivered_at"] or r["failed_at"]
                else db.iso(r["next_attempt_at"]),
                "delivered_at": db.iso(r["delivered_at"]),
                "failed_at": db.iso(r["failed_at"]),
                "last_error": r["last_error"],
                "body": _json_loads(r["body"]),
                "attempt_log": tries.get(r["id"], []),
            }
            for r in rows[:limit]
        ]
        more = len(rows) > limit
        return JSONResponse({"items": items, "next": str(items[-1]["id"]) if more else None})

    def route(path: str, handler: Callable[[Ctx], Response], method: str, scope: str) -> Route:
        return Route("/api/v1" + path, _endpoint(handler, scope), methods=[method])

    one = "/webhooks/{webhook_id}"
    return [
        route("/webhooks", list_hooks, "GET", "read"),
        route("/webhooks", create_hook, "POST", "write"),
        route(one, get_hook, "GET", "read"),
        route(one, update_hook, "PATCH", "write"),
        route(one, delete_hook, "DELETE", "write"),
        route(one + "/deliveries", deliveries, "GET", "read"),
    ]


def register(app: TelemHQ) -> None:
    """Serve ``/api/v1/webhooks`` and run one :class:`Dispatcher` per server process."""
    app.add_routes(api_routes())
    dispatcher = Dispatcher(app.engine, public_url=app.public_url(None) or None)
    # The detector wakes it after a flip (``app.webhook_dispatcher``), else it polls each second.
    app.webhook_dispatcher = dispatcher  # type: ignore[attr-defined]

    async def loop(_app: TelemHQ) -> None:
        await dispatcher.run()

    app.add_background(loop)
