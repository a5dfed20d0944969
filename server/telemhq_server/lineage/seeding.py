"""The schedule an OpenLineage event offers to the tracker it creates: Airflow's DAG run
events carry their DAG, timetable included.

Airflow's OpenLineage provider puts an ``airflowDagRun`` run facet on each DAG run event
(START, COMPLETE, FAIL) whose ``dag.timetable`` is the timetable's own serialisation:

- ``CronTriggerTimetable`` and ``CronDataIntervalTimetable`` (cron strings and presets, which
  Airflow expands) serialise as ``{"expression", "timezone"[, "interval",
  "run_immediately"]}``: a run is due at each time of the expression, in that timezone, so
  they become a cron schedule;
- ``DeltaDataIntervalTimetable`` and ``DeltaTriggerTimetable`` of a ``timedelta`` serialise
  as ``{"delta": seconds[, "interval"]}``: a run every that many seconds, a period schedule
  (as the Airflow adapter's schedule sync reads them); a ``relativedelta`` (months) has no
  fixed period;
- every other timetable (none, ``@once``, ``@continuous``, several cron expressions,
  partitions, assets, custom ones) has no exact schedule: the tracker is left unscheduled, and
  why is logged once per DAG.

Only the DAG run's tracker is seeded: a task's run may be skipped by a branch while its DAG
runs, so its tracker would wait for pings that never come (the Airflow adapter's schedule sync
makes the same choice). The seed applies when the event creates the tracker, so a schedule a
user or a schedule sync set later is never overwritten.
"""

from __future__ import annotations

import logging
from typing import Any, Final

from telemhq_plugins.core.logs import log_once
from telemhq_server.trackers import ValidationError, validate_fields

__all__ = ["airflow_schedule"]

logger = logging.getLogger("telemhq_server.lineage")

#: The keys of a cron timetable's serialisation (Airflow 2.10 to 3.3).
_CRON_KEYS: Final = frozenset({"expression", "timezone", "interval", "run_immediately"})
#: The keys of a fixed-delta timetable's serialisation.
_DELTA_KEYS: Final = frozenset({"delta", "interval"})


def _timezone(value: Any) -> str | None:
    """An Airflow-encoded timezone as a name: a name stays; a fixed offset in seconds
    (``encode_timezone``) is ``Etc/GMT∓H`` when it is whole hours (POSIX signs are reversed),
    else None."""
    if isinstance(value, str) and value:
        return value
    if isinstance(value, int) and not isinstance(value, bool) and value % 3600 == 0:
        hours = -value // 3600
        return "UTC" if hours == 0 else f"Etc/GMT{hours:+d}"
    return None


def _period(timetable: dict[str, Any]) -> dict[str, Any] | None:
    """The period schedule of a serialised ``timedelta`` timetable, else None."""
    delta = timetable.get("delta")
    if not set(timetable) <= _DELTA_KEYS or isinstance(delta, bool):
        return None
    if not isinstance(delta, int | float) or delta <= 0 or delta != int(delta):
        return None
    try:
        return validate_fields(
            {"schedule": {"kind": "period", "period_seconds": int(delta)}}, creating=False
        )
    except ValidationError:
        return None


def _schedule(timetable: Any) -> tuple[dict[str, Any] | None, str]:
    """The tracker schedule values of a serialised timetable, else None and why not."""
    if not isinstance(timetable, dict) or not timetable:
        return None, "the DAG has no schedule"
    if "delta" in timetable:
        period = _period(timetable)
        if period is None:
            return None, f"its delta {timetable.get('delta')!r} is not a fixed number of seconds"
        return period, ""
    expression = timetable.get("expression")
    if not isinstance(expression, str) or not set(timetable) <= _CRON_KEYS:
        kinds = ", ".join(sorted(k for k in timetable if not k.startswith("__")))
        return None, f"its timetable ({kinds}) is not a single cron expression"
    timezone = _timezone(timetable.get("timezone", "UTC"))
    if timezone is None:
        return None, f"its timezone {timetable.get('timezone')!r} has no IANA name"
    try:
        values = validate_fields(
            {"schedule": {"kind": "cron", "cron": expression, "timezone": timezone}},
            creating=False,
        )
    except ValidationError as exc:
        return None, str(exc)
    return values, ""


def airflow_schedule(run_facets: dict[str, Any], tracker: str) -> dict[str, Any] | None:
    """The schedule columns (``schedule_kind``, ``cron``, ``timezone``...) for the tracker
    ``tracker`` created by an event with these run facets; None when the event carries no
    DAG or its timetable has no exact cron or period (logged once per tracker)."""
    facet = run_facets.get("airflowDagRun")
    dag = facet.get("dag") if isinstance(facet, dict) else None
    if not isinstance(dag, dict):
        return None
    values, why = _schedule(dag.get("timetable"))
    if values is None:
        log_once(
            logger,
            logging.INFO,
            ("lineage-schedule", tracker),
            "tracker %r left unscheduled: %s (summary %r)",
            tracker,
            why,
            dag.get("timetable_summary"),
        )
    return values
