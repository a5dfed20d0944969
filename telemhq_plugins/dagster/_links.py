"""The run in Dagster's own UI, from ``TELEMHQ_DAGSTER_UI_URL``.

A run's process has no setting of Dagster's for its webserver's address, so the link is made
only where this setting (environment, else ``telemhq.toml``) gives the base; it is read once
per process. The path is the UI's: ``/runs/<run_id>``.
"""

from __future__ import annotations

import functools

from telemhq_plugins.core.config import env_setting
from telemhq_plugins.core.links import ui_base, ui_link

__all__ = ["base_url", "run_url"]


@functools.cache
def base_url() -> str | None:
    """``TELEMHQ_DAGSTER_UI_URL`` as a base URL, None when unset or not an http(s) URL."""
    return ui_base(env_setting("TELEMHQ_DAGSTER_UI_URL"))


def run_url(run_id: str) -> str | None:
    return ui_link(base_url(), "runs", run_id)
