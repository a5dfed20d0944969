"""The task instance and DAG run in Airflow's own UI, from Airflow's ``[api] base_url``.

The base is read once per process from Airflow's configuration (``airflow.cfg`` or
``AIRFLOW__API__BASE_URL``); unset or unreadable, pings carry no link. The paths are the
UI's: ``/dags/<dag_id>/runs/<run_id>[/tasks/<task_id>[/mapped/<map_index>]]``.
"""

from __future__ import annotations

import functools

from telemhq_plugins.core.links import ui_base, ui_link

__all__ = ["base_url", "dag_run_url", "task_url"]


@functools.cache
def base_url() -> str | None:
    """Airflow's ``[api] base_url``, None when it is unset or cannot be read."""
    try:
        from airflow.configuration import conf

        return ui_base(conf.get("api", "base_url", fallback=None))
    except Exception:  # no airflow-core here (a Task SDK worker), or a broken config
        return None


def dag_run_url(dag_id: str, run_id: str) -> str | None:
    return ui_link(base_url(), "dags", dag_id, "runs", run_id)


def task_url(dag_id: str, run_id: str, task_id: str, map_index: int) -> str | None:
    url = ui_link(base_url(), "dags", dag_id, "runs", run_id, "tasks", task_id)
    if url is not None and map_index >= 0:
        url += f"/mapped/{map_index}"
    return url
