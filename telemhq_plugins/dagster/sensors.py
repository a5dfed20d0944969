"""Run status sensors: one ping per Dagster run, and the schedules' sync.

::

    defs = Definitions(jobs=[...], schedules=[...], sensors=telemhq_sensors())

The sensors run in the Dagster daemon (evaluated in the code location's process), so they see
every run of the code location, however it ended: a run whose worker crashed is reported too.
What Dagster does around a run status sensor decides how ours are written:

* Dagster owns the cursor: the function never sets it and returns None (a ``SkipReason`` would
  end the tick after one run; None lets Dagster hand it several per tick).
* If the function raises, Dagster still moves the cursor and that run is never seen again,
  so nothing here raises.
* The first tick of a sensor only sets its cursor: runs that ended before it are not reported.
* A run launched outside a code location (``execute_in_process``) is seen only with
  ``monitor_all_code_locations=True``.

When a run ends, the sensors also send ``skipped`` for the steps Dagster skipped
(``STEP_SKIPPED`` in the run's event log) that carry our step hooks: the multiprocess
executor records those skips in the run worker, where no hook sees them. The in-process
executor hands them to a hook too; both send the same ``ping_id``, and the server stores one.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Sequence
from typing import Any

from dagster import (
    DagsterEventType,
    DagsterRunStatus,
    DefaultScheduleStatus,
    DefaultSensorStatus,
    RunStatusSensorContext,
    SensorDefinition,
    SensorEvaluationContext,
    run_status_sensor,
    sensor,
)

from telemhq_plugins.core.config import env_flag
from telemhq_plugins.core.delivery import Client, get_client, keep_replaying
from telemhq_plugins.core.logs import capture_internal_errors
from telemhq_plugins.core.payload import ErrorInfo, Status
from telemhq_plugins.core.policy import JobPolicy, resolve_policy
from telemhq_plugins.core.provision import JobSchedule, ScheduleSync, sync
from telemhq_plugins.core.runs import resolve_target
from telemhq_plugins.dagster import _compat
from telemhq_plugins.dagster._instrumentor import warn_if_unsupported
from telemhq_plugins.dagster._links import run_url
from telemhq_plugins.dagster._translate import (
    ORCHESTRATOR,
    PARTITION_TAG,
    asset_key_of,
    bounded_tags,
    error_from_serializable,
    options_from_tags,
)
from telemhq_plugins.dagster.hooks import reporter_for
from telemhq_plugins.dagster.resources import TelemHQResource, resource_in

__all__ = [
    "RunReporter",
    "failure_of",
    "report_skipped_steps",
    "schedules_of",
    "start_sync",
    "telemhq_sensors",
]

logger = logging.getLogger("telemhq")

_STATUS: dict[DagsterRunStatus, Status] = {
    DagsterRunStatus.SUCCESS: "success",
    DagsterRunStatus.FAILURE: "failure",
    DagsterRunStatus.CANCELED: "cancelled",
    DagsterRunStatus.STARTED: "start",
}
#: at most this many failed steps are named in a failure's message.
_STEPS_NAMED = 5


class RunReporter:
    """Turns a run's status change into its ping; one per :func:`telemhq_sensors` call."""

    def __init__(
        self,
        *,
        token: str | None = None,
        include: Sequence[str] = (),
        exclude: Sequence[str] = (),
    ) -> None:
        self.token = token
        self.include = tuple(include)
        self.exclude = tuple(exclude)

    def policy(self, job: str, tags: Any) -> JobPolicy | None:
        options = options_from_tags(tags)
        return resolve_policy(job, options, include=self.include, exclude=self.exclude)

    def on_run(self, context: RunStatusSensorContext, run_status: DagsterRunStatus) -> None:
        dagster_run = context.dagster_run
        job = dagster_run.job_name
        policy = self.policy(job, dagster_run.tags)
        if policy is None:
            return
        resource = resource_in(context.repository_def)
        client = resource.client() if resource is not None else get_client()
        keep_replaying(client)  # this process lives on: it replays what ended steps spooled
        target = resolve_target(job, token=policy.token or self.token, client=client)
        if target is None:
            return
        record = context.instance.get_run_record_by_id(dagster_run.run_id)
        started = getattr(record, "start_time", None)
        ended = getattr(record, "end_time", None)
        block: dict[str, Any] = {"run_id": dagster_run.run_id, "job_name": job}
        url = run_url(dagster_run.run_id)
        if url is not None:
            block["ui_url"] = url
        partition = dagster_run.tags.get(PARTITION_TAG)
        if partition is not None:
            block["partition_key"] = partition
        tags = bounded_tags(dagster_run.tags)
        if tags:
            block["tags"] = tags
        current = target.run(
            job,
            orchestrator=ORCHESTRATOR,
            run_id=dagster_run.run_id,
            details=block,
            timed=False,
            started_at=None if started is None else dt.datetime.fromtimestamp(started, dt.UTC),
        )
        status = _STATUS[run_status]
        if status == "start":
            current.start()
            return
        duration = (ended - started) * 1000.0 if started is not None and ended else None
        error: ErrorInfo | None = None
        if status == "failure":
            error, failed = failure_of(context)
            if failed:
                block["failed_steps"] = failed
        current.finish(status, error=error, duration_ms=duration)


def failure_of(context: RunStatusSensorContext) -> tuple[ErrorInfo | None, list[str]]:
    """The user's error of a failed run and its failed step keys: the first step failure's
    error, named after its step; without one (the run failed outside any step) the run
    failure event's own error or message."""
    records = context.instance.get_records_for_run(
        run_id=context.dagster_run.run_id, of_type=DagsterEventType.STEP_FAILURE
    ).records
    failures = [r.event_log_entry.dagster_event for r in records]
    steps = [str(e.step_key) for e in failures if e is not None and e.step_key]
    for event in failures:
        error = error_from_serializable(
            getattr(getattr(event, "event_specific_data", None), "error", None)
        )
        if error is not None:
            named = ", ".join(steps[:_STEPS_NAMED]) + (" ..." if len(steps) > _STEPS_NAMED else "")
            message = f"step {named} failed: {error.message}" if steps else error.message
            return ErrorInfo(error.type, message, error.traceback), steps
    event = context.dagster_event
    error = error_from_serializable(getattr(event.event_specific_data, "error", None))
    if error is None:
        error = ErrorInfo("RunFailure", str(event.message or "the run failed"))
    return error, steps


def report_skipped_steps(context: RunStatusSensorContext) -> None:
    """``skipped`` for each step of the run Dagster skipped whose node carries our step hooks
    (found in the code location's job; a job of another code location is left out), sent as
    those hooks would send it."""
    dagster_run = context.dagster_run
    repository_def = context.repository_def
    if repository_def is None or not repository_def.has_job(dagster_run.job_name):
        return
    records = context.instance.get_records_for_run(
        run_id=dagster_run.run_id, of_type=DagsterEventType.STEP_SKIPPED
    ).records
    events = [r.event_log_entry.dagster_event for r in records]
    if not any(event is not None and event.step_key for event in events):
        return
    job_def = repository_def.get_job(dagster_run.job_name)
    plan = context.instance.get_execution_plan_snapshot(dagster_run.execution_plan_snapshot_id)
    outputs = {step.key: step.outputs for step in plan.steps}
    resource = resource_in(repository_def)
    for event in events:
        if event is None or not event.step_key or event.node_handle is None:
            continue
        reporter = reporter_for(job_def, event.node_handle)
        if reporter is None:
            continue
        with capture_internal_errors("dagster.sensor skipped step"):
            use_resource = resource is not None and reporter.resource_key is not None
            reporter.on_skipped(
                resource.client() if resource is not None and use_resource else get_client(),
                run_id=dagster_run.run_id,
                job_name=dagster_run.job_name,
                step_key=event.step_key,
                op=str(event.node_handle),
                asset_key=asset_key_of(outputs.get(event.step_key, ())),
                op_tags=getattr(job_def.get_node(event.node_handle).definition, "tags", None),
                run_tags=dagster_run.tags,
            )


def schedules_of(
    repository_def: Any,
    instance: Any,
    reporter: RunReporter,
    resource: TelemHQResource | None = None,
) -> list[JobSchedule]:
    """The code location's schedules as one :class:`JobSchedule` per job: the crons of its
    running schedules (a list is combined by core). A job whose every schedule is stopped is
    ``paused`` (its tracker is paused, and keeps those crons for when one runs again)."""
    states = _compat.schedule_states(instance) if instance is not None else {}
    running: dict[str, list[str]] = {}
    stopped: dict[str, list[str]] = {}
    timezones: dict[tuple[str, bool], str | None] = {}
    for schedule in repository_def.schedule_defs:
        job = schedule.job_name
        default = schedule.default_status == DefaultScheduleStatus.RUNNING
        runs = bool(states.get(schedule.name, default))
        cron = schedule.cron_schedule
        (running if runs else stopped).setdefault(job, []).extend(
            [cron] if isinstance(cron, str) else cron
        )
        timezones.setdefault((job, runs), schedule.execution_timezone)
    found: list[JobSchedule] = []
    for job in dict.fromkeys([*running, *stopped]):
        policy = reporter.policy(job, None)
        if policy is None:
            continue
        token = policy.token or reporter.token or (resource.token if resource else None)
        runs = job in running
        found.append(
            JobSchedule(
                job=job,
                schedule=(running if runs else stopped)[job],
                timezone=timezones.get((job, runs)),
                token=token,
                paused=not runs,
            )
        )
    return found


def telemhq_sensors(
    *,
    monitored_jobs: Sequence[Any] | None = None,
    monitor_all_code_locations: bool = False,
    send_start: bool | None = None,
    default_status: DefaultSensorStatus = DefaultSensorStatus.RUNNING,
    minimum_interval_seconds: int = 30,
    name_prefix: str = "telemhq",
    token: str | None = None,
    include: Sequence[str] = (),
    exclude: Sequence[str] = (),
    sync_schedules: bool = True,
) -> list[SensorDefinition]:
    """Sensors for ``Definitions(sensors=[*telemhq_sensors()])``: one ping per run (job name
    = the Dagster job, ``run_id`` = the Dagster run id, duration from the run record) on
    success, failure (the failed steps and the user's error) and cancellation; ``start`` too
    with ``send_start`` (None: ``TELEMHQ_SEND_START``, read when the definitions load). With
    ``sync_schedules``, one more sensor makes the code location's schedules the job trackers'
    schedules (needs ``TELEMHQ_API_KEY`` or the resource's ``api_key``). ``include``/``exclude``
    are globs over job names; a job's tags ``telemhq/enabled`` and ``telemhq/token`` win over
    them."""
    warn_if_unsupported()
    reporter = RunReporter(token=token, include=include, exclude=exclude)
    statuses = [DagsterRunStatus.SUCCESS, DagsterRunStatus.FAILURE, DagsterRunStatus.CANCELED]
    if env_flag("TELEMHQ_SEND_START") if send_start is None else send_start:
        statuses.append(DagsterRunStatus.STARTED)
    sensors: list[SensorDefinition] = [
        _run_sensor(
            reporter,
            status,
            name=f"{name_prefix}_run_{status.value.lower()}",
            monitored_jobs=monitored_jobs,
            monitor_all_code_locations=monitor_all_code_locations,
            default_status=default_status,
            minimum_interval_seconds=minimum_interval_seconds,
        )
        for status in statuses
    ]
    if sync_schedules:
        sensors.append(
            _schedule_sensor(
                reporter,
                name=f"{name_prefix}_schedules",
                default_status=default_status,
                minimum_interval_seconds=minimum_interval_seconds,
            )
        )
    return sensors


def _run_sensor(
    reporter: RunReporter,
    run_status: DagsterRunStatus,
    *,
    name: str,
    monitored_jobs: Sequence[Any] | None,
    monitor_all_code_locations: bool,
    default_status: DefaultSensorStatus,
    minimum_interval_seconds: int,
) -> SensorDefinition:
    def report_run(context: RunStatusSensorContext) -> None:
        with capture_internal_errors(f"dagster.sensor {name}"):
            reporter.on_run(context, run_status)
        if run_status != DagsterRunStatus.STARTED:
            with capture_internal_errors(f"dagster.sensor {name} skipped steps"):
                report_skipped_steps(context)
        # None, never a SkipReason: Dagster then hands this sensor the next run of the tick.

    definition: SensorDefinition = run_status_sensor(
        run_status=run_status,
        name=name,
        monitored_jobs=list(monitored_jobs) if monitored_jobs else None,
        monitor_all_code_locations=monitor_all_code_locations,
        default_status=default_status,
        minimum_interval_seconds=minimum_interval_seconds,
        description=f"TelemHQ: one ping per run that ends {run_status.value.lower()}",
    )(report_run)
    return definition


def _schedule_sensor(
    reporter: RunReporter,
    *,
    name: str,
    default_status: DefaultSensorStatus,
    minimum_interval_seconds: int,
) -> SensorDefinition:
    def sync_schedules(context: SensorEvaluationContext) -> None:
        with capture_internal_errors(f"dagster.sensor {name}"):
            start_sync(context.repository_def, context.instance, reporter)

    definition: SensorDefinition = sensor(
        name=name,
        default_status=default_status,
        minimum_interval_seconds=minimum_interval_seconds,
        description="TelemHQ: the code location's schedules become its job trackers' schedules",
    )(sync_schedules)
    return definition


def start_sync(repository_def: Any, instance: Any, reporter: RunReporter) -> ScheduleSync | None:
    """Sync the code location's schedules on a background thread (core's ``sync``: only what
    changed is written, and an unchanged set skips the server)."""
    if repository_def is None:
        return None
    resource = resource_in(repository_def)
    schedules = schedules_of(repository_def, instance, reporter, resource)
    if not schedules:
        return None
    client: Client = resource.client() if resource is not None else get_client()
    api_key = resource.api_key if resource is not None else None
    return sync(schedules, orchestrator=ORCHESTRATOR, api_key=api_key, client=client)
