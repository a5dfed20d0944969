"""The application object the server's parts plug into: :class:`TelemHQ`.

Layout: ``/ping/...`` goes to a raw ASGI handler (:mod:`telemhq_server.ingest`, the hot path);
everything else goes to a Starlette app (``/healthz``, ``/metrics`` and the routes the parts
add). Which parts make up the server is said in one place, :data:`telemhq_server.app.PARTS`.

A part is a function ``register(app: TelemHQ) -> None``, called once when the app is built
(the management API, detector, retention, webhooks, badges and dashboard each have one).
Inside it:

- ``app.add_routes([...])``: Starlette routes/mounts (management API, dashboard, badges,
  webhooks API). An API route gets the key check, body limit and JSON errors from
  ``telemhq_server.endpoints.api_route``, or is plain.
- ``app.add_background(fn)``: ``fn(app) -> Awaitable[None]``, a long-running coroutine
  started at startup and cancelled at shutdown (missed-run detector, webhook sender,
  retention). Run blocking database work with ``await asyncio.to_thread(...)`` or
  ``app.run_sync(fn, *args)``: both use the app's thread pool, which shutdown waits for
  before it disposes of the engine; check ``app.stopping`` (a ``threading.Event``) in long
  loops so shutdown does not wait long.
- ``app.flip_listeners.add(fn, committed=None)``: ``fn(conn, flips)`` runs inside the
  transaction of every state change (:mod:`telemhq_server.flips`); ``committed()`` runs on
  the event loop after the ping writer or the missed-run detector has committed one.

Useful attributes: ``app.settings`` (:class:`~telemhq_server.config.Settings`), ``app.engine``
(SQLAlchemy engine; see :mod:`telemhq_server.db`), ``app.metrics`` (``app.add_metrics(fn)``
adds Prometheus text lines), ``app.writer`` (the ping writer: ``take_touched()`` names the
trackers that got runs), ``app.public_url(request)``, and ``app.cache.invalidate()`` after
changing a tracker's token or assertions outside the API. A Starlette endpoint reaches the
app as ``request.app.state.telemhq``.

A part module imports this one (for the type), never :mod:`telemhq_server.app`, which imports
the parts: so the import graph stays a tree.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import gc
import logging
import threading
from collections.abc import AsyncIterator, Callable, Coroutine, Iterable, Sequence
from typing import Any, TypeVar

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import BaseRoute, Route

from telemhq_server.config import Settings
from telemhq_server.db import check_database, make_engine
from telemhq_server.flips import FlipListeners
from telemhq_server.ingest import BatchWriter, PingHandler, TrackerCache
from telemhq_server.metrics import Metrics
from telemhq_server.types import Receive, Scope, Send

__all__ = ["Background", "Register", "TelemHQ"]

logger = logging.getLogger("telemhq_server.host")

T = TypeVar("T")
#: A long-running coroutine of a part (see ``TelemHQ.add_background``).
Background = Callable[["TelemHQ"], Coroutine[Any, Any, None]]
#: A part of the server: called once with the app being built.
Register = Callable[["TelemHQ"], None]


class TelemHQ:
    """The server: an ASGI callable owning the engine, the ping path and the Starlette app.
    Each of ``parts`` is called once, in order, to add its routes, background tasks and flip
    listeners (``telemhq_server.app.create_app`` passes them all)."""

    def __init__(
        self,
        settings: Settings,
        parts: Sequence[Register] = (),
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
        self._background: list[Background] = []
        self._metric_sources: list[Callable[[], Iterable[str]]] = []
        for register in parts:
            register(self)
        self.starlette = Starlette(routes=self._routes, lifespan=self._lifespan)
        self.starlette.state.telemhq = self

    # --- what parts plug into ---------------------------------------------------------------

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
