"""TelemHQ for Dagster: step hooks, run status sensors and a resource.

::

    from dagster import Definitions, job, op
    from telemhq_plugins.dagster import telemhq_hooks, telemhq_sensors

    @job(hooks=telemhq_hooks())          # one ping per step: "<job>.<op>"
    def etl(): ...

    defs = Definitions(jobs=[etl], sensors=telemhq_sensors())   # one ping per run: "<job>"

``telemhq_plugins.report(...)`` inside an op or asset adds metrics to that step's ping.
"""

from __future__ import annotations

try:
    import dagster  # noqa: F401
except ImportError as exc:  # pragma: no cover - exercised in an environment without dagster
    raise ImportError(
        "telemhq_plugins.dagster needs Dagster, which is not installed: "
        'install telemhq-plugins with its "dagster" extra: pip install ".[dagster]" in a checkout, '
        'or pip install "./dist/<wheel>[dagster]" with the wheel that make dist builds'
    ) from exc

from telemhq_plugins.dagster.hooks import telemhq_hooks
from telemhq_plugins.dagster.resources import TelemHQResource
from telemhq_plugins.dagster.sensors import telemhq_sensors

__all__ = ["TelemHQResource", "telemhq_hooks", "telemhq_sensors"]
