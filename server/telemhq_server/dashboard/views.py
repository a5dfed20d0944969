"""Dashboard routes: sign-in, the trackers page, a tracker page, a run page, the stylesheet.

Reads only (the API is for changes). Each handler loads what it needs with SQLAlchemy Core in
a worker thread and hands plain data to :mod:`telemhq_server.dashboard.pages`.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final, cast
from urllib.parse import parse_qs, quote

import orjson
import sqlalchemy as sa
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import HTMLResponse, PlainTextResponse, RedirectResponse, Response
from starlette.routing import BaseRoute, Mount, Route
from starlette.staticfiles import StaticFiles

from telemhq_server import db
from telemhq_server.alerts.enqueue import orchestrator_of
from telemhq_server.bodies import MAX_FORM_BODY, BodyTooLarge, read_body
from telemhq_server.dashboard import auth, bands, grouping, overview, pages, routing, runinfo
from telemhq_server.dashboard.charts import Band
from telemhq_server.keys import hash_key, verify_api_key

if TYPE_CHECKING:
    from telemhq_server.host import TelemHQ

__all__ = ["routes", "trackers_html", "ui_bases"]

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


_TRACKER_COLUMNS: Final = (
    "id",
    "name",
    "slug",
    "tags",
    "state",
    "state_changed_at",
    "last_run_at",
    "last_ping_at",
    "next_expected_at",
)


def _load_trackers(engine: sa.Engine, filters: grouping.Filters, bases: runinfo.UiBases) -> Any:
    """The trackers page's data in four queries whatever the number of trackers: the trackers
    with the id of each one's last finished run, those runs (their orchestrator block says
    where a tracker belongs, their error or assertions why it failed), and the recent
    durations of the rows the page will show. Every run is reached through an index (the
    newest of a tracker through (tracker_id, id), then by primary key), so the cost does not
    grow with the runs retained. Only the rows shown get their times, reason and link."""
    t, r = db.trackers, db.runs
    last_id = (
        sa.select(r.c.id)
        .where(r.c.tracker_id == t.c.id, r.c.status != "start")
        .order_by(r.c.id.desc())
        .limit(1)
        .scalar_subquery()
    )
    # Tags as text, parsed by orjson: the JSON type's parser is most of the query's cost.
    columns = (
        sa.type_coerce(t.c[k], sa.Text).label(k) if k == "tags" else t.c[k]
        for k in _TRACKER_COLUMNS
    )
    query = sa.select(*columns, last_id.label("last_run"))
    with engine.connect() as conn:
        rows = conn.execute(query).mappings().all()
        wanted = [row["last_run"] for row in rows if row["last_run"] is not None]
        last: dict[int, Any] = {}
        for chunk in _chunks(wanted):
            found = conn.execute(
                sa.select(r.c.id, r.c.status, r.c.passed, r.c.payload, r.c.assertions).where(
                    r.c.id.in_(chunk)
                )
            ).all()
            last.update((run.id, run) for run in found)
        trackers = [_tracker_row(row, last.get(row["last_run"])) for row in rows]
        total = grouping.count_states(trackers)
        shown = [row for row in trackers if grouping.matches(row, filters)]
        page = overview.plan(grouping.build_sections(shown), filters)
        durations = _recent_durations(conn, page.rendered_ids)
        now = db.utcnow()
        quiet = routing.live_silences(conn, now)
    for section in page.sections:
        for view in section.groups:
            for row in view.rows:
                _explain(cast("dict[str, Any]", row), bases, quiet, now)  # from _tracker_row
    return page, durations, total


def _chunks(ids: Sequence[int], size: int = 900) -> list[Sequence[int]]:
    """Bounded ``IN`` lists (SQLite's limit on bound parameters)."""
    return [ids[i : i + size] for i in range(0, len(ids), size)]


def _tracker_row(row: Any, last: Any) -> dict[str, Any]:
    """What grouping and filtering need; the rest waits for :func:`_explain`."""
    out = dict(row)
    tags = _fast_loads(out["tags"]) if isinstance(out["tags"], str) else out["tags"]
    out["tags"] = tags if isinstance(tags, list) else []
    out["last_status"] = None if last is None else last.status
    out["last_passed"] = None if last is None else last.passed
    out["last_assertions"] = None if last is None else last.assertions
    payload = None if last is None else _fast_loads(last.payload)
    out["payload"] = payload = payload if isinstance(payload, dict) else None
    out["orchestrator"] = grouping.orchestrator_of(out["tags"], payload)
    out["group"] = grouping.group_of(out["orchestrator"], str(out["name"]), payload)
    return out


def _explain(
    row: dict[str, Any],
    bases: runinfo.UiBases,
    silences: Sequence[Any],
    now: dt.datetime,
) -> None:
    """A shown row's times, why its last run failed, that run's link in its UI, and until when
    a silence holds its notifications."""
    for k in _TIME_COLUMNS:
        if k in row:
            row[k] = db.as_utc(row[k])
    payload = row.pop("payload")
    if silences:
        # The orchestrator as the alerts read it: what the last run says, never a tag.
        said = payload.get("orchestrator") if payload is not None else None
        row["silenced_until"] = routing.silenced_until(
            silences, row, said if isinstance(said, str) else None, now
        )
    assertions = row.pop("last_assertions")
    # Only a run that did not pass has a reason: the others' results are not even parsed.
    row["reason"] = (
        None
        if row["last_run"] is None or row["last_passed"] is not False
        else runinfo.reason_of(row["last_status"], payload, _fast_loads(assertions))
    )
    row["ui_url"] = runinfo.ui_url(payload, bases)


def _fast_loads(text: str | None) -> Any:
    """A stored JSON text (written by the ping path) parsed with orjson, None if it is not
    JSON: the trackers page reads one per tracker."""
    try:
        return orjson.loads(text) if text else None
    except orjson.JSONDecodeError:
        return None


def _recent_durations(conn: sa.Connection, ids: Sequence[int]) -> dict[int, list[float]]:
    """The last durations of the trackers shown (oldest first), for their sparklines: for each,
    the id of its ``SPARK_RUNS``-th newest finished run through the index, then its runs from
    there (one index range per tracker)."""
    if not ids:
        return {}
    r, t = db.runs, db.trackers
    floor = (
        sa.select(r.c.id)
        .where(r.c.tracker_id == t.c.id, r.c.status != "start")
        .order_by(r.c.id.desc())
        .offset(SPARK_RUNS - 1)
        .limit(1)
        .scalar_subquery()
    )
    floors: dict[int, int] = {}
    for chunk in _chunks(ids):
        found = conn.execute(sa.select(t.c.id, floor).where(t.c.id.in_(chunk))).all()
        floors.update((tid, low or 0) for tid, low in found)
    durations: dict[int, list[float]] = {}
    for chunk in _chunks(list(floors), 300):
        # One index range per tracker, written as text: building (and compiling, uncached)
        # hundreds of SQLAlchemy expressions would cost more than the query.
        ranges = " OR ".join(f"(tracker_id = :t{n} AND id >= :f{n})" for n in range(len(chunk)))
        params: dict[str, int] = {}
        for n, tid in enumerate(chunk):
            params[f"t{n}"], params[f"f{n}"] = tid, floors[tid]
        recent = conn.execute(
            sa.text(
                f"SELECT tracker_id, duration_ms FROM runs WHERE ({ranges}) "
                "AND status != 'start' ORDER BY tracker_id, id"
            ),
            params,
        ).all()
        for run in recent:
            if run.duration_ms is not None:
                durations.setdefault(run.tracker_id, []).append(float(run.duration_ms))
    return durations


def ui_bases(app: TelemHQ) -> runinfo.UiBases:
    s = app.settings
    return runinfo.UiBases(s.airflow_ui_url, s.prefect_ui_url, s.dagster_ui_url)


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


def trackers_html(
    engine: sa.Engine,
    filters: grouping.Filters,
    bases: runinfo.UiBases,
    *,
    signed_in_as: str | None = None,
) -> str:
    """The trackers page for ``filters``: its queries and its markup (blocking)."""
    page, durations, total = _load_trackers(engine, filters, bases)
    return overview.render(page, durations, total, now=db.utcnow(), signed_in_as=signed_in_as)


async def trackers_page(request: Request, app: TelemHQ, who: str | None) -> Response:
    filters = grouping.Filters.from_query(request.query_params)
    markup = await run_in_threadpool(
        trackers_html, app.engine, filters, ui_bases(app), signed_in_as=who
    )
    return _html(markup)


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


def _load_tracker(
    engine: sa.Engine, raw: str, before: int | None, bases: runinfo.UiBases
) -> dict[str, Any] | None:
    r, f = db.runs, db.flips
    with engine.connect() as conn:
        tracker = _tracker(conn, raw)
        if tracker is None:
            return None
        query = sa.select(r).where(r.c.tracker_id == tracker["id"]).order_by(r.c.id.desc())
        if before is not None:
            query = query.where(r.c.id < before)
        runs = [_run(x) for x in conn.execute(query.limit(RUNS_PER_PAGE + 1)).mappings()]
        for run in runs:
            run["ui_url"] = runinfo.ui_url(run["payload"], bases)
        chart_rows = conn.execute(
            sa.select(r.c.received_at, r.c.duration_ms, r.c.payload, r.c.assertions)
            .where(r.c.tracker_id == tracker["id"], r.c.status != "start")
            .order_by(r.c.id.desc())
            .limit(CHART_RUNS)
        ).all()
        alerting = routing.for_tracker(
            conn, tracker, orchestrator_of(conn, tracker["id"], None), db.utcnow()
        )
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
    results: list[tuple[Any, str | None]] = []
    for row in reversed(chart_rows):
        at = db.as_utc(row.received_at)
        if row.duration_ms is not None:
            durations.append((at, float(row.duration_ms)))
        payload = _fast_loads(row.payload)
        if isinstance(payload, dict):
            payloads.append((at, payload))
        results.append((at, row.assertions))
    names = pages.metric_names(p for _, p in payloads)
    metrics = {
        name: [(at, float(p[name])) for at, p in payloads if _number(p.get(name))] for name in names
    }
    expected: dict[str, list[Band]] = {}
    # Lazily: the results are parsed only for a tracker with a history assertion.
    parsed = ((at, _fast_loads(text)) for at, text in results)
    for one in bands.judged(tracker["assertions"], parsed, names):
        if one.own_chart:
            metrics.setdefault(one.chart, one.values)
        expected.setdefault(one.chart, []).append(one.band())
    older = runs[RUNS_PER_PAGE - 1]["id"] if len(runs) > RUNS_PER_PAGE else None
    return {
        "tracker": tracker,
        "runs": runs[:RUNS_PER_PAGE],
        "flips": flips,
        "durations": durations,
        "metrics": metrics,
        "bands": expected,
        "routing": alerting,
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
        _load_tracker, app.engine, request.path_params["tracker_id"], before, ui_bases(app)
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
            bands=data["bands"],
            routing=data["routing"],
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
    link = runinfo.ui_url(run["payload"], ui_bases(app))
    return _html(pages.run_page(tracker, run, now=db.utcnow(), signed_in_as=who, ui_url=link))


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
