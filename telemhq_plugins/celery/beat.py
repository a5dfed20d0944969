"""Beat schedule awareness: tell each tracker when its task is expected, so the server can
detect a missed run (a beat that died, a worker that never picked the task up).

Off by default. When enabled (``instrument(beat_schedules=True)`` or
``TELEMHQ_CELERY_BEAT_SCHEDULES=1``), at ``beat_init`` a background thread reads beat's
schedule entries (read only: the schedule file is never written, beat keeps its own state),
translates each monitored task's entry into a :class:`~telemhq_plugins.core.JobSchedule` and
hands them to core's :func:`~telemhq_plugins.core.sync` (management API, ``TELEMHQ_API_KEY``;
trackers tagged ``celery``):

* ``crontab(...)`` -> a 5-field cron in the crontab's own time zone (a ``tz`` it carries, as
  django-celery-beat's crontabs do, or its app's), else the app's;
* ``schedule(timedelta)`` / a number of seconds -> a period;

plus the grace. Other schedule types (``solar``, custom classes) are skipped and logged, as is a
crontab restricting both day of month and day of week (Celery requires both, cron accepts
either: the server would expect runs that never happen).
"""

from __future__ import annotations

import datetime as dt
import logging
import threading
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from typing import Any

from celery.schedules import crontab, schedule

from telemhq_plugins.celery._context import DEFAULT_EXCLUDE, resolve_policy
from telemhq_plugins.core.cron import cron_from_fields
from telemhq_plugins.core.delivery import get_client
from telemhq_plugins.core.logs import capture_internal_errors
from telemhq_plugins.core.policy import JobPolicy
from telemhq_plugins.core.provision import JobSchedule, Outcome, SyncResult, sync

__all__ = [
    "BeatScheduleSync",
    "PushResult",
    "cron_expression",
    "crontab_timezone",
    "job_schedule",
    "schedule_spec",
]

logger = logging.getLogger("telemhq")

#: a ``crontab``'s attributes, in the order of a cron expression's fields.
_CRON_FIELDS = ("minute", "hour", "day_of_month", "month_of_year", "day_of_week")


def cron_expression(entry: crontab) -> str | None:
    """A Celery ``crontab`` as a standard 5-field cron string (Sunday = 0 in both), or None
    when cron cannot say the same thing (both day of month and day of week restricted)."""
    expression = cron_from_fields([getattr(entry, name) for name in _CRON_FIELDS])
    fields = expression.split()
    if fields[2] != "*" and fields[4] != "*":
        return None
    return expression


def crontab_timezone(entry: crontab, app: Any = None) -> str:
    """The time zone a crontab's fields are matched in, as Celery reads it (``crontab.tz``):
    a ``tz`` set on the crontab itself (django-celery-beat's ``TzAwareCrontab`` carries its
    row's zone so; Celery caches the one it used there too), else the zone of the app the
    crontab was built with (``crontab(..., app=...)``), else ``app``'s, else the current
    app's. A ``nowfun`` does not choose the zone: Celery converts its "now" into ``tz``."""
    own = vars(entry)
    tz = own.get("tz")
    if tz is None:
        # ``_app`` is what Celery's own ``tz`` reads; beat sets it to its app on every entry.
        owner = own.get("_app") or app
        tz = owner.timezone if owner is not None else entry.tz
    return str(getattr(tz, "key", None) or getattr(tz, "zone", None) or tz or "UTC")


def job_schedule(
    task_name: str,
    entry_schedule: Any,
    *,
    grace: float = 300.0,
    app: Any = None,
    token: str | None = None,
) -> JobSchedule | None:
    """The :class:`JobSchedule` of a beat entry's schedule, or None if it has no equivalent.

    A crontab fires in its own time zone when it has one (see :func:`crontab_timezone`), else
    in its app's; pass beat's ``app``: entries read back from beat's schedule file are
    unpickled without theirs (they would otherwise report the default app's).
    """
    grace_seconds = max(0.0, grace)
    if isinstance(entry_schedule, crontab):
        expression = cron_expression(entry_schedule)
        if expression is None:
            return None
        timezone = crontab_timezone(entry_schedule, app)
        return JobSchedule(task_name, expression, timezone, grace_seconds, token=token)
    period: float | dt.timedelta
    if type(entry_schedule) is schedule:  # not subclasses (solar etc. change the meaning)
        period = entry_schedule.run_every
    elif isinstance(entry_schedule, (int, float)) and not isinstance(entry_schedule, bool):
        period = float(entry_schedule)
    else:
        return None
    seconds = period.total_seconds() if isinstance(period, dt.timedelta) else period
    if seconds <= 0:
        return None
    return JobSchedule(task_name, period, grace_seconds=grace_seconds, token=token)


def schedule_spec(
    entry_schedule: Any, *, grace: float = 300.0, app: Any = None
) -> dict[str, Any] | None:
    """The tracker schedule (the server's JSON) for a beat entry's schedule, or None if it has
    no equivalent (see :func:`job_schedule`)."""
    translated = job_schedule("", entry_schedule, grace=grace, app=app)
    return None if translated is None else translated.spec()


@dataclass(frozen=True, slots=True)
class PushResult:
    """What happened to one beat entry (``outcome`` as core's ``SyncResult``)."""

    entry: str
    task: str
    outcome: Outcome
    detail: str = ""
    tracker_id: str | None = None
    schedule: dict[str, Any] | None = None


class BeatScheduleSync:
    """Push beat's schedule entries to their trackers (see the module docstring)."""

    def __init__(
        self,
        *,
        app: Any = None,
        grace: float = 300.0,
        api_key: str | None = None,
        include: Iterable[str] = (),
        exclude: Iterable[str] = DEFAULT_EXCLUDE,
    ) -> None:
        self.app = app
        self.grace = grace
        self.api_key = api_key
        self.include = tuple(include)
        self.exclude = tuple(exclude)
        self.thread: threading.Thread | None = None
        self.results: list[PushResult] = []

    def on_beat_init(self, sender: Any = None, **_: Any) -> None:
        """``beat_init`` receiver: push from a daemon thread, so beat starts on time even
        when the server is slow or down."""
        with capture_internal_errors("celery.beat_init"):
            app = getattr(sender, "app", None)
            if self.app is not None and app is not self.app:
                return
            entries = dict(sender.scheduler.schedule)  # a copy: beat keeps mutating its own
            thread = threading.Thread(
                target=self._push_logged, args=(entries, app), name="telemhq-beat", daemon=True
            )
            thread.start()
            self.thread = thread  # once started: whoever sees it may join it

    def _push_logged(self, entries: Mapping[str, Any], app: Any) -> None:
        with capture_internal_errors("celery.beat_push"):
            self.results = self.push(entries, app=app)
            for result in self.results:
                level = logging.WARNING if result.outcome == "error" else logging.INFO
                if result.outcome == "skipped" and result.detail != "not monitored":
                    level = logging.WARNING
                logger.log(
                    level,
                    "TelemHQ: beat entry %r (%s): schedule %s %s",
                    result.entry,
                    result.task,
                    result.outcome,
                    result.detail,
                )

    def policy_for(self, task_name: str, app: Any) -> JobPolicy | None:
        """The task's policy, from its ``telemhq`` option when beat's app has it loaded."""
        task = app.tasks.get(task_name) if app is not None else None
        return resolve_policy(
            task_name,
            getattr(task, "telemhq", None),
            include=self.include,
            exclude=self.exclude,
        )

    def push(self, entries: Mapping[str, Any], *, app: Any = None) -> list[PushResult]:
        """Set the schedule of each entry's tracker; synchronous, never raises."""
        settings = get_client().settings
        results: dict[str, PushResult] = {}  # entry name -> its result
        planned: dict[str, tuple[str, JobSchedule]] = {}  # task -> (first entry, its schedule)
        sharing: dict[str, str] = {}  # entry -> the entry of the same task it shares with
        for name, entry in entries.items():
            task_name = str(getattr(entry, "task", name))
            policy = self.policy_for(task_name, app)
            if policy is None or settings.disabled:
                results[name] = PushResult(name, task_name, "skipped", "not monitored")
                continue
            entry_schedule = getattr(entry, "schedule", None)
            translated = job_schedule(
                task_name, entry_schedule, grace=self.grace, app=app, token=policy.token
            )
            if translated is None:
                detail = f"no tracker equivalent for {entry_schedule!r}"
                results[name] = PushResult(name, task_name, "skipped", detail)
                continue
            if settings.ping_url_for(task_name, policy.token) is None:
                results[name] = PushResult(name, task_name, "skipped", "no tracker configured")
                continue
            if task_name in planned:
                first, first_schedule = planned[task_name]
                if first_schedule.spec() != translated.spec():
                    detail = f"tracker already takes the schedule of entry {first!r}"
                    spec = translated.spec()
                    results[name] = PushResult(name, task_name, "skipped", detail, schedule=spec)
                else:
                    sharing[name] = first
                continue
            planned[task_name] = (name, translated)
        if planned:
            done = sync(
                [translated for _, translated in planned.values()],
                orchestrator="celery",
                api_key=self.api_key,
                background=False,
                cached=False,
            )
            by_job = {r.job: r for r in done.results}
            for task_name, (name, translated) in planned.items():
                results[name] = _push_result(name, task_name, by_job.get(task_name), translated)
            for name, first in sharing.items():
                results[name] = replace(results[first], entry=name)
        return [results[name] for name in entries if name in results]


def _push_result(
    name: str, task_name: str, result: SyncResult | None, translated: JobSchedule
) -> PushResult:
    spec = translated.spec()
    if result is None:
        return PushResult(name, task_name, "error", "no result from the sync", schedule=spec)
    return PushResult(name, task_name, result.outcome, result.detail, result.tracker_id, spec)
