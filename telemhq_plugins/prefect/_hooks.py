"""The state hooks: Prefect's state changes in, :class:`Run` calls out.

One process-wide table of open runs (flow runs and task runs, by Prefect's run id) lets a
terminal hook finish the run its ``on_running`` started, lets a second ``on_running`` of the
same run (a retry) report the previous attempt as ``retry``, and lets ``report()`` find the run
of the flow or task executing here (a core run finder over Prefect's run context).

Every ping's ``ping_id`` is :func:`stable_ping_id` of (run id, attempt, status): a watcher of the
Prefect API that reports the same event sends the same id and the server stores one run.
"""

from __future__ import annotations

import datetime as dt
import sys
import threading
from typing import Any, Literal

from prefect.context import FlowRunContext, TaskRunContext
from prefect.exceptions import TerminationSignal

from telemhq_plugins.core.delivery import Client
from telemhq_plugins.core.logs import capture_internal_errors
from telemhq_plugins.core.payload import ErrorInfo, Status, stable_ping_id
from telemhq_plugins.core.policy import JobPolicy
from telemhq_plugins.core.runs import Run, add_run_finder, resolve_target
from telemhq_plugins.prefect._announce import announce_monitored
from telemhq_plugins.prefect._deployment import add_looked_up_name
from telemhq_plugins.prefect._details import (
    crash_error,
    error_of,
    flow_details,
    task_details,
    task_job,
)

__all__ = [
    "FlowHook",
    "StateHook",
    "TaskHook",
    "carries_hooks",
    "end_run",
    "find_run",
    "flow_event",
    "new_run",
    "task_event",
]

ORCHESTRATOR = "prefect"
FlowEvent = Literal["running", "completion", "failure", "crashed", "cancellation"]
TaskEvent = Literal["running", "completion", "failure", "crashed"]
#: an open run whose end never came (a hook list replaced mid-run) is dropped past this many.
_MAX_OPEN = 10_000

_lock = threading.Lock()
_open: dict[str, Run] = {}  # Prefect run id (flow or task run) -> the attempt in progress
_flow_of_task: dict[str, str] = {}  # task run id -> its flow run id (closed with a crash)


def find_run() -> Run | None:
    """The open run of the task, else the flow, executing in this context (``report()``)."""
    task_context = TaskRunContext.get()
    if task_context is not None:
        found = _open.get(str(task_context.task_run.id))
        if found is not None:
            return found
    flow_context = FlowRunContext.get()
    flow_run = getattr(flow_context, "flow_run", None)
    return None if flow_run is None else _open.get(str(flow_run.id))


def new_run(
    job: str,
    run_id: str,
    attempt: int,
    details: dict[str, Any],
    options: JobPolicy,
    *,
    timed: bool = True,
    started_at: dt.datetime | None = None,
    client: Client | None = None,
) -> Run | None:
    """A run of ``job`` for Prefect's run ``run_id`` (None when the job has no tracker).
    ``timed=False``: a run whose start this process did not see (``started_at`` from
    Prefect's own timestamps); ``start`` is then never sent."""
    target = resolve_target(
        job, token=options.token, send_start=options.send_start if timed else False,
        client=client,
    )  # fmt: skip
    if target is None:
        return None
    current = target.run(
        job,
        orchestrator=ORCHESTRATOR,
        run_id=run_id,
        attempt=attempt,
        details=details,
        timed=timed,
        started_at=started_at,
    )
    if timed and target.send_start:
        current.start(ping_id=stable_ping_id(run_id, attempt, "start"))
    return current


def end_run(
    current: Run,
    status: Status,
    error: BaseException | ErrorInfo | None,
    duration_ms: float | None = None,
) -> None:
    """Finish ``current`` with the ping id of (run id, attempt, status)."""
    current.finish(
        status,
        error=error,
        duration_ms=duration_ms,
        ping_id=stable_ping_id(current.run_id, current.attempt, status),
    )


def _begin(
    job: str,
    run_id: str,
    attempt: int,
    details: dict[str, Any],
    options: JobPolicy,
) -> bool:
    """Start ``run_id``'s attempt (False: the job has no tracker); an attempt of the same run
    still open was retried."""
    with _lock:
        previous = _open.pop(run_id, None)
    if previous is not None:
        attempt = max(attempt, (previous.attempt or 0) + 1)
        details["run_count"] = attempt
        # The failed attempt's exception is still being handled when its retry starts.
        end_run(previous, "retry", sys.exc_info()[1])
    current = new_run(job, run_id, attempt, details, options)
    if current is None:
        return False
    with _lock:
        if len(_open) >= _MAX_OPEN:
            _open.pop(next(iter(_open)))
        _open[run_id] = current
    return True


def _prefect_duration_ms(run: Any, state: Any) -> float | None:
    """From the run's start to the state, by Prefect's timestamps (for a run opened elsewhere)."""
    started, ended = getattr(run, "start_time", None), getattr(state, "timestamp", None)
    if isinstance(started, dt.datetime) and isinstance(ended, dt.datetime):
        return max((ended - started).total_seconds() * 1000.0, 0.0)
    return None


_FLOW_STATUS: dict[str, Status] = {
    "completion": "success",
    "failure": "failure",
    "crashed": "failure",
    "cancellation": "cancelled",
}


def flow_event(event: FlowEvent, flow: Any, flow_run: Any, state: Any, options: JobPolicy) -> None:
    """One flow hook call. Never raises."""
    with capture_internal_errors(f"prefect flow {event} hook"):
        job = str(flow.name)
        run_id = str(flow_run.id)
        if event == "running":
            # ``run_count`` is still the previous attempt's while the run enters Running.
            attempt = int(flow_run.run_count or 0) + 1
            if _begin(job, run_id, attempt, flow_details(flow, flow_run, attempt), options):
                announce_monitored(run_id)  # the watcher leaves this run's pings to us
            return
        status = _FLOW_STATUS[event]
        with _lock:
            current = _open.pop(run_id, None)
        duration_ms = None
        if current is None:
            duration_ms = _prefect_duration_ms(flow_run, state)
            attempt = max(int(flow_run.run_count or 0), 1)
            # A run opened in another process (a served run's end, in the runner's).
            started = getattr(flow_run, "start_time", None)
            current = new_run(
                job, run_id, attempt,
                flow_details(flow, flow_run, attempt, elsewhere=True), options,
                timed=False, started_at=started if isinstance(started, dt.datetime) else None,
            )  # fmt: skip
            if current is not None:
                # Only a run that will be reported waits (bounded) for its deployment's name.
                add_looked_up_name(current.details, flow_run)
        if current is not None:
            error: BaseException | ErrorInfo | None = None
            if status == "failure":
                error = error_of(state)
            elif status == "cancelled":
                error = ErrorInfo("Cancelled", str(state.message or state.name))
            end_run(current, status, error, duration_ms)
        if event in ("crashed", "cancellation"):
            _close_tasks_of(run_id, status, state)
            # After a SIGTERM Prefect re-raises the signal with the default handler: the
            # process ends without running ``atexit``, so deliver now (bounded).
            if current is not None:
                current.client.flush_or_spool()


def _close_tasks_of(flow_run_id: str, status: Status, state: Any) -> None:
    """Task runs still open in a flow run that crashed or was cancelled: they end with it."""
    with _lock:
        ids = [t for t, f in _flow_of_task.items() if f == flow_run_id]
        ended = [(_open.pop(t, None), _flow_of_task.pop(t)) for t in ids]
    for current, _ in ended:
        if current is not None:
            end_run(current, status, ErrorInfo("FlowRun" + str(state.name), str(state.message)))


def task_event(event: TaskEvent, task: Any, task_run: Any, state: Any, options: JobPolicy) -> None:
    """One task hook call. Never raises."""
    with capture_internal_errors(f"prefect task {event} hook"):
        run_id = str(task_run.id)
        if event == "running":
            # The task engine counts the attempt before the hook: ``run_count`` is current.
            attempt = max(int(task_run.run_count or 0), 1)
            with _lock:
                previous = _open.get(run_id)
            if previous is not None and attempt <= (previous.attempt or 0):
                # Not a new attempt: the engine's ``finally`` calls the hooks once more, the
                # run still Running, when the attempt ended with no state of its own. That is
                # a crash (Prefect marks the run Crashed next and calls no hook for it).
                _crash(run_id, sys.exc_info()[1], state)
                return
            _begin(task_job(task), run_id, attempt, task_details(task, task_run), options)
            if task_run.flow_run_id is not None:
                with _lock:
                    _flow_of_task[run_id] = str(task_run.flow_run_id)
            return
        if event == "completion":
            _end_task(run_id, "success", None)
        elif event == "crashed":
            data = getattr(state, "data", None)
            _crash(run_id, data if isinstance(data, BaseException) else sys.exc_info()[1], state)
        else:
            _end_task(run_id, "failure", error_of(state))


def _end_task(run_id: str, status: Status, error: BaseException | ErrorInfo | None) -> Run | None:
    """End the open attempt of task run ``run_id`` (None: there was none)."""
    with _lock:
        current = _open.pop(run_id, None)
        _flow_of_task.pop(run_id, None)
    if current is not None:
        end_run(current, status, error)
    return current


def _crash(run_id: str, exc: BaseException | None, state: Any) -> None:
    """The open attempt of task run ``run_id`` crashed with ``exc``: a ``failure``."""
    ended = _end_task(run_id, "failure", crash_error(exc, state))
    if ended is not None and isinstance(exc, TerminationSignal):
        # Prefect ends a process stopped by SIGTERM by re-raising the signal, and ``atexit``
        # never runs: deliver now (bounded), whether or not the flow's run is monitored.
        ended.client.flush_or_spool()


class StateHook:
    """One of our state hooks: named for Prefect's logs (``telemhq_completion``), and what
    :func:`carries_hooks` recognises."""

    __slots__ = ("__name__", "event", "options")
    kind = "flow"

    def __init__(self, event: str, options: JobPolicy) -> None:
        self.event = event
        self.options = options
        self.__name__ = f"telemhq_{'' if self.kind == 'flow' else 'task_'}{event}"

    def __repr__(self) -> str:
        return f"<TelemHQ Prefect {self.kind} hook {self.event}>"


class FlowHook(StateHook):
    """A flow state hook (``@flow(on_completion=[...])``). Prefect calls it with ``flow``,
    ``flow_run`` and ``state``, by position in the flow's process and by name in a runner."""

    __slots__ = ()

    def __call__(self, flow: Any, flow_run: Any, state: Any) -> None:
        flow_event(self.event, flow, flow_run, state, self.options)  # type: ignore[arg-type]


class TaskHook(StateHook):
    """A task state hook (``@task(on_completion=[...])``): ``task``, ``task_run``, ``state``."""

    __slots__ = ()
    kind = "task"

    def __call__(self, task: Any, task_run: Any, state: Any) -> None:
        task_event(self.event, task, task_run, state, self.options)  # type: ignore[arg-type]


def carries_hooks(flow_or_task: Any) -> bool:
    """Whether ``flow_or_task`` already has our hooks (given explicitly, or copied by
    ``with_options``): instrument-all then leaves it alone (one ping per event)."""
    for name in ("on_running_hooks", "on_completion_hooks", "on_failure_hooks"):
        for hook in getattr(flow_or_task, name, None) or ():
            if isinstance(hook, StateHook):
                return True
    return False


# ``report()`` reaches the runs opened here, by hooks or instrument-all, for as long as this
# module is loaded (the finder answers None outside them, and costs only report() calls).
add_run_finder(find_run)
