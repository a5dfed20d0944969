"""TelemHQ for Airflow: one ping per task try and per DAG run.

Three ways, which can be combined (one ping per event either way):

* the listener plugin, for every DAG with no DAG code: ``TELEMHQ_AIRFLOW_AUTO=1`` (or
  ``[telemhq] auto = True`` in Airflow's config); in one process (a script running
  ``dag.test()``), ``instrument()`` / ``uninstrument()``;
* callbacks in the DAG file::

      from telemhq_plugins.airflow import callbacks, dag_callbacks

      @dag(schedule="@daily", default_args={"retries": 2, **callbacks()}, **dag_callbacks())
      def etl(): ...

* the ``telemhq_default`` connection (host: base URL, password: ping key or token) in place
  of ``TELEMHQ_*`` variables.

A task's job is ``dag_id.task_id`` (run id: DAG run, task and map index; attempt: the try
number); a DAG run's job is its ``dag_id``. ``telemhq_plugins.report(...)`` inside a task adds
metrics to its ping.
"""

from __future__ import annotations

# Before the modules that import it: a missing Apache Airflow is an ImportError naming the extra.
from telemhq_plugins.airflow import _orchestrator  # noqa: F401
from telemhq_plugins.airflow._callbacks import DagCallback, TaskCallback, callbacks, dag_callbacks
from telemhq_plugins.airflow._events import reporter
from telemhq_plugins.airflow._instrumentor import (
    AirflowInstrumentor,
    AirflowOptions,
    instrument,
    uninstrument,
)
from telemhq_plugins.airflow.hooks import TelemHQHook
from telemhq_plugins.airflow.listener import TelemHQListener
from telemhq_plugins.core.runs import add_run_finder

__all__ = [
    "AirflowInstrumentor",
    "AirflowOptions",
    "DagCallback",
    "TaskCallback",
    "TelemHQHook",
    "TelemHQListener",
    "callbacks",
    "dag_callbacks",
    "instrument",
    "uninstrument",
]

# ``report()`` inside a monitored task reaches its run through Airflow's task context.
add_run_finder(reporter.current)
