"""``AirflowInstrumentor``: the listener switched on from code, in this process.

The plugin (``TELEMHQ_AIRFLOW_AUTO=1``) is the way for an Airflow deployment: each component
registers the listener as it loads its plugins. ``AirflowInstrumentor().instrument(...)``
registers one in this process's listener managers directly (a script that runs
``dag.test()``, a test, a benchmark) and ``uninstrument()`` takes it off again.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from telemhq_plugins.airflow._events import reporter
from telemhq_plugins.airflow.listener import TelemHQListener
from telemhq_plugins.core.instrumentor import Instrumentor

__all__ = ["AirflowInstrumentor"]


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
    except ImportError:  # Airflow 2: one manager for both
        pass
    else:
        managers.append(task_listener_manager())
    return managers


class AirflowInstrumentor(Instrumentor):
    """Registers a :class:`TelemHQListener` in this process (see the module docstring)."""

    instruments = ("apache-airflow", "2.10")

    def __init__(self) -> None:
        if not hasattr(self, "listener"):
            self.listener: TelemHQListener | None = None
            self._managers: list[Any] = []

    def _instrument(
        self,
        *,
        include: Sequence[str] = (),
        exclude: Sequence[str] = (),
        send_start: bool | None = None,
        sync_schedules: bool = False,
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
