"""Silences: while one covers a tracker, its notifications are held (its flips are still
recorded). One-off (``starts_at`` .. ``ends_at``) or recurring (a cron expression opening a
window of ``duration`` in a timezone); ``ended_at`` (set by ``DELETE``) ends either early.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Mapping
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from croniter import croniter

from telemhq_server import db
from telemhq_server.alerts.policy import parse_duration, validate_selector
from telemhq_server.trackers import ValidationError

__all__ = ["held_until", "silence_end", "silence_json", "validate_silence"]

_FIELDS = {"selector", "starts_at", "ends_at", "cron", "duration", "timezone", "comment"}


def _when(body: Mapping[Any, Any], field: str) -> dt.datetime | None:
    raw = body.get(field)
    if raw is None:
        return None
    if not isinstance(raw, str):
        raise ValidationError(field, "must be an ISO 8601 date and time")
    try:
        when = dt.datetime.fromisoformat(raw)
    except ValueError:
        raise ValidationError(field, f"must be an ISO 8601 date and time, got {raw!r}") from None
    if when.tzinfo is None:
        raise ValidationError(field, "must say its UTC offset (e.g. 2026-12-05T02:00:00Z)")
    return when.astimezone(dt.UTC)


def validate_silence(body: Any, now: dt.datetime) -> dict[str, Any]:
    """Column values of a new silence from an API body (raises ``ValidationError``)."""
    if not isinstance(body, Mapping):
        raise ValidationError("body", "must be a JSON object")
    unknown = sorted(set(body) - _FIELDS)
    if unknown:
        raise ValidationError(unknown[0], f"unknown field; known: {', '.join(sorted(_FIELDS))}")
    values: dict[str, Any] = {"selector": validate_selector(body.get("selector"))}
    comment = body.get("comment", "")
    if not isinstance(comment, str) or len(comment) > 2000:
        raise ValidationError("comment", "must be a string of at most 2000 characters")
    values["comment"] = comment
    zone = body.get("timezone", "UTC")
    try:
        if not isinstance(zone, str):
            raise ValueError(zone)
        ZoneInfo(zone)
    except (ValueError, ZoneInfoNotFoundError):
        raise ValidationError("timezone", f"must be an IANA time zone, got {zone!r}") from None
    values["timezone"] = zone
    if body.get("cron") is not None:
        cron = body["cron"]
        if not isinstance(cron, str) or len(cron) > 200 or not croniter.is_valid(cron):
            raise ValidationError("cron", f"must be a cron expression, got {cron!r}")
        if "duration" not in body:
            raise ValidationError("duration", "a recurring silence needs a duration (e.g. 2h)")
        if "ends_at" in body:
            raise ValidationError("ends_at", "give either ends_at or cron + duration")
        values["cron"] = cron
        values["duration_seconds"] = parse_duration(body["duration"], "duration")
        values["starts_at"] = _when(body, "starts_at")
        return values
    starts = _when(body, "starts_at") or now
    ends = _when(body, "ends_at")
    if ends is None and body.get("duration") is not None:
        ends = starts + dt.timedelta(seconds=parse_duration(body["duration"], "duration"))
    if ends is None:
        raise ValidationError("ends_at", "required (or cron + duration, or duration)")
    if ends <= starts:
        raise ValidationError("ends_at", "must be after starts_at")
    values["starts_at"], values["ends_at"] = starts, ends
    return values


def silence_end(row: Mapping[Any, Any], now: dt.datetime) -> dt.datetime | None:
    """When the silence ``row`` stops covering ``now``, or ``None`` if it does not cover it."""
    ended = db.as_utc(row["ended_at"])
    starts = db.as_utc(row["starts_at"])
    if (ended is not None and ended <= now) or (starts is not None and now < starts):
        return None
    if row["cron"]:
        zone = ZoneInfo(row["timezone"])
        window = dt.timedelta(seconds=row["duration_seconds"])
        # The latest window opening at or before now, in the silence's own wall time.
        it = croniter(row["cron"], now.astimezone(zone) + dt.timedelta(microseconds=1))
        opened: dt.datetime = it.get_prev(dt.datetime)
        end = opened.astimezone(dt.UTC) + window
    else:
        end_at = db.as_utc(row["ends_at"])
        assert end_at is not None
        end = end_at
    if ended is not None:
        end = min(end, ended)
    return end if now < end else None


def held_until(
    rows: Iterable[Mapping[Any, Any]], now: dt.datetime
) -> tuple[int, dt.datetime] | None:
    """The silence among ``rows`` (all covering one tracker) that holds longest: (id, end)."""
    best: tuple[int, dt.datetime] | None = None
    for row in rows:
        end = silence_end(row, now)
        if end is not None and (best is None or end > best[1]):
            best = (row["id"], end)
    return best


def silence_json(row: Mapping[Any, Any], now: dt.datetime) -> dict[str, Any]:
    end = silence_end(row, now)
    return {
        "id": row["id"],
        "selector": row["selector"],
        "starts_at": db.iso(row["starts_at"]),
        "ends_at": db.iso(row["ends_at"]),
        "cron": row["cron"],
        "duration": None if row["duration_seconds"] is None else f"{row['duration_seconds']}s",
        "timezone": row["timezone"],
        "comment": row["comment"],
        "ended_at": db.iso(row["ended_at"]),
        "created_at": db.iso(row["created_at"]),
        "active": end is not None,
        "active_until": db.iso(end),
    }
