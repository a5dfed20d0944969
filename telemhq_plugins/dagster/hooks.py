"""Step hooks: one ping per attempt of every op or asset step they are attached to.

::

    @job(hooks=telemhq_hooks())
    def etl(): ...

The hook is a raw ``HookDefinition`` over the step's event list, so it sees an attempt that a
``RetryPolicy`` will retry (``STEP_UP_FOR_RETRY`` -> ``retry``), which Dagster's ready-made
``@success_hook``/``@failure_hook`` skip. It runs where the step ran (the step's own process
under the multiprocess executor), after the step, so it sends no ``start``: the run's
``start`` comes from :func:`telemhq_plugins.dagster.telemhq_sensors` (``send_start=True``).
Pings are queued, never sent on the op's time; a step process flushes them at its exit,
within ``flush_timeout`` (core delivery hooks the process's exit). Dagster runs no hook for a
step it skips, but hands the skip (``STEP_SKIPPED``) to the hook of the step whose missing
output caused it (in-process executor): that hook sends the skipped step's ``skipped``.
"""

from __future__ import annotations

import collections
import datetime as dt
import logging
import threading
import time
from collections.abc import Sequence
from typing import Any

from dagster import HookDefinition, failure_hook, success_hook

from telemhq_plugins.core.delivery import Client, get_client
from telemhq_plugins.core.logs import capture_internal_errors, log_once
from telemhq_plugins.core.once import OnceSet
from telemhq_plugins.core.payload import ErrorInfo, stable_ping_id
from telemhq_plugins.core.policy import resolve_policy
from telemhq_plugins.core.runs import Run, Target, add_run_finder, resolve_target
from telemhq_plugins.core.targets import TargetCache
from telemhq_plugins.dagster import _compat
from telemhq_plugins.dagster._instrumentor import warn_if_unsupported
from telemhq_plugins.dagster._links import run_url
from telemhq_plugins.dagster._translate import (
    ORCHESTRATOR,
    PARTITION_TAG,
    StepOutcome,
    asset_key_of,
    bounded_tags,
    metrics_from_metadata,
    options_from_tags,
    skipped_steps,
    step_job_name,
    step_outcome,
)

__all__ = ["HOOK_NAME", "StepReporter", "reporter_for", "telemhq_hooks"]

logger = logging.getLogger("telemhq")

HOOK_NAME = "telemhq_step"
#: the attribute of our hook functions that holds their :class:`StepReporter`.
_REPORTER_ATTR = "telemhq_reporter"
#: the attempt under which a skipped step (never attempted) is remembered as reported.
_NEVER_ATTEMPTED = 0
#: open ``report()`` collectors (a step whose hook never ran leaves one behind) and ended
#: attempts remembered, at most.
_COLLECTORS_MAX = 1024


class _Collectors:
    """What ``telemhq_plugins.report()`` adds inside a step, until the step's hook takes it.

    The hook only runs once the step has ended, so ``report()`` cannot reach the run it sends:
    a run finder (core's ``add_run_finder``) hands it an inert run that holds the metrics,
    keyed by Dagster run id, step key and attempt."""

    def __init__(self) -> None:
        self._runs: collections.OrderedDict[tuple[str, str, int], Run] = collections.OrderedDict()
        #: attempts already reported (bounded like ``_runs``).
        self._ended = OnceSet(limit=_COLLECTORS_MAX)
        self._lock = threading.Lock()

    def first_end(self, run_id: str, step_key: str, attempt: int) -> bool:
        """True the first time this attempt's end is seen in this process."""
        return self._ended.claim((run_id, step_key, attempt))

    def find(self) -> Run | None:
        step = _compat.current_step_context()
        if step is None or not _has_our_hook(step):
            return None
        key = (step.run_id, step.step.key, _attempt(step))
        with self._lock:
            found = self._runs.get(key)
            if found is None:
                found = Run(None, url=None, client=get_client(), timed=False)
                self._runs[key] = found
                while len(self._runs) > _COLLECTORS_MAX:
                    self._runs.popitem(last=False)
            return found

    def take(self, run_id: str, step_key: str, attempt: int) -> dict[str, Any] | None:
        with self._lock:
            found = self._runs.pop((run_id, step_key, attempt), None)
        return None if found is None else found.metrics


collectors = _Collectors()


def _has_our_hook(step: Any) -> bool:
    hooks = step.job_def.get_all_hooks_for_handle(step.node_handle) or ()
    return any(getattr(hook, "name", None) == HOOK_NAME for hook in hooks)


def _attempt(step: Any) -> int:
    try:
        return int(step.previous_attempt_count) + 1
    except Exception:
        return 1


def _attempt_start(step: Any) -> float | None:
    """When this attempt of the step started (epoch seconds), from the run's event log."""
    stats = step.instance.event_log_storage.get_step_stats_for_run(
        step.run_id, step_keys=[step.step.key]
    )
    for stat in stats:
        markers = list(getattr(stat, "attempts_list", None) or ())
        if markers and markers[-1].start_time is not None:
            return float(markers[-1].start_time)
        if stat.start_time is not None:
            return float(stat.start_time)
    return None


class StepReporter:
    """Turns a step's end into its ping; one per :func:`telemhq_hooks` call (its options)."""

    def __init__(
        self,
        *,
        token: str | None = None,
        resource_key: str | None = None,
        include: Sequence[str] = (),
        exclude: Sequence[str] = (),
    ) -> None:
        self.token = token
        self.resource_key = resource_key
        self.include = tuple(include)
        self.exclude = tuple(exclude)
        #: job name -> where its pings go.
        self._targets: TargetCache[str] = TargetCache()

    def client_from(self, resources: Any) -> Client:
        """The client of the resource at ``resource_key`` among ``resources``, else core's."""
        if self.resource_key is not None:
            client_of = getattr(getattr(resources, self.resource_key, None), "client", None)
            if callable(client_of):
                client: Client = client_of()
                return client
        return get_client()

    def target(self, job: str, client: Client, op_tags: Any) -> Target | None:
        """Where ``job``'s pings go (None: not monitored), resolved once per job and client."""

        def resolve(client: Client) -> Target | None:
            options = options_from_tags(op_tags)
            policy = resolve_policy(job, options, include=self.include, exclude=self.exclude)
            if policy is None:
                return None
            token = policy.token or self.token
            return resolve_target(job, token=token, send_start=False, client=client)

        return self._targets.get(job, resolve, client=client)

    def on_step(self, hook_context: Any, outcome: StepOutcome | None) -> None:
        """Send the ping of the attempt that just ended (``outcome`` None: nothing ended it,
        nothing is sent)."""
        step = _compat.step_context(hook_context)
        if step is None or outcome is None:
            return
        run_id, step_key, attempt = step.run_id, step.step.key, _attempt(step)
        if not collectors.first_end(run_id, step_key, attempt):
            return  # our hooks attached twice (job and asset, with_hooks): one ping
        reported = collectors.take(run_id, step_key, attempt)
        op = str(step.node_handle)
        asset_key = asset_key_of(step.step.step_outputs)
        job = step_job_name(step.job_name, op, asset_key)
        client = self.client_from(hook_context.resources)
        target = self.target(job, client, getattr(step.op_def, "tags", None))
        if target is None:
            return
        block = _block(
            run_id,
            job_name=step.job_name,
            op=op,
            step_key=step_key,
            asset_key=asset_key,
            run_tags=step.dagster_run.tags,
        )
        block["attempt"] = attempt
        metrics: dict[str, Any] = {}
        if outcome.status == "success":
            with capture_internal_errors("dagster.hook metadata"):
                metrics.update(metrics_from_metadata(hook_context.op_output_metadata))
        metrics.update(reported or {})

        now = time.time()
        duration_ms = outcome.duration_ms
        if duration_ms is None:
            with capture_internal_errors("dagster.hook step start"):
                started = _attempt_start(step)
                if started is not None:
                    duration_ms = max(0.0, (now - started) * 1000.0)
        started_at = None
        if duration_ms is not None:
            started_at = dt.datetime.fromtimestamp(now - duration_ms / 1000.0, dt.UTC)
        current = target.run(
            job,
            orchestrator=ORCHESTRATOR,
            run_id=f"{run_id}:{step_key}",
            attempt=attempt,
            details=block,
            timed=False,
            started_at=started_at,
        )
        current.finish(outcome.status, error=outcome.error, duration_ms=duration_ms, **metrics)

    def on_skipped(
        self,
        client: Client,
        *,
        run_id: str,
        job_name: str,
        step_key: str,
        op: str,
        asset_key: str | None,
        op_tags: Any,
        run_tags: Any,
    ) -> None:
        """Send ``skipped`` for a step Dagster skipped (``STEP_SKIPPED``). Its ``ping_id`` is
        derived from the step, so the same ping sent from the hooks and from the run sensors
        is stored once."""
        job = step_job_name(job_name, op, asset_key)
        target = self.target(job, client, op_tags)
        if target is None:
            return
        step_run_id = f"{run_id}:{step_key}"
        current = target.run(
            job,
            orchestrator=ORCHESTRATOR,
            run_id=step_run_id,
            details=_block(
                run_id,
                job_name=job_name,
                op=op,
                step_key=step_key,
                asset_key=asset_key,
                run_tags=run_tags,
            ),
            timed=False,
        )
        current.finish("skipped", ping_id=stable_ping_id(step_run_id, None, "skipped"))


def _block(
    run_id: str, *, job_name: str, op: str, step_key: str, asset_key: str | None, run_tags: Any
) -> dict[str, Any]:
    """A step ping's ``dagster`` block (without the attempt)."""
    block: dict[str, Any] = {
        "run_id": run_id,
        "job_name": job_name,
        "op": op,
        "step_key": step_key,
    }
    url = run_url(run_id)
    if url is not None:
        block["ui_url"] = url
    if asset_key is not None:
        block["asset_key"] = asset_key
    partition = (run_tags or {}).get(PARTITION_TAG)
    if partition is not None:
        block["partition_key"] = partition
    user_tags = bounded_tags(run_tags)
    if user_tags:
        block["tags"] = user_tags
    return block


def reporter_for(job_def: Any, node_handle: Any) -> StepReporter | None:
    """The reporter of our step hook on that node of the job, or None (not attached)."""
    for hook in job_def.get_all_hooks_for_handle(node_handle) or ():
        reporter = getattr(getattr(hook, "hook_fn", None), _REPORTER_ATTR, None)
        if isinstance(reporter, StepReporter):
            return reporter
    return None


def _report_skips(hook_context: Any, step: Any, events: Any) -> None:
    """``skipped`` for each step Dagster skipped after this one (it hands this step's hook
    their ``STEP_SKIPPED``), when our hook is on that step too."""
    for event in skipped_steps(events):
        step_key = str(event.step_key)
        handle = event.node_handle
        reporter = reporter_for(step.job_def, handle)
        if reporter is None or not collectors.first_end(step.run_id, step_key, _NEVER_ATTEMPTED):
            continue
        with capture_internal_errors("dagster.hook skipped"):
            planned = step.execution_plan.get_step_by_key(step_key)
            reporter.on_skipped(
                reporter.client_from(hook_context.resources),
                run_id=step.run_id,
                job_name=step.job_name,
                step_key=step_key,
                op=str(handle),
                asset_key=asset_key_of(getattr(planned, "step_outputs", ())),
                op_tags=getattr(step.job_def.get_node(handle).definition, "tags", None),
                run_tags=step.dagster_run.tags,
            )


def _raw_hook(reporter: StepReporter, required: set[str]) -> HookDefinition:
    def hook_fn(context: Any, events: Any) -> Any:
        with capture_internal_errors("dagster.hook"):
            step = _compat.step_context(context)
            if step is not None:
                reporter.on_step(context, step_outcome(step.step.key, events))
                _report_skips(context, step, events)
        return _compat.hook_result(HOOK_NAME)

    setattr(hook_fn, _REPORTER_ATTR, reporter)  # for the skipped steps of other nodes
    return HookDefinition(name=HOOK_NAME, hook_fn=hook_fn, required_resource_keys=required)


def _public_hooks(reporter: StepReporter, required: set[str]) -> set[HookDefinition]:
    """The fallback when Dagster's private hook API moved: success and failure only (an
    attempt that will be retried is not seen)."""
    log_once(
        logger,
        logging.WARNING,
        "dagster-public-hooks",
        "TelemHQ: this Dagster's hook internals moved; step retries are not reported",
    )

    def on_success(context: Any) -> None:
        with capture_internal_errors("dagster.success_hook"):
            reporter.on_step(context, StepOutcome("success"))

    def on_failure(context: Any) -> None:
        with capture_internal_errors("dagster.failure_hook"):
            exc = context.op_exception
            error = ErrorInfo.from_exception(exc) if exc is not None else None
            reporter.on_step(context, StepOutcome("failure", error=error))

    success: HookDefinition = success_hook(name=HOOK_NAME, required_resource_keys=required)(
        on_success
    )
    failure: HookDefinition = failure_hook(
        name=f"{HOOK_NAME}_failure", required_resource_keys=required
    )(on_failure)
    return {success, failure}


def telemhq_hooks(
    token: str | None = None,
    *,
    resource_key: str | None = None,
    include: Sequence[str] = (),
    exclude: Sequence[str] = (),
) -> set[HookDefinition]:
    """Hooks for ``@job(hooks=...)``, ``define_asset_job(hooks=...)``, ``@asset(hooks=...)``
    or ``job.with_hooks(...)``: one ping per step attempt, to the tracker of
    ``<job>.<op>`` (``<job>.<asset key>``; the asset key alone under ``materialize()``).

    ``token``: one tracker (token or ping URL) for every step, else core's resolution by
    job name (``TELEMHQ_TRACKERS`` globs, ping key + slug). ``resource_key``: the key of a
    :class:`~telemhq_plugins.dagster.TelemHQResource` whose settings the pings use (the hooks
    then require that resource). ``include``/``exclude``: globs over those names; an op's
    tags ``telemhq/enabled`` and ``telemhq/token`` win over them for its steps."""
    warn_if_unsupported()
    reporter = StepReporter(
        token=token, resource_key=resource_key, include=include, exclude=exclude
    )
    required = {resource_key} if resource_key else set()
    add_run_finder(collectors.find)
    if _compat.RAW_HOOKS:
        return {_raw_hook(reporter, required)}
    return _public_hooks(reporter, required)
