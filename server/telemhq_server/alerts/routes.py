"""The management API's ``/api/v1/channels`` and ``/api/v1/silences`` routes."""

from __future__ import annotations

import threading
from collections.abc import Mapping
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute

from telemhq_server import db
from telemhq_server.alerts.message import render_test
from telemhq_server.alerts.policy import (
    CHANNEL_EVENTS,
    DEFAULT_CHANNEL_EVENTS,
    format_duration,
    parse_duration,
    validate_selector,
)
from telemhq_server.alerts.sender import Message, Outcome, send_blocking, url_hint, valid_url
from telemhq_server.alerts.silences import silence_json, validate_silence
from telemhq_server.alerts.tables import alert_attempts, alert_outbox, channels, silences
from telemhq_server.endpoints import ApiError, Ctx, api_route
from telemhq_server.trackers import ValidationError
from telemhq_server.webhooks.outbox import load_json, read_deliveries

__all__ = ["api_routes", "validate_channel"]

_FIELDS = (
    "name",
    "url",
    "events",
    "after_failures",
    "repeat_every",
    "max_repeats",
    "delay",
    "selector",
    "enabled",
)
#: Seconds the test endpoint waits for a channel's answer.
TEST_TIMEOUT = 15.0


def _channel_json(row: Mapping[Any, Any]) -> dict[str, Any]:
    return {
        "id": row["id"],
        "name": row["name"],
        # Apprise's privacy form: the service and where, never the secrets.
        "url_hint": row["url_hint"],
        "events": list(row["events"]) or list(DEFAULT_CHANNEL_EVENTS),
        "after_failures": row["after_failures"],
        "repeat_every": format_duration(row["repeat_every_seconds"]),
        "max_repeats": row["max_repeats"],
        "delay": format_duration(row["delay_seconds"]) or "0s",
        "selector": row["selector"] or {},
        "enabled": bool(row["enabled"]),
        "created_at": db.iso(row["created_at"]),
    }


def _int(body: Mapping[Any, Any], field: str, low: int, high: int) -> int:
    value = body[field]
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise ValidationError(field, f"must be an integer from {low} to {high}")
    return value


def validate_channel(body: Any, *, creating: bool) -> dict[str, Any]:
    """Column values from an API body (raises ``ValidationError``, answered 422)."""
    if not isinstance(body, Mapping):
        raise ValidationError("body", "must be a JSON object")
    unknown = sorted(set(body) - set(_FIELDS))
    if unknown:
        raise ValidationError(unknown[0], f"unknown field; known: {', '.join(_FIELDS)}")
    values: dict[str, Any] = {}
    if "url" in body or creating:
        url = body.get("url")
        if not isinstance(url, str) or "://" not in url or len(url) > 4000 or not valid_url(url):
            # The URL itself is not repeated: it may hold a secret.
            raise ValidationError("url", "must be an Apprise URL (slack://, mailto://, json://...)")
        values["url"], values["url_hint"] = url, url_hint(url)
    if "name" in body or creating:
        name = body.get("name", values.get("url_hint", "channel").split("://")[0])
        if not isinstance(name, str) or not 1 <= len(name) <= 200:
            raise ValidationError("name", "must be a string of 1 to 200 characters")
        values["name"] = name
    if "events" in body:
        events = body["events"]
        if not isinstance(events, list) or not all(e in CHANNEL_EVENTS for e in events):
            raise ValidationError("events", f"must be a list drawn from {list(CHANNEL_EVENTS)}")
        values["events"] = list(dict.fromkeys(events))
    elif creating:
        values["events"] = list(DEFAULT_CHANNEL_EVENTS)
    if "after_failures" in body:
        values["after_failures"] = _int(body, "after_failures", 1, 1000)
    if "max_repeats" in body:
        values["max_repeats"] = _int(body, "max_repeats", 0, 1000)
    if "repeat_every" in body:
        raw = body["repeat_every"]
        values["repeat_every_seconds"] = (
            None if raw is None else parse_duration(raw, "repeat_every")
        )
    if "delay" in body:
        values["delay_seconds"] = parse_duration(body["delay"], "delay", minimum=0)
    if "selector" in body or creating:
        values["selector"] = validate_selector(body.get("selector"))
    if "enabled" in body:
        if not isinstance(body["enabled"], bool):
            raise ValidationError("enabled", "must be true or false")
        values["enabled"] = body["enabled"]
    return values


def _send_with_deadline(url: str, title: str, body: str, timeout: float) -> Outcome:
    """:func:`send_blocking` in a thread of its own, given up at ``timeout`` seconds."""
    result: list[Outcome] = []
    thread = threading.Thread(
        # a warning: Opsgenie opens an alert for it (an info would only add a note to one)
        target=lambda: result.append(send_blocking(url, Message(title, body, kind="warning"))),
        daemon=True,
    )
    thread.start()
    thread.join(timeout)
    if not result:
        return Outcome(False, f"Timeout: not sent within {timeout:g} s", timeout * 1000)
    return result[0]


def api_routes() -> list[BaseRoute]:
    c, o, a, s = channels, alert_outbox, alert_attempts, silences

    def _row(conn: Connection, ctx: Ctx) -> Mapping[Any, Any]:
        channel_id = ctx.path_int("channel_id")
        row = conn.execute(sa.select(c).where(c.c.id == channel_id)).mappings().first()
        if row is None:
            raise ApiError(404, f"no such channel: {channel_id}")
        return row

    def list_channels(ctx: Ctx) -> Response:
        with ctx.app.engine.connect() as conn:
            rows = conn.execute(sa.select(c).order_by(c.c.id)).mappings().all()
        return JSONResponse({"items": [_channel_json(r) for r in rows], "next": None})

    def create_channel(ctx: Ctx) -> Response:
        values = validate_channel(ctx.body if ctx.body is not None else {}, creating=True)
        with db.write_tx(ctx.app.engine) as conn:
            new_id = conn.execute(
                sa.insert(c).values(**values, created_at=db.utcnow()).returning(c.c.id)
            ).scalar_one()
            row = conn.execute(sa.select(c).where(c.c.id == new_id)).mappings().one()
        return JSONResponse(_channel_json(row), 201)

    def get_channel(ctx: Ctx) -> Response:
        with ctx.app.engine.connect() as conn:
            return JSONResponse(_channel_json(_row(conn, ctx)))

    def update_channel(ctx: Ctx) -> Response:
        values = validate_channel(ctx.body if ctx.body is not None else {}, creating=False)
        with db.write_tx(ctx.app.engine) as conn:
            row = _row(conn, ctx)
            if values:
                conn.execute(sa.update(c).where(c.c.id == row["id"]).values(**values))
                row = _row(conn, ctx)
        return JSONResponse(_channel_json(row))

    def delete_channel(ctx: Ctx) -> Response:
        with db.write_tx(ctx.app.engine) as conn:
            row = _row(conn, ctx)
            ids = sa.select(o.c.id).where(o.c.channel_id == row["id"])
            conn.execute(sa.delete(a).where(a.c.outbox_id.in_(ids)))
            conn.execute(sa.delete(o).where(o.c.channel_id == row["id"]))
            conn.execute(sa.delete(c).where(c.c.id == row["id"]))
        return Response(status_code=204)

    def test_channel(ctx: Ctx) -> Response:
        with ctx.app.engine.connect() as conn:
            row = _row(conn, ctx)
        title, text = render_test(row["name"])
        outcome = _send_with_deadline(row["url"], title, text, TEST_TIMEOUT)
        return JSONResponse(
            {"ok": outcome.ok, "error": outcome.error, "duration_ms": round(outcome.duration_ms, 3)}
        )

    def deliveries(ctx: Ctx) -> Response:
        with ctx.app.engine.connect() as conn:
            channel = _row(conn, ctx)
            rows, tries, more = read_deliveries(
                conn,
                o,
                a,
                o.c.channel_id == channel["id"],
                limit=ctx.limit(),
                cursor=ctx.cursor(),
                attempt_json=lambda t: {
                    "attempted_at": db.iso(t["attempted_at"]),
                    "ok": bool(t["ok"]),
                    "error": t["error"],
                    "duration_ms": t["duration_ms"],
                },
            )
        items = [
            {
                "id": r["id"],
                "event": r["event"],
                "tracker_id": r["tracker_id"],
                "reminder": r["repeat_no"],
                "status": _status(r),
                "created_at": db.iso(r["created_at"]),
                "attempts": r["attempts"],
                "next_attempt_at": None
                if _status(r) != "pending"
                else db.iso(r["next_attempt_at"]),
                "delivered_at": db.iso(r["delivered_at"]),
                "failed_at": db.iso(r["failed_at"]),
                "dropped_at": db.iso(r["dropped_at"]),
                "last_error": r["last_error"],
                "held_by_silence": r["held_by"],
                "incident": r["incident"],
                "body": load_json(r["body"]),
                "attempt_log": tries.get(r["id"], []),
            }
            for r in rows
        ]
        return JSONResponse({"items": items, "next": str(items[-1]["id"]) if more else None})

    def list_silences(ctx: Ctx) -> Response:
        now = db.utcnow()
        with ctx.app.engine.connect() as conn:
            rows = conn.execute(sa.select(s).order_by(s.c.id)).mappings().all()
        return JSONResponse({"items": [silence_json(r, now) for r in rows], "next": None})

    def create_silence(ctx: Ctx) -> Response:
        now = db.utcnow()
        values = validate_silence(ctx.body if ctx.body is not None else {}, now)
        with db.write_tx(ctx.app.engine) as conn:
            new_id = conn.execute(
                sa.insert(s).values(**values, created_at=now).returning(s.c.id)
            ).scalar_one()
            row = conn.execute(sa.select(s).where(s.c.id == new_id)).mappings().one()
        return JSONResponse(silence_json(row, now), 201)

    def _silence(conn: Connection, ctx: Ctx) -> Mapping[Any, Any]:
        silence_id = ctx.path_int("silence_id")
        row = conn.execute(sa.select(s).where(s.c.id == silence_id)).mappings().first()
        if row is None:
            raise ApiError(404, f"no such silence: {silence_id}")
        return row

    def get_silence(ctx: Ctx) -> Response:
        with ctx.app.engine.connect() as conn:
            return JSONResponse(silence_json(_silence(conn, ctx), db.utcnow()))

    def end_silence(ctx: Ctx) -> Response:
        now = db.utcnow()
        with db.write_tx(ctx.app.engine) as conn:
            row = _silence(conn, ctx)
            if row["ended_at"] is None or db.as_utc(row["ended_at"]) > now:  # type: ignore[operator]
                conn.execute(sa.update(s).where(s.c.id == row["id"]).values(ended_at=now))
            # What it held is looked at again now, not at the end it would have had.
            pending = sa.and_(
                o.c.delivered_at.is_(None), o.c.failed_at.is_(None), o.c.dropped_at.is_(None)
            )
            conn.execute(
                sa.update(o).where(o.c.held_by == row["id"], pending).values(next_attempt_at=now)
            )
        return Response(status_code=204)

    route = api_route
    one = "/channels/{channel_id}"
    return [
        route("/channels", list_channels, "GET", "read"),
        route("/channels", create_channel, "POST", "write"),
        route(one, get_channel, "GET", "read"),
        route(one, update_channel, "PATCH", "write"),
        route(one, delete_channel, "DELETE", "write"),
        route(one + "/test", test_channel, "POST", "write"),
        route(one + "/deliveries", deliveries, "GET", "read"),
        route("/silences", list_silences, "GET", "read"),
        route("/silences", create_silence, "POST", "write"),
        route("/silences/{silence_id}", get_silence, "GET", "read"),
        route("/silences/{silence_id}", end_silence, "DELETE", "write"),
    ]


def _status(row: Mapping[Any, Any]) -> str:
    if row["delivered_at"]:
        return "delivered"
    if row["failed_at"]:
        return "failed"
    if row["dropped_at"]:
        return "dropped"
    return "held" if row["held_by"] is not None else "pending"
