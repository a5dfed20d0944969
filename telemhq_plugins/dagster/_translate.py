"""Dagster objects into TelemHQ terms: job names, the ``dagster`` block, metrics, errors.

Pure functions over duck-typed Dagster objects (steps, runs, event data), shared by the hooks
and the sensors; none of them raises for a shape it does not know, it returns less.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from telemhq_plugins.core.config import ConfigError, parse_flag
from telemhq_plugins.core.logs import log_once
from telemhq_plugins.core.payload import ErrorInfo, Status

__all__ = [
    "ORCHESTRATOR",
    "PARTITION_TAG",
    "StepOutcome",
    "asset_key_of",
    "bounded_tags",
    "error_from_serializable",
    "metrics_from_metadata",
    "options_from_tags",
    "skipped_steps",
    "step_job_name",
    "step_outcome",
]

logger = logging.getLogger("telemhq")

ORCHESTRATOR = "dagster"
PARTITION_TAG = "dagster/partition"
#: at most this many run tags go into a ping, each value cut to ``_TAG_VALUE_MAX`` characters.
MAX_TAGS = 20
_TAG_VALUE_MAX = 200
#: Dagster's exceptions that wrap the user's error in ``cause`` (unwrapped for the ping).
_WRAPPERS = frozenset(
    {
        "DagsterExecutionStepExecutionError",
        "DagsterUserCodeExecutionError",
        "RetryRequestedFromPolicy",
        "DagsterExecutionHandleOutputError",
        "DagsterExecutionLoadInputError",
    }
)
#: top-level ping fields that metadata never overwrites.
_NOT_METRICS = frozenset({ORCHESTRATOR})


def asset_key_of(outputs: Iterable[Any]) -> str | None:
    """The asset key (path joined by ``/``) a step materializes, when exactly one of its
    outputs is a selected asset; else None (the step takes the op's name).

    ``outputs``: an ``ExecutionStep``'s ``step_outputs`` or an ``ExecutionStepSnap``'s
    ``outputs``; both carry Dagster's ``StepOutputProperties``. Read per step, not per node:
    the asset layer's asset of an op inside a graph-backed asset is the whole graph's, though
    only the op that returns it materializes it."""
    keys = []
    try:
        for output in outputs:
            key = getattr(getattr(output, "properties", None), "asset_key", None)
            if key is not None:
                keys.append(key)
    except Exception:
        return None
    if len(keys) != 1:
        return None
    return "/".join(keys[0].path)


def step_job_name(job_name: str, op: str, asset_key: str | None) -> str:
    """``<job>.<op>``, ``<job>.<asset key>``; the asset key alone under a job Dagster made up
    (``materialize()``'s ``__ephemeral_asset_job__``, the global ``__ASSET_JOB``)."""
    if asset_key is not None:
        return asset_key if job_name.startswith("__") else f"{job_name}.{asset_key}"
    return f"{job_name}.{op}"


def bounded_tags(tags: Mapping[str, Any] | None) -> dict[str, str]:
    """The run's tags, at most ``MAX_TAGS`` of them, values cut."""
    out: dict[str, str] = {}
    for key, value in (tags or {}).items():
        if len(out) >= MAX_TAGS:
            break
        out[str(key)] = str(value)[:_TAG_VALUE_MAX]
    return out


def _number(value: Any) -> float | int | None:
    raw = getattr(value, "value", value)  # IntMetadataValue / FloatMetadataValue
    if isinstance(raw, bool) or not isinstance(raw, (int, float)):
        return None
    if isinstance(raw, float) and not math.isfinite(raw):
        return None
    return raw


def options_from_tags(tags: Mapping[str, Any] | None) -> dict[str, Any]:
    """A job's own TelemHQ options from its tags (``telemhq/enabled``, ``telemhq/token``,
    ``telemhq/send_start``), for core's ``resolve_policy``; an unusable flag is logged once
    and left out."""
    options: dict[str, Any] = {}
    for name in ("enabled", "send_start"):
        value = (tags or {}).get(f"telemhq/{name}")
        if value is None:
            continue
        try:
            options[name] = parse_flag(value)
        except ConfigError:
            log_once(
                logger,
                logging.WARNING,
                ("dagster-tag", name, value),
                "TelemHQ: the tag telemhq/%s=%r is not a switch (1/0, true/false); ignored",
                name,
                value,
            )
    token = (tags or {}).get("telemhq/token")
    if token:
        options["token"] = str(token)
    return options


def metrics_from_metadata(metadata: Mapping[str, Any]) -> dict[str, float | int]:
    """Numeric output metadata as metrics: ``{output: {key: value}}`` (mapped outputs one
    level deeper) -> ``{key: number}``; text, JSON and the like are left out."""
    metrics: dict[str, float | int] = {}

    def walk(entries: Mapping[str, Any], depth: int) -> None:
        for key, value in entries.items():
            if isinstance(value, Mapping):
                if depth < 2:
                    walk(value, depth + 1)
                continue
            number = _number(value)
            if number is not None and key not in _NOT_METRICS:
                metrics[str(key)] = number

    for per_output in metadata.values():
        if isinstance(per_output, Mapping):
            walk(per_output, 1)
    return metrics


def error_from_serializable(error: Any) -> ErrorInfo | None:
    """The user's error from Dagster's ``SerializableErrorInfo``: the wrappers Dagster puts
    around it (``DagsterExecutionStepExecutionError``, ``RetryRequestedFromPolicy``) are
    unwrapped through ``cause``; the user's own ``raise ... from`` chain is kept."""
    while (
        error is not None
        and getattr(error, "cls_name", None) in _WRAPPERS
        and getattr(error, "cause", None) is not None
    ):
        error = error.cause
    if error is None:
        return None
    type_name = str(getattr(error, "cls_name", None) or "Error")
    message = str(getattr(error, "message", "") or "").strip()
    # Dagster's message is ``format_exception_only``: "KeyError: 'x'", "pkg.mod.Error: x".
    head, sep, rest = message.partition(":")
    if head.rsplit(".", 1)[-1] == type_name:
        message = rest.strip() if sep else ""
    try:
        traceback: str | None = error.to_string()
    except Exception:
        traceback = None
    return ErrorInfo(type_name, message, traceback)


@dataclass(frozen=True, slots=True)
class StepOutcome:
    """How one attempt of a step ended."""

    status: Status
    error: ErrorInfo | None = None
    #: Dagster's own measure of a successful step's compute, else None.
    duration_ms: float | None = None


_STATUS_BY_EVENT: Mapping[str, Status] = {
    "STEP_SUCCESS": "success",
    "STEP_FAILURE": "failure",
    "STEP_UP_FOR_RETRY": "retry",
}


def step_outcome(step_key: str, events: Iterable[Any]) -> StepOutcome | None:
    """The outcome of ``step_key``'s attempt from the events Dagster hands a hook (they may
    include other steps' ``STEP_SKIPPED``); None when none of them ends the step."""
    outcome: StepOutcome | None = None
    for event in events:
        status = _STATUS_BY_EVENT.get(getattr(event, "event_type_value", ""))
        if status is None or getattr(event, "step_key", None) != step_key:
            continue
        data = getattr(event, "event_specific_data", None)
        if status == "success":
            duration = getattr(data, "duration_ms", None)
            outcome = StepOutcome(
                status, duration_ms=float(duration) if isinstance(duration, (int, float)) else None
            )
        else:
            outcome = StepOutcome(
                status, error=error_from_serializable(getattr(data, "error", None))
            )
    return outcome


def skipped_steps(events: Iterable[Any]) -> list[Any]:
    """The ``STEP_SKIPPED`` events among ``events`` (Dagster hands a step's hook those of the
    steps it skipped because that step did not yield an output they need)."""
    return [
        event
        for event in events
        if getattr(event, "event_type_value", None) == "STEP_SKIPPED"
        and getattr(event, "step_key", None)
    ]
