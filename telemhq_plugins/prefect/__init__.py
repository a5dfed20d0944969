"""TelemHQ for Prefect: a ping per flow run (and per task run), from Prefect's state hooks.

::

    from prefect import flow, task
    from telemhq_plugins.prefect import hooks, task_hooks

    @task(**task_hooks())
    def extract() -> int: ...

    @flow(**hooks())                        # or hooks(token="...")
    def nightly_sync() -> None:
        n = extract()
        telemhq_plugins.report(records_processed=n)

Or every flow of the process, with no flow code: ``instrument(tasks=True)``, or
``TELEMHQ_PREFECT_AUTO=1`` with ``PREFECT_PLUGINS_ENABLED=1`` (Prefect's plugin system loads
this package at ``import prefect``). The job name is the flow's name (task runs:
``<flow name>.<task name>``); the run id is Prefect's flow (task) run id.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, TypeVar

from telemhq_plugins.core.policy import policy_from_kwargs

# Before the modules that import it: a missing Prefect is an ImportError naming the extra.
from telemhq_plugins.prefect import _orchestrator  # noqa: F401
from telemhq_plugins.prefect._hooks import FlowHook, TaskHook, carries_hooks
from telemhq_plugins.prefect._instrumentor import PrefectInstrumentor

__all__ = [
    "PrefectInstrumentor",
    "hooks",
    "instrument",
    "monitor_flow",
    "task_hooks",
    "uninstrument",
]

F = TypeVar("F")


def hooks(
    token: str | None = None, *, send_start: bool | None = None, **options: Any
) -> dict[str, list[Any]]:
    """State hooks for ``@flow(**hooks())``: ``on_running``, ``on_completion``,
    ``on_failure``, ``on_crashed`` and ``on_cancellation``.

    ``token``: a token or ping URL (default: core's resolution by the flow's name);
    ``send_start``: send a ``start`` ping when the run starts (None: ``TELEMHQ_SEND_START``);
    ``enabled=False``: no hooks (empty lists)."""
    hook_options = policy_from_kwargs(token, send_start, options, where="hooks()")
    if hook_options is None:
        return {name: [] for name in _FLOW_HOOKS}
    return {name: [FlowHook(event, hook_options)] for name, event in _FLOW_HOOKS.items()}


def task_hooks(
    token: str | None = None, *, send_start: bool | None = None, **options: Any
) -> dict[str, list[Any]]:
    """State hooks for ``@task(**task_hooks())``: ``on_running``, ``on_completion`` and
    ``on_failure`` (the same options as :func:`hooks`)."""
    hook_options = policy_from_kwargs(token, send_start, options, where="task_hooks()")
    if hook_options is None:
        return {name: [] for name in _TASK_HOOKS}
    return {name: [TaskHook(event, hook_options)] for name, event in _TASK_HOOKS.items()}


def monitor_flow(flow: F, token: str | None = None, **options: Any) -> F:
    """A monitored copy of ``flow`` (``flow.with_options``), its own hooks kept: ours are
    added to each of its hook lists. A flow that already carries ours is copied as is."""
    if carries_hooks(flow):
        return flow.with_options()  # type: ignore[attr-defined, no-any-return]
    ours = hooks(token, **options)
    merged = {
        name: [*(getattr(flow, f"{name}_hooks", None) or ()), *added]
        for name, added in ours.items()
    }
    return flow.with_options(**merged)  # type: ignore[attr-defined, no-any-return]


def instrument(
    *,
    tasks: bool | None = None,
    token: str | None = None,
    send_start: bool | None = None,
    include: Sequence[str] = (),
    exclude: Sequence[str] = (),
) -> bool:
    """Monitor every flow run of this process (and every task run with ``tasks=True``;
    default ``TELEMHQ_PREFECT_TASKS``). True if this call instrumented. See
    :class:`PrefectInstrumentor` for the options.

    Raises :class:`~telemhq_plugins.core.instrumentor.UnsupportedOrchestrator` when the
    installed Prefect is not a supported version (``TELEMHQ_PREFECT_AUTO=1`` only logs it)."""
    instrumentor = PrefectInstrumentor()
    instrumentor.require()
    return instrumentor.instrument(
        tasks=tasks, token=token, send_start=send_start, include=include, exclude=exclude
    )


def uninstrument() -> bool:
    """Undo :func:`instrument` (Prefect's engines as they were). True if it was on."""
    return PrefectInstrumentor().uninstrument()


_FLOW_HOOKS: dict[str, Any] = {
    "on_running": "running",
    "on_completion": "completion",
    "on_failure": "failure",
    "on_crashed": "crashed",
    "on_cancellation": "cancellation",
}
_TASK_HOOKS: dict[str, Any] = {
    "on_running": "running",
    "on_completion": "completion",
    "on_failure": "failure",
}
