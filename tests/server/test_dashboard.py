"""The dashboard over real HTTP against a real server (tests.live_server), plus its pure parts."""

from __future__ import annotations

import contextlib
import datetime as dt
import html
import re
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from telemhq_server.dashboard import auth
from telemhq_server.dashboard.charts import Band, Miss, format_number, line_chart, sparkline
from telemhq_server.dashboard.grouping import (
    NO_ORCHESTRATOR,
    Filters,
    build_sections,
    group_of,
    orchestrator_of,
)
from telemhq_server.dashboard.overview import MAX_ROWS, plan
from telemhq_server.dashboard.pages import metric_names, schedule_text
from telemhq_server.dashboard.runinfo import UiBases, reason_of, ui_url

from tests.live_server import LiveServer

EVIL = "<script>alert('x')</script>"


@pytest.fixture(scope="module")
def server() -> Iterator[LiveServer]:
    with LiveServer() as live:
        yield live


@pytest.fixture(scope="module")
def etl(server: LiveServer) -> dict[str, Any]:
    """A tracker with assertions, a schedule and a few runs, one of them failing."""
    tracker = server.create_tracker(
        name="Nightly ETL",
        assertions=["records_processed > 0", "cost_usd <= 5"],
        schedule={"kind": "cron", "cron": "30 2 * * *", "timezone": "Europe/Berlin"},
    )
    for i, (records, cost) in enumerate([(120, 1.5), (340, 2.25), (90, 3.0)]):
        body = {"records_processed": records, "cost_usd": cost, "duration": 1000 + 250 * i}
        assert server.ping(tracker, body).status_code == 200
    body = {"records_processed": 0, "cost_usd": 7.5, "duration": 900, "note": EVIL}
    assert server.ping(tracker, body).status_code == 200
    return server.tracker(tracker["id"])


@contextlib.contextmanager
def signed_in(server: LiveServer) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.base_url, timeout=15) as client:
        answer = client.post("/dashboard/login", data={"api_key": server.api_key})
        assert answer.status_code == 303
        yield client


def test_it_sends_visitors_without_a_session_to_the_sign_in_page(server: LiveServer) -> None:
    with httpx.Client(base_url=server.base_url) as anonymous:
        answer = anonymous.get("/dashboard/trackers/1?x=1")
        assert answer.status_code == 303
        assert answer.headers["location"] == "/dashboard/login?next=/dashboard/trackers/1%3Fx%3D1"
        page = anonymous.get("/dashboard/login")
        assert page.status_code == 200
        assert 'name="api_key"' in page.text
        assert anonymous.get("/").headers["location"] == "/dashboard/"


def test_it_refuses_a_wrong_key(server: LiveServer) -> None:
    with httpx.Client(base_url=server.base_url) as client:
        answer = client.post("/dashboard/login", data={"api_key": "thq_nope"})
        assert answer.status_code == 401
        assert "That API key is not valid." in answer.text
        assert auth.COOKIE_NAME not in answer.headers.get("set-cookie", "")


def test_it_signs_in_with_an_api_key_into_an_httponly_samesite_cookie(server: LiveServer) -> None:
    with httpx.Client(base_url=server.base_url) as client:
        answer = client.post(
            "/dashboard/login", data={"api_key": server.api_key, "next": "/dashboard/trackers/1"}
        )
        assert answer.status_code == 303
        assert answer.headers["location"] == "/dashboard/trackers/1"
        cookie = answer.headers["set-cookie"]
        assert cookie.startswith(f"{auth.COOKIE_NAME}=")
        assert "HttpOnly" in cookie
        assert "SameSite=lax" in cookie
        assert server.api_key not in cookie  # the key itself never travels in the cookie
        assert client.get("/dashboard/").status_code == 200
        # Signing out ends it.
        assert client.post("/dashboard/logout").status_code == 303
        assert client.get("/dashboard/").status_code == 303


def test_it_never_redirects_off_site_after_sign_in(server: LiveServer) -> None:
    with httpx.Client(base_url=server.base_url) as client:
        for target in ("https://evil.example/", "//evil.example/", "/api/v1/keys"):
            answer = client.post(
                "/dashboard/login", data={"api_key": server.api_key, "next": target}
            )
            assert answer.headers["location"] == "/dashboard/"


def test_it_rejects_a_forged_or_tampered_cookie(server: LiveServer) -> None:
    with signed_in(server) as client:
        real = client.cookies[auth.COOKIE_NAME]
    key_id, expires, signature = real.split(".")
    forged = [
        f"{key_id}.{int(expires) + 1000}.{signature}",  # extended expiry
        f"{key_id}.{expires}.{'0' * 64}",  # made-up signature
        f"{int(key_id) + 1}.{expires}.{signature}",  # another key
        "garbage",
    ]
    for value in forged:
        with httpx.Client(base_url=server.base_url, cookies={auth.COOKIE_NAME: value}) as c:
            assert c.get("/dashboard/").status_code == 303, value


def test_a_session_ends_when_its_api_key_is_deleted(server: LiveServer) -> None:
    created = server.api("POST", "/keys", json={"name": "temp", "scope": "read"}).json()
    with httpx.Client(base_url=server.base_url) as client:
        client.post("/dashboard/login", data={"api_key": created["key"]})
        assert client.get("/dashboard/").status_code == 200
        assert server.api("DELETE", f"/keys/{created['id']}").status_code == 204
        assert client.get("/dashboard/").status_code == 303


def test_the_trackers_page_shows_state_last_run_next_ping_and_a_sparkline(
    server: LiveServer, etl: dict[str, Any]
) -> None:
    with signed_in(server) as client:
        page = client.get("/dashboard/")
    assert page.status_code == 200
    row = re.search(r'<tr data-tracker="nightly-etl">.*?</tr>', page.text, re.S)
    assert row is not None
    html = row.group(0)
    assert f'href="/dashboard/trackers/{etl["id"]}">Nightly ETL</a>' in html
    assert '<span class="state state-failing">failing</span>' in html  # colour and text
    assert "status-success" in html  # last run's status
    assert "<time" in html  # next expected ping (cron schedule)
    assert '<svg class="sparkline"' in html
    assert "<polyline" in html


def test_the_tracker_page_shows_config_charts_runs_and_flips(
    server: LiveServer, etl: dict[str, Any]
) -> None:
    with signed_in(server) as client:
        page = client.get(f"/dashboard/trackers/{etl['id']}")
    assert page.status_code == 200
    text = page.text
    assert "cron 30 2 * * * (Europe/Berlin), grace 5 min" in text
    assert "<code>records_processed &gt; 0</code>" in text
    assert etl["token"] in text  # the ping URL
    # One chart for duration and one per numeric payload metric.
    titles = re.findall(r'<svg class="chart"[^>]*><title>([^<]*)</title>', text)
    assert titles == ["duration (ms)", "cost_usd", "records_processed"]
    assert text.count('class="chart-dot"') == 3 * 4
    # Runs, newest first, with the failed assertion's reason; flips with their reasons.
    runs = re.findall(r'<tr class="run">.*?</tr>', text, re.S)
    assert len(runs) == 4
    assert "records_processed was 0, expected &gt; 0" in runs[0]
    assert "cost_usd was 7.5, expected &lt;= 5" in runs[0]
    assert '<span class="bad">failed</span>' in runs[0]
    assert '<span class="ok">passed</span>' in runs[1]
    assert "first successful run" in text
    assert "assertion failed" in text


def test_a_payload_with_markup_renders_as_text(server: LiveServer, etl: dict[str, Any]) -> None:
    run = server.runs(etl["id"])[0]
    with signed_in(server) as client:
        page = client.get(f"/dashboard/trackers/{etl['id']}/runs/{run['id']}")
    assert page.status_code == 200
    assert "<script>" not in page.text
    assert "&lt;script&gt;alert(&#x27;x&#x27;)&lt;/script&gt;" in page.text
    assert '<pre class="payload">' in page.text
    assert "script-src" not in page.headers["content-security-policy"]  # default-src 'none'
    assert "default-src 'none'" in page.headers["content-security-policy"]


def test_a_tracker_name_with_markup_is_escaped_everywhere(server: LiveServer) -> None:
    tracker = server.create_tracker(name=f"x {EVIL}", slug="evil-name")
    server.ping(tracker, {"duration": 5})
    with signed_in(server) as client:
        pages = [
            client.get("/dashboard/").text,
            client.get(f"/dashboard/trackers/{tracker['id']}").text,
        ]
    for text in pages:
        assert "<script>" not in text
        assert "x &lt;script&gt;" in text


def test_unknown_trackers_and_runs_are_404(server: LiveServer, etl: dict[str, Any]) -> None:
    with signed_in(server) as client:
        assert client.get("/dashboard/trackers/999999").status_code == 404
        assert client.get("/dashboard/trackers/abc").status_code == 404
        assert client.get(f"/dashboard/trackers/{etl['id']}/runs/999999").status_code == 404


def test_the_stylesheet_is_served_locally(server: LiveServer) -> None:
    answer = httpx.get(server.base_url + "/dashboard/static/style.css")
    assert answer.status_code == 200
    assert ".state-down" in answer.text


def test_public_dashboard_needs_no_sign_in() -> None:
    with LiveServer(env={"TELEMHQ_PUBLIC_DASHBOARD": "1"}) as live:
        tracker = live.create_tracker(name="local job")
        live.ping(tracker)
        with httpx.Client(base_url=live.base_url) as anonymous:
            page = anonymous.get("/dashboard/")
            assert page.status_code == 200
            assert "local job" in page.text
            assert anonymous.get("/dashboard/login").headers["location"] == "/dashboard/"


# --- pure parts -----------------------------------------------------------------------------


T0 = dt.datetime(2026, 6, 1, tzinfo=dt.UTC)


def test_a_line_chart_has_a_point_per_value_with_its_exact_value() -> None:
    points = [(T0 + dt.timedelta(hours=i), v) for i, v in enumerate([3.0, 1.0, 2.0])]
    svg = line_chart(points, title="cost <usd>", unit="$")
    assert svg.startswith('<svg class="chart"')
    assert "<title>cost &lt;usd&gt;</title>" in svg
    assert svg.count("<circle") == 3
    assert "2026-06-01 01:00:00 UTC: 1 $" in svg
    assert line_chart([], title="empty").count("no data yet") == 1
    # NaN and infinities are skipped rather than breaking the drawing.
    assert line_chart([(T0, float("nan")), (T0, 1.0)], title="t").count("<circle") == 1


def _svg(page: str, title_starts: str) -> str:
    """The chart whose accessible name starts with ``title_starts``."""
    for svg in re.findall(r"<svg .*?</svg>", page, re.S):
        title = re.search(r"<title>([^<]*)</title>", svg)
        if title and title.group(1).startswith(title_starts):
            return str(svg)
    raise AssertionError(f"no chart titled {title_starts!r}")


def test_a_metric_chart_draws_the_baseline_each_run_was_held_to_and_marks_the_misses(
    server: LiveServer,
) -> None:
    tracker = server.create_tracker(
        name="Baselined", assertions=["records_processed >= 0.5 * median(last 20)"]
    )
    misses = {9, 19, 24}  # a tenth of the usual records: below half the median
    for i in range(30):
        records = 10 if i in misses else 100 + (i * 7) % 31
        assert server.ping(tracker, {"records_processed": records}).status_code == 200
    stored = list(reversed(server.runs(tracker["id"])))  # oldest first
    assert len(stored) == 30
    judged = [r["assertions"][0] for r in stored if r["assertions"][0]["evaluated"]]
    assert len(judged) == 25  # the first five had too little history
    with signed_in(server) as client:
        page = client.get(f"/dashboard/trackers/{tracker['id']}").text
    expression = stored[0]["assertions"][0]["expression"]
    chart = _svg(page, "records_processed (")
    assert f"expected {html.escape(expression)}, failed by 3 run(s)" in chart
    # The baseline per run is the one stored with the run, in full, oldest first.
    drawn = re.findall(r"UTC: expected &gt;= ([-0-9.e+]+)</title>", chart)
    assert [float(v) for v in drawn] == [r["baseline"]["value"] for r in judged]
    assert chart.count('class="chart-band"') == 1  # the passing side (above) is shaded
    # Each run that failed it is a cross (a shape, not a colour) with the stored reason.
    crosses = re.findall(r'<path [^>]*class="chart-fail"><title>([^<]*)</title>', chart)
    failed = [r for r in judged if not r["passed"]]
    assert len(failed) == len(crosses) == 3
    for cross, result in zip(crosses, failed, strict=True):
        assert cross.endswith(f"failed: {html.escape(result['reason'], quote=True)}")
    assert "\u00d7 failed (3)" in chart
    # The duration chart has no band: no assertion judges it.
    assert "chart-baseline" not in _svg(page, "duration (ms)")


def test_the_tracker_page_shows_the_silences_and_channels_that_take_it(
    server: LiveServer,
) -> None:
    quiet = server.create_tracker(name="Quiet load", tags=["team:quiet"])
    loud = server.create_tracker(name="Loud load", tags=["team:loud"])
    for body in (
        {
            "name": "quiet-team",
            "url": "json://127.0.0.1:9/quiet",
            "selector": {"tags": ["team:quiet"]},
        },
        {"name": "loud-only", "url": "json://127.0.0.1:9/loud", "selector": {"name": "Loud*"}},
    ):
        assert server.api("POST", "/channels", json=body).status_code == 201
    for body in (
        {"selector": {"tags": ["team:quiet"]}, "duration": "2h", "comment": "db upgrade"},
        # Recurring, but not holding now: listed, not counted as silencing.
        {"selector": {"tracker": quiet["id"]}, "cron": "0 3 29 2 *", "duration": "1m"},
        {"selector": {"tracker": loud["id"]}, "duration": "1h", "comment": "not yours"},
    ):
        assert server.api("POST", "/silences", json=body).status_code == 201
    ended = server.api(
        "POST", "/silences", json={"selector": {}, "duration": "1h", "comment": "over"}
    ).json()
    assert server.api("DELETE", f"/silences/{ended['id']}").status_code == 204
    with signed_in(server) as client:
        page = client.get(f"/dashboard/trackers/{quiet['id']}").text
        trackers = client.get("/dashboard/").text
    head, _, alerting = page.partition("<h2>Silences</h2>")
    state = re.search(r"<dt>State</dt><dd>(.*?)</dd>", head, re.S)
    assert state is not None
    assert "silenced until" in state.group(1)
    silences, _, channels = alerting.partition("<h2>Channels</h2>")
    assert "db upgrade" in silences
    assert "holding now, until" in silences
    assert "not now; windows of 1 min at cron 0 3 29 2 * (UTC)" in silences
    assert "not yours" not in silences
    assert f"<tr><td>{ended['id']}</td>" not in silences
    assert "quiet-team" in channels
    assert "json://" in channels
    assert "loud-only" not in channels
    # The trackers page says (in words) which trackers are silenced.
    rows = dict(re.findall(r'<tr data-tracker="([^"]+)">(.*?)</tr>', trackers, re.S))
    assert "silenced until" in rows[quiet["slug"]]
    assert "silenced until" in rows[loud["slug"]]  # its own silence
    assert not any(
        "silenced" in row for slug, row in rows.items() if slug not in {quiet["slug"], loud["slug"]}
    )
    unwatched = server.create_tracker(name="Unwatched")
    with signed_in(server) as client:
        alone = client.get(f"/dashboard/trackers/{unwatched['id']}").text
    assert "No silence covers this tracker." in alone
    assert "No channel is told of this tracker." in alone


def test_a_band_stays_one_line_over_hundreds_of_runs_and_keeps_every_miss() -> None:
    points = [(T0 + dt.timedelta(minutes=i), 100.0 + i % 7) for i in range(600)]
    baselines = [(t, 50.0 + i % 3) for i, (t, _) in enumerate(points)]
    missed = [Miss(points[i][0], 1.0, "records_processed was 1") for i in (10, 300, 599)]
    svg = line_chart(
        points, title="records", bands=[Band("records >= median(last 20)", ">=", baselines, missed)]
    )
    assert svg.count("<circle") == 0  # too dense for a tooltip per run
    assert svg.count("<polyline") == 2  # the values and the baseline, one element each
    assert svg.count('class="chart-fail"') == 3
    assert len(svg) < 60_000
    # A band below (<=) is shaded down to the axis; one on = has no side to shade.
    below = line_chart(points, title="r", bands=[Band("r <= max(last 5)", "<=", baselines)])
    assert below.count("chart-band") == 1
    assert "chart-band" not in line_chart(points, title="r", bands=[Band("r = x", "=", baselines)])


def test_a_sparkline_needs_two_values() -> None:
    assert "<polyline" not in sparkline([1.0], title="t")
    assert "<polyline" in sparkline([1.0, 2.0], title="t")


def test_numbers_are_shown_short() -> None:
    assert [format_number(v) for v in (12, 0.1234, 12_345, 2_500_000)] == [
        "12",
        "0.123",
        "12.3k",
        "2.5M",
    ]


def test_metrics_are_the_numeric_top_level_fields() -> None:
    payloads = [
        {"records_processed": 3, "cost_usd": 0.2, "status": "success", "ok": True},
        {"eval_score": 0.9, "duration": 5, "attempt": 1, "nested": {"x": 1}},
    ]
    assert metric_names(payloads) == ["cost_usd", "eval_score", "records_processed"]


def test_schedules_read_like_sentences() -> None:
    base = {"grace_seconds": 300, "period_seconds": None, "cron": None, "timezone": "UTC"}
    assert schedule_text({**base, "schedule_kind": "period", "period_seconds": 3600}) == (
        "every 1 h, grace 5 min"
    )
    assert schedule_text({**base, "schedule_kind": "none"}).startswith("no schedule")


# --- the grouped trackers page, the reasons and the orchestrator links -----------------------

AIRFLOW_UI = "http://airflow.example:8080"


def _section(text: str, orchestrator: str) -> str:
    found = re.search(
        rf'<details class="section" data-orchestrator="{orchestrator}" open>.*?</details>'
        r"(?=<details class=\"section\"|</main>)",
        text,
        re.S,
    )
    assert found is not None, orchestrator
    return found.group(0)


@pytest.fixture(scope="module")
def grouped() -> Iterator[LiveServer]:
    """Airflow tasks of two DAGs (one failing on an error), a Celery module, plain trackers,
    pinged as the adapters ping."""
    with LiveServer(
        env={"TELEMHQ_PUBLIC_DASHBOARD": "1", "TELEMHQ_AIRFLOW_UI_URL": AIRFLOW_UI + "/"}
    ) as live:

        def airflow(dag: str, task: str, error: dict[str, Any] | None = None) -> None:
            tracker = live.create_tracker(name=f"{dag}.{task}", tags=["airflow", "team:data"])
            body: dict[str, Any] = {
                "job": f"{dag}.{task}",
                "orchestrator": "airflow",
                "airflow": {"dag_id": dag, "task_id": task, "run_id": "manual__1", "map_index": 2},
            }
            if error is not None:
                body.update(status="failure", error=error)
            assert live.ping(tracker, body).status_code == 200

        airflow("orders", "extract")
        airflow("orders", "load", {"type": "KeyError", "message": f"no column {EVIL}"})
        airflow("billing", "invoice")
        celery = live.create_tracker(name="shop.tasks.send_mail", tags=["celery"])
        live.ping(celery, {"orchestrator": "celery", "celery": {"task_id": "t-1"}})
        plain = live.create_tracker(name="orders backup", assertions=["rows > 0"])
        live.ping(plain, {"rows": 0})
        live.create_tracker(name="never pinged")
        yield live


def test_trackers_are_grouped_by_orchestrator_then_dag_worst_first(grouped: LiveServer) -> None:
    text = httpx.get(grouped.base_url + "/dashboard/").text
    order = re.findall(r'data-orchestrator="([a-z]+)"', text)
    assert order == ["airflow", "other", "celery"]  # failing sections first
    airflow = _section(text, "airflow")
    groups = re.findall(r'<details class="group" data-group="([^"]+)"( open)?>', airflow)
    assert groups == [("orders", " open"), ("billing", "")]  # the failing DAG first, open
    orders = airflow[airflow.index('data-group="orders"') : airflow.index('data-group="billing"')]
    assert '<span class="state state-failing">failing</span>' in orders.split("</summary>")[0]
    assert "2 trackers: 1 failing, 1 up" in orders
    rows = re.findall(r'<tr data-tracker="([^"]+)">', orders)
    assert rows == ["orders-load", "orders-extract"]  # the failing task first
    assert '<span class="state state-up">up</span>' in airflow.split('data-group="billing"')[1]
    assert "shop.tasks" in _section(text, "celery")  # a Celery task grouped by its module


def test_a_row_says_why_and_links_the_run_in_airflow(grouped: LiveServer) -> None:
    text = httpx.get(grouped.base_url + "/dashboard/").text
    row = re.search(r'<tr data-tracker="orders-load">.*?</tr>', text, re.S)
    assert row is not None
    html = row.group(0)
    assert "KeyError: no column &lt;script&gt;" in html
    assert "<script>" not in text
    assert re.search(r'class="muted since">for \d+ s<', html)
    link = f"{AIRFLOW_UI}/dags/orders/runs/manual__1/tasks/load/mapped/2"
    assert f'<a class="ui-link" href="{link}">open in Airflow</a>' in html
    plain = re.search(r'<tr data-tracker="orders-backup">.*?</tr>', text, re.S)
    assert plain is not None
    assert "rows &gt; 0: rows was 0, expected &gt; 0" in plain.group(0)


def test_filters_are_query_parameters(grouped: LiveServer) -> None:
    def slugs(query: str) -> list[str]:
        text = httpx.get(grouped.base_url + "/dashboard/" + query).text
        return sorted(re.findall(r'<tr data-tracker="([^"]+)">', text))

    assert slugs("?problems=1") == ["orders-backup", "orders-load"]
    assert slugs("?state=new") == ["never-pinged"]
    assert slugs("?orchestrator=airflow&q=orders") == ["orders-extract", "orders-load"]
    assert slugs("?q=orders") == ["orders-backup", "orders-extract", "orders-load"]
    assert slugs("?tag=team:data&state=up") == ["billing-invoice", "orders-extract"]
    assert slugs("?orchestrator=other") == ["never-pinged", "orders-backup"]
    text = httpx.get(grouped.base_url + "/dashboard/?problems=1&q=%3Cb%3E").text
    assert 'value="&lt;b&gt;"' in text  # the search box keeps the (escaped) text
    assert "No tracker matches these filters." in text
    assert 'href="/dashboard/?q=%3Cb%3E">Show all trackers</a>' in text


def test_the_run_page_shows_the_error_the_details_and_the_orchestrator_link(
    grouped: LiveServer,
) -> None:
    tracker = next(
        t for t in grouped.api("GET", "/trackers").json()["items"] if t["slug"] == "orders-load"
    )
    run = grouped.runs(tracker["id"])[0]
    text = httpx.get(f"{grouped.base_url}/dashboard/trackers/{tracker['id']}/runs/{run['id']}").text
    assert "<h2>Error</h2>" in text
    assert "<code>KeyError</code>" in text
    assert "no column &lt;script&gt;" in text
    assert "<dt>DAG</dt><dd><code>orders</code></dd>" in text
    assert "<dt>Map index</dt><dd><code>2</code></dd>" in text
    link = f"{AIRFLOW_UI}/dags/orders/runs/manual__1/tasks/load/mapped/2"
    assert f'<a class="ui-link" href="{link}">Open this run in Airflow</a>' in text
    page = httpx.get(f"{grouped.base_url}/dashboard/trackers/{tracker['id']}").text
    assert "<strong>KeyError</strong>: no column &lt;script&gt;" in page  # in the runs table


def test_the_tracker_pages_runs_table_links_each_run_in_its_orchestrator(
    grouped: LiveServer,
) -> None:
    trackers = {t["slug"]: t for t in grouped.api("GET", "/trackers").json()["items"]}
    tracker = trackers["orders-extract"]
    sent = "https://airflow.example/dags/orders/runs/manual__2/tasks/extract"
    block = {"dag_id": "orders", "task_id": "extract", "run_id": "manual__2", "ui_url": sent}
    body = {"job": "orders.extract", "orchestrator": "airflow", "airflow": block}
    assert grouped.ping(tracker, body).status_code == 200
    page = httpx.get(f"{grouped.base_url}/dashboard/trackers/{tracker['id']}").text
    table = page[page.index('<table class="runs">') : page.index("</table>")]
    assert '<th scope="col">In its orchestrator</th>' in table
    rows = re.findall(r'<tr class="run">.*?</tr>', table, re.S)
    assert len(rows) == 2  # newest first: the link the ping sent, then the one built
    assert f'<a class="ui-link" href="{sent}">open in Airflow</a>' in rows[0]
    built = f"{AIRFLOW_UI}/dags/orders/runs/manual__1/tasks/extract/mapped/2"
    assert f'<a class="ui-link" href="{built}">open in Airflow</a>' in rows[1]
    plain = httpx.get(f"{grouped.base_url}/dashboard/trackers/{trackers['orders-backup']['id']}")
    assert "In its orchestrator" not in plain.text  # no column where no run has a link


def test_a_ui_url_from_the_ping_wins_and_only_http_links_are_made() -> None:
    bases = UiBases(airflow="http://a", prefect="http://p/", dagster="http://d")
    block = {"dag_id": "d", "run_id": "r/1", "task_id": "t", "map_index": -1}
    sent = {"orchestrator": "airflow", "airflow": {**block, "ui_url": "https://x/ti"}}
    assert ui_url(sent, bases) == "https://x/ti"
    assert ui_url({"orchestrator": "airflow", "airflow": block}, bases) == (
        "http://a/dags/d/runs/r%2F1/tasks/t"
    )
    evil = {"orchestrator": "airflow", "airflow": {**block, "ui_url": "javascript:alert(1)"}}
    assert ui_url(evil, UiBases()) is None
    prefect = {"orchestrator": "prefect", "prefect": {"flow_run_id": "f1"}}
    assert ui_url(prefect, bases) == "http://p/runs/flow-run/f1"
    assert ui_url({"orchestrator": "dagster", "dagster": {"run_id": "x"}}, bases) == (
        "http://d/runs/x"
    )
    assert ui_url({"orchestrator": "celery", "celery": {"task_id": "x"}}, bases) is None


def test_a_failed_assertion_reads_with_its_value_and_baseline() -> None:
    result = {
        "expression": "rows >= 0.5 * avg(rows, 7)",
        "passed": False,
        "actual": 3,
        "reason": "rows was 3, expected >= 55.5",
        "baseline": {"value": 111, "text": "mean 111 of the last 7 runs"},
    }
    reason = reason_of("success", {"rows": 3}, [result])
    assert reason is not None
    assert reason.text == (
        "rows >= 0.5 * avg(rows, 7): rows was 3, expected >= 55.5 "
        "(baseline mean 111 of the last 7 runs)"
    )
    assert reason_of("success", {}, [{**result, "passed": True}]) is None


def test_groups_come_from_the_job_names_the_adapters_send() -> None:
    assert orchestrator_of(["team:x", "orchestrator:dagster"], None) == "dagster"
    assert orchestrator_of([], {"orchestrator": "prefect"}) == "prefect"
    assert orchestrator_of([], None) == NO_ORCHESTRATOR
    assert group_of("airflow", "etl.tg.load", None) == "etl"
    assert group_of("airflow", "x.y", {"airflow": {"dag_id": "my.dag"}}) == "my.dag"
    assert group_of("celery", "proj.tasks.send", None) == "proj.tasks"
    assert group_of("prefect", "flow.task", {"prefect": {"flow_name": "Flow A"}}) == "Flow A"
    assert group_of("dagster", "job.op", None) == "job"
    assert group_of(NO_ORCHESTRATOR, "backup", None) == ""


def test_the_page_renders_problems_first_within_a_budget_of_rows() -> None:
    def row(i: int, state: str, group: str) -> dict[str, Any]:
        return {"id": i, "name": f"t{i}", "state": state, "orchestrator": "airflow", "group": group}

    rows = [row(i, "up", f"dag{i // 10:03}") for i in range(2000)]
    rows[1555] = row(1555, "down", "dag155")
    page = plan(build_sections(rows), Filters())
    first = page.sections[0].groups[0]
    assert (first.group.name, first.group.state, first.open) == ("dag155", "down", True)
    assert len(page.rendered_ids) == MAX_ROWS
    assert page.rendered_ids[0] == 1555
    assert page.shown == 2000
