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

try:
    import prefect  # noqa: F401
except ImportError as exc:  # pragma: no cover - exercised in an environment without prefect
    raise ImportError(
        "telemhq_plugins.prefect needs Prefect, which is not installed: "
        'pip install "telemhq-plugins[prefect]"'
    ) from exc

import logging
from typing import Any, TypeVar

from telemhq_plugins.core.config import known_options
from telemhq_plugins.prefect._hooks import FlowHook, HookOptions, TaskHook, carries_hooks
from telemhq_plugins.prefect._instrumentor import PrefectInstrumentor

__all__ = [
    "PrefectInstrumentor",
    "hooks",
    "instrument",
    "monitor_flow",
    "task_hooks",
    "uninstrument",
]

logger = logging.getLogger("telemhq")
F = TypeVar("F")


def _off(options: dict[str, Any], origin: str) -> bool:
    """True for ``enabled=False``, and for an unknown option (one ERROR line naming it)."""
    valid = ("token", "send_start", "enabled")
    return not known_options(options, valid, origin) or options.get("enabled", True) is False


def hooks(
    token: str | None = None, *, send_start: bool | None = None, **options: Any
) -> dict[str, list[Any]]:
    """State hooks for ``@flow(**hooks())``: ``on_running``, ``on_completion``,
    ``on_failure``, ``on_crashed`` and ``on_cancellation``.

    ``token``: a token or ping URL (default: core's resolution by the flow's name);
    ``send_start``: send a ``start`` ping when the run starts (None: ``TELEMHQ_SEND_START``);
    ``enabled=False``: no hooks (empty lists)."""
    hook_options = HookOptions(token=token, send_start=send_start)
    if _off(options, "hooks()"):
        return {name: [] for name in _FLOW_HOOKS}
    return {name: [FlowHook(event, hook_options)] for name, event in _FLOW_HOOKS.items()}


def task_hooks(
    token: str | None = None, *, send_start: bool | None = None, **options: Any
) -> dict[str, list[Any]]:
    """State hooks for ``@task(**task_hooks())``: ``on_running``, ``on_completion`` and
    ``on_failure`` (the same options as :func:`hooks`)."""
    hook_options = HookOptions(token=token, send_start=send_start)
    if _off(options, "task_hooks()"):
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


def instrument(*, tasks: bool | None = None, **options: Any) -> bool:
    """Monitor every flow run of this process (and every task run with ``tasks=True``;
    default ``TELEMHQ_PREFECT_TASKS``). True if this call instrumented."""
    return PrefectInstrumentor().instrument(tasks=tasks, **options)


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
