"""``CeleryInstrumentor``: connect the receivers to Celery's public signals, and take them off.

A process-wide singleton, like OpenTelemetry's instrumentors: ``instrument()`` twice connects
once, ``uninstrument()`` disconnects everything it connected and forgets open runs.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Iterable
from typing import Any

from celery import signals
from celery.utils.dispatch import Signal

from telemhq_plugins.celery._context import DEFAULT_EXCLUDE
from telemhq_plugins.celery._handlers import Handlers
from telemhq_plugins.celery.beat import BeatScheduleSync
from telemhq_plugins.core.logs import capture_internal_errors
from telemhq_plugins.core.runs import add_run_finder, remove_run_finder

__all__ = ["CeleryInstrumentor", "setup"]

logger = logging.getLogger("telemhq")


class CeleryInstrumentor:
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

    _instance: CeleryInstrumentor | None = None
    _instance_lock = threading.Lock()

    def __new__(cls) -> CeleryInstrumentor:
        with cls._instance_lock:
            if cls._instance is None:
                instance = super().__new__(cls)
                instance._lock = threading.RLock()
                instance._handlers = None
                instance._connected = []
                instance._beat_sync = None
                cls._instance = instance
            return cls._instance

    _lock: threading.RLock
    _handlers: Handlers | None
    _connected: list[tuple[Signal, Any]]
    _beat_sync: BeatScheduleSync | None

    @property
    def is_instrumented(self) -> bool:
        return self._handlers is not None

    @property
    def beat_sync(self) -> BeatScheduleSync | None:
        """The beat schedule pusher (its thread and results), when ``beat_schedules`` is on."""
        return self._beat_sync

    @property
    def handlers(self) -> Handlers | None:
        """The connected receivers (their open runs), while instrumented."""
        return self._handlers

    def instrument(
        self,
        app: Any = None,
        *,
        include: Iterable[str] | None = None,
        exclude: Iterable[str] | None = None,
        send_start: bool | None = None,
        beat_schedules: bool | None = None,
        beat_grace: float = 300.0,
        api_key: str | None = None,
    ) -> bool:
        """Connect the receivers; True if this call did it, False if already instrumented.
        Never raises (a failure is logged and leaves Celery untouched)."""
        with self._lock:
            if self._handlers is not None:
                return False
            try:
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
                    beat_schedules = _env_flag("TELEMHQ_CELERY_BEAT_SCHEDULES")
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
            except Exception:
                # Half-connected is worse than not at all: take back what was connected.
                self._disconnect()
                logger.exception("TelemHQ: Celery instrumentation failed; tasks are unaffected")
                return False
            add_run_finder(handlers.current)
            self._handlers = handlers
            self._beat_sync = sync
            return True

    def uninstrument(self) -> bool:
        """Disconnect every receiver; True if something was connected. Open runs are dropped
        without a ping (their tasks keep running untouched)."""
        with self._lock:
            if self._handlers is None:
                return False
            with capture_internal_errors("celery.uninstrument"):
                self._handlers.runs.clear()
                self._handlers.by_thread.clear()
            self._disconnect()
            return True

    def _disconnect(self) -> None:
        if self._handlers is not None:
            remove_run_finder(self._handlers.current)
        for signal, receiver in self._connected:
            with capture_internal_errors("celery.disconnect"):
                signal.disconnect(receiver)
        self._connected = []
        self._handlers = None
        self._beat_sync = None


def setup(app: Any = None, **options: Any) -> CeleryInstrumentor:
    """Monitor the tasks of ``app`` (see :class:`CeleryInstrumentor` for the options)::

    app = Celery("proj")
    telemhq_plugins.celery.setup(app)
    """
    instrumentor = CeleryInstrumentor()
    instrumentor.instrument(app, **options)
    return instrumentor


def _env_flag(name: str) -> bool:
    return os.environ.get(name, "").strip().lower() in {"1", "true", "yes", "on"}
