"""Prefect's plugin entry point (``prefect.plugins`` group, name ``telemhq``).

With ``PREFECT_PLUGINS_ENABLED=1`` Prefect loads this module at ``import prefect`` and calls
:func:`setup_environment`; with ``TELEMHQ_PREFECT_AUTO=1`` it instruments every flow of the
process (and every task with ``TELEMHQ_PREFECT_TASKS=1``). It sets no environment variable.
"""

from __future__ import annotations

from typing import Any

from prefect.plugins import register_hook

from telemhq_plugins.core.config import env_flag
from telemhq_plugins.core.logs import capture_internal_errors
from telemhq_plugins.prefect._instrumentor import PrefectInstrumentor

__all__ = ["PREFECT_PLUGIN_API_REQUIRES", "setup_environment"]

#: the versions of Prefect's plugin API this module implements.
PREFECT_PLUGIN_API_REQUIRES = ">=0.1,<1"


@register_hook  # type: ignore[untyped-decorator, unused-ignore]
def setup_environment(*, ctx: Any) -> None:
    """Instrument when ``TELEMHQ_PREFECT_AUTO`` is on; no environment change (None)."""
    with capture_internal_errors("prefect plugin"):
        if env_flag("TELEMHQ_PREFECT_AUTO"):
            PrefectInstrumentor().instrument()
