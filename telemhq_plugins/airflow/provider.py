"""Provider metadata (the ``apache_airflow_provider`` entry point): the ``telemhq``
connection type and its hook, listed in Airflow's UI and ``airflow providers``, and the
``[telemhq]`` options, listed by ``airflow config list`` with their descriptions.

Every option is declared without a default: a default in Airflow's config would hide the
``TELEMHQ_*`` variable each option falls back to (see :mod:`telemhq_plugins.airflow.conf`), so
each description states the default instead.
"""

from __future__ import annotations

from typing import Any

__all__ = ["CONFIG_OPTIONS", "get_provider_info"]

#: ``[telemhq]`` option -> (type, description, example).
CONFIG_OPTIONS: dict[str, tuple[str, str, str]] = {
    "auto": (
        "boolean",
        "Report every DAG through the listener plugin. Unset: TELEMHQ_AIRFLOW_AUTO, else off "
        "(the plugin loads and sends nothing).",
        "True",
    ),
    "include": (
        "string",
        "Comma-separated dag_id globs the listener reports. Unset: TELEMHQ_AIRFLOW_INCLUDE, "
        "else every DAG.",
        "etl_*, ml_*",
    ),
    "exclude": (
        "string",
        "Comma-separated dag_id globs the listener leaves alone. Unset: "
        "TELEMHQ_AIRFLOW_EXCLUDE, else none.",
        "*_tmp",
    ),
    "send_start": (
        "boolean",
        "Send a start ping when a task try or DAG run starts. Unset: TELEMHQ_SEND_START, else off.",
        "True",
    ),
    "sync_schedules": (
        "boolean",
        "Push a DAG's schedule to its tracker at the end of each DAG run (needs a management "
        "API key). Unset: TELEMHQ_AIRFLOW_SYNC, else on.",
        "False",
    ),
    "conn_id": (
        "string",
        "The Airflow connection read when no TELEMHQ_* setting names where pings go. Unset: "
        "TELEMHQ_AIRFLOW_CONN_ID, else telemhq_default.",
        "telemhq_default",
    ),
}


def get_provider_info() -> dict[str, Any]:
    return {
        "package-name": "telemhq-plugins",
        "name": "TelemHQ",
        "description": "Job monitoring: a ping per task try and DAG run, schedules synced to "
        "TelemHQ trackers.",
        "integrations": [{"integration-name": "TelemHQ", "tags": ["service"]}],
        "hooks": [
            {
                "integration-name": "TelemHQ",
                "python-modules": ["telemhq_plugins.airflow.hooks"],
            }
        ],
        "connection-types": [
            {
                "hook-class-name": "telemhq_plugins.airflow.hooks.TelemHQHook",
                "connection-type": "telemhq",
            }
        ],
        "config": {
            "telemhq": {
                "description": "TelemHQ job monitoring: the listener plugin and schedule sync. "
                "Each option falls back to a TELEMHQ_* variable when unset.",
                "options": {
                    name: {
                        "description": description,
                        "version_added": None,
                        "type": kind,
                        "example": example,
                        "default": None,
                    }
                    for name, (kind, description, example) in CONFIG_OPTIONS.items()
                },
            }
        },
    }
