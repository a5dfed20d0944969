"""Translate Celery objects into TelemHQ terms: the ``celery`` payload block, the request a
task runs with, and task options (core's job policy, with Celery's default exclude).

Pure functions; nothing here sends anything or touches signals.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from celery.app.task import Context

from telemhq_plugins.core.policy import JobPolicy
from telemhq_plugins.core.policy import resolve_policy as resolve_job_policy

__all__ = [
    "DEFAULT_EXCLUDE",
    "attempt_of",
    "celery_block",
    "current_request",
    "resolve_policy",
    "same_task",
]

#: Celery's own housekeeping tasks (``celery.ping``, ``celery.chord_unlock``, ...) are not
#: monitored unless asked for: they would create a tracker per internal task.
DEFAULT_EXCLUDE: tuple[str, ...] = ("celery.*",)


def resolve_policy(
    name: str,
    options: object,
    *,
    include: Sequence[str] = (),
    exclude: Sequence[str] = DEFAULT_EXCLUDE,
) -> JobPolicy | None:
    """Core's :func:`~telemhq_plugins.core.policy.resolve_policy` for task ``name`` and its
    ``telemhq=...`` option, with Celery's housekeeping tasks excluded by default."""
    return resolve_job_policy(name, options, include=include, exclude=exclude)


def attempt_of(request: Any) -> int:
    """The 1-based attempt number of a request (Celery counts retries from 0)."""
    retries = getattr(request, "retries", 0)
    return (retries if isinstance(retries, int) else 0) + 1


def same_task(task_id: str, request: Any) -> bool:
    """True when ``request`` is the request of ``task_id`` (not an unrelated or empty one)."""
    return request is not None and getattr(request, "id", None) == task_id


def current_request(task: Any) -> Any:
    """The request on top of ``task``'s request stack (what ``task.request_stack.top`` returns),
    or ``task.request``.

    Celery's ``top`` reads ``stack`` from its thread-local ``Local``, whose slots do not hold
    it: every read raises an ``AttributeError`` inside Python before ``Local.__getattr__``
    finds the value (a large part of a prerun's instructions). This reads the same storage
    as ``__getattr__`` does, with the same ident function; if Celery's layout is not the one
    expected (``USE_FAST_LOCALS``, a future release), it falls back to ``top``."""
    try:
        local = task.request_stack._local
        return local.__storage__[local.__ident_func__()]["stack"][-1]
    except Exception:
        return task.request_stack.top or task.request


def celery_block(task_id: str, request: Any) -> dict[str, Any]:
    """The ``celery`` object of a ping. ``request`` is the task's request context; it may be
    unrelated to ``task_id`` (the parent process reports a hard time limit with no request on
    the stack), in which case only the id is known. ``retries`` is always an int (the attempt
    is ``retries + 1``, which the prerun reads from here instead of calling ``attempt_of``)."""
    if type(request) is Context:
        # Celery's own (the prerun's, every task): each attribute is at least a class default,
        # so plain reads, a fraction of the cost of ``getattr`` with a default.
        request_id, root_id, parent_id = request.id, request.root_id, request.parent_id
        delivery, hostname, retries = request.delivery_info, request.hostname, request.retries
        eta, expires = request.eta, request.expires
    elif request is not None:  # anything else the main process holds
        request_id = getattr(request, "id", None)
        root_id = getattr(request, "root_id", None)
        parent_id = getattr(request, "parent_id", None)
        delivery = getattr(request, "delivery_info", None)
        hostname = getattr(request, "hostname", None)
        retries = getattr(request, "retries", 0)
        eta, expires = getattr(request, "eta", None), getattr(request, "expires", None)
    else:
        return {"task_id": task_id}
    if request_id != task_id:  # ``same_task``, inline
        return {"task_id": task_id}
    delivery = delivery or {}
    routing_key = delivery.get("routing_key")
    return {
        "task_id": task_id,
        "root_id": root_id,
        "parent_id": parent_id,
        # Brokers report the routing key, not the queue; under Celery's default routing they
        # are the same name, so the routing key stands in when no queue is reported.
        "queue": delivery.get("queue") or routing_key,
        "routing_key": routing_key,
        "exchange": delivery.get("exchange") or None,
        "hostname": hostname,
        "retries": retries if isinstance(retries, int) else 0,  # ``attempt_of``, inline
        "eta": eta,
        "expires": expires,
    }
