"""The ``telemhq`` Airflow plugin (``airflow.plugins`` entry point): the listener, when on.

Off by default: with neither ``TELEMHQ_AIRFLOW_AUTO=1`` nor ``[telemhq] auto = True`` the
plugin loads, registers no listener and sends nothing.
"""

from __future__ import annotations

from typing import Any

from airflow.plugins_manager import AirflowPlugin

from telemhq_plugins.airflow import conf
from telemhq_plugins.airflow._events import reporter
from telemhq_plugins.airflow.listener import TelemHQListener
from telemhq_plugins.core.config import ConfigError, Settings, log_config_error
from telemhq_plugins.core.delivery import Client, set_client
from telemhq_plugins.core.logs import capture_internal_errors

__all__ = ["TelemHQPlugin", "listener_from_conf"]


def listener_from_conf() -> TelemHQListener | None:
    """The listener as configured (``conf``), None when the plugin is off."""
    if not conf.auto():
        return None
    return TelemHQListener(
        include=conf.include(),
        exclude=conf.exclude(),
        send_start=conf.send_start(),
        sync_schedules=conf.sync_schedules(),
    )


def _listeners() -> list[Any]:
    found: list[Any] = []
    with capture_internal_errors("airflow.plugin"):
        try:
            conf.check()
        except ConfigError as exc:  # monitoring off for this process, the DAGs run as ever
            log_config_error(exc)
            set_client(Client(Settings(disabled=True)))
            return found
        listener = listener_from_conf()
        if listener is not None:
            reporter.add_source(listener.source)  # report() inside its tasks
            found.append(listener)
    return found


class TelemHQPlugin(AirflowPlugin):
    name = "telemhq"
    listeners = _listeners()
