"""The flow run and task run in Prefect's own UI, from Prefect's ``PREFECT_UI_URL`` setting.

The base is read once per process through ``prefect.settings`` (Prefect derives it from
``PREFECT_API_URL`` when only that is set); unset, pings carry no link.
"""

from __future__ import annotations

import functools

from telemhq_plugins.core.links import ui_base, ui_link

__all__ = ["base_url", "flow_run_url", "task_run_url"]


@functools.cache
def base_url() -> str | None:
    """Prefect's ``PREFECT_UI_URL``, None when it is unset or cannot be read."""
    try:
        from prefect.settings import PREFECT_UI_URL

        return ui_base(PREFECT_UI_URL.value())
    except Exception:  # a Prefect whose settings do not have it: no link
        return None


def flow_run_url(flow_run_id: object) -> str | None:
    return ui_link(base_url(), "runs", "flow-run", flow_run_id)


def task_run_url(task_run_id: object) -> str | None:
    return ui_link(base_url(), "runs", "task-run", task_run_id)
