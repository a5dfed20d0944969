"""Prefect deployment schedules as TelemHQ job schedules: :func:`deployment_schedules`.

The watcher pushes what this module returns through core's schedule sync. A tracker holds a
5-field cron expression read on the wall clock of an IANA time zone, or a period in seconds
(the time from one ping to the next). Prefect's three schedule kinds translate so:

* ``CronSchedule``: its cron and time zone, as they are;
* ``IntervalSchedule``: its interval, as a period;
* ``RRuleSchedule``: :func:`rrule_schedule`, only when the rule maps *exactly* onto a cron or a
  period; otherwise it is skipped with one INFO line saying why. A tracker that expects a run
  Prefect never makes raises a false "down" alert, which is worse than no check at all.

RRules are read the way Prefect runs them: ``RRuleSchedule.to_rrule()`` gives dateutil's
``rrule`` (or ``rruleset``) with its DTSTART relabelled to the schedule's time zone, and
dateutil fills what the rule leaves out from DTSTART (``FREQ=DAILY`` runs at DTSTART's time,
``FREQ=WEEKLY`` on DTSTART's weekday, ``FREQ=MONTHLY`` on its day of the month, ``FREQ=YEARLY``
on its month and day). Those parsed sets are dateutil's ``_by*`` attributes: dateutil has no
public accessor for them, and Prefect reads its private ``_rrule``/``_dtstart``/``_until``
the same way. dateutil steps through a rule on the wall clock of DTSTART's zone, which is how
the server reads a cron, so a cron that names the rule's wall times is the same schedule,
daylight saving nights included.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Iterable, Set
from dataclasses import dataclass, field
from typing import Any, Final, TypeAlias
from zoneinfo import ZoneInfo

import dateutil.rrule as du  # type: ignore[import-untyped, unused-ignore]
from prefect.client.orchestration import get_client as get_prefect_client

from telemhq_plugins.core.cron import combine_crons, cron_from_fields, fires_per_year
from telemhq_plugins.core.logs import log_once
from telemhq_plugins.core.provision import JobSchedule

__all__ = ["deployment_schedules", "rrule_schedule"]

logger = logging.getLogger("telemhq")

_FREQ_NAMES: Final[dict[int, str]] = {
    du.YEARLY: "YEARLY",
    du.MONTHLY: "MONTHLY",
    du.WEEKLY: "WEEKLY",
    du.DAILY: "DAILY",
    du.HOURLY: "HOURLY",
    du.MINUTELY: "MINUTELY",
    du.SECONDLY: "SECONDLY",
}
#: Seconds in one step of the frequencies whose steps have a fixed length on the wall clock.
_STEP_SECONDS: Final[dict[int, int]] = {
    du.MINUTELY: 60,
    du.HOURLY: 3600,
    du.DAILY: 86_400,
    du.WEEKLY: 7 * 86_400,
}
#: How far ahead (days) a zone must keep one UTC offset for a period to be exact in it.
_FIXED_OFFSET_DAYS: Final = 2 * 366
#: The most days each month can have (February: in leap years).
_MONTH_DAYS: Final = (31, 29, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31)
#: How far ahead the next run after a skipped hour is looked for (a yearly rule's next run).
_SEARCH: Final = dt.timedelta(days=2 * 366)

#: What a schedule maps to: a cron, several crons (one time zone), or a period in seconds.
Expectation: TypeAlias = str | list[str] | float


def rrule_schedule(schedule: Any, *, now: dt.datetime | None = None) -> Expectation:
    """What the server should expect for a Prefect ``RRuleSchedule``: a cron expression (read
    in ``schedule.timezone``), a list of them (an rruleset of several RRULEs; core's
    ``combine_crons`` merges them), or a period in seconds. ``ValueError``, saying why, when
    the rule does not map exactly.

    ``now`` (default: the current time) tells whether the rule has started yet and which
    coming UTC offsets a period must hold across."""
    try:
        parsed = schedule.to_rrule()
    except Exception as exc:  # dateutil raises ValueError, TypeError... for rules it refuses
        raise ValueError(f"Prefect cannot expand it ({exc})") from exc
    zone = str(schedule.timezone or "UTC")
    try:
        ZoneInfo(zone)
    except Exception as exc:  # unknown name, or no tz database entry on this machine
        raise ValueError(f"time zone {zone!r} is not an IANA zone known here") from exc
    when = now or dt.datetime.now(dt.UTC)
    try:
        if isinstance(parsed, du.rruleset):
            return _rule_set(parsed, zone, when)
        return _one_rule(parsed, zone, when)
    except (AttributeError, TypeError) as exc:  # a dateutil whose internals moved on
        raise ValueError(f"this dateutil's rule cannot be read ({exc!r})") from exc


def _rule_set(parsed: Any, zone: str, now: dt.datetime) -> Expectation:
    # RDATE/EXDATE/EXRULE add or remove single dates: no cron or period says that.
    extras = [
        name
        for name, attribute in (("RDATE", "_rdate"), ("EXRULE", "_exrule"), ("EXDATE", "_exdate"))
        if getattr(parsed, attribute)
    ]
    if extras:
        raise ValueError(
            f"{', '.join(extras)} (dates added or removed one by one) has no cron form"
        )
    rules = list(parsed._rrule)
    if not rules:
        raise ValueError("the set has no RRULE")
    mapped: list[Expectation] = []
    for index, rule in enumerate(rules, 1):
        try:
            mapped.append(_one_rule(rule, zone, now))
        except ValueError as exc:
            raise ValueError(f"RRULE {index} of {len(rules)}: {exc}") from exc
    if len(mapped) == 1:
        return mapped[0]
    crons = [m for m in mapped if isinstance(m, str)]
    if len(crons) != len(mapped):
        # Runs of a period rule fall between the others' at shifting times: no one tracker
        # schedule says when the next run of the whole set is due.
        raise ValueError("a fixed-period RRULE cannot be combined with the set's other RRULEs")
    return crons


def _one_rule(rule: Any, zone: str, now: dt.datetime) -> Expectation:
    freq: int = rule._freq
    interval: int = rule._interval
    name = f"FREQ={_FREQ_NAMES.get(freq, freq)}" + (f";INTERVAL={interval}" if interval > 1 else "")
    if rule._count is not None or rule._until is not None:
        raise ValueError("it ends (COUNT or UNTIL), and a tracker would keep expecting runs")
    if freq == du.SECONDLY:
        raise ValueError("FREQ=SECONDLY runs more than once a minute; a cron has minutes")
    for part, attribute in (
        ("BYSETPOS", "_bysetpos"),
        ("BYWEEKNO", "_byweekno"),
        ("BYYEARDAY", "_byyearday"),
        ("BYEASTER", "_byeaster"),
    ):
        if getattr(rule, attribute):
            raise ValueError(f"{part} has no cron form")
    # dateutil keeps ordinals (1MO, -1FR) only in MONTHLY and YEARLY rules and ignores them in
    # the others (a WEEKLY 1MO runs every Monday): what it keeps is what Prefect runs.
    if rule._bynweekday:
        raise ValueError("an ordinal weekday (such as 1MO or -1FR) has no cron form")
    if rule._bynmonthday:
        raise ValueError(
            "a day counted from the month's end (negative BYMONTHDAY) has no cron form"
        )
    seconds = _values(rule._bysecond)
    if seconds is None or len(seconds) != 1:
        raise ValueError("it runs several times a minute (BYSECOND); a cron has minutes")
    start: dt.datetime = rule._dtstart
    if start.tzinfo is None:  # Prefect always localizes; a bare rule is read in the zone
        start = start.replace(tzinfo=ZoneInfo(zone))
    if start > now:
        # Before DTSTART Prefect runs nothing, but a tracker would expect runs at once.
        raise ValueError(f"it starts at {start.isoformat()}, in the future")

    minutes = _values(rule._byminute)
    hours = _values(rule._byhour)
    days = _values(rule._bymonthday or None)
    months = _values(rule._bymonth)
    weekdays = _values(rule._byweekday)  # dateutil's: Monday = 0
    if interval > 1:
        # A step that divides the next larger unit (60 minutes, 24 hours, 12 months) keeps its
        # phase from DTSTART in every hour, day or year, since dateutil steps on the wall
        # clock: the runs are the values congruent to DTSTART's.
        if freq == du.MINUTELY and 60 % interval == 0:
            minutes = _phase(minutes, start.minute, interval, 0, 60)
        elif freq == du.MINUTELY and interval % 60 == 0 and (24 * 60) % interval == 0:
            minutes = _meet(minutes, {start.minute})  # every step lands on DTSTART's minute
            hours = _phase(hours, start.hour, interval // 60, 0, 24)
        elif freq == du.HOURLY and 24 % interval == 0:
            hours = _phase(hours, start.hour, interval, 0, 24)
        elif freq == du.MONTHLY and 12 % interval == 0:
            months = _phase(months, start.month, interval, 1, 12)
        else:
            return _period(rule, name, zone, now)
    if days is not None and weekdays is not None:
        # An RRULE's BYMONTHDAY and BYDAY must both match; a cron with both day fields fires
        # when either does. Only when one of them allows every value is the other alone right.
        if len(weekdays) == 7:
            weekdays = None
        elif len(days) == 31:
            days = None
        else:
            raise ValueError("BYMONTHDAY with BYDAY means both in an RRULE but either in a cron")
    if any(values is not None and not values for values in (minutes, hours, days, months)) or (
        days is not None
        and not any(
            day <= _MONTH_DAYS[month - 1] for day in days for month in months or range(1, 13)
        )
    ):
        raise ValueError("it never runs")
    fields = _Fields(minutes, hours, days, months, weekdays)
    _check_skipped_hours(fields, zone, now)
    return fields.cron()


@dataclass(frozen=True, slots=True)
class _Fields:
    """The wall times a cron names (None: every value; weekdays as dateutil's, Monday = 0)."""

    minutes: set[int] | None
    hours: set[int] | None
    days: set[int] | None
    months: set[int] | None
    weekdays: set[int] | None

    def cron(self) -> str:
        # cron's weekdays count from Sunday = 0.
        weekdays = None if self.weekdays is None else {(d + 1) % 7 for d in self.weekdays}
        fields = (self.minutes, self.hours, self.days, self.months, weekdays)
        return cron_from_fields(fields)

    def first_at_or_after(self, wall: dt.datetime, within: dt.timedelta) -> dt.datetime | None:
        """The first of these wall times at or after the naive ``wall``, within ``within``."""
        found: dt.datetime | None = du.rrule(
            du.MINUTELY,
            dtstart=wall.replace(second=0, microsecond=0),
            until=wall + within,
            byminute=self.minutes,
            byhour=self.hours,
            bymonthday=self.days,
            bymonth=self.months,
            byweekday=self.weekdays,
            bysecond=0,
        ).after(wall, inc=True)
        return found


def _check_skipped_hours(fields: _Fields, zone: str, now: dt.datetime) -> None:
    """``ValueError`` when a night the clocks go forward would make the server expect a run
    that Prefect does not make.

    On such a night the wall times from ``a`` to ``a + jump`` do not exist. Prefect runs a
    rule's wall time ``g`` in that gap before the jump, at ``g - jump`` on the clock of the
    moment (dateutil gives the missing time the new offset); the server reads ``g`` as
    ``g + jump`` (its reading of missing times). After that run the server expects the next
    one by ``g + jump``: right when the rule's next wall time at or after ``a + jump`` comes
    no later (``*/15 * * * *``, ``0 * * * *``), a false alarm when it is later
    (``30 2 * * *`` in Europe/Paris: Prefect runs at 01:30, the server then waits for 03:30).
    Nights the clocks go back need no check: Prefect runs a repeated wall time at its first
    occurrence and the server expects its second, never earlier than the run."""
    for change in _offset_changes(zone, now):
        jump = change.after - change.before
        if jump <= dt.timedelta(0):
            continue
        gap_start = (change.at + change.before).replace(tzinfo=None)
        gap_end = gap_start + jump
        first = fields.first_at_or_after(gap_start, jump)
        if first is None or first >= gap_end:
            continue
        after = fields.first_at_or_after(gap_end, _SEARCH)
        if after is None or after > first + jump:
            raise ValueError(
                f"on {gap_start.date().isoformat()} the clocks of {zone} skip from "
                f"{gap_start:%H:%M} to {gap_end:%H:%M}: Prefect runs the {first:%H:%M} run "
                f"before the jump, and the server would then expect another run by "
                f"{first + jump:%H:%M}"
            )


def _period(rule: Any, name: str, zone: str, now: dt.datetime) -> float:
    """A step that does not divide the next unit (INTERVAL=7 minutes, INTERVAL=2 days) is a
    fixed period when each step runs exactly once: no filter skips steps (BYHOUR on a
    MINUTELY rule, BYMONTH, BYMONTHDAY, BYDAY other than a WEEKLY rule's one day) and each
    finer field has a single value."""
    freq: int = rule._freq
    step = _STEP_SECONDS.get(freq)
    if step is None:
        raise ValueError(
            f"{name} is neither a cron (its months repeat every year) nor a fixed period "
            "(months and years differ in length)"
        )
    minutes, hours = _values(rule._byminute), _values(rule._byhour)
    weekdays = None if rule._byweekday is None else set(rule._byweekday)
    singles = {
        du.MINUTELY: (),
        du.HOURLY: (minutes,),
        du.DAILY: (minutes, hours),
        du.WEEKLY: (minutes, hours, weekdays),
    }[freq]
    unset = {
        du.MINUTELY: (minutes, hours, weekdays),
        du.HOURLY: (hours, weekdays),
        du.DAILY: (weekdays,),
        du.WEEKLY: (),
    }[freq]
    filtered = rule._bymonthday or rule._bymonth is not None
    if (
        filtered
        or any(v is not None for v in unset)
        or any(v is None or len(v) != 1 for v in singles)
    ):
        raise ValueError(
            f"{name} with these BY parts runs at uneven gaps: neither a cron nor a fixed period"
        )
    changes = _offset_changes(zone, now)
    if changes:
        # Prefect steps on the wall clock, so the gap across the change is an hour (or the
        # change) longer or shorter than the others: the period would be wrong there.
        raise ValueError(
            f"{name} is a fixed period only in a zone with one UTC offset, and {zone} "
            f"changes offset on {changes[0].at.date().isoformat()}"
        )
    return float(rule._interval * step)


@dataclass(frozen=True, slots=True)
class _OffsetChange:
    at: dt.datetime  # the first instant (UTC) of the new offset
    before: dt.timedelta
    after: dt.timedelta


def _offset_changes(zone: str, now: dt.datetime) -> list[_OffsetChange]:
    """The changes of ``zone``'s UTC offset in the next two years, to the second.

    zoneinfo has no public list of transitions: one sample a day finds every offset that lasts
    a day or more (daylight saving time, a country changing zone), then a bisection finds the
    instant."""
    tz = ZoneInfo(zone)
    changes: list[_OffsetChange] = []
    previous = int(now.timestamp())
    offset = _offset(tz, previous)
    for _ in range(_FIXED_OFFSET_DAYS):
        sample = previous + 86_400
        current = _offset(tz, sample)
        if current != offset:
            low, high = previous, sample  # low has the old offset, high the new one
            while high - low > 1:
                middle = (low + high) // 2
                if _offset(tz, middle) == offset:
                    low = middle
                else:
                    high = middle
            changes.append(_OffsetChange(dt.datetime.fromtimestamp(high, dt.UTC), offset, current))
            offset = current
        previous = sample
    return changes


def _offset(tz: ZoneInfo, timestamp: int) -> dt.timedelta:
    offset = dt.datetime.fromtimestamp(timestamp, tz).utcoffset()
    assert offset is not None  # a ZoneInfo always has one
    return offset


def _values(raw: Iterable[int] | None) -> set[int] | None:
    """A parsed BY part as a set (dateutil keeps tuples, or sets for DTSTART's defaults);
    None: every value."""
    return None if raw is None else set(raw)


def _meet(values: set[int] | None, allowed: set[int]) -> set[int]:
    return allowed if values is None else values & allowed


def _phase(values: set[int] | None, origin: int, step: int, first: int, size: int) -> set[int]:
    """The values of a field of ``size`` values from ``first`` that a step of ``step`` from
    ``origin`` reaches, within ``values`` (None: all)."""
    reached = {v for v in range(first, first + size) if (v - origin) % step == 0}
    return _meet(values, reached)


async def deployment_schedules() -> list[JobSchedule]:
    """Every deployment's schedules as one :class:`JobSchedule` per flow (its tracker).

    A flow's crons (cron schedules, and RRules that map to crons) go to core's
    ``combine_crons`` when they share a time zone. One cron is read in one zone, so when they
    do not, the zone whose crons fire most often is kept and the others are left out (logged):
    every expected run is still a real one. A flow without crons gets its shortest period
    (interval schedules, and RRules that map to a period): its runs are never further apart.
    RRules that map to neither are skipped, logged once with the reason.

    Only what runs counts: an active schedule of a deployment that is not paused. A flow whose
    every schedule is inactive or on a paused deployment is ``paused`` (its tracker is paused,
    and keeps those schedules for when it runs again)."""
    running = _Expected()
    dormant = _Expected()
    async with get_prefect_client() as prefect:
        deployments = await prefect.read_deployments()
        names: dict[Any, str] = {}
        for deployment in deployments:
            if deployment.flow_id not in names:
                names[deployment.flow_id] = (await prefect.read_flow(deployment.flow_id)).name
            job = names[deployment.flow_id]
            paused = bool(getattr(deployment, "paused", False))
            for entry in deployment.schedules or ():
                runs = not paused and getattr(entry, "active", True)
                (running if runs else dormant).add(job, entry.schedule)
    jobs = running.jobs(paused=False)
    jobs += dormant.jobs(paused=True, skip=running.names())
    return jobs


@dataclass
class _Expected:
    """Flows' crons (by time zone) and shortest periods, gathered from their schedules."""

    crons: dict[str, dict[str, set[str]]] = field(default_factory=dict)  # job -> zone -> crons
    periods: dict[str, float] = field(default_factory=dict)

    def add(self, job: str, schedule: Any) -> None:
        expected = _expectation(job, schedule)
        if isinstance(expected, float):
            self.periods[job] = min(self.periods.get(job, expected), expected)
        elif expected is not None:
            expressions, zone = expected
            self.crons.setdefault(job, {}).setdefault(zone, set()).update(expressions)

    def names(self) -> set[str]:
        return set(self.crons) | set(self.periods)

    def jobs(self, *, paused: bool, skip: Set[str] = frozenset()) -> list[JobSchedule]:
        crons = {job: zones for job, zones in self.crons.items() if job not in skip}
        found = [_cron_job(job, by_zone, paused) for job, by_zone in crons.items()]
        found += [
            JobSchedule(job, period, paused=paused)
            for job, period in self.periods.items()
            if job not in crons and job not in skip
        ]
        return found


def _cron_job(job: str, by_zone: dict[str, set[str]], paused: bool) -> JobSchedule:
    """One job's crons, from the zone whose crons fire most often (ties: the zone's name).
    Sorted, so that the same schedules always give the same cron (no rewrite on each sync)."""

    def weight(zone: str) -> tuple[float, str]:
        return fires_per_year(combine_crons(sorted(by_zone[zone]))), zone

    zone = max(sorted(by_zone), key=weight)
    for other in sorted(set(by_zone) - {zone}):
        log_once(
            logger,
            logging.INFO,
            ("prefect-schedule-zone", job, other, tuple(sorted(by_zone[other])), zone),
            "TelemHQ watcher: %s's crons %s in %s are not pushed: its crons in %s are, and "
            "one tracker cron is read in one time zone",
            job, " | ".join(sorted(by_zone[other])), other, zone,
        )  # fmt: skip
    expressions = sorted(by_zone[zone])
    cron = expressions if len(expressions) > 1 else expressions[0]
    return JobSchedule(job, cron, timezone=zone, paused=paused)


def _expectation(job: str, schedule: Any) -> tuple[list[str], str] | float | None:
    """One Prefect schedule: (crons, time zone), a period in seconds, or None (logged)."""
    zone = str(getattr(schedule, "timezone", None) or "UTC")
    cron = getattr(schedule, "cron", None)
    if cron:
        return [str(cron)], zone
    interval = getattr(schedule, "interval", None)
    if isinstance(interval, dt.timedelta):
        return interval.total_seconds()
    rule = getattr(schedule, "rrule", None)
    if isinstance(rule, str):
        try:
            mapped = rrule_schedule(schedule)
        except ValueError as exc:
            log_once(
                logger,
                logging.INFO,
                ("prefect-rrule", job, rule, zone, str(exc)),
                "TelemHQ watcher: %s's RRule schedule %r (%s) is not pushed: %s",
                job, rule, zone, exc,
            )  # fmt: skip
            return None
        if isinstance(mapped, float):
            return mapped
        return ([mapped] if isinstance(mapped, str) else mapped), zone
    log_once(
        logger,
        logging.INFO,
        ("prefect-schedule-kind", job, repr(schedule)),
        "TelemHQ watcher: %s's schedule %r is not a cron, an interval nor an RRule; not pushed",
        job, schedule,
    )  # fmt: skip
    return None
