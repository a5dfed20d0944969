"""``AirflowInstrumentor``: the listener switched on from code, in this process.

The plugin (``TELEMHQ_AIRFLOW_AUTO=1``) is the way for an Airflow deployment: each component
registers the listener as it loads its plugins. ``telemhq_plugins.airflow.instrument(...)``
registers one in this process's listener managers directly (a script that runs
``dag.test()``, a test, a benchmark) and ``uninstrument()`` takes it off again.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, TypedDict, Unpack

from telemhq_plugins.airflow._events import reporter
from telemhq_plugins.airflow.listener import TelemHQListener
from telemhq_plugins.core.instrumentor import Instrumentor

__all__ = ["AirflowInstrumentor", "AirflowOptions", "instrument", "uninstrument"]


class AirflowOptions(TypedDict, total=False):
    """The options of :func:`instrument`: those of :class:`TelemHQListener`."""

    include: Sequence[str]
    exclude: Sequence[str]
    send_start: bool | None
    sync_schedules: bool


def _listener_managers() -> list[Any]:
    """The scheduler side's manager (DAG runs) and the Task SDK's (task instances)."""
    managers: list[Any] = []
    try:
        from airflow.listeners.listener import get_listener_manager
    except ImportError:  # a Task SDK worker without airflow-core
        pass
    else:
        managers.append(get_listener_manager())
    try:
        from airflow.sdk.listener import get_listener_manager as task_listener_manager
    except ImportError:  # an Airflow whose scheduler's manager serves tasks too
        pass
    else:
        managers.append(task_listener_manager())
    return managers


class AirflowInstrumentor(Instrumentor):
    """Registers a :class:`TelemHQListener` in this process (see the module docstring)."""

    instruments = ("apache-airflow", ">=3.0,<4")

    def _init_state(self) -> None:
        self.listener: TelemHQListener | None = None
        self._managers: list[Any] = []

    def _instrument(
        self,
        *,
        include: Sequence[str] = (),
        exclude: Sequence[str] = (),
        send_start: bool | None = None,
        sync_schedules: bool = True,
    ) -> None:
        listener = TelemHQListener(
            include=include, exclude=exclude, send_start=send_start, sync_schedules=sync_schedules
        )
        self.listener = listener
        reporter.add_source(listener.source)
        for manager in _listener_managers():
            self._managers.append(manager)
            manager.add_listener(listener)

    def _uninstrument(self) -> None:
        listener, self.listener = self.listener, None
        managers, self._managers = self._managers, []
        if listener is None:
            return
        for manager in managers:
            if manager.pm.is_registered(listener):
                manager.pm.unregister(listener)
        reporter.remove_source(listener.source)


def instrument(**options: Unpack[AirflowOptions]) -> bool:
    """Report every task try and DAG run of this process's (included) DAGs, as the listener
    plugin does in a deployment; True if this call instrumented::

        telemhq_plugins.airflow.instrument(include=["etl_*"])

    ``include`` / ``exclude``: ``dag_id`` globs; ``send_start`` (None: ``TELEMHQ_SEND_START``);
    ``sync_schedules``: at the end of each DAG run, its schedule becomes its tracker's (on, as
    ``[telemhq] sync_schedules``; needs an API key). Raises
    :class:`~telemhq_plugins.core.instrumentor.UnsupportedOrchestrator` when the installed
    Airflow is not a supported version (the plugin only logs it)."""
    instrumentor = AirflowInstrumentor()
    instrumentor.require()
    return instrumentor.instrument(**options)


def uninstrument() -> bool:
    """Undo :func:`instrument`: the listener taken off. True if it was on."""
    return AirflowInstrumentor().uninstrument()
