"""Translation of Prefect's objects into what a ping carries: job names, the ``prefect`` block
(bounded, secret-free parameters) and the error of a state. No state is kept here."""

from __future__ import annotations

import asyncio
import re
import sys
from collections.abc import Mapping
from typing import Any

import orjson
from prefect.context import FlowRunContext, TaskRunContext
from prefect.states import exception_to_crashed_state

from telemhq_plugins.core.payload import ErrorInfo, jsonable
from telemhq_plugins.prefect._deployment import deployment_name
from telemhq_plugins.prefect._links import flow_run_url, task_run_url

__all__ = [
    "MAX_PARAMETERS",
    "MAX_PARAMETER_CHARS",
    "crash_error",
    "error_of",
    "flow_details",
    "parameters_block",
    "task_details",
    "task_job",
]

#: at most this many parameters in the ``prefect`` block, each at most this long as JSON.
MAX_PARAMETERS = 25
MAX_PARAMETER_CHARS = 200
#: parameter (and nested key) names whose values are never sent.
_SECRET_NAME = re.compile(
    r"pass(word|wd|phrase)?|secret|token|api[_-]?key|credential|private[_-]?key|auth|dsn",
    re.IGNORECASE,
)
#: how Prefect writes a ``SecretStr`` when it serializes a flow run's parameters.
_MASKED = "**********"


def task_job(task: Any) -> str:
    """``<flow name>.<task name>`` inside a flow run, the task's name outside one."""
    flow_context = FlowRunContext.get()
    flow = getattr(flow_context, "flow", None)
    name = str(task.name)
    return f"{flow.name}.{name}" if flow is not None else name


def flow_details(
    flow: Any, flow_run: Any, attempt: int, *, elsewhere: bool = False
) -> dict[str, Any]:
    """The ``prefect`` block of a flow run's pings. ``elsewhere``: a run this process did not
    open (a runner's hooks), whose environment may not be the run's."""
    raw: Mapping[str, Any] = {}
    context = FlowRunContext.get()
    context_run = getattr(context, "flow_run", None)
    if context is not None and context_run is not None and context_run.id == flow_run.id:
        raw = context.parameters or {}
    block: dict[str, Any] = {
        "flow_run_id": str(flow_run.id),
        "flow_run_name": flow_run.name,
        "flow_name": flow.name,
        "run_count": attempt,
        "tags": list(flow_run.tags or ()),
    }
    url = flow_run_url(flow_run.id)
    if url is not None:
        block["ui_url"] = url
    if flow_run.deployment_id is not None:
        deployment = {"id": str(flow_run.deployment_id)}
        # Never a network call here: this runs in the flow's own process too.
        name = deployment_name(flow_run, elsewhere=elsewhere)
        if name:
            deployment["name"] = name
        block["deployment"] = deployment
    if flow_run.work_pool_name:
        block["work_pool"] = flow_run.work_pool_name
    parameters = parameters_block(flow_run.parameters or {}, raw)
    if parameters:
        block["parameters"] = parameters
    return block


def task_details(task: Any, task_run: Any) -> dict[str, Any]:
    """The ``prefect`` block of a task run's pings."""
    block: dict[str, Any] = {
        "task_run_id": str(task_run.id),
        "task_run_name": task_run.name,
        "task_name": task.name,
        "run_count": task_run.run_count,
        "tags": list(task_run.tags or ()),
    }
    url = task_run_url(task_run.id)
    if url is not None:
        block["ui_url"] = url
    if task_run.flow_run_id is not None:
        block["flow_run_id"] = str(task_run.flow_run_id)
    flow = getattr(FlowRunContext.get(), "flow", None)
    if flow is not None:
        block["flow_name"] = flow.name
    context = TaskRunContext.get()
    if context is not None and context.task_run.id == task_run.id and context.parameters:
        parameters = parameters_block(context.parameters, context.parameters)
        if parameters:
            block["parameters"] = parameters
    return block


def parameters_block(values: Mapping[str, Any], raw: Mapping[str, Any]) -> dict[str, Any]:
    """At most :data:`MAX_PARAMETERS` parameters, each cut to :data:`MAX_PARAMETER_CHARS` of
    JSON. Never a secret: parameters (and nested keys) named like one, ``SecretStr`` and
    pydantic secrets, and Prefect blocks (a ``Secret`` block or credentials) are left out.
    ``raw`` holds the Python values where known (``values`` may be Prefect's serialized form)."""
    out: dict[str, Any] = {}
    for name, value in values.items():
        if len(out) >= MAX_PARAMETERS:
            break
        key = str(name)
        if _SECRET_NAME.search(key) or _is_secret(raw.get(key, value)) or _is_secret(value):
            continue
        out[key] = _bounded(_scrub(jsonable(value)))
    return out


def _is_secret(value: object) -> bool:
    if value == _MASKED:
        return True
    kind = type(value)
    for cls in kind.__mro__:
        module = cls.__module__
        if cls.__name__.startswith("Secret") and module.startswith("pydantic"):
            return True
        if cls.__name__ == "Block" and module.startswith("prefect.blocks"):
            return True
    return False


def _scrub(value: Any) -> Any:
    """``value`` (JSON-able) without nested keys named like secrets, nor masked values."""
    if isinstance(value, dict):
        return {
            k: _scrub(v)
            for k, v in value.items()
            if not _SECRET_NAME.search(str(k)) and v != _MASKED
        }
    if isinstance(value, list):
        return [_scrub(v) for v in value if v != _MASKED]
    return value


def _bounded(value: Any) -> Any:
    if isinstance(value, str):
        if len(value) <= MAX_PARAMETER_CHARS:
            return value
        return value[:MAX_PARAMETER_CHARS] + "..."
    if value is None or isinstance(value, (bool, int, float)):
        return value
    text = orjson.dumps(value).decode()
    return value if len(text) <= MAX_PARAMETER_CHARS else text[:MAX_PARAMETER_CHARS] + "..."


def error_of(state: Any) -> BaseException | ErrorInfo:
    """The error behind a failed or crashed state: the exception when this process still holds
    it (in the state's result, or the one being handled), else the state's name and message."""
    data = getattr(state, "data", None)
    if isinstance(data, BaseException):
        return data
    result = getattr(data, "result", None)
    if isinstance(result, BaseException):
        return result
    handled = sys.exc_info()[1]
    if handled is not None:
        return handled
    return ErrorInfo(str(state.name), str(state.message or state.name))


def crash_error(exc: BaseException | None, state: Any) -> ErrorInfo:
    """A crash as Prefect records it: the exception's type and traceback with the message of
    the Crashed state (``Execution was cancelled by the runtime environment.``), taken from
    ``state`` when it is that state, else from Prefect's own translation of ``exc``."""
    message = str(state.message) if state.is_crashed() and state.message else None
    if exc is None:
        return ErrorInfo("Crashed", message or "the run ended without a final state")
    info = ErrorInfo.from_exception(exc)
    return ErrorInfo(info.type, message or _crash_message(exc) or info.message, info.traceback)


def _crash_message(exc: BaseException) -> str | None:
    """Prefect's message for the Crashed state of ``exc`` (``exception_to_crashed_state``, a
    coroutine that never awaits when given no result store, but asks anyio which event loop
    runs it)."""
    translation = exception_to_crashed_state(exc)
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        # A sync task: a loop of our own, never made the thread's current loop.
        loop = asyncio.new_event_loop()
        try:
            return str(loop.run_until_complete(translation).message)
        finally:
            loop.close()
    # Inside the task's event loop (which is busy running this hook): one step completes it.
    try:
        translation.send(None)
    except StopIteration as done:
        return str(done.value.message)
    translation.close()
    return None
