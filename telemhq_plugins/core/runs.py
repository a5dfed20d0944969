"""Runs: the one piece every adapter and the user API share.

A :class:`Run` is one execution of a monitored job. It measures the duration on the monotonic
clock, collects metrics (``report(...)``), captures the error, resolves where its pings go and
hands them to delivery. Adapters only translate orchestrator events into
``start_run(...)`` / ``run.finish(...)`` calls.

The run executing in the current context (thread or asyncio task) is held in a
``ContextVar``, which is how :func:`report` reaches it from inside any orchestrator's task.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import datetime as dt
import functools
import inspect
import logging
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, ParamSpec, TypeVar, overload

from telemhq_plugins.core.config import Settings, warn_unconfigured
from telemhq_plugins.core.delivery import Client, get_client
from telemhq_plugins.core.logs import capture_internal_errors, log_once
from telemhq_plugins.core.payload import (
    HOST,
    ErrorInfo,
    Ping,
    PingParts,
    Status,
    encode_body,
    new_id,
)

__all__ = [
    "Run",
    "RunFinder",
    "Target",
    "add_run_finder",
    "current_run",
    "monitor",
    "monitored",
    "remove_run_finder",
    "report",
    "resolve_target",
    "run",
    "start_run",
]

logger = logging.getLogger("telemhq")
P = ParamSpec("P")
R = TypeVar("R")

_current: contextvars.ContextVar[Run | None] = contextvars.ContextVar("telemhq_run", default=None)
#: finds the run executing here when none is bound (an adapter's; see ``add_run_finder``).
RunFinder = Callable[[], "Run | None"]
_finders: list[RunFinder] = []
#: ``payload.utcnow`` without a Python-level call (a run reads the clock twice per task).
_utcnow = functools.partial(dt.datetime.now, dt.UTC)


class Run:
    """One execution of a job. ``url`` is ``None`` when the job is not monitored (inert).

    ``timed=False`` is for a run whose start was not seen (an adapter learns of it only at
    its end): its pings carry no duration unless given, and ``started_at`` as the
    orchestrator knows it (None: no start time). ``bind=True`` makes it the current run of
    this context until it finishes (:func:`report` reaches it).

    An adapter creates and finishes a run for every task, on the task's thread, so the two
    calls do their work inline rather than through helpers: inside a busy worker, whose own
    work evicts ours from the CPU caches between two tasks, each Python call costs several
    times what it costs in a loop (``benchmarks/celery_overhead.py``, docs/benchmarks.md).
    For the same reason :meth:`finish` only records the end and queues the run itself:
    delivery encodes it on its own thread (:meth:`encode`, no :class:`Ping` object nor merged
    dict; :meth:`to_ping` when a plugin hook wants one)."""

    __slots__ = (
        "_context_token",
        "_started",
        "attempt",
        "client",
        "context",
        "details",
        "duration",
        "error",
        "finished",
        "finished_at",
        "job",
        "metrics",
        "orchestrator",
        "ping_id",
        "run_id",
        "started_at",
        "status",
        "timed",
        "url",
    )

    def __init__(
        self,
        job: str | None,
        *,
        url: str | None,
        client: Client,
        orchestrator: str | None = None,
        run_id: str | None = None,
        attempt: int | None = None,
        context: dict[str, Any] | None = None,
        details: dict[str, Any] | None = None,
        timed: bool = True,
        started_at: dt.datetime | None = None,
        bind: bool = False,
    ) -> None:
        self.job = job
        self.url = url
        self.client = client
        self.orchestrator = orchestrator
        self.run_id = run_id or new_id()
        self.attempt = attempt
        #: extra top-level fields of every ping of this run. This, ``details`` and ``metrics``
        #: are None rather than empty: a run that waits for delivery (up to a second, with
        #: hundreds of others) holds no dict it does not need, which keeps the garbage
        #: collector from running as often in a busy worker.
        self.context = context
        #: the orchestrator's own object, the top-level field named after ``orchestrator``
        #: (``{"celery": {...}}``), apart from ``context`` for the same reason.
        self.details = details
        #: what ``report()`` added.
        self.metrics: dict[str, Any] | None = None
        self.timed = timed
        self.started_at: dt.datetime | None = _utcnow() if timed else started_at
        self._started = time.monotonic()
        self.finished = False
        #: set by ``finish``: what ``to_ping`` builds the final ping from.
        self.status: Status | None = None
        self.error: ErrorInfo | None = None
        self.duration: float | None = None
        self.finished_at: dt.datetime | None = None
        #: the final ping's id when the adapter chose one (``finish(ping_id=...)``), else a new
        #: id is drawn when it is encoded.
        self.ping_id: str | None = None
        self._context_token: contextvars.Token[Run | None] | None = (
            _current.set(self) if bind else None
        )

    @property
    def active(self) -> bool:
        return self.url is not None

    @property
    def settings(self) -> Settings:
        return self.client.settings

    def elapsed_ms(self) -> float:
        return (time.monotonic() - self._started) * 1000.0

    def report(self, **fields: Any) -> None:
        """Merge metrics/custom fields into this run's final ping (ignored once finished: the
        ping may be on its way)."""
        if self.finished:
            log_once(
                logger,
                logging.INFO,
                "report-after-finish",
                "TelemHQ: report() called after the run finished; the metrics are ignored",
            )
            return
        self._add_metrics(fields)

    def _add_metrics(self, fields: dict[str, Any]) -> None:
        if self.metrics is None:
            self.metrics = fields  # ``**fields``: a dict of the caller's own
        else:
            self.metrics.update(fields)

    def start(self, *, ping_id: str | None = None) -> None:
        """Send the ``start`` ping (pairs with the final ping by ``run_id``). ``ping_id``: the
        ping's id when the adapter derives one (e.g. ``stable_ping_id``), else a new one."""
        if self.url is None:
            return
        ping = Ping(
            status="start",
            ping_id=ping_id or new_id(),
            job=self.job,
            orchestrator=self.orchestrator,
            run_id=self.run_id,
            started_at=self.started_at,
            attempt=self.attempt,
            fields=dict(self._fields()),  # a copy: the run's own dicts may still change
        )
        self.client.enqueue(ping, self.url)

    def finish(
        self,
        status: Status = "success",
        *,
        error: BaseException | ErrorInfo | None = None,
        duration_ms: float | None = None,
        ping_id: str | None = None,
        **fields: Any,
    ) -> bool:
        """Queue the final ping once; later calls are ignored. True when it was queued.

        ``ping_id``: the final ping's id when the adapter derives one (``stable_ping_id``: the
        same event reported twice is stored once), else a new one."""
        if self.finished:
            return False
        self.finished = True
        token = self._context_token
        if token is not None:  # bound (``bind=True``): unbind
            self._context_token = None
            try:
                _current.reset(token)
            except ValueError:
                _forget(self)
        if self.url is None:
            return False
        if duration_ms is None and self.timed:
            duration_ms = (time.monotonic() - self._started) * 1000.0
        self.finished_at = _utcnow()
        self.status = status
        self.duration = duration_ms
        self.ping_id = ping_id
        if error is not None:
            # The traceback is formatted now: the exception's frames may change after this.
            self.error = (
                ErrorInfo.from_exception(error) if isinstance(error, BaseException) else error
            )
        if fields:
            self._add_metrics(fields)
        return self.client.enqueue(self, self.url)

    def to_ping(self) -> Ping:
        """The final ping of a finished run (delivery calls this on its own thread, when
        plugin hooks want a ``Ping``)."""
        ping = Ping(*self._parts(self.ping_id or new_id()))
        ping.fields = dict(ping.fields)  # its own: a plugin hook may change it
        return ping

    def encode(self) -> tuple[str, bytes]:
        """The final ping's id and body, as ``to_ping().encode()`` without the ``Ping``
        (delivery's path when no plugin hook wants one)."""
        ping_id = self.ping_id or new_id()
        return ping_id, encode_body(self._parts(ping_id))

    def _parts(self, ping_id: str) -> PingParts:
        return (
            self.status or "success",
            self.job,
            self.orchestrator,
            self.run_id,
            ping_id,
            self.duration,
            self.started_at,
            self.finished_at,
            self.attempt,
            self.error,
            HOST,
            self._fields(),
        )

    def _fields(self) -> dict[str, Any]:
        """The custom top-level fields: ``context``, the orchestrator's object, the metrics
        (later ones win). ``context`` itself when that is all (not to be changed)."""
        context, details, metrics = self.context, self.details, self.metrics
        if details is None and metrics is None:
            return _NO_FIELDS if context is None else context
        fields = {} if context is None else dict(context)
        if details is not None:
            fields[self.orchestrator or "details"] = details
        if metrics is not None:
            fields.update(metrics)
        return fields


_NO_FIELDS: dict[str, Any] = {}  # shared, never changed (see ``Run._fields``)


def _forget(run: Run) -> None:
    """Unbind from another context than the one the run was bound in (the token cannot be
    reset there): clear this context's current run if it is ``run``."""
    if _current.get() is run:
        _current.set(None)


@dataclass(frozen=True, slots=True)
class Target:
    """Where a monitored job's pings go, whether its runs send ``start``, and the client that
    sends them. An adapter resolves it once per job (:func:`resolve_target`) and builds a
    :class:`Run` from it for every task, so no task pays for the resolution."""

    url: str
    send_start: bool
    client: Client

    def run(
        self,
        job: str | None,
        *,
        orchestrator: str,
        run_id: str | None = None,
        attempt: int | None = None,
        details: dict[str, Any] | None = None,
        timed: bool = True,
        started_at: dt.datetime | None = None,
    ) -> Run:
        """A run of ``job`` whose pings go here, timed from now; ``timed=False`` when the
        adapter learns of the run only at its end, with ``started_at`` as the orchestrator
        knows it. Sends nothing: the adapter calls ``start()`` when :attr:`send_start` says
        so (with the ping id it derives, if any)."""
        return Run(
            job,
            url=self.url,
            client=self.client,
            orchestrator=orchestrator,
            run_id=run_id,
            attempt=attempt,
            details=details,
            timed=timed,
            started_at=started_at,
        )


def resolve_target(
    job: str | None,
    *,
    token: str | None = None,
    send_start: bool | None = None,
    client: Client | None = None,
) -> Target | None:
    """Where ``job``'s pings go, or None when TelemHQ is disabled or the job has no tracker
    (logged once). ``send_start`` None means ``settings.send_start``."""
    client = client or get_client()
    settings = client.settings
    if settings.disabled:
        return None
    url = settings.ping_url_for(job, token)
    if url is None:
        warn_unconfigured(job)
        return None
    return Target(url, settings.send_start if send_start is None else send_start, client)


def start_run(
    job: str | None,
    *,
    token: str | None = None,
    orchestrator: str | None = None,
    run_id: str | None = None,
    attempt: int | None = None,
    context: dict[str, Any] | None = None,
    details: dict[str, Any] | None = None,
    send_start: bool | None = None,
    bind: bool = True,
    client: Client | None = None,
) -> Run:
    """Begin a run of ``job``: resolve its ping URL, start the clock, optionally send
    ``start`` (default: ``settings.send_start``) and bind it for :func:`report`. Never raises;
    a job with no tracker gets an inert run (logged once)."""
    client = client or get_client()
    target = resolve_target(job, token=token, send_start=send_start, client=client)
    current = Run(
        job,
        url=None if target is None else target.url,
        client=client,
        orchestrator=orchestrator,
        run_id=run_id,
        attempt=attempt,
        context=context,
        details=details,
        bind=bind,
    )
    if target is not None and target.send_start:
        current.start()
    return current


def add_run_finder(finder: RunFinder) -> None:
    """Let :func:`report` and :func:`current_run` ask ``finder`` for the run executing here
    when none is bound in this context.

    For an adapter whose tasks run often: its runs need not be bound, and binding
    (``ContextVar.set`` and ``reset``, dearer in a busy worker than in a quiet loop) is paid
    by every task, while a finder costs only the calls to ``report()``. A
    bound run (a ``monitored()`` block inside a task) still comes first."""
    if finder not in _finders:
        _finders.append(finder)


def remove_run_finder(finder: RunFinder) -> None:
    with contextlib.suppress(ValueError):
        _finders.remove(finder)


def current_run() -> Run | None:
    """The run executing in this context, if any."""
    current = _current.get()
    if current is None:
        for finder in _finders:
            with capture_internal_errors("run finder"):
                current = finder()
            if current is not None:
                break
    return current


def report(**fields: Any) -> None:
    """Add metrics to the ping of the run executing in this context::

        telemhq_plugins.report(records_processed=450, cost_usd=0.12)

    Works inside any instrumented task (Airflow, Prefect, Dagster, Celery) and inside
    :func:`monitor` / :class:`monitored`. Outside a run it does nothing (logged once)."""
    current = current_run()
    if current is None:
        log_once(
            logger,
            logging.INFO,
            "report-outside-run",
            "TelemHQ: report() called outside a monitored run; the metrics are ignored",
        )
        return
    current.report(**fields)


def _status_for(exc: BaseException) -> Status:
    if isinstance(exc, (asyncio.CancelledError, KeyboardInterrupt)):
        return "cancelled"
    if isinstance(exc, SystemExit) and exc.code in (0, None):
        return "success"
    return "failure"


class monitored:
    """Monitor a block, sync or async, as :func:`monitor` monitors a function::

        with telemhq_plugins.monitored("nightly-sync", token="...") as r:
            r.report(records_processed=n)

    The block's value is its :class:`Run`. Success on a clean exit; failure (with the error)
    when the block raises, and the exception propagates unchanged."""

    def __init__(
        self,
        job: str | None = None,
        *,
        token: str | None = None,
        send_start: bool | None = None,
        **fields: Any,
    ) -> None:
        self._args = (job, token, send_start)
        self._fields = fields
        self._run: Run | None = None

    def __enter__(self) -> Run:
        job, token, send_start = self._args
        current = start_run(job, token=token, send_start=send_start)
        current.report(**self._fields)
        self._run = current
        return current

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        current = self._run
        if current is None:
            return
        with capture_internal_errors("monitored.__exit__"):
            if exc is None:
                current.finish("success")
            else:
                current.finish(
                    _status_for(exc), error=exc if _status_for(exc) != "success" else None
                )

    async def __aenter__(self) -> Run:
        return self.__enter__()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.__exit__(exc_type, exc, tb)


#: The first name of :class:`monitored`, kept for code written against it (it differs from
#: :class:`Run`, the run object, only by case).
run = monitored


def _module_name(fn: Callable[..., Any]) -> str:
    """``fn``'s module; in a script's ``__main__``, the module run (``python -m pkg.nightly``:
    ``pkg.nightly``) or the script's name (``python nightly.py``: ``nightly``), so that two
    scripts never share a job named ``__main__``."""
    module = fn.__module__
    if module != "__main__":
        return module
    main = sys.modules.get("__main__")
    spec = getattr(main, "__spec__", None)
    if spec is not None and spec.name:
        return str(spec.name).removesuffix(".__main__")
    path = getattr(main, "__file__", None)
    return Path(path).stem if path else module


@overload
def monitor(func: Callable[P, R], /) -> Callable[P, R]: ...
@overload
def monitor(
    *, token: str | None = None, job: str | None = None, send_start: bool | None = None
) -> Callable[[Callable[P, R]], Callable[P, R]]: ...
def monitor(
    func: Callable[P, R] | None = None,
    /,
    *,
    token: str | None = None,
    job: str | None = None,
    send_start: bool | None = None,
) -> Any:
    """Decorate a sync or async function so each call is one monitored run::

        @telemhq_plugins.monitor(token="...")
        def nightly_sync(): ...

    The job name defaults to ``module.qualname`` of the function (in a script, the script's
    or ``-m`` module's name rather than ``__main__``)."""

    def decorate(fn: Callable[P, R]) -> Callable[P, R]:
        name = job or f"{_module_name(fn)}.{fn.__qualname__}"
        if inspect.iscoroutinefunction(fn):
            async_fn: Callable[P, Awaitable[Any]] = fn

            @functools.wraps(fn)
            async def async_wrapper(*args: P.args, **kwargs: P.kwargs) -> Any:
                async with monitored(name, token=token, send_start=send_start):
                    return await async_fn(*args, **kwargs)

            return async_wrapper  # type: ignore[return-value]

        @functools.wraps(fn)
        def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
            with monitored(name, token=token, send_start=send_start):
                return fn(*args, **kwargs)

        return wrapper

    return decorate(func) if func is not None else decorate
