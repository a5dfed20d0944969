"""The ASGI application: ``create_app(settings)`` -> :class:`TelemHQ`.

Layout: ``/ping/...`` goes to a raw ASGI handler (:mod:`telemhq_server.ingest`, the hot path);
everything else goes to a Starlette app (management API, ``/healthz``, ``/metrics`` and the
routes extensions add).

Extending the server (how the management API, dashboard, badges, webhooks and detector plug
in, with no edit here):

- Each module named in :data:`EXTENSIONS` that exists is imported at app creation and its
  ``register(app: TelemHQ) -> None`` is called. Inside it:
  - ``app.add_routes([...])``: Starlette routes/mounts (management API, dashboard, badges,
    webhooks API). An API route gets the key check, body limit and JSON errors from
    ``telemhq_server.endpoints.api_route``, or is plain.
  - ``app.add_background(fn)``: ``fn(app) -> Awaitable[None]``, a long-running coroutine
    started at startup and cancelled at shutdown (missed-run detector, webhook sender).
    Run blocking database work with ``await asyncio.to_thread(...)`` or
    ``app.run_sync(fn, *args)``: both use the app's thread pool, which shutdown waits for
    before it disposes of the engine; check ``app.stopping`` (a ``threading.Event``) in long
    loops so shutdown does not wait long.
  - ``app.flip_listeners.add(fn, committed=None)``: ``fn(conn, flips)`` runs inside the
    transaction of every state change (:mod:`telemhq_server.flips`); ``committed()`` runs on
    the event loop after the ping writer or the missed-run detector has committed one.
- Useful attributes: ``app.settings`` (:class:`~telemhq_server.config.Settings`),
  ``app.engine`` (SQLAlchemy engine; see :mod:`telemhq_server.db`), ``app.metrics``
  (``app.add_metrics(fn)`` adds Prometheus text lines), ``app.public_url(request)``, and
  ``app.cache.invalidate()`` after changing a tracker's token or assertions outside the API.
- A Starlette endpoint reaches the app as ``request.app.state.telemhq``.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import gc
import importlib
import logging
import threading
from collections.abc import AsyncIterator, Callable, Coroutine, Iterable, Sequence
from typing import Any, Final, TypeVar

import sqlalchemy as sa
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import BaseRoute, Route

from telemhq_server.config import Settings, load_settings
from telemhq_server.db import check_database, make_engine, runs, trackers, write_tx
from telemhq_server.flips import FlipListeners
from telemhq_server.ingest import BatchWriter, PingHandler, TrackerCache
from telemhq_server.metrics import Metrics
from telemhq_server.types import Receive, Scope, Send

__all__ = ["EXTENSIONS", "TelemHQ", "app_from_env", "create_app"]

logger = logging.getLogger("telemhq_server.app")

#: Modules that may add routes, background tasks and flip listeners through ``register(app)``
#: (the management API first: its routes are matched before the others').
EXTENSIONS: Final = (
    "telemhq_server.api",
    "telemhq_server.detector",
    "telemhq_server.webhooks",
    "telemhq_server.badges",
    "telemhq_server.dashboard",
)

T = TypeVar("T")
Background = Callable[["TelemHQ"], Coroutine[Any, Any, None]]


class TelemHQ:
    """The server: an ASGI callable owning the engine, the ping path and the Starlette app."""

    def __init__(
        self,
        settings: Settings,
        extensions: Sequence[str] = EXTENSIONS,
        *,
        tune_gc: bool = False,
    ) -> None:
        self.settings = settings
        self.tune_gc = tune_gc
        self.engine = make_engine(settings.database_url)
        self.metrics = Metrics()
        self.executor = concurrent.futures.ThreadPoolExecutor(8, "telemhq-bg")
        #: set at shutdown; long blocking work (see ``run_sync``) should check it and return.
        self.stopping = threading.Event()
        self.cache = TrackerCache(self.engine, settings.cache_ttl, self.executor)
        #: what runs inside the transaction of every state change (see telemhq_server.flips)
        self.flip_listeners = FlipListeners()
        self.writer = BatchWriter(
            self.engine, self.metrics, settings.max_batch, listeners=self.flip_listeners
        )
        self.pings = PingHandler(self.cache, self.writer, self.metrics, settings.max_body_bytes)
        self._routes: list[BaseRoute] = [
            Route("/healthz", self._healthz, methods=["GET", "HEAD"]),
            Route("/metrics", self._metrics, methods=["GET"]),
        ]
        self._background: list[Background] = [_retention_loop]
        self._metric_sources: list[Callable[[], Iterable[str]]] = []
        for name in extensions:
            self._load_extension(name)
        self.starlette = Starlette(routes=self._routes, lifespan=self._lifespan)
        self.starlette.state.telemhq = self

    # --- extension seams -------------------------------------------------------------------

    def add_routes(self, routes: Iterable[BaseRoute]) -> None:
        self._routes.extend(routes)

    def add_background(self, fn: Background) -> None:
        self._background.append(fn)

    def add_metrics(self, fn: Callable[[], Iterable[str]]) -> None:
        self._metric_sources.append(fn)

    async def run_sync(self, fn: Callable[..., T], *args: Any) -> T:
        """Run blocking ``fn(*args)`` in the app's thread pool; shutdown waits for it to end
        before the engine is disposed (so no connection is left behind)."""
        return await asyncio.get_running_loop().run_in_executor(self.executor, fn, *args)

    def public_url(self, request: Request | None = None) -> str:
        """Base URL for links (``ping_url``, ``badge_url``): ``TELEMHQ_PUBLIC_URL``, else the
        scheme and host the request came to."""
        if self.settings.public_url:
            return self.settings.public_url.rstrip("/")
        if request is None:
            return ""
        return str(request.base_url).rstrip("/")

    def _load_extension(self, name: str) -> None:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as exc:
            if exc.name == name:
                return  # not written (yet): nothing to register
            raise
        register = getattr(module, "register", None)
        if register is not None:
            register(self)

    # --- ASGI ------------------------------------------------------------------------------

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["path"].startswith("/ping/"):
            await self.pings(scope, receive, send)
            return
        await self.starlette(scope, receive, send)

    @contextlib.asynccontextmanager
    async def _lifespan(self, _app: Starlette) -> AsyncIterator[None]:
        # asyncio.to_thread() and run_sync() share one pool, which shutdown waits for.
        asyncio.get_running_loop().set_default_executor(self.executor)
        if self.tune_gc:
            _tune_gc()
        self.writer.start()
        tasks: list[asyncio.Task[None]] = [asyncio.create_task(fn(self)) for fn in self._background]
        try:
            yield
        finally:
            self.stopping.set()
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            await self.writer.stop()
            # Wait for blocking work still running in threads before closing connections
            # (a cancelled to_thread() call goes on in its thread until it returns).
            self.executor.shutdown(wait=True)
            self.engine.dispose()

    async def _healthz(self, _request: Request) -> Response:
        try:
            await self.run_sync(check_database, self.engine)
        except Exception as exc:
            logger.warning("health check failed", exc_info=True)
            return JSONResponse({"status": "error", "database": str(exc)[:300]}, 503)
        return JSONResponse({"status": "ok", "database": "ok"})

    async def _metrics(self, _request: Request) -> Response:
        extra: list[str] = [
            "# HELP telemhq_pings_waiting Pings queued for the writer.",
            "# TYPE telemhq_pings_waiting gauge",
            f"telemhq_pings_waiting {self.writer.pending}",
        ]
        for fn in self._metric_sources:
            extra.extend(fn())
        return PlainTextResponse(self.metrics.render(extra), media_type="text/plain; version=0.0.4")


def create_app(settings: Settings | None = None, *, tune_gc: bool = False) -> TelemHQ:
    """The ASGI app for ``settings`` (default: from the environment)."""
    return TelemHQ(settings or load_settings(), tune_gc=tune_gc)


def app_from_env() -> TelemHQ:
    """Factory used by granian's workers: settings come through the environment. The
    worker process is the server's own, so it also tunes the garbage collector."""
    from telemhq_server.logs import setup_logging

    settings = load_settings()
    setup_logging(settings.log_level)
    return create_app(settings, tune_gc=True)


def _tune_gc() -> None:
    """Keep the cyclic garbage collector off the ping path's tail latency.

    Everything loaded at start (SQLAlchemy, Starlette, the app) is frozen out of collection,
    and the youngest generation is collected every 20,000 allocations rather than 700: a
    ping allocates a handful of short-lived containers freed by reference counting, so
    frequent young collections only cost time, most visibly in the tail latency
    (benchmarks/ingest.py; the figures are in docs/benchmarks.md)."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(20_000, 20, 100)


# --- retention -------------------------------------------------------------------------------

PRUNE_CHUNK: Final = 2_000


def prune_tracker(
    engine: sa.Engine, tracker_id: int, keep: int, stop: threading.Event | None = None
) -> int:
    """Delete all but the newest ``keep`` runs of one tracker, in small transactions (so the
    ping writer never waits long); returns how many were deleted."""
    with engine.connect() as conn:
        cutoff = conn.execute(
            sa.select(runs.c.id)
            .where(runs.c.tracker_id == tracker_id)
            .order_by(runs.c.id.desc())
            .offset(keep - 1)
            .limit(1)
        ).scalar()
    if cutoff is None:
        return 0
    deleted = 0
    while True:
        with write_tx(engine) as conn:
            doomed = (
                sa.select(runs.c.id)
                .where(runs.c.tracker_id == tracker_id, runs.c.id < cutoff)
                .order_by(runs.c.id)
                .limit(PRUNE_CHUNK)
                .scalar_subquery()
            )
            count = conn.execute(runs.delete().where(runs.c.id.in_(doomed))).rowcount
        deleted += count
        if count < PRUNE_CHUNK or (stop is not None and stop.is_set()):
            return deleted


def prune(
    engine: sa.Engine,
    tracker_ids: Iterable[int] | None,
    keep: int,
    stop: threading.Event | None = None,
) -> int:
    """Apply retention to ``tracker_ids`` (None: every tracker with more runs than ``keep``)."""
    if tracker_ids is None:
        with engine.connect() as conn:
            tracker_ids = list(
                conn.execute(sa.select(trackers.c.id).where(trackers.c.n_runs > keep)).scalars()
            )
    deleted = 0
    for tracker_id in tracker_ids:
        if stop is not None and stop.is_set():
            break
        deleted += prune_tracker(engine, tracker_id, keep, stop)
    return deleted


async def _retention_loop(app: TelemHQ) -> None:
    keep, interval = app.settings.retention_runs, app.settings.prune_interval
    ids: Iterable[int] | None = None  # first pass: everything
    while True:
        try:
            deleted = await app.run_sync(prune, app.engine, ids, keep, app.stopping)
            if deleted:
                logger.info("retention pass", extra={"deleted_runs": deleted, "keep": keep})
        except Exception:
            logger.exception("retention pass failed; will retry")
        await asyncio.sleep(interval)
        ids = app.writer.take_touched()
