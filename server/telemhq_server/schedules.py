"""Schedule math: when is a tracker's next ping expected, and is it late or down?

Every expectation the server computes comes from here: the ingest writer after a ping, the
management API when a schedule is set or a tracker resumed, and the missed-run detector. A
tracker row's schedule columns become a :class:`Schedule` through :meth:`Schedule.from_row`.

A tracker has one of three schedule kinds:

``none``
    No expectation; only pings change its state.
``period``
    A ping is expected ``period_seconds`` after the previous one.
``cron``
    A ping is expected at the next time the cron expression fires, read in the tracker's IANA
    ``timezone`` (default ``UTC``).

Then ``late`` starts at the expected time and ``down`` at the expected time plus
``grace_seconds``. A ``start`` with no end within ``max_runtime_seconds`` is ``down`` too.

Daylight saving time. Cron expressions are evaluated on the *local wall clock* (what the user
wrote) and each wall time is converted to UTC with :func:`local_to_utc`, which chooses the
*latest* instant the wall time can mean:

* a wall time skipped by the spring-forward jump (02:30 on a night that goes 02:00 -> 03:00)
  is read as if the clock had not jumped yet, i.e. 03:30 local time: schedulers either run such
  a job right after the jump or skip it, and both ping before that instant or at the next day's
  run, never earlier than we expect;
* a wall time that happens twice (02:30 on a night that goes 03:00 -> 02:00) is read as its
  second occurrence: a scheduler that runs the job at the first one pings early (fine), one that
  runs it at the second pings on time. The next expectation is computed from the wall time of
  the ping, so the second 02:30 is not expected again after a ping at the first.

Choosing the latest meaning can delay an alert by at most the DST offset (one hour, once a
year); choosing the earliest would raise false ones. All datetimes here are timezone-aware UTC.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from croniter import croniter

__all__ = [
    "SCHEDULE_COLUMNS",
    "SCHEDULE_KINDS",
    "Schedule",
    "ScheduleError",
    "anchor_of",
    "due_after",
    "expected_state",
    "local_to_utc",
    "next_due",
    "next_expected_after",
    "runtime_exceeded",
    "schedule_changed",
]

ScheduleKind = Literal["none", "period", "cron"]
SCHEDULE_KINDS: Final[tuple[ScheduleKind, ...]] = ("none", "period", "cron")
UTC: Final = dt.UTC
#: A repeated wall hour can yield candidates at or before the ping; skip at most this many.
_MAX_CANDIDATES: Final = 8
#: The tracker columns that decide when a ping is expected (grace only decides how late is
#: down, max runtime only when a start hangs).
SCHEDULE_COLUMNS: Final = ("schedule_kind", "period_seconds", "cron", "timezone")


class ScheduleError(ValueError):
    """A schedule that cannot work: says which field is wrong and what would be right."""


@dataclass(frozen=True)
class Schedule:
    """A tracker's schedule, as stored in the tracker's columns."""

    kind: ScheduleKind = "none"
    period_seconds: int | None = None
    cron: str | None = None
    timezone: str = "UTC"
    grace_seconds: int = 0
    max_runtime_seconds: int | None = None

    def __post_init__(self) -> None:
        if self.kind not in SCHEDULE_KINDS:
            raise ScheduleError(f"schedule kind must be one of {SCHEDULE_KINDS}, not {self.kind!r}")
        if self.kind == "period" and (self.period_seconds is None or self.period_seconds <= 0):
            raise ScheduleError("a period schedule needs period_seconds > 0")
        if self.kind == "cron" and (not self.cron or not croniter.is_valid(self.cron)):
            raise ScheduleError(
                f"cron expression {self.cron!r} is not valid; "
                "expected five fields like '30 2 * * *'"
            )
        if self.grace_seconds < 0:
            raise ScheduleError("grace_seconds must be >= 0")
        if self.max_runtime_seconds is not None and self.max_runtime_seconds <= 0:
            raise ScheduleError("max_runtime_seconds must be > 0 when set")
        self.zone  # noqa: B018 - validates the timezone name early

    @classmethod
    def from_row(cls, row: Mapping[Any, Any]) -> Schedule:
        """The schedule held in a ``trackers`` row's columns (``ScheduleError`` when they make
        no usable schedule). The :data:`SCHEDULE_COLUMNS` are required; grace and max runtime
        take their defaults when the row does not hold them (the ingest writer reads only
        what decides the next expected time)."""
        return cls(
            kind=row["schedule_kind"],
            period_seconds=row["period_seconds"],
            cron=row["cron"],
            timezone=row["timezone"] or "UTC",
            grace_seconds=row.get("grace_seconds") or 0,
            max_runtime_seconds=row.get("max_runtime_seconds"),
        )

    @property
    def zone(self) -> ZoneInfo:
        """The tracker's timezone (``ScheduleError`` when the name is unknown)."""
        try:
            return ZoneInfo(self.timezone)
        except (ZoneInfoNotFoundError, ValueError) as exc:
            raise ScheduleError(
                f"timezone {self.timezone!r} is not an IANA zone name (e.g. 'Europe/Berlin')"
            ) from exc

    @property
    def grace(self) -> dt.timedelta:
        return dt.timedelta(seconds=self.grace_seconds)


def _aware(when: dt.datetime) -> dt.datetime:
    """Naive datetimes from the database (SQLite) are UTC."""
    return when.replace(tzinfo=UTC) if when.tzinfo is None else when.astimezone(UTC)


def local_to_utc(wall: dt.datetime, zone: ZoneInfo) -> dt.datetime:
    """The latest UTC instant that the naive local wall time ``wall`` can mean in ``zone``.

    Unambiguous times have one meaning; a repeated time (fall back) yields its second
    occurrence; a skipped time (spring forward) yields the instant the wall time would have had
    without the jump (02:30 -> 03:30 local). See the module docstring for why.
    """
    first = wall.replace(tzinfo=zone, fold=0).astimezone(UTC)
    second = wall.replace(tzinfo=zone, fold=1).astimezone(UTC)
    return max(first, second)


def next_expected_after(schedule: Schedule, last_ping: dt.datetime) -> dt.datetime | None:
    """When the ping after ``last_ping`` is expected (UTC), or ``None`` without a schedule."""
    last_ping = _aware(last_ping)
    if schedule.kind == "period":
        assert schedule.period_seconds is not None
        return last_ping + dt.timedelta(seconds=schedule.period_seconds)
    if schedule.kind != "cron":
        return None
    assert schedule.cron is not None
    zone = schedule.zone
    wall = last_ping.astimezone(zone).replace(tzinfo=None)
    it = croniter(schedule.cron, wall)
    for _ in range(_MAX_CANDIDATES):
        try:
            wall_next = it.get_next(dt.datetime)
        except ValueError:  # croniter's "failed to find next date" (e.g. 30 February)
            return None
        candidate = local_to_utc(wall_next, zone)
        # A wall time can map to an instant at or before the ping (a repeated hour): skip it.
        if candidate > last_ping:
            return candidate
    return None


def due_after(row: Mapping[Any, Any], when: dt.datetime) -> dt.datetime | None:
    """When the tracker in ``row`` expects the ping after one at ``when`` (grace not
    included); ``None`` without a usable schedule."""
    try:
        schedule = Schedule.from_row(row)
    except ScheduleError:
        return None
    return next_expected_after(schedule, when)


def anchor_of(row: Mapping[Any, Any]) -> dt.datetime | None:
    """What the tracker in ``row``'s next expected time follows: the later of its last ping
    and its last resume (a resume restarts the clock, pinged before or not), or for a tracker
    never pinged nor resumed the moment its schedule was set: its first run is due at the
    first scheduled time after that."""
    times = [_aware(t) for t in (row["last_ping_at"], row.get("resumed_at")) if t is not None]
    return max(times) if times else row["schedule_set_at"]


def next_due(row: Mapping[Any, Any]) -> dt.datetime | None:
    """When the tracker in ``row`` expects its next ping: the first scheduled time after its
    :func:`anchor_of`. ``None`` without a schedule (or an anchor)."""
    anchor = anchor_of(row)
    if anchor is None or row["schedule_kind"] == "none":
        return None
    return due_after(row, anchor)


def schedule_changed(row: Mapping[Any, Any], values: Mapping[str, Any]) -> bool:
    """Whether ``values`` (new column values) change when ``row``'s pings are expected: its
    kind, period, cron expression or timezone (not its grace)."""
    return any(key in values and values[key] != row[key] for key in SCHEDULE_COLUMNS)


def expected_state(
    schedule: Schedule, next_expected_at: dt.datetime | None, now: dt.datetime
) -> Literal["late", "down"] | None:
    """``late`` past the expected time, ``down`` past it plus grace, else ``None``."""
    if schedule.kind == "none" or next_expected_at is None:
        return None
    expected = _aware(next_expected_at)
    now = _aware(now)
    if now >= expected + schedule.grace:
        return "down"
    if now >= expected:
        return "late"
    return None


def runtime_exceeded(
    schedule: Schedule, open_start_at: dt.datetime | None, now: dt.datetime
) -> bool:
    """True when a ``start`` at ``open_start_at`` has had no end within the max runtime."""
    if schedule.max_runtime_seconds is None or open_start_at is None:
        return False
    limit = _aware(open_start_at) + dt.timedelta(seconds=schedule.max_runtime_seconds)
    return _aware(now) >= limit
