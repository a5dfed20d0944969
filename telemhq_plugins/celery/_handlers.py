"""The signal receivers: each turns one Celery signal into a ``start_run`` / ``Run.finish``.

They run on the task's thread, so they only record the run and enqueue it (core delivery
encodes and sends it from its own thread) and they never raise: every body catches and logs
its own errors (``capture_internal_errors``, or a plain ``try`` in the four that run for
every task).

Where each signal fires matters (see ``celery/app/trace.py`` and ``celery/worker/request.py``):

* ``task_prerun``, ``task_retry``, ``task_failure`` (an exception in the task) and
  ``task_postrun`` fire where the task runs: the pool child under prefork. A success is
  closed by ``task_postrun`` (state ``SUCCESS``), not ``task_success``: every connected
  signal costs each task a dispatch, and postrun is needed anyway (``Ignore``).
* ``task_failure`` for a hard time limit or a lost worker, and ``task_revoked``, fire in the
  worker's main process, which never saw the prerun: those pings are built from the task id
  and the request the main process holds (``task_received``), with no open run.
"""

from __future__ import annotations

import datetime as dt
import logging
import sys
import threading
import time
import weakref
from typing import Any

from billiard.exceptions import TimeLimitExceeded
from celery import signals

from telemhq_plugins.celery._context import (
    DEFAULT_EXCLUDE,
    attempt_of,
    celery_block,
    current_request,
    resolve_policy,
    same_task,
)
from telemhq_plugins.core.delivery import Client, current_client, get_client
from telemhq_plugins.core.logs import capture_internal_errors, log_once
from telemhq_plugins.core.once import OnceSet
from telemhq_plugins.core.payload import ErrorInfo, Status
from telemhq_plugins.core.runs import Run, Target, resolve_target
from telemhq_plugins.core.targets import TargetCache

__all__ = ["Handlers"]

logger = logging.getLogger("telemhq")

ORCHESTRATOR = "celery"
_SUCCESS = "SUCCESS"
_IGNORED = "IGNORED"
#: pools that run tasks in the worker's own process (no main process reporting for a child).
_IN_PROCESS_POOLS = frozenset(
    {
        "celery.concurrency.solo",
        "celery.concurrency.thread",
        "celery.concurrency.eventlet",
        "celery.concurrency.gevent",
    }
)


def _internal_error(where: str) -> None:
    """Log our own bug once per place and type, like ``capture_internal_errors`` (which the
    per-task handlers do not use: a ``with`` adds its own calls to every task)."""
    log_once(
        logger,
        logging.ERROR,
        ("internal", where, sys.exc_info()[0]),
        "TelemHQ integration error in %s (the task itself is unaffected)",
        where,
        exc_info=True,
    )


_REPORTED_MAX = 1024
_UNRESOLVED: Any = object()


class Handlers:
    """Signal receivers bound to one instrumentation's options (connected with strong refs)."""

    def __init__(
        self,
        *,
        app: Any = None,
        include: tuple[str, ...] = (),
        exclude: tuple[str, ...] = DEFAULT_EXCLUDE,
        send_start: bool | None = None,
    ) -> None:
        self.app = app
        self.include = include
        self.exclude = exclude
        self.send_start = send_start
        #: open runs of this process by task id (prerun -> success/failure/retry).
        self.runs: dict[str, Run] = {}
        #: the run last started on each thread (greenlet, under gevent or eventlet), for
        #: ``current``; stale once it is no longer open in ``runs`` (never removed here, so
        #: that the end of a task does one dict operation fewer).
        self.by_thread: dict[int, Run] = {}
        #: the main process's requests by task id, for pings it reports without a prerun.
        self.received: weakref.WeakValueDictionary[str, Any] = weakref.WeakValueDictionary()
        #: task ends this process already reported without a run: a hard time limit reaches
        #: ``task_failure`` twice in the main process (the pool's job error, then
        #: ``on_timeout``), and one end must make one ping.
        self.reported = OnceSet(limit=_REPORTED_MAX)
        #: task object -> where its pings go (None: not monitored).
        self.targets: TargetCache[Any] = TargetCache()
        #: None until the first ``task_received`` tells which pool the worker runs.
        self._pool_in_process: bool | None = None

    # -- where a task's pings go ---------------------------------------------------------------

    def target(self, task: Any) -> Target | None:
        """Where ``task``'s pings go, or None when it is not monitored. Resolved once per task
        object and delivery client: the app check, glob match and token resolution stay off
        the hot path, whose cache lookup ``on_prerun`` does inline."""
        if task is None:
            return None
        return self.targets.get(task, lambda client: self._resolve(task, client))

    def _resolve(self, task: Any, client: Client) -> Target | None:
        if self.app is not None and getattr(task, "app", None) is not self.app:
            return None
        name = task.name
        options = getattr(task, "telemhq", None)
        policy = resolve_policy(name, options, include=self.include, exclude=self.exclude)
        if policy is None:
            return None
        send_start = self.send_start if policy.send_start is None else policy.send_start
        return resolve_target(name, token=policy.token, send_start=send_start, client=client)

    # -- worker side: where the task runs ------------------------------------------------------

    def on_prerun(
        self,
        *,
        sender: Any = None,
        task_id: Any = None,
        task: Any = None,
        signal: Any = None,
        args: Any = None,
        kwargs: Any = None,
        **_: Any,
    ) -> None:
        # This and ``on_postrun`` run for every task, so they are written for few Python
        # calls (each costs far more in a busy worker than in a loop, see ``Run``). Every
        # argument Celery sends is named, even those not used: whatever lands in ``**_`` costs
        # a dict built per call, a large part of a receiver's own cost. A plain try/except
        # rather than ``capture_internal_errors``, the target cache read inline (against the
        # process-wide client, ``current_client``: one call, which creates nothing), the
        # request read from the stack the tracer just pushed it on (``current_request``), and
        # the run not bound to the context: ``report()`` finds it through ``current`` (a run
        # finder), by thread.
        try:
            task = task or sender
            targets = self.targets
            target = (
                targets.entries.get(task, _UNRESOLVED)
                if targets.client is current_client()
                else _UNRESOLVED
            )
            if target is _UNRESOLVED:
                target = self.target(task)
            if target is None or task_id is None:
                return
            block = celery_block(task_id, current_request(task))
            current = target.run(
                task.name,
                orchestrator=ORCHESTRATOR,
                run_id=task_id,
                attempt=block.get("retries", 0) + 1,
                details=block,
            )
            self.runs[task_id] = current
            # Looked up per call, not imported: gevent and eventlet patch it per greenlet.
            self.by_thread[threading.get_ident()] = current
            if target.send_start:
                current.start()
        except Exception:
            _internal_error("celery.task_prerun")

    def on_failure(
        self,
        sender: Any = None,
        task_id: Any = None,
        exception: Any = None,
        einfo: Any = None,
        **_: Any,
    ) -> None:
        with capture_internal_errors("celery.task_failure"):
            if task_id is None:
                return
            error = _error_info(exception, einfo)
            current = self.runs.pop(task_id, None)
            if current is not None:
                current.finish("failure", error=error)
                return
            # Reported by the worker's main process (hard time limit, worker lost): the
            # child that ran the prerun is gone. A time limit says how long it ran.
            duration = None
            if isinstance(exception, TimeLimitExceeded) and exception.args:
                limit = exception.args[0]
                if isinstance(limit, (int, float)):
                    duration = float(limit) * 1000.0
            self._finish_detached(
                sender,
                task_id,
                "failure",
                error=error,
                duration_ms=duration,
                request=getattr(sender, "request", None),
            )

    def on_retry(
        self,
        sender: Any = None,
        request: Any = None,
        reason: Any = None,
        einfo: Any = None,
        **_: Any,
    ) -> None:
        with capture_internal_errors("celery.task_retry"):
            task_id = getattr(request, "id", None)
            if task_id is None:
                return
            # ``reason`` is the Retry exception; its ``exc`` is what the task raised, if any.
            cause = getattr(reason, "exc", None) or reason
            error = _error_info(cause if isinstance(cause, BaseException) else None, None)
            if error is None and reason is not None:
                error = ErrorInfo("Retry", str(reason))
            current = self.runs.pop(task_id, None)
            if current is not None:
                current.finish("retry", error=error)
            else:
                self._finish_detached(sender, task_id, "retry", error=error, request=request)

    def on_postrun(
        self,
        *,
        sender: Any = None,
        task_id: Any = None,
        task: Any = None,
        state: Any = None,
        signal: Any = None,
        args: Any = None,
        kwargs: Any = None,
        retval: Any = None,
        **_: Any,
    ) -> None:
        """Close what ``task_failure`` or ``task_retry`` did not: a success, an ``Ignore``
        (-> ``skipped``); a ``Reject`` is left to the main process (it reports a failure
        unless the message is requeued)."""
        try:
            if task_id is None:
                return
            current = self.runs.pop(task_id, None)
            if current is None:
                task = task or sender
                # Instrumented while the task ran (no start, no duration). The target check
                # first: an unmonitored task pays a dict lookup here, not the request lookup.
                if state == _SUCCESS and self.target(task) is not None:
                    self._finish_detached(task, task_id, "success", request=task.request)
            elif state == _SUCCESS:
                current.finish("success")
            elif state == _IGNORED:
                current.finish("skipped")
            # Any other state (a Reject): the run is dropped, the main process reports it.
        except Exception:
            _internal_error("celery.task_postrun")

    def current(self) -> Run | None:
        """The run of the task executing on this thread, if any: the run finder that lets
        ``report()`` reach it (core's ``add_run_finder``)."""
        found = self.by_thread.get(threading.get_ident())
        if found is None or self.runs.get(found.run_id) is not found:
            return None  # no task here, or its run has ended
        return found

    # -- worker's main process ----------------------------------------------------------------

    def on_received(
        self, sender: Any = None, request: Any = None, signal: Any = None, **_: Any
    ) -> None:
        """Remember the request in a worker whose pool runs tasks in other processes."""
        try:
            if self._pool_in_process is None:
                module = type(getattr(sender, "pool", None)).__module__
                self._pool_in_process = module in _IN_PROCESS_POOLS
            if self._pool_in_process:
                # Prerun and the end happen in this process: nothing to remember, now or
                # later, so stop costing every task a signal dispatch.
                signals.task_received.disconnect(self.on_received)
                return
            task_id = getattr(request, "id", None)
            if task_id is not None:
                self.received[task_id] = request
        except Exception:
            _internal_error("celery.task_received")

    def on_revoked(
        self,
        sender: Any = None,
        request: Any = None,
        terminated: Any = None,
        signum: Any = None,
        expired: Any = None,
        **_: Any,
    ) -> None:
        with capture_internal_errors("celery.task_revoked"):
            task_id = getattr(request, "id", None)
            if task_id is None:
                return
            revoked = {
                "terminated": bool(terminated),
                "signum": None if signum is None else str(signum),
                "expired": bool(expired),
            }
            current = self.runs.pop(task_id, None)
            if current is not None:
                if current.details is not None:
                    current.details["revoked"] = revoked
                current.finish("cancelled")
            else:
                self._finish_detached(
                    sender, task_id, "cancelled", request=request, revoked=revoked
                )

    def _finish_detached(
        self,
        task: Any,
        task_id: str,
        status: Status,
        *,
        error: ErrorInfo | None = None,
        duration_ms: float | None = None,
        request: Any = None,
        revoked: dict[str, Any] | None = None,
    ) -> None:
        """A ping for a task this process never saw start: once per task id and status (and
        attempt, for a retry). A hard time limit reaches ``task_failure`` twice in the main
        process, once with the request and once without; the first, fuller one is sent."""
        target = self.target(task)
        if target is None:
            return
        if not self.reported.claim(
            (task_id, status, attempt_of(request) if status == "retry" else None)
        ):
            return
        block = celery_block(task_id, request)
        if revoked is not None:
            block["revoked"] = revoked
        received = self.received.pop(task_id, None)
        started_wall = getattr(received, "time_start", None)
        started_at = None
        if isinstance(started_wall, (int, float)) and started_wall > 0:
            # The main process accepted the task at ``time_start`` (wall clock): the best
            # measure left once the child that timed it is gone.
            started_at = dt.datetime.fromtimestamp(started_wall, dt.UTC)
            if duration_ms is None:
                duration_ms = max(0.0, (time.time() - started_wall) * 1000.0)
        current = target.run(
            task.name,
            orchestrator=ORCHESTRATOR,
            run_id=task_id,
            attempt=attempt_of(request) if same_task(task_id, request) else None,
            details=block,
            timed=False,  # this process never saw it start
            started_at=started_at,
        )
        current.finish(status, error=error, duration_ms=duration_ms)

    # -- shutdown -------------------------------------------------------------------------------

    def on_shutdown(self, **_: Any) -> None:
        """Worker (or pool child) shutting down: send what is queued, within the flush bound
        (with a spool, what could not be sent in time is kept there)."""
        with capture_internal_errors("celery.shutdown"):
            get_client().close()


def _error_info(exception: Any, einfo: Any) -> ErrorInfo | None:
    """The error of a failed task; Celery's formatted traceback when it has one (the
    exception's own traceback is cleared, or never existed in the main process)."""
    if not isinstance(exception, BaseException):
        return None
    text = getattr(einfo, "traceback", None)
    if not (isinstance(text, str) and text):
        return ErrorInfo.from_exception(exception)
    try:
        message = str(exception)
    except Exception:
        message = f"<unprintable {type(exception).__name__}>"
    return ErrorInfo(type(exception).__qualname__, message, text)
