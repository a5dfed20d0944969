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

A DAG paused in Airflow (``is_paused`` of its ``DagModel`` in the metadata database) pauses its
tracker; unpaused, the tracker resumes with its clock restarted. A DAG the database does not
know yet (or a process without the database) leaves the tracker's pause as it is.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Iterable
from typing import Any, TypedDict, Unpack

from telemhq_plugins.airflow._callbacks import DagCallback, has_dag_callback
from telemhq_plugins.airflow._client import airflow_client, connection_api_key
from telemhq_plugins.airflow._events import ORCHESTRATOR
from telemhq_plugins.core.logs import log_once
from telemhq_plugins.core.policy import JobPolicy
from telemhq_plugins.core.provision import JobSchedule, ScheduleSync, sync

__all__ = ["SyncOptions", "dag_schedule", "dag_token", "paused_dags", "sync_dag", "sync_dags"]

logger = logging.getLogger("telemhq")


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


def dag_schedule(dag: Any, *, token: str | None = None, paused: bool | None = None) -> JobSchedule:
    """The tracker schedule of ``dag`` (job: its ``dag_id``); ``paused``: whether Airflow has
    it paused (None: unknown, see :func:`paused_dags`)."""
    dag_id = str(dag.dag_id)
    timetable = getattr(dag, "timetable", None)
    expression = _first(timetable, "expression", "_expression")
    if isinstance(expression, str) and expression.strip():
        timezone = _timezone_name(_first(timetable, "timezone", "_timezone"))
        return JobSchedule(dag_id, expression, timezone=timezone, token=token, paused=paused)
    delta = _first(timetable, "delta", "_delta")
    if isinstance(delta, dt.timedelta):  # a relativedelta (months) has no fixed period
        return JobSchedule(dag_id, delta, token=token, paused=paused)
    return JobSchedule(dag_id, None, token=token, paused=paused)


def paused_dags(dag_ids: Iterable[str]) -> dict[str, bool]:
    """``is_paused`` of each DAG the metadata database knows, by ``dag_id``; empty when the
    database cannot be read (logged once): then no tracker's pause changes."""
    wanted = sorted(set(dag_ids))
    if not wanted:
        return {}
    try:
        from airflow.models.dag import DagModel
        from airflow.utils.session import create_session
        from sqlalchemy import select

        try:  # a session of its own: the scheduler's scoped one may be mid-transaction
            own_session = create_session(scoped=False)
        except TypeError:  # Airflow 2.10: only the scoped session
            own_session = create_session()
        with own_session as session:
            rows = session.execute(
                select(DagModel.dag_id, DagModel.is_paused).where(DagModel.dag_id.in_(wanted))
            ).all()
        return {str(dag_id): bool(is_paused) for dag_id, is_paused in rows}
    except Exception as exc:  # no metadata database here (a worker, a bare parse): unknown
        log_once(
            logger,
            logging.INFO,
            ("airflow", "paused_dags", type(exc).__name__),
            "TelemHQ: cannot read which DAGs are paused (%s: %s): their trackers' pause is "
            "left as it is",
            type(exc).__name__,
            exc,
        )
        return {}


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
    chosen: list[tuple[Any, str | None]] = []
    for dag in dags:
        options: JobPolicy | None = None
        if listener_options is not None:
            options = listener_options(str(dag.dag_id))
        if has_dag_callback(dag, "success"):
            chosen.append((dag, dag_token(dag)))
        elif options is not None or every_dag:
            chosen.append((dag, None if options is None else options.token))
    paused = paused_dags(str(dag.dag_id) for dag, _ in chosen)
    schedules = [
        dag_schedule(dag, token=token, paused=paused.get(str(dag.dag_id))) for dag, token in chosen
    ]
    return sync(
        schedules,
        orchestrator=ORCHESTRATOR,
        api_key=connection_api_key(),
        client=airflow_client(),
        **sync_options,
    )


def sync_dag(dag: Any, options: JobPolicy) -> ScheduleSync:
    """Sync one DAG's schedule and pause on a background thread (the listener, at the end of
    a run; core remembers a synced set, so an unchanged schedule asks nothing of the server)."""
    token = dag_token(dag) or options.token
    paused = paused_dags([str(dag.dag_id)]).get(str(dag.dag_id))
    return sync(
        [dag_schedule(dag, token=token, paused=paused)],
        orchestrator=ORCHESTRATOR,
        api_key=connection_api_key(),
        client=airflow_client(),
    )
