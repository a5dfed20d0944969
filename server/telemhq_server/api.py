"""The management API, ``/api/v1``: trackers, runs, flips, API keys and ping keys.

Every route needs ``Authorization: Bearer <key>``; ``read`` keys may only GET, ``write`` keys
may do everything. Answers are JSON; lists are ``{"items": [...], "next": cursor-or-null}``
(pass ``?cursor=`` to get the next page). Errors are ``{"error": "..."}`` with 400 (bad JSON),
401 (no/unknown key), 403 (read-only key), 404, 409 (slug taken) or 422 (invalid field;
``field`` names it, and an assertion error adds ``expression``, ``position``, ``pointer``).

Handlers are plain functions run in a worker thread (blocking SQLAlchemy Core calls), served
through :mod:`telemhq_server.endpoints`.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection, RowMapping
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from telemhq_server import keys as keys_mod
from telemhq_server import states
from telemhq_server.baselines import history_json, warn_on_retention
from telemhq_server.db import (
    API_SCOPES,
    api_keys,
    as_id,
    flips,
    iso,
    ping_keys,
    runs,
    trackers,
    utcnow,
    write_tx,
)
from telemhq_server.endpoints import API_PREFIX, MAX_LIMIT, ApiError, Ctx, api_route, page
from telemhq_server.flips import record_flip
from telemhq_server.openapi import openapi_document
from telemhq_server.schedules import due_after, next_due, schedule_changed
from telemhq_server.trackers import ValidationError, new_token, to_json, validate_fields

if TYPE_CHECKING:
    from telemhq_server.host import TelemHQ

__all__ = ["register", "routes", "run_json"]

# --- trackers --------------------------------------------------------------------------------


def _tracker_row(conn: Connection, ref: str) -> RowMapping:
    tracker_id = as_id(ref)
    if tracker_id is None and (ref.isdigit() or "\x00" in ref):
        raise ApiError(404, f"no such tracker: {ref!r}")  # no such id, nor a possible slug
    query = sa.select(trackers)
    query = (
        query.where(trackers.c.id == tracker_id)
        if tracker_id is not None
        else query.where(trackers.c.slug == ref)
    )
    row = conn.execute(query).mappings().first()
    if row is None:
        raise ApiError(404, f"no such tracker: {ref!r}")
    return row


def _conflict(exc: sa.exc.IntegrityError, values: dict[str, Any]) -> ApiError:
    return ApiError(
        409, f"slug {values.get('slug')!r} is already used by another tracker", field="slug"
    )


def list_trackers(ctx: Ctx) -> Response:
    """Trackers by id; ``?state=`` filters in SQL, ``?tag=`` in Python (tags are a JSON list,
    and containment is not portable across SQLite and PostgreSQL), scanning on until the
    page is full."""
    limit, after = ctx.limit(), ctx.cursor()
    tag = ctx.request.query_params.get("tag")
    state = ctx.request.query_params.get("state")
    rows: list[RowMapping] = []
    chunk = limit + 1 if tag is None else MAX_LIMIT
    with ctx.app.engine.connect() as conn:
        while len(rows) <= limit:
            query = sa.select(trackers).order_by(trackers.c.id).limit(chunk)
            if after is not None:
                query = query.where(trackers.c.id > after)
            if state is not None:
                query = query.where(trackers.c.state == state)
            found = conn.execute(query).mappings().all()
            rows.extend(r for r in found if tag is None or tag in r["tags"])
            if len(found) < chunk:
                break
            after = found[-1]["id"]
    return JSONResponse(page([to_json(r, ctx.base_url) for r in rows[: limit + 1]], limit))


def create_tracker(ctx: Ctx) -> Response:
    from telemhq_server.trackers import create_tracker as insert

    values = validate_fields(ctx.body if ctx.body is not None else {}, creating=True)
    try:
        with write_tx(ctx.app.engine) as conn:
            row = insert(conn, values)
            due = next_due(row)
            if due is not None:  # the detector would set it too; the answer shows it now
                conn.execute(
                    trackers.update().where(trackers.c.id == row["id"]).values(next_expected_at=due)
                )
                row = _tracker_row(conn, str(row["id"]))
    except sa.exc.IntegrityError as exc:
        raise _conflict(exc, values) from None
    ctx.app.cache.invalidate()
    warn_on_retention(row, ctx.app.settings.retention_runs)
    return JSONResponse(to_json(row, ctx.base_url), 201)


def get_tracker(ctx: Ctx) -> Response:
    """One tracker, with each history assertion's current baseline."""
    with ctx.app.engine.connect() as conn:
        row = _tracker_row(conn, ctx.request.path_params["tracker"])
        extra = history_json(conn, row, ctx.app.settings.retention_runs)
    return JSONResponse({**to_json(row, ctx.base_url), **extra})


def update_tracker(ctx: Ctx) -> Response:
    values = validate_fields(ctx.body if ctx.body is not None else {}, creating=False)
    try:
        with write_tx(ctx.app.engine) as conn:
            row = _tracker_row(conn, ctx.request.path_params["tracker"])
            if values:
                values["updated_at"] = utcnow()
                if schedule_changed(row, values):
                    values["schedule_set_at"] = values["updated_at"]
                conn.execute(trackers.update().where(trackers.c.id == row["id"]).values(**values))
                row = _tracker_row(conn, str(row["id"]))
                if "schedule_kind" in values:
                    # A new schedule applies from the last ping on, not from the next one;
                    # never pinged, the first run is due after the schedule was set.
                    due = next_due(row)
                    conn.execute(
                        trackers.update()
                        .where(trackers.c.id == row["id"])
                        .values(next_expected_at=due)
                    )
                    row = _tracker_row(conn, str(row["id"]))
    except sa.exc.IntegrityError as exc:
        raise _conflict(exc, values) from None
    ctx.app.cache.invalidate()
    if "assertions" in values:
        warn_on_retention(row, ctx.app.settings.retention_runs)
    return JSONResponse(to_json(row, ctx.base_url))


def delete_tracker(ctx: Ctx) -> Response:
    with write_tx(ctx.app.engine) as conn:
        row = _tracker_row(conn, ctx.request.path_params["tracker"])
        conn.execute(flips.delete().where(flips.c.tracker_id == row["id"]))
        conn.execute(runs.delete().where(runs.c.tracker_id == row["id"]))
        conn.execute(trackers.delete().where(trackers.c.id == row["id"]))
    ctx.app.cache.invalidate()
    return Response(status_code=204)


def _set_paused(ctx: Ctx, paused: bool) -> Response:
    now = utcnow()
    with write_tx(ctx.app.engine) as conn:
        ref = ctx.request.path_params["tracker"]
        row = _tracker_row(conn, ref)
        if ctx.app.engine.dialect.name == "postgresql":  # lock it against the ingest writer
            conn.execute(
                sa.select(trackers.c.id).where(trackers.c.id == row["id"]).with_for_update()
            )
            row = _tracker_row(conn, str(row["id"]))
        if bool(row["paused"]) != paused:
            new_state = "paused" if paused else "new"
            values: dict[str, Any] = {}
            if not paused and row["schedule_kind"] != "none":
                # Resuming restarts the clock: pinged or not, the tracker gets a whole period
                # (or until its next cron time) for its next ping, not an alert for the pause.
                values["schedule_set_at"] = values["resumed_at"] = now
                values["next_expected_at"] = due_after(row, now)
            conn.execute(
                trackers.update()
                .where(trackers.c.id == row["id"])
                .values(
                    paused=paused,
                    state=new_state,
                    state_changed_at=now,
                    consecutive_failures=0 if not paused else row["consecutive_failures"],
                    updated_at=now,
                    **values,
                )
            )
            reason = "paused through the API" if paused else "resumed through the API"
            record_flip(
                conn,
                row["id"],
                row["state"],
                new_state,
                reason,
                None,
                now,
                listeners=ctx.app.flip_listeners,
            )
            row = _tracker_row(conn, str(row["id"]))
    ctx.app.cache.invalidate()
    return JSONResponse(to_json(row, ctx.base_url))


def pause_tracker(ctx: Ctx) -> Response:
    return _set_paused(ctx, True)


def resume_tracker(ctx: Ctx) -> Response:
    return _set_paused(ctx, False)


def rotate_token(ctx: Ctx) -> Response:
    with write_tx(ctx.app.engine) as conn:
        row = _tracker_row(conn, ctx.request.path_params["tracker"])
        conn.execute(
            trackers.update()
            .where(trackers.c.id == row["id"])
            .values(token=new_token(), updated_at=utcnow())
        )
        row = _tracker_row(conn, str(row["id"]))
    ctx.app.cache.invalidate()
    return JSONResponse(to_json(row, ctx.base_url))


def run_json(row: Any) -> dict[str, Any]:
    return {
        "id": row["id"],
        "ping_id": row["ping_id"],
        "run_id": row["run_id"],
        "status": row["status"],
        "passed": row["passed"],
        "duration_ms": row["duration_ms"],
        "assertions": json.loads(row["assertions"]),
        "payload": json.loads(row["payload"]),
        "received_at": iso(row["received_at"]),
        "started_at": iso(row["started_at"]),
    }


def list_runs(ctx: Ctx) -> Response:
    limit, cursor = ctx.limit(), ctx.cursor()
    status = ctx.request.query_params.get("status")
    if status is not None and status not in states.NEUTRAL_STATUSES | {"success", "failure"}:
        raise ApiError(400, f"unknown status {status!r}")
    with ctx.app.engine.connect() as conn:
        tracker_id = _tracker_row(conn, ctx.request.path_params["tracker"])["id"]
        query = sa.select(runs).where(runs.c.tracker_id == tracker_id).order_by(runs.c.id.desc())
        if cursor is not None:
            query = query.where(runs.c.id < cursor)
        if status is not None:
            query = query.where(runs.c.status == status)
        rows = conn.execute(query.limit(limit + 1)).mappings().all()
    return JSONResponse(page([run_json(r) for r in rows], limit))


def list_flips(ctx: Ctx) -> Response:
    limit, cursor = ctx.limit(), ctx.cursor()
    with ctx.app.engine.connect() as conn:
        tracker_id = _tracker_row(conn, ctx.request.path_params["tracker"])["id"]
        query = sa.select(flips).where(flips.c.tracker_id == tracker_id).order_by(flips.c.id.desc())
        if cursor is not None:
            query = query.where(flips.c.id < cursor)
        rows = conn.execute(query.limit(limit + 1)).mappings().all()
    items = [
        {
            "id": r["id"],
            "old_state": r["old_state"],
            "new_state": r["new_state"],
            "reason": r["reason"],
            "run_id": r["run_id"],
            "created_at": iso(r["created_at"]),
        }
        for r in rows
    ]
    return JSONResponse(page(items, limit))


# --- keys ------------------------------------------------------------------------------------


def _name(body: Any, default: str) -> str:
    name = body.get("name", default) if isinstance(body, dict) else default
    if not isinstance(name, str) or not name.strip() or len(name) > 200:
        raise ValidationError("name", "must be a non-empty string of at most 200 characters")
    return name.strip()


def list_api_keys(ctx: Ctx) -> Response:
    with ctx.app.engine.connect() as conn:
        rows = conn.execute(sa.select(api_keys).order_by(api_keys.c.id)).mappings().all()
    return JSONResponse({"items": [keys_mod.api_key_json(r) for r in rows], "next": None})


def create_api_key(ctx: Ctx) -> Response:
    body = ctx.body if ctx.body is not None else {}
    if not isinstance(body, dict):
        raise ValidationError("body", "must be a JSON object")
    scope = body.get("scope", "read")
    if scope not in API_SCOPES:
        raise ValidationError("scope", f"must be one of {list(API_SCOPES)}, got {scope!r}")
    name = _name(body, f"{scope} key")
    if name == keys_mod.ENV_KEY_NAME:
        raise ValidationError("name", "is reserved for the key set through TELEMHQ_API_KEY")
    with write_tx(ctx.app.engine) as conn:
        key = keys_mod.create_api_key(conn, name, scope)
        row = (
            conn.execute(sa.select(api_keys).where(api_keys.c.key_hash == keys_mod.hash_key(key)))
            .mappings()
            .one()
        )
    return JSONResponse({**keys_mod.api_key_json(row), "key": key}, 201)


def delete_api_key(ctx: Ctx) -> Response:
    key_id = ctx.path_int("key_id")
    with write_tx(ctx.app.engine) as conn:
        if conn.execute(api_keys.delete().where(api_keys.c.id == key_id)).rowcount == 0:
            raise ApiError(404, f"no such API key: {key_id}")
    return Response(status_code=204)


def list_ping_keys(ctx: Ctx) -> Response:
    with ctx.app.engine.connect() as conn:
        items = keys_mod.list_ping_keys(conn)
    return JSONResponse({"items": items, "next": None})


def create_ping_key(ctx: Ctx) -> Response:
    body = ctx.body if ctx.body is not None else {}
    if not isinstance(body, dict):
        raise ValidationError("body", "must be a JSON object")
    auto_create = body.get("auto_create", True)
    if not isinstance(auto_create, bool):
        raise ValidationError("auto_create", "must be true or false")
    with write_tx(ctx.app.engine) as conn:
        out = keys_mod.create_ping_key(conn, _name(body, "ping key"), auto_create)
    ctx.app.cache.invalidate()
    return JSONResponse(out, 201)


def delete_ping_key(ctx: Ctx) -> Response:
    key_id = ctx.path_int("key_id")
    with write_tx(ctx.app.engine) as conn:
        if conn.execute(ping_keys.delete().where(ping_keys.c.id == key_id)).rowcount == 0:
            raise ApiError(404, f"no such ping key: {key_id}")
    ctx.app.cache.invalidate()
    return Response(status_code=204)


async def openapi(request: Request) -> Response:
    app: TelemHQ = request.app.state.telemhq
    return JSONResponse(openapi_document(app.public_url(request)))


def routes() -> list[BaseRoute]:
    r = api_route
    t = "/trackers/{tracker}"
    return [
        Route(API_PREFIX + "/openapi.json", openapi, methods=["GET"]),
        r("/trackers", list_trackers, "GET", "read"),
        r("/trackers", create_tracker, "POST", "write"),
        r(t, get_tracker, "GET", "read"),
        r(t, update_tracker, "PATCH", "write"),
        r(t, update_tracker, "PUT", "write"),
        r(t, delete_tracker, "DELETE", "write"),
        r(t + "/runs", list_runs, "GET", "read"),
        r(t + "/flips", list_flips, "GET", "read"),
        r(t + "/pause", pause_tracker, "POST", "write"),
        r(t + "/resume", resume_tracker, "POST", "write"),
        r(t + "/rotate-token", rotate_token, "POST", "write"),
        r("/keys", list_api_keys, "GET", "write"),
        r("/keys", create_api_key, "POST", "write"),
        r("/keys/{key_id}", delete_api_key, "DELETE", "write"),
        r("/ping-keys", list_ping_keys, "GET", "write"),
        r("/ping-keys", create_ping_key, "POST", "write"),
        r("/ping-keys/{key_id}", delete_ping_key, "DELETE", "write"),
    ]


def register(app: TelemHQ) -> None:
    """Serve the management API (see :mod:`telemhq_server.host`)."""
    app.add_routes(routes())
