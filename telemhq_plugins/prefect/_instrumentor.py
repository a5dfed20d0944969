"""``PrefectInstrumentor``: every flow (and optionally every task) of the process pings, with
no flow code.

Prefect has no process-wide state hook, so this wraps the one method through which each run
engine calls a flow's or task's state hooks (``call_hooks`` of ``FlowRunEngine``,
``AsyncFlowRunEngine``, ``SyncTaskRunEngine`` and ``AsyncTaskRunEngine``): the wrapper reports
the state as our hooks would, then calls Prefect's method unchanged. ``uninstrument()`` puts
the original functions back on the classes. Prefect's plugin system (``prefect.plugins``) is
how ``TELEMHQ_PREFECT_AUTO=1`` switches this on at ``import prefect`` (see ``plugin.py``).
"""

from __future__ import annotations

import functools
import importlib
import inspect
from collections.abc import Callable, Coroutine, Sequence
from typing import Any

from telemhq_plugins.core.config import env_flag
from telemhq_plugins.core.instrumentor import Instrumentor
from telemhq_plugins.core.logs import capture_internal_errors
from telemhq_plugins.core.policy import JobPolicy, resolve_policy
from telemhq_plugins.prefect._details import task_job
from telemhq_plugins.prefect._hooks import (
    FlowEvent,
    TaskEvent,
    carries_hooks,
    flow_event,
    task_event,
)

__all__ = ["ENGINES", "PrefectInstrumentor"]

#: (module, class, kind) of every engine whose ``call_hooks`` is wrapped.
ENGINES: tuple[tuple[str, str, str], ...] = (
    ("prefect.flow_engine", "FlowRunEngine", "flow"),
    ("prefect.flow_engine", "AsyncFlowRunEngine", "flow"),
    ("prefect.task_engine", "SyncTaskRunEngine", "task"),
    ("prefect.task_engine", "AsyncTaskRunEngine", "task"),
)


def _flow_event_of(engine: Any, state: Any) -> FlowEvent | None:
    """The hook list Prefect's flow engine picks for ``state`` (the same order of tests)."""
    if state.is_failed():
        return "failure"
    if state.is_completed():
        return "completion"
    if state.is_cancelling():
        owns = getattr(engine, "_engine_owns_cancellation_handling", None)
        return "cancellation" if owns is None or owns() else None
    if state.is_crashed():
        return "crashed"
    if state.is_running():
        return "running"
    return None


def _task_event_of(state: Any) -> TaskEvent | None:
    """Prefect's task engine calls hooks for Failed, Completed and Running states only; a
    Crashed state reaching ``call_hooks`` is reported too (a crash is a ``failure``)."""
    if state.is_failed():
        return "failure"
    if state.is_completed():
        return "completion"
    if state.is_crashed():
        return "crashed"
    if state.is_running():
        return "running"
    return None


class PrefectInstrumentor(Instrumentor):
    """Monitor every flow run of this process (and with ``tasks=True`` every task run)::

        PrefectInstrumentor().instrument(tasks=True)   # or TELEMHQ_PREFECT_AUTO=1
        PrefectInstrumentor().uninstrument()

    Options of :meth:`instrument`: ``tasks`` (default ``TELEMHQ_PREFECT_TASKS``), ``token``
    (one token or ping URL for every flow; default: core's resolution by job name),
    ``send_start`` (default: ``TELEMHQ_SEND_START``), ``include`` / ``exclude`` (globs over
    job names: the flow's name, ``<flow>.<task>`` for tasks; core's job policy). A flow or task
    that carries the hooks of ``hooks()`` / ``task_hooks()`` is left to them (one ping per
    event)."""

    instruments = ("prefect", ">=3.0,<4")

    def _init_state(self) -> None:
        #: each wrapped engine class and its own ``call_hooks``, for ``_uninstrument``.
        self._originals: list[tuple[Any, Callable[..., Any]]] = []

    def _instrument(
        self,
        *,
        tasks: bool | None = None,
        token: str | None = None,
        send_start: bool | None = None,
        include: Sequence[str] | None = (),
        exclude: Sequence[str] | None = (),
    ) -> None:
        if tasks is None:
            tasks = env_flag("TELEMHQ_PREFECT_TASKS")
        policy = _Policy(
            JobPolicy(token=token, send_start=send_start),
            tuple(include or ()),
            tuple(exclude or ()),
        )
        self._originals = []
        for module, name, kind in ENGINES:
            if kind == "task" and not tasks:
                continue
            cls = getattr(importlib.import_module(module), name)
            original = cls.__dict__["call_hooks"]
            wrapper = _wrap(original, kind, policy)
            self._originals.append((cls, original))
            cls.call_hooks = wrapper

    def _uninstrument(self) -> None:
        for cls, original in self._originals:
            cls.call_hooks = original
        self._originals = []


class _Policy:
    """Which jobs instrument-all reports, and where (core's job policy, by job name)."""

    __slots__ = ("_jobs", "exclude", "include", "options")

    def __init__(
        self, options: JobPolicy, include: tuple[str, ...], exclude: tuple[str, ...]
    ) -> None:
        self.options, self.include, self.exclude = options, include, exclude
        self._jobs: dict[str, JobPolicy | None] = {}

    def for_job(self, job: str) -> JobPolicy | None:
        """The options of ``job``'s pings, or None when it is not monitored."""
        try:
            return self._jobs[job]
        except KeyError:
            pass
        found = resolve_policy(job, None, include=self.include, exclude=self.exclude)
        options = None
        if found is not None:
            options = JobPolicy(
                token=found.token or self.options.token,
                send_start=self.options.send_start
                if found.send_start is None
                else found.send_start,
            )
        if len(self._jobs) < 10_000:
            self._jobs[job] = options
        return options


def _dispatch(kind: str, engine: Any, state: Any, policy: _Policy) -> None:
    with capture_internal_errors("prefect instrumentation"):
        if state is None:
            state = engine.state
        if kind == "flow":
            flow, flow_run = engine.flow, engine.flow_run
            if flow_run is None or carries_hooks(flow):
                return
            event = _flow_event_of(engine, state)
            options = policy.for_job(str(flow.name)) if event is not None else None
            if event is not None and options is not None:
                flow_event(event, flow, flow_run, state, options)
            return
        task, task_run = engine.task, engine.task_run
        if task_run is None or carries_hooks(task):
            return
        task_event_ = _task_event_of(state)
        options = policy.for_job(task_job(task)) if task_event_ is not None else None
        if task_event_ is not None and options is not None:
            task_event(task_event_, task, task_run, state, options)


def _wrap(original: Callable[..., Any], kind: str, policy: _Policy) -> Callable[..., Any]:
    if _is_async(original):
        async_original: Callable[..., Coroutine[Any, Any, None]] = original

        @functools.wraps(original)
        async def call_hooks_async(self: Any, state: Any = None) -> None:
            _dispatch(kind, self, state, policy)
            await async_original(self, state)

        return call_hooks_async

    @functools.wraps(original)
    def call_hooks(self: Any, state: Any = None) -> None:
        _dispatch(kind, self, state, policy)
        original(self, state)

    return call_hooks


def _is_async(fn: Callable[..., Any]) -> bool:
    return inspect.iscoroutinefunction(fn)
