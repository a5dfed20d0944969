"""Every name the adapter reads from Dagster's private modules, in one place.

The raw hook needs three things Dagster does not make public: the type a hook function
returns (``HookExecutionResult``), the step's execution context behind a ``HookContext``
(for the attempt count, the event log and the asset layer) and the op context in scope
(``OpExecutionContext.get()`` is public, its error type is not). When a Dagster release
moves one of them, ``RAW_HOOKS`` is False and :mod:`telemhq_plugins.dagster.hooks` falls
back to the public ``@success_hook``/``@failure_hook`` (which do not see retries).
"""

from __future__ import annotations

import logging
from typing import Any

from telemhq_plugins.core.logs import log_once

__all__ = [
    "RAW_HOOKS",
    "current_step_context",
    "hook_result",
    "schedule_states",
    "step_context",
]

logger = logging.getLogger("telemhq")


def _hook_result_type() -> Any:
    try:
        from dagster._core.definitions.events import HookExecutionResult
    except ImportError:  # pragma: no cover - depends on the installed Dagster
        return None
    return HookExecutionResult


_HookExecutionResult: Any = _hook_result_type()

#: whether the raw hook over the step's event list can be built with this Dagster.
RAW_HOOKS: bool = _HookExecutionResult is not None


def hook_result(name: str) -> Any:
    """What a raw hook function returns: it ran (a hook that reports is never "skipped")."""
    return _HookExecutionResult(hook_name=name, is_skipped=False)


def step_context(hook_context: Any) -> Any:
    """The ``StepExecutionContext`` behind a ``HookContext``, or None (logged once)."""
    found = getattr(hook_context, "_step_execution_context", None)
    if found is None:
        log_once(
            logger,
            logging.WARNING,
            "dagster-step-context",
            "TelemHQ: this Dagster's HookContext has no step context; step pings carry less",
        )
    return found


def current_step_context() -> Any:
    """The ``StepExecutionContext`` of the op or asset executing here, or None outside one."""
    from dagster import OpExecutionContext

    try:
        return OpExecutionContext.get().get_step_execution_context()
    except Exception:  # DagsterInvariantViolationError: no op in scope
        return None


def schedule_states(instance: Any) -> dict[str, bool]:
    """Schedule name -> running, for the schedules whose state the instance stores (a user
    started or stopped them, or the daemon recorded their default); {} when unknown."""
    try:
        from dagster._core.scheduler.instigation import InstigatorStatus, InstigatorType

        states = instance.all_instigator_state(instigator_type=InstigatorType.SCHEDULE)
        return {
            state.instigator_name: state.status
            in (InstigatorStatus.RUNNING, InstigatorStatus.DECLARED_IN_CODE)
            for state in states
        }
    except Exception:
        log_once(
            logger,
            logging.WARNING,
            "dagster-schedule-states",
            "TelemHQ: cannot read this Dagster's schedule states; syncing by default status",
            exc_info=True,
        )
        return {}
