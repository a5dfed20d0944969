"""TelemHQ for Dagster: step hooks, run status sensors and a resource.

::

    from dagster import Definitions, job, op
    from telemhq_plugins.dagster import telemhq_hooks, telemhq_sensors

    @job(hooks=telemhq_hooks())          # one ping per step: "<job>.<op>"
    def etl(): ...

    defs = Definitions(jobs=[etl], sensors=telemhq_sensors())   # one ping per run: "<job>"

``telemhq_plugins.report(...)`` inside an op or asset adds metrics to that step's ping.
Dagster has nothing to patch, so ``instrument()`` only checks that the installed Dagster is
supported (raising when it is not); the hooks and sensors make the same check and log it.
"""

from __future__ import annotations

# Before the modules that import it: a missing Dagster is an ImportError naming the extra.
from telemhq_plugins.dagster import _orchestrator  # noqa: F401
from telemhq_plugins.dagster._instrumentor import DagsterInstrumentor, instrument, uninstrument
from telemhq_plugins.dagster.hooks import telemhq_hooks
from telemhq_plugins.dagster.resources import TelemHQResource
from telemhq_plugins.dagster.sensors import telemhq_sensors

__all__ = [
    "DagsterInstrumentor",
    "TelemHQResource",
    "instrument",
    "telemhq_hooks",
    "telemhq_sensors",
    "uninstrument",
]
