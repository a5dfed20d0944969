"""A DAG's timetable as its tracker's schedule, synced through core's ``provision.sync``.

Translation (Airflow 3.3's Task SDK and scheduler timetables alike):

* cron strings and presets (``"0 6 * * *"``, ``"@daily"``) are ``CronTriggerTimetable`` (or
  ``CronDataIntervalTimetable``): their expression (presets expanded) and timezone (a name or
  a ``Timezone``) become a cron schedule. The scheduler's classes keep them as
  ``_expression`` / ``_timezone``.
* a ``timedelta`` is a ``DeltaTriggerTimetable`` (``delta``, or ``_delta``): a period.
* no schedule, ``@once``, ``@continuous``, asset-triggered and anything else: no schedule
  (the tracker expects nothing).

Which DAGs: those reported at DAG level, by ``dag_callbacks()`` or by the listener (its
include/exclude globs), so that no tracker waits for pings nobody sends.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable
from typing import Any, TypedDict, Unpack

from telemhq_plugins.airflow._callbacks import DagCallback, has_dag_callback
from telemhq_plugins.airflow._client import airflow_client, connection_api_key
from telemhq_plugins.airflow._events import ORCHESTRATOR
from telemhq_plugins.core.policy import JobPolicy
from telemhq_plugins.core.provision import JobSchedule, ScheduleSync, sync

__all__ = ["SyncOptions", "dag_schedule", "dag_token", "sync_dag", "sync_dags"]


def _first(obj: Any, *names: str) -> Any:
    for name in names:
        value = getattr(obj, name, None)
        if value is not None:
            return value
    return None


def _timezone_name(value: Any) -> str | None:
    if value is None:
        return None
    if isinstance(value, str):
        return value
    name = getattr(value, "name", None)
    return str(name) if name else str(value)


def dag_schedule(dag: Any, *, token: str | None = None) -> JobSchedule:
    """The tracker schedule of ``dag`` (job: its ``dag_id``)."""
    timetable = getattr(dag, "timetable", None)
    expression = _first(timetable, "expression", "_expression")
    if isinstance(expression, str) and expression.strip():
        timezone = _timezone_name(_first(timetable, "timezone", "_timezone"))
        return JobSchedule(str(dag.dag_id), expression, timezone=timezone, token=token)
    delta = _first(timetable, "delta", "_delta")
    if isinstance(delta, dt.timedelta):  # a relativedelta (months) has no fixed period
        return JobSchedule(str(dag.dag_id), delta, token=token)
    return JobSchedule(str(dag.dag_id), None, token=token)


def dag_token(dag: Any) -> str | None:
    """The explicit token of ``dag``'s ``dag_callbacks(token=...)``, if any."""
    value = getattr(dag, "on_success_callback", None)
    for callback in value if isinstance(value, (list, tuple)) else [value]:
        if isinstance(callback, DagCallback):
            return callback.options.token
    return None


class SyncOptions(TypedDict, total=False):
    """How :func:`sync_dags` syncs: core's ``sync`` options, with its defaults."""

    background: bool
    dry_run: bool
    prune: bool
    cached: bool


def sync_dags(
    dags: Iterable[Any],
    *,
    listener_options: Any = None,
    every_dag: bool = False,
    **sync_options: Unpack[SyncOptions],
) -> ScheduleSync:
    """Sync the schedules of the DAGs reported at DAG level: those with ``dag_callbacks()``,
    and those ``listener_options(dag_id)`` (the listener's policy) answers for; every DAG with
    ``every_dag``. ``sync_options``: ``background``, ``dry_run``, ``prune``, ``cached``, as
    core's ``sync`` takes them."""
    schedules: list[JobSchedule] = []
    for dag in dags:
        options: JobPolicy | None = None
        if listener_options is not None:
            options = listener_options(str(dag.dag_id))
        if has_dag_callback(dag, "success"):
            schedules.append(dag_schedule(dag, token=dag_token(dag)))
        elif options is not None or every_dag:
            schedules.append(dag_schedule(dag, token=None if options is None else options.token))
    return sync(
        schedules,
        orchestrator=ORCHESTRATOR,
        api_key=connection_api_key(),
        client=airflow_client(),
        **sync_options,
    )


def sync_dag(dag: Any, options: JobPolicy) -> ScheduleSync:
    """Sync one DAG's schedule on a background thread (the listener, at the end of a run;
    core remembers a synced set, so an unchanged schedule asks nothing of the server)."""
    token = dag_token(dag) or options.token
    return sync(
        [dag_schedule(dag, token=token)],
        orchestrator=ORCHESTRATOR,
        api_key=connection_api_key(),
        client=airflow_client(),
    )
