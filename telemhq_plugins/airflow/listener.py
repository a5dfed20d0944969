"""The listener: every task try and DAG run of every (included) DAG, with no DAG code.

Airflow calls it from the task process (task events; ``before_stopping`` after each task)
and from the scheduler (DAG run events). Every body is guarded: an error of ours is logged
once and the task is unaffected. An event that a TelemHQ callback on the same task or DAG
also reports is left to the callback (whose options win); the reporter's per-try claim and
the derived ping ids keep it to one ping in any case.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from pluggy import HookimplMarker

from telemhq_plugins.airflow._callbacks import TaskEvent, has_dag_callback, has_task_callback
from telemhq_plugins.airflow._events import reporter
from telemhq_plugins.airflow.schedules import sync_dag
from telemhq_plugins.core.delivery import keep_replaying
from telemhq_plugins.core.logs import capture_internal_errors
from telemhq_plugins.core.payload import Status
from telemhq_plugins.core.policy import JobPolicy, resolve_policy

__all__ = ["TelemHQListener"]

_UP_FOR_RETRY = "up_for_retry"
#: Airflow's listener marker (``airflow.listeners.hookimpl`` is this, for project "airflow").
hookimpl = HookimplMarker("airflow")


def _state(ti: Any) -> str | None:
    state = getattr(ti, "state", None)
    return None if state is None else str(getattr(state, "value", state))


def _in_task_process(ti: Any) -> bool:
    """A Task SDK task instance: the listener runs in the task's own short-lived process. (The
    API server calls it with the scheduler's ``TaskInstance`` for a state set by hand.)"""
    return type(ti).__name__ == "RuntimeTaskInstance"


def _context(ti: Any) -> Any:
    """The task's context, in the task process only (where the Task SDK caches it)."""
    if not _in_task_process(ti):
        return None
    try:
        return ti.get_template_context()
    except Exception:
        return None


class TelemHQListener:
    """Reports task tries and DAG runs of the DAGs whose id passes ``include``/``exclude``."""

    def __init__(
        self,
        *,
        include: Sequence[str] = (),
        exclude: Sequence[str] = (),
        send_start: bool | None = None,
        sync_schedules: bool = True,
    ) -> None:
        self.include = tuple(include)
        self.exclude = tuple(exclude)
        self.send_start = send_start
        #: at the end of each DAG run, sync its schedule to its tracker (``schedules``; on by
        #: default, as ``[telemhq] sync_schedules``: it needs an API key and logs without one).
        self.sync_schedules = sync_schedules

    def options(self, dag_id: str) -> JobPolicy | None:
        """Where ``dag_id``'s pings go, None when it is not monitored."""
        policy = resolve_policy(dag_id, None, include=self.include, exclude=self.exclude)
        if policy is None:
            return None
        send_start = self.send_start if policy.send_start is None else policy.send_start
        return JobPolicy(token=policy.token, send_start=send_start)

    def source(self, ti: Any) -> JobPolicy | None:
        """Whether ``ti`` is monitored by this listener (for ``report()``)."""
        return self.options(str(ti.dag_id))

    # -- task instances (the task process) ------------------------------------------------------

    def _task_event(self, ti: Any, event: TaskEvent, status: Status | None, error: Any) -> None:
        if has_task_callback(getattr(ti, "task", None), event):
            return  # the task's own TelemHQ callback reports this event
        options = self.options(str(ti.dag_id))
        if options is None:
            return
        if status is None:
            reporter.task_started(ti, _context(ti), options)
        else:
            reporter.task_finished(ti, _context(ti), status, options, error=error)

    @hookimpl
    def on_task_instance_running(self, previous_state: Any, task_instance: Any) -> None:
        with capture_internal_errors("airflow.listener.on_task_instance_running"):
            self._task_event(task_instance, "execute", None, None)

    @hookimpl
    def on_task_instance_success(self, previous_state: Any, task_instance: Any) -> None:
        with capture_internal_errors("airflow.listener.on_task_instance_success"):
            self._task_event(task_instance, "success", "success", None)

    @hookimpl
    def on_task_instance_failed(self, previous_state: Any, task_instance: Any, error: Any) -> None:
        with capture_internal_errors("airflow.listener.on_task_instance_failed"):
            # Also called for a try that will be retried: its state tells.
            if _state(task_instance) == _UP_FOR_RETRY:
                self._task_event(task_instance, "retry", "retry", error)
            else:
                self._task_event(task_instance, "failure", "failure", error)

    @hookimpl
    def on_task_instance_skipped(self, previous_state: Any, task_instance: Any) -> None:
        with capture_internal_errors("airflow.listener.on_task_instance_skipped"):
            self._task_event(task_instance, "skipped", "skipped", None)

    @hookimpl
    def on_starting(self, component: Any) -> None:
        # The scheduler lives on: it replays what task processes spooled (a short
        # TELEMHQ_FLUSH_TIMEOUT). A task process only sends its own pings.
        with capture_internal_errors("airflow.listener.on_starting"):
            if not type(component).__name__.startswith("Task"):  # TaskRunnerMarker
                keep_replaying()

    @hookimpl
    def before_stopping(self, component: Any) -> None:
        # After every task (and under ``dag.test()`` after every task of the run): flush,
        # never close, the process may run more.
        with capture_internal_errors("airflow.listener.before_stopping"):
            reporter.flush_existing()

    # -- DAG runs (the scheduler) ---------------------------------------------------------------

    def _dag_event(self, dag_run: Any, status: Status, msg: Any) -> None:
        options = self.options(str(dag_run.dag_id))
        if options is None:
            return
        dag = getattr(dag_run, "dag", None)
        if not has_dag_callback(dag, status):  # else the DAG's own callback reports the run
            reason = None if msg is None else str(msg)
            # In the scheduler: long-lived, its delivery thread sends the ping, nothing waits.
            reporter.dag_finished(dag_run, status, options, reason=reason, flush=False)
        if self.sync_schedules and dag is not None:
            sync_dag(dag, options)

    @hookimpl
    def on_dag_run_running(self, dag_run: Any, msg: Any) -> None:
        with capture_internal_errors("airflow.listener.on_dag_run_running"):
            options = self.options(str(dag_run.dag_id))
            if options is not None:
                reporter.dag_started(dag_run, options)

    @hookimpl
    def on_dag_run_success(self, dag_run: Any, msg: Any) -> None:
        with capture_internal_errors("airflow.listener.on_dag_run_success"):
            self._dag_event(dag_run, "success", msg)

    @hookimpl
    def on_dag_run_failed(self, dag_run: Any, msg: Any) -> None:
        with capture_internal_errors("airflow.listener.on_dag_run_failed"):
            self._dag_event(dag_run, "failure", msg)
