"""Dashboard routes: sign-in, the trackers page, a tracker page, a run page, the stylesheet.

Reads only (the API is for changes). Each handler loads what it needs with SQLAlchemy Core in
a worker thread and hands plain data to :mod:`telemhq_server.dashboard.pages`.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final
from urllib.parse import parse_qs, quote

import sqlalchemy as sa
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import HTMLResponse, PlainTextResponse, RedirectResponse, Response
from starlette.routing import BaseRoute, Mount, Route
from starlette.staticfiles import StaticFiles

from telemhq_server import db
from telemhq_server.bodies import MAX_FORM_BODY, BodyTooLarge, read_body
from telemhq_server.dashboard import auth, pages
from telemhq_server.keys import hash_key, verify_api_key

if TYPE_CHECKING:
    from telemhq_server.host import TelemHQ

__all__ = ["routes"]

STATIC_DIR: Final = Path(__file__).with_name("static")
RUNS_PER_PAGE: Final = 50
CHART_RUNS: Final = 200
SPARK_RUNS: Final = 20
#: No scripts at all, nothing from elsewhere: the dashboard works offline and an injected
#: ``<script>`` could not run even if escaping were ever missed.
SECURITY_HEADERS: Final = {
    "Content-Security-Policy": (
        "default-src 'none'; style-src 'self'; img-src 'self' data:; "
        "form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    "Cache-Control": "no-store",
}

Page = Callable[[Request, "TelemHQ", str | None], Awaitable[Response]]


def _html(markup: str, status: int = 200) -> HTMLResponse:
    return HTMLResponse(markup, status, headers=SECURITY_HEADERS)


def _signed_in(page: Page) -> Callable[[Request], Awaitable[Response]]:
    """Wrap a page: signed-in users (or everyone with ``--public-dashboard``) see it, others
    are sent to the sign-in page and brought back afterwards."""

    async def endpoint(request: Request) -> Response:
        app: TelemHQ = request.app.state.telemhq
        if app.settings.public_dashboard:
            return await page(request, app, None)
        cookie = request.cookies.get(auth.COOKIE_NAME)
        session = await run_in_threadpool(auth.read_cookie, app.engine, cookie)
        if session is None:
            target = quote(
                request.url.path + (f"?{request.url.query}" if request.url.query else "")
            )
            return RedirectResponse(f"/dashboard/login?next={target}", 303)
        return await page(request, app, session.key_name)

    return endpoint


def _safe_next(value: str | None) -> str:
    """Only local dashboard paths: never an open redirect to another site."""
    if value and value.startswith("/dashboard") and not value.startswith("//"):
        return value
    return "/dashboard/"


async def login_form(request: Request) -> Response:
    app: TelemHQ = request.app.state.telemhq
    if app.settings.public_dashboard:
        return RedirectResponse("/dashboard/", 303)
    return _html(pages.login_page(next_url=_safe_next(request.query_params.get("next"))))


async def login(request: Request) -> Response:
    app: TelemHQ = request.app.state.telemhq
    try:
        raw = await read_body(request, MAX_FORM_BODY)
    except BodyTooLarge as exc:
        return PlainTextResponse(str(exc), 413, headers=SECURITY_HEADERS)
    # A urlencoded form, parsed by hand: no multipart dependency for one field.
    form = parse_qs(raw.decode("utf-8", "replace"), max_num_fields=10)
    key = (form.get("api_key") or [""])[0].strip()
    next_url = _safe_next((form.get("next") or [""])[0])
    found = await run_in_threadpool(verify_api_key, app.engine, key) if key else None
    if found is None:
        markup = pages.login_page(error="That API key is not valid.", next_url=next_url)
        return _html(markup, 401)
    response = RedirectResponse(next_url, 303)
    response.set_cookie(
        auth.COOKIE_NAME,
        auth.make_cookie(found.id, hash_key(key)),
        max_age=auth.SESSION_SECONDS,
        path="/",
        httponly=True,
        samesite="lax",
        secure=request.url.scheme == "https",
    )
    return response


async def logout(_request: Request) -> Response:
    response = RedirectResponse("/dashboard/login", 303)
    response.delete_cookie(auth.COOKIE_NAME, path="/")
    return response


# --- pages -----------------------------------------------------------------------------------


def _load_trackers(engine: sa.Engine) -> tuple[list[Any], dict[int, list[float]], dict[int, str]]:
    t, r = db.trackers, db.runs
    with engine.connect() as conn:
        rows = conn.execute(sa.select(t).order_by(t.c.name, t.c.id)).mappings().all()
        ranked = (
            sa.select(
                r.c.tracker_id,
                r.c.id,
                r.c.status,
                r.c.duration_ms,
                sa.func.row_number()
                .over(partition_by=r.c.tracker_id, order_by=r.c.id.desc())
                .label("rank"),
            )
            .where(r.c.status != "start")
            .subquery()
        )
        recent = conn.execute(
            sa.select(ranked)
            .where(ranked.c.rank <= SPARK_RUNS)
            .order_by(ranked.c.tracker_id, ranked.c.id)
        ).all()
    durations: dict[int, list[float]] = {}
    last_status: dict[int, str] = {}
    for run in recent:
        if run.duration_ms is not None:
            durations.setdefault(run.tracker_id, []).append(float(run.duration_ms))
        last_status[run.tracker_id] = run.status  # ascending ids: the last one wins
    return [_aware(row) for row in rows], durations, last_status


_TIME_COLUMNS: Final = (
    "last_run_at",
    "last_ping_at",
    "next_expected_at",
    "state_changed_at",
    "open_start_at",
    "received_at",
    "started_at",
    "created_at",
)


def _aware(row: Any) -> dict[str, Any]:
    out = dict(row)
    for k in _TIME_COLUMNS:
        if k in out:
            out[k] = db.as_utc(out[k])
    return out


async def trackers_page(request: Request, app: TelemHQ, who: str | None) -> Response:
    rows, durations, last_status = await run_in_threadpool(_load_trackers, app.engine)
    return _html(
        pages.trackers_page(rows, durations, last_status, now=db.utcnow(), signed_in_as=who)
    )


def _tracker(conn: sa.Connection, raw: str) -> dict[str, Any] | None:
    tracker_id = db.as_id(raw)
    if tracker_id is None:
        return None
    row = conn.execute(sa.select(db.trackers).where(db.trackers.c.id == tracker_id)).mappings()
    found = row.first()
    return None if found is None else _aware(found)


def _not_found(what: str, who: str | None) -> Response:
    body = f"<h1>Not found</h1><p>{pages.e(what)}</p>"
    return _html(pages.layout("Not found", body, signed_in_as=who), 404)


def _load_tracker(engine: sa.Engine, raw: str, before: int | None) -> dict[str, Any] | None:
    r, f = db.runs, db.flips
    with engine.connect() as conn:
        tracker = _tracker(conn, raw)
        if tracker is None:
            return None
        query = sa.select(r).where(r.c.tracker_id == tracker["id"]).order_by(r.c.id.desc())
        if before is not None:
            query = query.where(r.c.id < before)
        runs = [_run(x) for x in conn.execute(query.limit(RUNS_PER_PAGE + 1)).mappings()]
        chart_rows = conn.execute(
            sa.select(r.c.received_at, r.c.duration_ms, r.c.payload)
            .where(r.c.tracker_id == tracker["id"], r.c.status != "start")
            .order_by(r.c.id.desc())
            .limit(CHART_RUNS)
        ).all()
        flips = [
            _aware(x)
            for x in conn.execute(
                sa.select(f)
                .where(f.c.tracker_id == tracker["id"])
                .order_by(f.c.id.desc())
                .limit(50)
            ).mappings()
        ]
    durations = []
    payloads: list[tuple[Any, dict[str, Any]]] = []
    for row in reversed(chart_rows):
        at = db.as_utc(row.received_at)
        if row.duration_ms is not None:
            durations.append((at, float(row.duration_ms)))
        payload = _loads(row.payload)
        if isinstance(payload, dict):
            payloads.append((at, payload))
    names = pages.metric_names(p for _, p in payloads)
    metrics = {
        name: [(at, float(p[name])) for at, p in payloads if _number(p.get(name))] for name in names
    }
    older = runs[RUNS_PER_PAGE - 1]["id"] if len(runs) > RUNS_PER_PAGE else None
    return {
        "tracker": tracker,
        "runs": runs[:RUNS_PER_PAGE],
        "flips": flips,
        "durations": durations,
        "metrics": metrics,
        "older": older,
    }


def _number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _loads(text: str | None) -> Any:
    try:
        return json.loads(text) if text else None
    except ValueError:
        return text


def _run(row: Any) -> dict[str, Any]:
    out = _aware(row)
    out["assertions"] = _loads(row["assertions"]) or []
    out["payload"] = _loads(row["payload"])
    return out


async def tracker_page(request: Request, app: TelemHQ, who: str | None) -> Response:
    raw_before = request.query_params.get("before", "")
    before = db.as_id(raw_before)
    data = await run_in_threadpool(
        _load_tracker, app.engine, request.path_params["tracker_id"], before
    )
    if data is None:
        return _not_found("No such tracker.", who)
    return _html(
        pages.tracker_page(
            data["tracker"],
            runs=data["runs"],
            flips=data["flips"],
            duration_points=data["durations"],
            metric_points=data["metrics"],
            base_url=app.public_url(request),
            now=db.utcnow(),
            older_than=data["older"],
            signed_in_as=who,
        )
    )


def _load_run(engine: sa.Engine, raw_tracker: str, raw_run: str) -> tuple[Any, Any] | None:
    with engine.connect() as conn:
        tracker = _tracker(conn, raw_tracker)
        run_id = db.as_id(raw_run)
        if tracker is None or run_id is None:
            return None
        r = db.runs
        row = (
            conn.execute(sa.select(r).where(r.c.id == run_id, r.c.tracker_id == tracker["id"]))
            .mappings()
            .first()
        )
    return None if row is None else (tracker, _run(row))


async def run_page(request: Request, app: TelemHQ, who: str | None) -> Response:
    found = await run_in_threadpool(
        _load_run, app.engine, request.path_params["tracker_id"], request.path_params["run_id"]
    )
    if found is None:
        return _not_found("No such run (it may have been pruned by retention).", who)
    tracker, run = found
    return _html(pages.run_page(tracker, run, now=db.utcnow(), signed_in_as=who))


async def to_dashboard(_request: Request) -> Response:
    return RedirectResponse("/dashboard/", 307)


def routes() -> list[BaseRoute]:
    return [
        Route("/dashboard", to_dashboard, methods=["GET", "HEAD"]),
        Route("/dashboard/", _signed_in(trackers_page), methods=["GET", "HEAD"]),
        Route("/dashboard/login", login_form, methods=["GET", "HEAD"]),
        Route("/dashboard/login", login, methods=["POST"]),
        Route("/dashboard/logout", logout, methods=["POST"]),
        Route(
            "/dashboard/trackers/{tracker_id}", _signed_in(tracker_page), methods=["GET", "HEAD"]
        ),
        Route(
            "/dashboard/trackers/{tracker_id}/runs/{run_id}",
            _signed_in(run_page),
            methods=["GET", "HEAD"],
        ),
        Mount("/dashboard/static", StaticFiles(directory=STATIC_DIR), name="dashboard-static"),
    ]
