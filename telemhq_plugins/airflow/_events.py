"""Airflow events to runs: the one place callbacks and the listener report through.

Every reporter (a task or DAG callback, the listener) calls :data:`reporter` with the Airflow
objects it was given and where the pings go. The reporter

* sends one ping per event: the first reporter of an event (a try's start or end, a DAG
  run's end) claims it and the others are ignored, whatever order Airflow calls them in;
  the key holds the try number, so a retry's end never hides the next try's. Across
  processes (the scheduler's listener and the DAG processor's callback of one DAG run) the
  ping id is derived from the event (``stable_ping_id``), and the server stores it once;
* keeps the open run of each try, which ``telemhq_plugins.report()`` reaches through a run
  finder over Airflow's current task context;
* flushes delivery after each task's final event and each DAG callback, bounded by
  ``settings.flush_timeout``: Airflow ends a task process with ``os._exit`` and runs DAG
  callbacks in a child of the DAG processor, where the exit flush may never run. (The
  scheduler, where the listener sees DAG runs end, lives on: nothing waits there.)
"""

from __future__ import annotations

import collections
import datetime as dt
import logging
import threading
from collections.abc import Callable
from typing import Any, cast

from telemhq_plugins.airflow._client import airflow_client, existing_client
from telemhq_plugins.airflow._identity import (
    DagRunIdentity,
    dag_block,
    dag_end,
    dag_identity,
    dag_start,
    elapsed_ms,
    task_block,
    task_identity,
    task_start,
)
from telemhq_plugins.core.delivery import Client
from telemhq_plugins.core.logs import log_once
from telemhq_plugins.core.once import OnceSet
from telemhq_plugins.core.payload import ErrorInfo, Status, stable_ping_id
from telemhq_plugins.core.policy import JobPolicy
from telemhq_plugins.core.runs import Run, Target, resolve_target

__all__ = ["ORCHESTRATOR", "Reporter", "TaskSource", "reporter"]

logger = logging.getLogger("telemhq")

ORCHESTRATOR = "airflow"
_DONE_MAX = 4096
#: at most this many failed tasks are named in a DAG run's failure message.
_TASKS_NAMED = 5


#: answers whether a task is monitored, and how, from its task instance (None: not by me).
TaskSource = Callable[[Any], JobPolicy | None]


def _error(error: Any) -> BaseException | ErrorInfo | None:
    if isinstance(error, BaseException):
        return error
    if error:
        return ErrorInfo("AirflowTaskFailure", str(error))
    return None


def _context_getter() -> Callable[[], Any]:
    from airflow.sdk import get_current_context

    return cast("Callable[[], Any]", get_current_context)


def _current_context() -> Any:
    """Airflow's context of the task executing here, or None outside a task."""
    try:
        return _context_getter()()
    except Exception:  # outside a task: Airflow raises
        return None


def _target(job: str, options: JobPolicy) -> Target | None:
    return resolve_target(
        job, token=options.token, send_start=options.send_start, client=airflow_client()
    )


class Reporter:
    """The runs of this process's tasks and DAG runs (see the module docstring)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        #: the open run of each try, by (run id, try number): timing, metrics, start ping.
        self._open: dict[tuple[str, int | None], Run] = {}
        #: events already reported: (run id, try number, "start" | "end").
        self._done = OnceSet(limit=_DONE_MAX)
        self._sources: list[TaskSource] = []
        #: the failed tasks this process reported, and their errors, by DAG run (dag_id,
        #: run_id): a DAG run's failure ping names them.
        self._failed: collections.OrderedDict[tuple[str, str], list[tuple[str, ErrorInfo]]] = (
            collections.OrderedDict()
        )

    # -- who monitors what ----------------------------------------------------------------------

    def add_source(self, source: TaskSource) -> None:
        """Register how a reporter tells whether a task is monitored (for ``report()``)."""
        with self._lock:
            if source not in self._sources:
                self._sources.append(source)

    def remove_source(self, source: TaskSource) -> None:
        with self._lock:
            if source in self._sources:
                self._sources.remove(source)

    def options_for(self, ti: Any) -> JobPolicy | None:
        for source in list(self._sources):
            options = source(ti)
            if options is not None:
                return options
        return None

    def claim(self, key: tuple[str, int | None, str]) -> bool:
        """True for the first reporter of an event, False for every later one."""
        return self._done.claim(key)

    # -- tasks ----------------------------------------------------------------------------------

    def task_started(self, ti: Any, context: Any, options: JobPolicy) -> None:
        """A try began: open its run, send ``start`` when asked."""
        identity = task_identity(ti)
        if not self.claim((identity.run_id, identity.try_number, "start")):
            return
        target = _target(identity.job, options)
        if target is None:
            return
        # Airflow knows when the try started: the run is not timed here.
        current = target.run(
            identity.job,
            orchestrator=ORCHESTRATOR,
            run_id=identity.run_id,
            attempt=identity.try_number,
            details=task_block(ti, identity, context),
            timed=False,
            started_at=task_start(ti),
        )
        with self._lock:
            previous = self._open.get(identity.key)
            if previous is not None and previous.metrics:  # report() ran before the start
                current.metrics = previous.metrics
            self._open[identity.key] = current
        if target.send_start:
            current.start(ping_id=stable_ping_id(identity.run_id, identity.try_number, "start"))

    def task_finished(
        self,
        ti: Any,
        context: Any,
        status: Status,
        options: JobPolicy,
        error: Any = None,
    ) -> None:
        """A try ended (``success``, ``failure``, ``retry`` or ``skipped``): one final ping,
        then a bounded flush."""
        identity = task_identity(ti)
        with self._lock:
            opened = self._open.pop(identity.key, None)
        if not self.claim((identity.run_id, identity.try_number, "end")):
            return
        target = _target(identity.job, options)
        if target is None:
            return
        started = task_start(ti)
        final = target.run(
            identity.job,
            orchestrator=ORCHESTRATOR,
            run_id=identity.run_id,
            attempt=identity.try_number,
            details=task_block(ti, identity, context),
            timed=False,
            started_at=started,
        )
        if opened is not None and opened.metrics:
            final.metrics = dict(opened.metrics)
        ended = getattr(ti, "end_date", None)
        final.finish(
            status,
            ping_id=stable_ping_id(identity.run_id, identity.try_number, status),
            error=_error(error),
            duration_ms=elapsed_ms(started, ended if isinstance(ended, dt.datetime) else None),
        )
        if status == "failure" and final.error is not None:
            with self._lock:
                failed = self._failed.setdefault((identity.dag_id, identity.dag_run_id), [])
                failed.append((identity.task_id, final.error))
                if len(self._failed) > _DONE_MAX:
                    self._failed.popitem(last=False)
        self.flush(final)

    def current(self) -> Run | None:
        """The run finder: the open run of the task executing here, opened on first use
        (``report()`` before any start event) when the task is monitored."""
        context = _current_context()
        if context is None:
            return None
        ti = context.get("ti") or context.get("task_instance")
        if ti is None:
            return None
        identity = task_identity(ti)
        with self._lock:
            found = self._open.get(identity.key)
        if found is not None:
            return found
        if self.options_for(ti) is None:
            return None
        holder = Run(
            identity.job,
            url=None,  # only holds report()'s metrics until the final event
            client=airflow_client(),
            orchestrator=ORCHESTRATOR,
            run_id=identity.run_id,
            attempt=identity.try_number,
            timed=False,
        )
        with self._lock:
            return self._open.setdefault(identity.key, holder)

    # -- DAG runs -------------------------------------------------------------------------------

    def dag_started(self, dag_run: Any, options: JobPolicy) -> None:
        identity = dag_identity(dag_run)
        target = _target(identity.job, options)
        if target is None or not target.send_start:
            return
        if not self.claim((identity.run_id, None, "start")):
            return
        target.run(
            identity.job,
            orchestrator=ORCHESTRATOR,
            run_id=identity.run_id,
            details=dag_block(dag_run, identity, None),
            timed=False,
            started_at=dag_start(dag_run),
        ).start(ping_id=stable_ping_id(identity.run_id, None, "start"))

    def dag_finished(
        self,
        dag_run: Any,
        status: Status,
        options: JobPolicy,
        reason: str | None = None,
        *,
        flush: bool = True,
    ) -> None:
        """A DAG run ended: one final ping, then a bounded flush (``flush=False`` in the
        scheduler, which is long-lived: nothing waits there)."""
        identity = dag_identity(dag_run)
        if not self.claim((identity.run_id, None, "end")):
            return
        target = _target(identity.job, options)
        if target is None:
            return
        started = dag_start(dag_run)
        details = dag_block(dag_run, identity, reason)
        error = None
        if status == "failure":
            error, details["failed_tasks"] = self._dag_failure(dag_run, identity, reason)
        final = target.run(
            identity.job,
            orchestrator=ORCHESTRATOR,
            run_id=identity.run_id,
            details=details,
            timed=False,
            started_at=started,
        )
        final.finish(
            status,
            ping_id=stable_ping_id(identity.run_id, None, status),
            error=error,
            duration_ms=elapsed_ms(started, dag_end(dag_run)),
        )
        if flush:
            self.flush(final)

    def _dag_failure(
        self, dag_run: Any, identity: DagRunIdentity, reason: str | None
    ) -> tuple[ErrorInfo, list[str]]:
        """A failed DAG run's error and failed task ids, as a Dagster run names its failed
        steps: the first failed task's error (known when this process reported it), named
        after the failed tasks; else what Airflow says (``reason``)."""
        with self._lock:
            seen = list(self._failed.pop((identity.dag_id, identity.dag_run_id), []))
        tasks = list(dict.fromkeys([task for task, _ in seen] + _failed_task_ids(dag_run)))
        named = ", ".join(tasks[:_TASKS_NAMED]) + (" ..." if len(tasks) > _TASKS_NAMED else "")
        if seen:
            first = seen[0][1]
            return ErrorInfo(
                first.type, f"task {named} failed: {first.message}", first.traceback
            ), tasks
        if tasks:
            why = f" ({reason})" if reason else ""
            return ErrorInfo("DagRunFailed", f"task {named} failed{why}"), tasks
        return ErrorInfo("DagRunFailed", reason or f"DAG run {identity.dag_run_id} failed"), tasks

    # -- delivery -------------------------------------------------------------------------------

    def flush(self, run: Run) -> None:
        """Wait for queued pings, bounded by ``settings.flush_timeout``; a timeout is logged
        once (the pings stay queued, or spooled when a spool is set)."""
        _flush(run.client)

    def flush_existing(self) -> None:
        """Flush the process's client if there is one (nothing to wait for otherwise)."""
        client = existing_client()
        if client is not None:
            _flush(client)


def _failed_task_ids(dag_run: Any) -> list[str]:
    """The ids of a DAG run's failed tasks, from the scheduler's ``DagRun`` (its own session
    loads them); none from an object without them (a Task SDK ``DagRun``)."""
    try:
        instances = list(getattr(dag_run, "task_instances", None) or ())
    except Exception:  # detached from its session: nothing to load them with
        return []
    return [
        str(ti.task_id)
        for ti in instances
        if str(getattr(getattr(ti, "state", None), "value", getattr(ti, "state", None))) == "failed"
    ]


def _flush(client: Client) -> None:
    if not client.flush_or_spool():
        log_once(
            logger,
            logging.WARNING,
            ("airflow-flush-timeout", client.settings.base_url),
            "TelemHQ: pings not delivered within %.1f s (TELEMHQ_FLUSH_TIMEOUT) at the end "
            "of an Airflow task or DAG run; Airflow may end this process before they are",
            client.settings.flush_timeout,
        )


#: the process's reporter, shared by the callbacks and the listener.
reporter = Reporter()
