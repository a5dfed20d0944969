"""``CeleryInstrumentor``: connect the receivers to Celery's public signals, and take them off.

An :class:`~telemhq_plugins.core.instrumentor.Instrumentor`: one per process, ``instrument()``
twice connects once (Celery 5.3 or later), ``uninstrument()`` disconnects everything it
connected and forgets open runs.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, TypedDict, Unpack

from celery import signals
from celery.utils.dispatch import Signal

from telemhq_plugins.celery._context import DEFAULT_EXCLUDE
from telemhq_plugins.celery._handlers import Handlers
from telemhq_plugins.celery.beat import BeatScheduleSync
from telemhq_plugins.core.config import env_flag
from telemhq_plugins.core.instrumentor import Instrumentor
from telemhq_plugins.core.logs import capture_internal_errors
from telemhq_plugins.core.runs import add_run_finder, remove_run_finder

__all__ = ["CeleryInstrumentor", "CeleryOptions", "instrument", "setup", "uninstrument"]


class CeleryOptions(TypedDict, total=False):
    """The options of :func:`instrument` (see :class:`CeleryInstrumentor`)."""

    include: Iterable[str] | None
    exclude: Iterable[str] | None
    send_start: bool | None
    beat_schedules: bool | None
    beat_grace: float
    api_key: str | None


class CeleryInstrumentor(Instrumentor):
    """Monitor every Celery task of this process through signals::

        CeleryInstrumentor().instrument(app)          # or telemhq_plugins.celery.setup(app)
        CeleryInstrumentor().uninstrument()

    Options of :meth:`instrument`:

    * ``app``: only tasks of this app (default: every task in the process);
    * ``include`` / ``exclude``: globs over task names (default exclude ``celery.*``);
      a task's own ``telemhq={"enabled": ...}`` option wins over both;
    * ``send_start``: send a ``start`` ping at prerun (default: ``TELEMHQ_SEND_START``);
    * ``beat_schedules``: when beat starts, push each entry's schedule to its tracker through
      the management API (default: ``TELEMHQ_CELERY_BEAT_SCHEDULES=1``; off otherwise);
    * ``beat_grace``: grace period in seconds for pushed schedules (default 300);
    * ``api_key``: management API key for the push (default: ``TELEMHQ_API_KEY``).
    """

    instruments = ("celery", ">=5.3,<6")

    def _init_state(self) -> None:
        self._handlers: Handlers | None = None
        self._beat_sync: BeatScheduleSync | None = None
        #: what ``_instrument`` connected so far, for ``_uninstrument`` to take back.
        self._connected: list[tuple[Signal, Any]] = []

    @property
    def beat_sync(self) -> BeatScheduleSync | None:
        """The beat schedule pusher (its thread and results), when ``beat_schedules`` is on."""
        return self._beat_sync

    @property
    def handlers(self) -> Handlers | None:
        """The connected receivers (their open runs), while instrumented."""
        return self._handlers

    def _instrument(
        self,
        app: Any = None,
        *,
        include: Iterable[str] | None = None,
        exclude: Iterable[str] | None = None,
        send_start: bool | None = None,
        beat_schedules: bool | None = None,
        beat_grace: float = 300.0,
        api_key: str | None = None,
    ) -> None:
        self._connected = []
        handlers = Handlers(
            app=app,
            include=tuple(include or ()),
            exclude=DEFAULT_EXCLUDE if exclude is None else tuple(exclude),
            send_start=send_start,
        )
        pairs: list[tuple[Signal, Any]] = [
            (signals.task_prerun, handlers.on_prerun),
            (signals.task_failure, handlers.on_failure),
            (signals.task_retry, handlers.on_retry),
            (signals.task_postrun, handlers.on_postrun),
            (signals.task_revoked, handlers.on_revoked),
            (signals.task_received, handlers.on_received),
            (signals.worker_process_shutdown, handlers.on_shutdown),
            (signals.worker_shutdown, handlers.on_shutdown),
        ]
        if beat_schedules is None:
            beat_schedules = env_flag("TELEMHQ_CELERY_BEAT_SCHEDULES")
        sync: BeatScheduleSync | None = None
        if beat_schedules:
            sync = BeatScheduleSync(
                app=app,
                grace=beat_grace,
                api_key=api_key,
                include=handlers.include,
                exclude=handlers.exclude,
            )
            pairs.append((signals.beat_init, sync.on_beat_init))
        for signal, receiver in pairs:
            # Strong references: the receivers live exactly as long as instrumentation.
            signal.connect(receiver, weak=False)
            self._connected.append((signal, receiver))
        add_run_finder(handlers.current)
        self._handlers = handlers
        self._beat_sync = sync

    def _uninstrument(self) -> None:
        """Disconnect every receiver connected so far. Open runs are dropped without a ping
        (their tasks keep running untouched)."""
        handlers, self._handlers, self._beat_sync = self._handlers, None, None
        if handlers is not None:
            with capture_internal_errors("celery.uninstrument"):
                remove_run_finder(handlers.current)
                handlers.runs.clear()
                handlers.by_thread.clear()
        for signal, receiver in self._connected:
            with capture_internal_errors("celery.disconnect"):
                signal.disconnect(receiver)
        self._connected = []


def instrument(app: Any = None, **options: Unpack[CeleryOptions]) -> bool:
    """Monitor the tasks of ``app`` (default: every task of the process; see
    :class:`CeleryInstrumentor` for the options); True if this call instrumented::

        app = Celery("proj")
        telemhq_plugins.celery.instrument(app)

    Raises :class:`~telemhq_plugins.core.instrumentor.UnsupportedOrchestrator` when the
    installed Celery is not a supported version (``TELEMHQ_CELERY_AUTO=1`` only logs it)."""
    instrumentor = CeleryInstrumentor()
    instrumentor.require()
    return instrumentor.instrument(app, **options)


def uninstrument() -> bool:
    """Undo :func:`instrument`: every receiver disconnected. True if it was on."""
    return CeleryInstrumentor().uninstrument()


def setup(app: Any = None, **options: Unpack[CeleryOptions]) -> CeleryInstrumentor:
    """:func:`instrument` under its first name, returning the instrumentor::

    app = Celery("proj")
    telemhq_plugins.celery.setup(app)
    """
    instrument(app, **options)
    return CeleryInstrumentor()
