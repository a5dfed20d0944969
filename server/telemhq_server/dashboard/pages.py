"""HTML for the dashboard pages: plain functions from data to markup, no I/O.

Every value that may come from a user or a payload goes through :func:`e` (``html.escape``
with quotes), so a payload containing ``<script>`` renders as text. The pages use no
JavaScript at all; the server also sends a Content-Security-Policy that forbids scripts, as a
second line of defence.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Iterable, Mapping, Sequence
from html import escape
from typing import Any, Final
from urllib.parse import quote

from telemhq_server.badges import BADGE_COLOURS
from telemhq_server.dashboard.bands import DURATION
from telemhq_server.dashboard.charts import Band, Point, line_chart
from telemhq_server.dashboard.routing import Routing, Silence, channel_events
from telemhq_server.dashboard.runinfo import (
    baseline_text,
    error_of,
    failed_assertions,
    value_text,
)

__all__ = [
    "db_time",
    "e",
    "layout",
    "login_page",
    "metric_names",
    "relative",
    "run_page",
    "schedule_text",
    "silenced_pill",
    "state_pill",
    "tracker_page",
    "when",
]

#: Payload fields that are numbers but not metrics worth a chart.
_NOT_METRICS: Final = frozenset({"duration", "attempt"})
STATE_TEXT: Final[dict[str, str]] = {
    "new": "new (no ping yet)",
    "up": "up",
    "failing": "failing",
    "late": "late",
    "down": "down",
    "paused": "paused",
}


def e(value: Any) -> str:
    """Escape anything for HTML text or a quoted attribute."""
    return escape("" if value is None else str(value), quote=True)


def when(value: dt.datetime | None, now: dt.datetime) -> str:
    """``2026-06-01 12:00:00 UTC`` with a relative hint, in a <time> element."""
    if value is None:
        return '<span class="muted">never</span>'
    delta = (now - value).total_seconds()
    rel = relative(abs(delta))
    hint = f"{rel} ago" if delta >= 0 else f"in {rel}"
    return (
        f'<time datetime="{e(value.isoformat())}" title="{e(hint)}">'
        f"{e(value.strftime('%Y-%m-%d %H:%M:%S'))} UTC</time> "
        f'<span class="muted">({e(hint)})</span>'
    )


def relative(seconds: float) -> str:
    for size, unit in ((86400, "d"), (3600, "h"), (60, "min")):
        if seconds >= size:
            return f"{seconds / size:.0f} {unit}"
    return f"{seconds:.0f} s"


def _duration(ms: float | None) -> str:
    if ms is None:
        return '<span class="muted">-</span>'
    if ms >= 60_000:
        return e(f"{ms / 60_000:.1f} min")
    if ms >= 1000:
        return e(f"{ms / 1000:.2f} s")
    return e(f"{ms:.0f} ms")


def _verdict(passed: bool | None) -> str:
    if passed is None:
        return '<span class="muted">-</span>'
    return '<span class="ok">passed</span>' if passed else '<span class="bad">failed</span>'


def state_pill(state: str) -> str:
    """The state as coloured text (the colour is decoration: the word is always there)."""
    known = state if state in BADGE_COLOURS else "unknown"
    return f'<span class="state state-{e(known)}">{e(STATE_TEXT.get(state, state))}</span>'


def _seconds(value: int | None) -> str:
    if value is None:
        return "none"
    if value % 3600 == 0 and value >= 3600:
        return f"{value // 3600} h"
    if value % 60 == 0 and value >= 60:
        return f"{value // 60} min"
    return f"{value} s"


def schedule_text(row: Mapping[str, Any]) -> str:
    """``every 1 h, grace 5 min`` / ``cron 30 2 * * * (Europe/Berlin), grace 10 min``."""
    kind = row["schedule_kind"]
    grace = f", grace {_seconds(row['grace_seconds'])}"
    if kind == "period":
        return f"every {_seconds(row['period_seconds'])}{grace}"
    if kind == "cron":
        return f"cron {row['cron']} ({row['timezone']}){grace}"
    return "no schedule (only pings change the state)"


def layout(
    title: str, body: str, *, signed_in_as: str | None = None, refresh: int | None = None
) -> str:
    """The page shell: header with navigation, the body, a stylesheet served locally."""
    meta = f'<meta http-equiv="refresh" content="{refresh}">' if refresh else ""
    who = ""
    if signed_in_as is not None:
        who = (
            f'<form method="post" action="/dashboard/logout" class="logout">'
            f'<span class="muted">signed in with key "{e(signed_in_as)}"</span> '
            '<button type="submit">Sign out</button></form>'
        )
    return (
        "<!doctype html>"
        '<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"{meta}<title>{e(title)} - TelemHQ</title>"
        '<link rel="stylesheet" href="/dashboard/static/style.css">'
        '</head><body><header><a class="brand" href="/dashboard/">TelemHQ</a>'
        f'<nav><a href="/dashboard/">Trackers</a></nav>{who}</header>'
        f"<main>{body}</main></body></html>"
    )


def login_page(*, error: str | None = None, next_url: str = "/dashboard/") -> str:
    problem = f'<p class="error" role="alert">{e(error)}</p>' if error else ""
    body = (
        "<h1>Sign in</h1>"
        "<p>Paste an API key (read or read-write). The server prints the admin key at its "
        "first start; <code>TELEMHQ_API_KEY</code> sets it.</p>"
        f"{problem}"
        '<form method="post" action="/dashboard/login" class="login">'
        f'<input type="hidden" name="next" value="{e(next_url)}">'
        '<label for="api_key">API key</label> '
        '<input id="api_key" name="api_key" type="password" autocomplete="current-password" '
        'required autofocus> <button type="submit">Sign in</button></form>'
    )
    return layout("Sign in", body)


def _failed(results: Iterable[Any]) -> str:
    items = [
        f"<li><code>{e(r.get('expression'))}</code>: {e(r.get('reason'))}"
        + (f" (baseline {e(b)})" if (b := baseline_text(r)) is not None else "")
        + "</li>"
        for r in failed_assertions(results)
    ]
    return f'<ul class="failed">{"".join(items)}</ul>' if items else ""


def _run_problem(run: Mapping[str, Any]) -> str:
    """A run's error (type and message) and its failed assertions, for the runs table."""
    error = error_of(run["payload"])
    text = ""
    if error is not None:
        message = str(error.get("message") or "")
        text = (
            f'<div class="reason reason-error"><strong>{e(error.get("type") or "error")}'
            f"</strong>{': ' if message else ''}{e(message[:500])}</div>"
        )
    return text + _failed(run["assertions"])


def _ui_cell(run: Mapping[str, Any]) -> str:
    """The run's link to its orchestrator's own UI, named after the orchestrator."""
    url = run.get("ui_url")
    if not url:
        return '<td class="muted">-</td>'
    payload = run["payload"]
    said = payload.get("orchestrator") if isinstance(payload, Mapping) else None
    where = _ORCHESTRATOR_TITLES.get(str(said), "the orchestrator")
    return f'<td><a class="ui-link" href="{e(url)}">open in {e(where)}</a></td>'


def tracker_page(
    tracker: Mapping[str, Any],
    *,
    runs: Sequence[Mapping[str, Any]],
    flips: Sequence[Mapping[str, Any]],
    duration_points: Sequence[Point],
    metric_points: Mapping[str, Sequence[Point]],
    bands: Mapping[str, Sequence[Band]] | None = None,
    routing: Routing | None = None,
    base_url: str,
    now: dt.datetime,
    older_than: int | None,
    signed_in_as: str | None,
) -> str:
    t = tracker
    tid = t["id"]
    assertions = "".join(f"<li><code>{e(a)}</code></li>" for a in t["assertions"]) or (
        '<li class="muted">none</li>'
    )
    tags = ", ".join(e(x) for x in t["tags"]) or '<span class="muted">none</span>'
    badge = f"{base_url}/badge/{quote(t['badge_key'])}.svg"
    quiet = routing.silenced_until if routing is not None else None
    config = (
        '<dl class="config">'
        f"<dt>State</dt><dd>{state_pill(t['state'])} since {when(t['state_changed_at'], now)}"
        f"{silenced_pill(quiet, now)}</dd>"
        f"<dt>Ping URL</dt><dd><code>{e(base_url)}/ping/{e(t['token'])}</code></dd>"
        f"<dt>Schedule</dt><dd>{e(schedule_text(t))}</dd>"
        f"<dt>Max runtime</dt><dd>{e(_seconds(t['max_runtime_seconds']))}</dd>"
        f"<dt>Alert after</dt><dd>{e(t['failure_threshold'])} consecutive failure(s)</dd>"
        f"<dt>Last ping</dt><dd>{when(t['last_ping_at'], now)}</dd>"
        f"<dt>Next expected ping</dt><dd>"
        f"{when(t['next_expected_at'], now) if t['next_expected_at'] else '-'}</dd>"
        f"<dt>Runs recorded</dt><dd>{e(t['n_runs'])}</dd>"
        f"<dt>Assertions</dt><dd><ul>{assertions}</ul></dd>"
        f"<dt>Tags</dt><dd>{tags}</dd>"
        f'<dt>Badge</dt><dd><img src="/badge/{e(quote(t["badge_key"]))}.svg" alt="badge: '
        f'{e(t["state"])}"> <code>![{e(t["name"])}]({e(badge)})</code></dd>'
        "</dl>"
    )
    expected = bands or {}
    charts = [
        line_chart(
            duration_points, title="duration (ms)", unit="ms", bands=expected.get(DURATION, ())
        )
    ]
    for name, points in metric_points.items():
        charts.append(line_chart(points, title=name, bands=expected.get(name, ())))
    # The orchestrator's column only where some run has a link there (not on plain trackers).
    linked = any(r.get("ui_url") for r in runs)
    run_rows = []
    for r in runs:
        verdict = _verdict(r["passed"])
        run_rows.append(
            f'<tr class="run"><td><a href="/dashboard/trackers/{e(tid)}/runs/{e(r["id"])}">'
            f"{e(db_time(r['received_at']))}</a></td>"
            f'<td><span class="run-status status-{e(r["status"])}">{e(r["status"])}</span></td>'
            f"<td>{verdict}</td><td>{_duration(r['duration_ms'])}</td>"
            f'<td class="why">{_run_problem(r)}</td>'
            f"{_ui_cell(r) if linked else ''}</tr>"
        )
    more = (
        f'<p><a href="/dashboard/trackers/{e(tid)}?before={e(older_than)}">Older runs</a></p>'
        if older_than is not None
        else ""
    )
    ui_head = '<th scope="col">In its orchestrator</th>' if linked else ""
    runs_html = (
        '<table class="runs"><thead><tr><th scope="col">Received</th><th scope="col">Status</th>'
        '<th scope="col">Verdict</th><th scope="col">Duration</th>'
        '<th scope="col">Error or failed assertions</th>'
        f"{ui_head}</tr></thead>"
        f"<tbody>{''.join(run_rows)}</tbody></table>{more}"
        if run_rows
        else '<p class="muted">No runs yet.</p>'
    )
    flip_rows = "".join(
        f"<tr><td>{e(db_time(f['created_at']))}</td><td>{state_pill(f['old_state'])} &rarr; "
        f"{state_pill(f['new_state'])}</td><td>{e(f['reason'])}</td></tr>"
        for f in flips
    )
    flips_html = (
        '<table class="flips"><thead><tr><th scope="col">When</th><th scope="col">Change</th>'
        f'<th scope="col">Why</th></tr></thead><tbody>{flip_rows}</tbody></table>'
        if flip_rows
        else '<p class="muted">No state changes yet.</p>'
    )
    body = (
        f"<h1>{e(t['name'])} {state_pill(t['state'])}</h1>{config}"
        f'<h2>Charts</h2><div class="charts">{"".join(charts)}</div>'
        f"<h2>Runs</h2>{runs_html}<h2>State changes</h2>{flips_html}"
        f"{_alerting(routing, now) if routing is not None else ''}"
    )
    return layout(str(t["name"]), body, signed_in_as=signed_in_as)


def silenced_pill(until: dt.datetime | None, now: dt.datetime) -> str:
    """``silenced until ...`` in words (a marker that is not colour alone), or nothing."""
    if until is None:
        return ""
    return f' <span class="silenced">silenced until {when(until, now)}</span>'


def _selector_text(selector: Any) -> str:
    if not isinstance(selector, Mapping) or not selector:
        return "every tracker"
    return ", ".join(f"{k} {json.dumps(v, ensure_ascii=False)}" for k, v in selector.items())


def _silence_when(silence: Silence, now: dt.datetime) -> str:
    row = silence.row
    if silence.until is not None:
        return f"holding now, until {when(silence.until, now)}"
    if row["cron"]:
        window = _seconds(row["duration_seconds"])
        return e(f"not now; windows of {window} at cron {row['cron']} ({row['timezone']})")
    return f"not begun; from {when(silence.starts, now)}"


def _alerting(routing: Routing, now: dt.datetime) -> str:
    """The silences covering the tracker and the channels its changes go to."""
    silences = "".join(
        f"<tr><td>{e(s.row['id'])}</td><td>{_silence_when(s, now)}</td>"
        f"<td>{e(_selector_text(s.row['selector']))}</td><td>{e(s.row['comment'])}</td></tr>"
        for s in routing.silences
    )
    silences_html = (
        '<table class="silences"><thead><tr><th scope="col">Silence</th>'
        '<th scope="col">When</th><th scope="col">Selector</th><th scope="col">Comment</th>'
        f"</tr></thead><tbody>{silences}</tbody></table>"
        if silences
        else '<p class="muted">No silence covers this tracker.</p>'
    )
    channels = "".join(
        f"<tr><td>{e(c['name'])}</td><td><code>{e(c['url_hint'])}</code></td>"
        f"<td>{e(', '.join(channel_events(c)))}</td>"
        f"<td>{e(_selector_text(c['selector']))}</td>"
        f"<td>{'on' if c['enabled'] else 'off (disabled)'}</td></tr>"
        for c in routing.channels
    )
    channels_html = (
        '<table class="channels"><thead><tr><th scope="col">Channel</th>'
        '<th scope="col">Destination</th><th scope="col">Events</th>'
        '<th scope="col">Selector</th><th scope="col">Enabled</th>'
        f"</tr></thead><tbody>{channels}</tbody></table>"
        if channels
        else '<p class="muted">No channel is told of this tracker.</p>'
    )
    return f"<h2>Silences</h2>{silences_html}<h2>Channels</h2>{channels_html}"


def db_time(value: dt.datetime | None) -> str:
    return "-" if value is None else value.strftime("%Y-%m-%d %H:%M:%S UTC")


#: Labels of the orchestrators' ids on a run page, in this order (the rest follow).
_DETAIL_LABELS: Final = {
    "dag_id": "DAG",
    "run_id": "Run",
    "task_id": "Task",
    "try_number": "Try",
    "max_tries": "Max tries",
    "map_index": "Map index",
    "logical_date": "Logical date",
    "flow_name": "Flow",
    "flow_run_id": "Flow run",
    "flow_run_name": "Flow run name",
    "task_name": "Task",
    "task_run_id": "Task run",
    "deployment": "Deployment",
    "job_name": "Job",
    "op": "Op",
    "step_key": "Step",
    "asset_key": "Asset",
    "partition_key": "Partition",
    "attempt": "Attempt",
}
_ORCHESTRATOR_TITLES: Final = {
    "airflow": "Airflow",
    "prefect": "Prefect",
    "dagster": "Dagster",
    "celery": "Celery",
}


def _details(payload: Any) -> str:
    """The orchestrator's block of a run (DAG / run / task / try / map index, flow run /
    deployment, Dagster run / step / partition), known ids first."""
    if not isinstance(payload, Mapping):
        return ""
    name = payload.get("orchestrator")
    block = payload.get(name) if isinstance(name, str) else None
    if not isinstance(block, Mapping):
        return ""
    keys = [k for k in _DETAIL_LABELS if k in block] + [k for k in block if k not in _DETAIL_LABELS]
    items = []
    for key in keys:
        value = block[key]
        shown = value if isinstance(value, str) else value_text(value)
        label = _DETAIL_LABELS.get(key, key)
        items.append(f"<dt>{e(label)}</dt><dd><code>{e(shown)}</code></dd>")
    title = _ORCHESTRATOR_TITLES.get(str(name), str(name))
    return f'<h2>{e(title)}</h2><dl class="config details">{"".join(items)}</dl>'


def _error_section(payload: Any) -> str:
    error = error_of(payload)
    if error is None:
        return ""
    trace = error.get("traceback")
    tail = (
        f'<h3>Traceback (the end)</h3><pre class="traceback">{e(trace)}</pre>'
        if isinstance(trace, str) and trace
        else ""
    )
    return (
        '<h2>Error</h2><dl class="config">'
        f"<dt>Type</dt><dd><code>{e(error.get('type'))}</code></dd>"
        f'<dt>Message</dt><dd class="reason reason-error">{e(error.get("message"))}</dd>'
        f"</dl>{tail}"
    )


def _metrics(payload: Any) -> str:
    if not isinstance(payload, Mapping):
        return ""
    names = metric_names([payload], limit=50)
    if not names:
        return ""
    rows = "".join(
        f'<tr><th scope="row"><code>{e(n)}</code></th><td>{e(value_text(payload[n]))}</td></tr>'
        for n in names
    )
    return (
        '<h2>Metrics</h2><table class="metrics"><thead><tr><th scope="col">Metric</th>'
        f'<th scope="col">Value</th></tr></thead><tbody>{rows}</tbody></table>'
    )


def _times(run: Mapping[str, Any], payload: Any, now: dt.datetime) -> str:
    started = run.get("started_at")
    finished = payload.get("finished_at") if isinstance(payload, Mapping) else None
    out = f"<dt>Started</dt><dd>{when(started, now)}</dd>" if started is not None else ""
    if isinstance(finished, str):
        out += f"<dt>Finished</dt><dd><code>{e(finished)}</code></dd>"
    return out


def run_page(
    tracker: Mapping[str, Any],
    run: Mapping[str, Any],
    *,
    now: dt.datetime,
    signed_in_as: str | None,
    ui_url: str | None = None,
) -> str:
    results = run["assertions"]
    rows = "".join(
        f"<tr><td><code>{e(r.get('expression'))}</code></td>"
        f"<td>{_verdict(r.get('passed'))}</td>"
        f"<td><code>{e(json.dumps(r.get('actual'), default=str))}</code></td>"
        f"<td>{e(baseline_text(r) or '-')}</td>"
        f"<td>{e(r.get('reason') or '')}</td></tr>"
        for r in results
        if isinstance(r, Mapping)
    )
    table = (
        '<table class="assertions"><thead><tr><th scope="col">Assertion</th>'
        '<th scope="col">Result</th><th scope="col">Actual</th><th scope="col">Baseline</th>'
        f'<th scope="col">Reason</th></tr></thead><tbody>{rows}</tbody></table>'
        if rows
        else '<p class="muted">This tracker has no assertions.</p>'
    )
    raw = run["payload"]
    payload = json.dumps(raw, indent=2, sort_keys=True, default=str)
    tid = tracker["id"]
    orchestrator = raw.get("orchestrator") if isinstance(raw, Mapping) else None
    link = ""
    if ui_url:
        where = _ORCHESTRATOR_TITLES.get(str(orchestrator), "the orchestrator")
        link = f'<p><a class="ui-link" href="{e(ui_url)}">Open this run in {e(where)}</a></p>'
    status = run["status"]
    body = (
        f'<p><a href="/dashboard/trackers/{e(tid)}">&larr; {e(tracker["name"])}</a></p>'
        f"<h1>Run {e(run['id'])} "
        f'<span class="run-status status-{e(status)}">{e(status)}</span></h1>{link}'
        '<dl class="config">'
        f"<dt>Status</dt><dd>{e(status)}</dd>"
        f"<dt>Verdict</dt><dd>{e({True: 'passed', False: 'failed'}.get(run['passed'], '-'))}"
        "</dd>"
        f"<dt>Duration</dt><dd>{_duration(run['duration_ms'])}</dd>"
        f"{_times(run, raw, now)}"
        f"<dt>Received</dt><dd>{when(run['received_at'], now)}</dd>"
        f"<dt>Run id</dt><dd><code>{e(run['run_id'])}</code></dd>"
        f"<dt>Ping id</dt><dd><code>{e(run['ping_id'] or '-')}</code></dd>"
        "</dl>"
        f"{_error_section(raw)}"
        f"<h2>Assertions</h2>{table}{_metrics(raw)}{_details(raw)}"
        f'<h2>Payload</h2><pre class="payload">{e(payload)}</pre>'
    )
    return layout(f"Run {run['id']}", body, signed_in_as=signed_in_as)


def metric_names(payloads: Iterable[Mapping[str, Any]], limit: int = 12) -> list[str]:
    """Top-level numeric fields seen in payloads (booleans and bookkeeping excluded)."""
    seen: dict[str, None] = {}
    for p in payloads:
        for k, v in p.items():
            if k in _NOT_METRICS or isinstance(v, bool) or not isinstance(v, int | float):
                continue
            seen.setdefault(k, None)
    return sorted(seen)[:limit]
