"""``callbacks()`` and ``dag_callbacks()``: Airflow callbacks that ping, per DAG or per task."""

from __future__ import annotations

from typing import Any, Final, Literal

from telemhq_plugins.airflow._events import reporter
from telemhq_plugins.core.logs import capture_internal_errors
from telemhq_plugins.core.payload import Status
from telemhq_plugins.core.policy import JobPolicy, policy_from_kwargs

__all__ = ["DagCallback", "TaskCallback", "callbacks", "dag_callbacks", "task_callback_options"]

#: the options ``dag_callbacks()`` takes besides ``token`` (a DAG run sends no ``start``).
_DAG_OPTIONS: Final = ("token", "enabled")

TaskEvent = Literal["execute", "success", "failure", "retry", "skipped"]
_TASK_STATUS: Final[dict[str, Status]] = {
    "success": "success",
    "failure": "failure",
    "retry": "retry",
    "skipped": "skipped",
}
#: the operator attribute each callback kind is set on.
TASK_ATTRIBUTES: Final[dict[TaskEvent, str]] = {
    "execute": "on_execute_callback",
    "success": "on_success_callback",
    "failure": "on_failure_callback",
    "retry": "on_retry_callback",
    "skipped": "on_skipped_callback",
}


class TaskCallback:
    """One task callback (``on_success_callback`` ...) that reports its event. Called by
    Airflow with the task's context; never raises."""

    def __init__(self, event: TaskEvent, options: JobPolicy, *, enabled: bool = True) -> None:
        self.event = event
        self.options = options
        self.enabled = enabled
        #: Airflow logs callbacks by name.
        self.__name__ = f"telemhq_{event}"

    def __call__(self, context: Any) -> None:
        with capture_internal_errors(f"airflow.{TASK_ATTRIBUTES[self.event]}"):
            if not self.enabled:
                return
            ti = context.get("ti") or context.get("task_instance")
            if ti is None:
                return
            if self.event == "execute":
                reporter.task_started(ti, context, self.options)
            else:
                reporter.task_finished(
                    ti,
                    context,
                    _TASK_STATUS[self.event],
                    self.options,
                    error=context.get("exception") if self.event != "success" else None,
                )

    def __repr__(self) -> str:
        return f"<telemhq {TASK_ATTRIBUTES[self.event]}>"


class DagCallback:
    """A DAG run's ``on_success_callback`` / ``on_failure_callback`` that reports the run.

    Airflow gives a DAG callback the context of the run's last task instance (``ti`` is
    there): what is reported is the DAG run, as told by which callback this is."""

    def __init__(
        self, status: Literal["success", "failure"], options: JobPolicy, *, enabled: bool = True
    ) -> None:
        self.status: Status = status
        self.options = options
        self.enabled = enabled
        self.__name__ = f"telemhq_dag_{status}"

    def __call__(self, context: Any) -> None:
        with capture_internal_errors(f"airflow.dag_{self.status}_callback"):
            if not self.enabled:
                return
            dag_run = context.get("dag_run")
            if dag_run is None:
                return
            reason = context.get("reason")
            reporter.dag_finished(
                dag_run, self.status, self.options, reason=None if reason is None else str(reason)
            )

    def __repr__(self) -> str:
        return f"<telemhq dag on_{self.status}_callback>"


def callbacks(
    token: str | None = None, *, send_start: bool | None = None, **options: Any
) -> dict[str, Any]:
    """Task callbacks that send one ping per try of each task, for ``default_args`` (every
    task of the DAG) or one operator's keyword arguments::

        @dag(schedule="@daily", default_args={"retries": 2, **callbacks()})
        def etl(): ...

        PythonOperator(task_id="load", python_callable=load, **callbacks(token="..."))

    The job is ``dag_id.task_id``; a try that will be retried reports ``retry``, the last one
    ``failure``; a skipped task ``skipped``. ``token`` is a tracker token or ping URL (default:
    resolved from the job name by the TelemHQ settings, e.g. a ping key); ``send_start=True``
    sends a ``start`` ping from ``on_execute_callback`` (None: ``TELEMHQ_SEND_START`` decides
    when the task runs; False: no ``on_execute_callback``); ``enabled=False`` turns them off.
    To keep callbacks of your own, pass lists: ``[mine, callbacks()["on_failure_callback"]]``.
    """
    policy = policy_from_kwargs(token, send_start, options, where="callbacks()")
    resolved = policy or JobPolicy(token=token, send_start=send_start)
    enabled = policy is not None
    events: list[TaskEvent] = ["success", "failure", "retry", "skipped"]
    if send_start is not False:
        events.insert(0, "execute")
    return {TASK_ATTRIBUTES[e]: TaskCallback(e, resolved, enabled=enabled) for e in events}


def dag_callbacks(token: str | None = None, **options: Any) -> dict[str, Any]:
    """DAG callbacks that send one ping per DAG run (job: the ``dag_id``)::

    @dag(schedule="@daily", **dag_callbacks())
    def etl(): ...

    DAG("etl", schedule="@daily", **dag_callbacks(token="..."))
    """
    policy = policy_from_kwargs(token, None, options, where="dag_callbacks()", valid=_DAG_OPTIONS)
    resolved = policy or JobPolicy(token=token)
    enabled = policy is not None
    return {
        "on_success_callback": DagCallback("success", resolved, enabled=enabled),
        "on_failure_callback": DagCallback("failure", resolved, enabled=enabled),
    }


def _as_list(value: Any) -> list[Any]:
    if value is None:
        return []
    if isinstance(value, (list, tuple)):
        return list(value)
    return [value]


def task_callback_options(task: Any, event: TaskEvent) -> JobPolicy | None:
    """The options of our callback for ``event`` on ``task``, None when it has none (or it is
    disabled): a listener leaves that event to the callback."""
    for callback in _as_list(getattr(task, TASK_ATTRIBUTES[event], None)):
        if isinstance(callback, TaskCallback):
            return callback.options if callback.enabled else None
    return None


def has_task_callback(task: Any, event: TaskEvent) -> bool:
    """True when ``task`` carries our callback for ``event`` (enabled or not)."""
    return any(
        isinstance(c, TaskCallback) for c in _as_list(getattr(task, TASK_ATTRIBUTES[event], None))
    )


def has_dag_callback(dag: Any, status: str) -> bool:
    """True when ``dag`` carries our DAG callback for ``status`` (only where Airflow keeps the
    callbacks on the DAG object: the DAG processor and ``dag.test()``, not the scheduler)."""
    return any(
        isinstance(c, DagCallback) for c in _as_list(getattr(dag, f"on_{status}_callback", None))
    )


def _callback_source(ti: Any) -> JobPolicy | None:
    """Whether ``ti``'s task is monitored by our callbacks (for ``report()``)."""
    return task_callback_options(getattr(ti, "task", None), "success")


reporter.add_source(_callback_source)
