"""TelemHQ for Celery: one ping per task run, from Celery's public signals.

::

    from celery import Celery
    import telemhq_plugins.celery

    app = Celery("proj", broker="redis://localhost:6379/0")
    telemhq_plugins.celery.instrument(app) # or TELEMHQ_CELERY_AUTO=1 in the worker's environment

    @app.task(telemhq={"token": "..."})   # optional: token, enabled, send_start
    def load(): ...

The job name is the task name; the run id is the Celery task id (stable across retries).
"""

from __future__ import annotations

# Before the modules that import it: a missing Celery is an ImportError naming the extra.
from telemhq_plugins.celery import _orchestrator  # noqa: F401
from telemhq_plugins.celery._context import DEFAULT_EXCLUDE, resolve_policy
from telemhq_plugins.celery._instrumentor import (
    CeleryInstrumentor,
    CeleryOptions,
    instrument,
    setup,
    uninstrument,
)
from telemhq_plugins.celery.beat import BeatScheduleSync, schedule_spec
from telemhq_plugins.core.config import env_flag

__all__ = [
    "DEFAULT_EXCLUDE",
    "BeatScheduleSync",
    "CeleryInstrumentor",
    "CeleryOptions",
    "instrument",
    "resolve_policy",
    "schedule_spec",
    "setup",
    "uninstrument",
]

# ``TELEMHQ_CELERY_AUTO=1``: instrument every task of the process as soon as this package is
# imported (the ``celery`` command imports it through its ``celery.commands`` entry point).
if env_flag("TELEMHQ_CELERY_AUTO"):
    CeleryInstrumentor().instrument()
