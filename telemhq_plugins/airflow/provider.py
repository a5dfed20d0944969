"""Provider metadata (the ``apache_airflow_provider`` entry point): the ``telemhq``
connection type and its hook, listed in Airflow's UI and ``airflow providers``."""

from __future__ import annotations

from typing import Any

__all__ = ["get_provider_info"]


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
    }
