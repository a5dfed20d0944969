"""Trackers: validation of API input, creation and the JSON shape.

:func:`validate_fields` turns a JSON object from the API into column values (raising
:class:`ValidationError`, answered 422); :func:`to_json` is the one JSON shape of a tracker.
When a tracker's pings are expected is computed in :mod:`telemhq_server.schedules`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Final
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import sqlalchemy as sa
from sqlalchemy.engine import Connection, RowMapping

from telemhq_plugins.core.assertions import AssertionSyntaxError, parse_assertion
from telemhq_plugins.core.config import slugify
from telemhq_server.db import iso, trackers, utcnow
from telemhq_server.tokens import url_token

__all__ = [
    "MAX_NAME",
    "MAX_TAG",
    "MAX_TAGS",
    "ValidationError",
    "badge_url",
    "create_tracker",
    "from_first_ping",
    "new_token",
    "ping_url",
    "to_json",
    "validate_fields",
]

MAX_ASSERTIONS: Final = 50
MAX_TAGS: Final = 50
MAX_TAG: Final = 100  # characters
MAX_NAME: Final = 200  # characters


class ValidationError(ValueError):
    """Bad API input; answered 422 with ``to_json()``."""

    def __init__(self, field: str, message: str, **extra: Any) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message
        self.extra = extra

    def to_json(self) -> dict[str, Any]:
        return {"error": f"{self.field}: {self.message}", "field": self.field, **self.extra}


def new_token() -> str:
    """A tracker token: 192 random bits, URL-safe (32 characters)."""
    return url_token(24)


def ping_url(base: str, token: str) -> str:
    return f"{base}/ping/{token}"


def badge_url(base: str, badge_key: str) -> str:
    """Where the badge of a tracker is served (route owned by ``badges.py``)."""
    return f"{base}/badge/{badge_key}.svg"


def schedule_json(row: Mapping[str, Any] | RowMapping) -> dict[str, Any]:
    kind = row["schedule_kind"]
    if kind == "period":
        return {
            "kind": "period",
            "period_seconds": row["period_seconds"],
            "grace_seconds": row["grace_seconds"],
        }
    if kind == "cron":
        return {
            "kind": "cron",
            "cron": row["cron"],
            "timezone": row["timezone"],
            "grace_seconds": row["grace_seconds"],
        }
    return {"kind": "none"}


def to_json(row: Mapping[str, Any] | RowMapping, base: str) -> dict[str, Any]:
    """The API representation of a ``trackers`` row."""
    return {
        "id": row["id"],
        "name": row["name"],
        "slug": row["slug"],
        "token": row["token"],
        "ping_url": ping_url(base, row["token"]),
        "state": row["state"],
        "assertions": list(row["assertions"]),
        "schedule": schedule_json(row),
        "max_runtime_seconds": row["max_runtime_seconds"],
        "failure_threshold": row["failure_threshold"],
        "consecutive_failures": row["consecutive_failures"],
        "tags": list(row["tags"]),
        "paused": bool(row["paused"]),
        "n_runs": row["n_runs"],
        "last_run_at": iso(row["last_run_at"]),
        "last_ping_at": iso(row["last_ping_at"]),
        "state_changed_at": iso(row["state_changed_at"]),
        "next_expected_at": iso(row["next_expected_at"]),
        "created_at": iso(row["created_at"]),
        "updated_at": iso(row["updated_at"]),
        "badge_url": badge_url(base, row["badge_key"]),
    }


# --- validation ------------------------------------------------------------------------------


def _int(body: Mapping[str, Any], key: str, minimum: int, *, nullable: bool = False) -> Any:
    value = body[key]
    if value is None and nullable:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        what = f"an integer >= {minimum}" + (" or null" if nullable else "")
        raise ValidationError(key, f"must be {what}, got {value!r}")
    return value


def _validate_assertions(value: Any) -> list[str]:
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise ValidationError("assertions", "must be a list of strings")
    if len(value) > MAX_ASSERTIONS:
        raise ValidationError("assertions", f"at most {MAX_ASSERTIONS} assertions")
    out: list[str] = []
    for i, text in enumerate(value):
        try:
            parse_assertion(text)
        except AssertionSyntaxError as exc:
            raise ValidationError(
                f"assertions[{i}]",
                f"{exc.problem} at position {exc.position}",
                expression=text,
                position=exc.position,
                problem=exc.problem,
                pointer=f"{text}\n{' ' * exc.position}^",
            ) from None
        out.append(text.strip())
    return out


def _validate_schedule(value: Any) -> dict[str, Any]:
    if value is None:
        value = {"kind": "none"}
    if not isinstance(value, Mapping):
        raise ValidationError("schedule", 'must be an object such as {"kind": "none"}')
    kind = value.get("kind", "none")
    known = {
        "none": {"kind"},
        "period": {"kind", "period_seconds", "grace_seconds"},
        "cron": {"kind", "cron", "timezone", "grace_seconds"},
    }
    if not isinstance(kind, str) or kind not in known:
        raise ValidationError("schedule.kind", f"must be none, period or cron, got {kind!r}")
    unknown = sorted(set(value) - known[kind])
    if unknown:
        raise ValidationError("schedule", f"unknown field(s) for kind {kind}: {unknown}")
    out: dict[str, Any] = {
        "schedule_kind": kind,
        "period_seconds": None,
        "cron": None,
        "timezone": "UTC",
    }
    if "grace_seconds" in value:
        out["grace_seconds"] = _int(value, "grace_seconds", 0)
    if kind == "period":
        if "period_seconds" not in value:
            raise ValidationError("schedule.period_seconds", "is required for kind period")
        out["period_seconds"] = _int(value, "period_seconds", 1)
    elif kind == "cron":
        from croniter import croniter

        expr = value.get("cron")
        if not isinstance(expr, str) or not croniter.is_valid(expr):
            raise ValidationError("schedule.cron", f"not a valid cron expression: {expr!r}")
        tz = value.get("timezone", "UTC")
        try:
            ZoneInfo(tz)
        except (ZoneInfoNotFoundError, ValueError, TypeError):
            raise ValidationError("schedule.timezone", f"unknown timezone {tz!r}") from None
        out["cron"] = expr
        out["timezone"] = tz
    return out


_FIELDS: Final = frozenset(
    {"name", "slug", "assertions", "schedule", "max_runtime_seconds", "failure_threshold", "tags"}
)


def validate_fields(body: Any, *, creating: bool) -> dict[str, Any]:
    """Column values from an API body (all fields optional on update, ``name`` required on
    create). Raises :class:`ValidationError`."""
    if not isinstance(body, Mapping):
        raise ValidationError("body", "must be a JSON object")
    unknown = sorted(set(body) - _FIELDS)
    if unknown:
        raise ValidationError(unknown[0], f"unknown field; known fields: {sorted(_FIELDS)}")
    values: dict[str, Any] = {}
    if "name" in body or creating:
        name = body.get("name")
        if not isinstance(name, str) or not name.strip() or len(name) > MAX_NAME:
            raise ValidationError(
                "name", f"must be a non-empty string of at most {MAX_NAME} characters"
            )
        values["name"] = name.strip()
    if body.get("slug") is not None:
        slug = body["slug"]
        if not isinstance(slug, str) or slugify(slug) != slug:
            raise ValidationError(
                "slug", f"must be lowercase letters, digits and single dashes, got {slug!r}"
            )
        values["slug"] = slug
    elif creating:
        values["slug"] = slugify(values["name"])
    if "assertions" in body:
        values["assertions"] = _validate_assertions(body["assertions"])
    if "schedule" in body:
        values.update(_validate_schedule(body["schedule"]))
    if "max_runtime_seconds" in body:
        values["max_runtime_seconds"] = _int(body, "max_runtime_seconds", 1, nullable=True)
    if "failure_threshold" in body:
        values["failure_threshold"] = _int(body, "failure_threshold", 1)
    if "tags" in body:
        tags = body["tags"]
        if (
            not isinstance(tags, list)
            or len(tags) > MAX_TAGS
            or not all(isinstance(t, str) and 0 < len(t) <= MAX_TAG for t in tags)
        ):
            raise ValidationError("tags", f"must be a list of at most {MAX_TAGS} short strings")
        values["tags"] = list(dict.fromkeys(tags))
    return values


def from_first_ping(slug: str, payload: Mapping[str, Any]) -> dict[str, Any]:
    """The values of a tracker a ping key creates: named after the payload's ``job`` (else the
    slug), tagged with its ``orchestrator`` and its ``tags`` list. A name or tags a tracker
    cannot have (not strings, too long, too many) are left out: the ping is recorded anyway."""
    job = payload.get("job")
    name = job.strip() if isinstance(job, str) else ""
    tags: list[str] = []
    orchestrator = payload.get("orchestrator")
    if isinstance(orchestrator, str):
        tags.append(orchestrator)
    extra = payload.get("tags")
    if isinstance(extra, list):
        tags.extend(t for t in extra if isinstance(t, str))
    return {
        "name": name if 0 < len(name) <= MAX_NAME and "\x00" not in name else slug,
        "slug": slug,
        "tags": list(dict.fromkeys(t for t in tags if 0 < len(t) <= MAX_TAG and "\x00" not in t))[
            :MAX_TAGS
        ],
    }


def create_tracker(conn: Connection, values: Mapping[str, Any]) -> RowMapping:
    """Insert a tracker (``values`` from :func:`validate_fields`) and return its row; a
    scheduled one has ``schedule_set_at`` now (unless ``values`` says otherwise) and no
    ``next_expected_at`` yet (see :func:`telemhq_server.schedules.next_due`). Raises
    ``sqlalchemy.exc.IntegrityError`` when the slug is taken."""
    now = utcnow()
    scheduled = values.get("schedule_kind", "none") != "none"
    row: dict[str, Any] = {
        "assertions": [],
        "tags": [],
        "schedule_set_at": now if scheduled else None,
        **values,
        "token": new_token(),
        "badge_key": url_token(12),
        "state": "new",
        "created_at": now,
        "updated_at": now,
    }
    new_id = conn.execute(trackers.insert().values(**row).returning(trackers.c.id)).scalar_one()
    return conn.execute(sa.select(trackers).where(trackers.c.id == new_id)).mappings().one()
