"""The management API's ``/api/v1/webhooks`` routes: create, list, change, delete webhooks and
read their deliveries."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any
from urllib.parse import urlsplit

import sqlalchemy as sa
from sqlalchemy.engine import Connection
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute

from telemhq_server import db
from telemhq_server.endpoints import ApiError, Ctx, api_route
from telemhq_server.trackers import ValidationError
from telemhq_server.webhooks.outbox import DEFAULT_EVENTS, EVENTS, load_json, read_deliveries
from telemhq_server.webhooks.signing import new_secret

__all__ = ["api_routes", "validate_webhook"]


def _webhook_json(row: Any, *, with_secret: bool = False) -> dict[str, Any]:
    out: dict[str, Any] = {
        "id": row["id"],
        "url": row["url"],
        "events": list(row["events"]) or list(DEFAULT_EVENTS),
        "enabled": bool(row["enabled"]),
        "created_at": db.iso(row["created_at"]),
        # Never more than 4 characters of a secret a user may have chosen (and reused).
        "secret_hint": row["secret"][:4] + "...",
    }
    if with_secret:
        out["secret"] = row["secret"]
    return out


def validate_webhook(body: Any, *, creating: bool) -> dict[str, Any]:
    """Column values from an API body; raises ``trackers.ValidationError`` (answered 422)."""
    if not isinstance(body, Mapping):
        raise ValidationError("body", "must be a JSON object")
    unknown = sorted(set(body) - {"url", "events", "secret", "enabled"})
    if unknown:
        raise ValidationError(unknown[0], "unknown field; known: url, events, secret, enabled")
    values: dict[str, Any] = {}
    if "url" in body or creating:
        url = body.get("url")
        parts = urlsplit(url) if isinstance(url, str) else None
        if parts is None or parts.scheme not in ("http", "https") or not parts.netloc:
            raise ValidationError("url", f"must be an http(s) URL, got {url!r}")
        values["url"] = url
    if "events" in body:
        events = body["events"]
        if not isinstance(events, list) or not all(e in EVENTS for e in events):
            raise ValidationError("events", f"must be a list drawn from {list(EVENTS)}")
        values["events"] = list(dict.fromkeys(events))
    elif creating:
        values["events"] = list(DEFAULT_EVENTS)
    if body.get("secret") is not None:
        secret = body["secret"]
        if not isinstance(secret, str) or not 16 <= len(secret) <= 200:
            raise ValidationError("secret", "must be a string of 16 to 200 characters")
        values["secret"] = secret
    elif creating:
        values["secret"] = new_secret()
    if "enabled" in body:
        if not isinstance(body["enabled"], bool):
            raise ValidationError("enabled", "must be true or false")
        values["enabled"] = body["enabled"]
    return values


def api_routes() -> list[BaseRoute]:
    """``/api/v1/webhooks`` routes, served through the management API's key handling."""
    w, o, a = db.webhooks, db.webhook_outbox, db.webhook_attempts

    def _row(conn: Connection, ctx: Ctx) -> Any:
        hook_id = ctx.path_int("webhook_id")
        row = conn.execute(sa.select(w).where(w.c.id == hook_id)).mappings().first()
        if row is None:
            raise ApiError(404, f"no such webhook: {hook_id}")
        return row

    def list_hooks(ctx: Ctx) -> Response:
        with ctx.app.engine.connect() as conn:
            rows = conn.execute(sa.select(w).order_by(w.c.id)).mappings().all()
        return JSONResponse({"items": [_webhook_json(r) for r in rows], "next": None})

    def create_hook(ctx: Ctx) -> Response:
        values = validate_webhook(ctx.body if ctx.body is not None else {}, creating=True)
        with db.write_tx(ctx.app.engine) as conn:
            new_id = conn.execute(
                sa.insert(w)
                .values(**values, enabled=values.get("enabled", True), created_at=db.utcnow())
                .returning(w.c.id)
            ).scalar_one()
            row = conn.execute(sa.select(w).where(w.c.id == new_id)).mappings().one()
        return JSONResponse(_webhook_json(row, with_secret=True), 201)

    def get_hook(ctx: Ctx) -> Response:
        with ctx.app.engine.connect() as conn:
            return JSONResponse(_webhook_json(_row(conn, ctx)))

    def update_hook(ctx: Ctx) -> Response:
        values = validate_webhook(ctx.body if ctx.body is not None else {}, creating=False)
        with db.write_tx(ctx.app.engine) as conn:
            row = _row(conn, ctx)
            if values:
                conn.execute(sa.update(w).where(w.c.id == row["id"]).values(**values))
                row = _row(conn, ctx)
        return JSONResponse(_webhook_json(row, with_secret="secret" in values))

    def delete_hook(ctx: Ctx) -> Response:
        with db.write_tx(ctx.app.engine) as conn:
            row = _row(conn, ctx)
            ids = sa.select(o.c.id).where(o.c.webhook_id == row["id"])
            conn.execute(sa.delete(a).where(a.c.outbox_id.in_(ids)))
            conn.execute(sa.delete(o).where(o.c.webhook_id == row["id"]))
            conn.execute(sa.delete(w).where(w.c.id == row["id"]))
        return Response(status_code=204)

    def deliveries(ctx: Ctx) -> Response:
        with ctx.app.engine.connect() as conn:
            hook = _row(conn, ctx)
            rows, tries, more = read_deliveries(
                conn,
                o,
                a,
                o.c.webhook_id == hook["id"],
                limit=ctx.limit(),
                cursor=ctx.cursor(),
                attempt_json=lambda t: {
                    "attempted_at": db.iso(t["attempted_at"]),
                    "status_code": t["status_code"],
                    "error": t["error"],
                    "duration_ms": t["duration_ms"],
                },
            )
        items = [
            {
                "id": r["id"],
                "event": r["event"],
                "tracker_id": r["tracker_id"],
                "status": "delivered"
                if r["delivered_at"]
                else "failed"
                if r["failed_at"]
                else "pending",
                "created_at": db.iso(r["created_at"]),
                "attempts": r["attempts"],
                "next_attempt_at": None
                if r["delivered_at"] or r["failed_at"]
                else db.iso(r["next_attempt_at"]),
                "delivered_at": db.iso(r["delivered_at"]),
                "failed_at": db.iso(r["failed_at"]),
                "last_error": r["last_error"],
                "body": load_json(r["body"]),
                "attempt_log": tries.get(r["id"], []),
            }
            for r in rows
        ]
        return JSONResponse({"items": items, "next": str(items[-1]["id"]) if more else None})

    route = api_route
    one = "/webhooks/{webhook_id}"
    return [
        route("/webhooks", list_hooks, "GET", "read"),
        route("/webhooks", create_hook, "POST", "write"),
        route(one, get_hook, "GET", "read"),
        route(one, update_hook, "PATCH", "write"),
        route(one, delete_hook, "DELETE", "write"),
        route(one + "/deliveries", deliveries, "GET", "read"),
    ]
