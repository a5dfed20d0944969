"""The dashboard in a real headless Chromium, driven by Selenium through Debian's chromedriver.

Needs the Debian packages ``chromium`` and ``chromium-driver``
(``apt-get update && apt-get install -y chromium chromium-driver``; ``make test`` installs them
when missing). Without them the test skips and says so, except in CI (``CI=true``) or with
``TELEMHQ_REQUIRE_SERVICES=1``, where a missing browser is a failure.

``TELEMHQ_SCREENSHOT=docs/img/dashboard.png`` also saves the trackers page, with a tracker in
each state, as a PNG at that path (the picture in the README).
"""

from __future__ import annotations

import os
import shutil
import struct
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.kit import unavailable, wait_until
from tests.live_server import LiveServer

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMEDRIVER = shutil.which("chromedriver") or "/usr/bin/chromedriver"
APT_LINE = "apt-get update && apt-get install -y chromium chromium-driver"
SCREENSHOT_ENV = "TELEMHQ_SCREENSHOT"


def _require_browser() -> None:
    missing = [p for p in (CHROMIUM, CHROMEDRIVER) if not os.path.exists(p)]
    try:
        import selenium  # noqa: F401
    except ImportError:
        missing.append("the selenium package (dev extra)")
    if not missing:
        return
    reason = f"no browser for the dashboard test: missing {', '.join(missing)}; run `{APT_LINE}`"
    unavailable(reason)


@pytest.fixture(params=["javascript on", "javascript off"])
def browser(request: pytest.FixtureRequest) -> Iterator[Any]:
    _require_browser()
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    profile = tempfile.mkdtemp(prefix="telemhq-chromium-")
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in (
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--window-size=1280,1600",
        f"--user-data-dir={profile}",
    ):
        options.add_argument(flag)
    if request.param == "javascript off":
        # The dashboard is for reading without JavaScript: pages must not need it.
        options.add_experimental_option(
            "prefs", {"profile.managed_default_content_settings.javascript": 2}
        )
    driver = webdriver.Chrome(service=Service(executable_path=CHROMEDRIVER), options=options)
    driver.set_page_load_timeout(30)
    try:
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)


@pytest.fixture(scope="module")
def server() -> Iterator[LiveServer]:
    with LiveServer() as live:
        tracker = live.create_tracker(
            name="Nightly ETL",
            assertions=["records_processed > 0"],
            schedule={"kind": "period", "period_seconds": 86400, "grace_seconds": 600},
        )
        for records, ms in [(120, 1200), (340, 1900), (0, 800)]:
            live.ping(tracker, {"records_processed": records, "duration": ms, "cost_usd": 0.4})
        _add_trackers_in_other_states(live)
        yield live


def _add_trackers_in_other_states(live: LiveServer) -> None:
    """Beside the failing "Nightly ETL": one tracker for each other state, the ``late`` and
    ``down`` ones left to the server's missed-run detector (a few seconds)."""
    daily = {"kind": "period", "period_seconds": 86400, "grace_seconds": 600}
    orders = live.create_tracker(
        name="Orders sync",
        assertions=["errors = 0"],
        schedule={"kind": "cron", "cron": "*/15 * * * *", "timezone": "UTC", "grace_seconds": 300},
    )
    for ms in (2100, 1800, 2600, 1900, 2300, 2000):
        live.ping(orders, {"records_processed": 1200, "errors": 0, "duration": ms})
    backup = live.create_tracker(name="Database backup", schedule=daily, max_runtime_seconds=1)
    for ms in (61_000, 58_000):
        live.ping(backup, {"duration": ms})
    live.ping(backup, suffix="/start")  # and no end within the max runtime: down
    invoices = live.create_tracker(
        name="Invoice export",
        schedule={"kind": "period", "period_seconds": 2, "grace_seconds": 86400},
    )
    for ms in (700, 900):
        live.ping(invoices, {"duration": ms})  # the next one is due 2 s later: late
    model = live.create_tracker(name="Model retraining", schedule=daily)
    live.ping(model, {"duration": 5_400_000, "eval_score": 0.91})
    assert live.api("POST", f"/trackers/{model['id']}/pause").status_code == 200
    live.create_tracker(name="Quarterly audit", schedule=daily)  # never pinged: new


#: the trackers page's rows (slug) and the state each shows once the detector has run.
STATES = {
    "nightly-etl": "failing",
    "orders-sync": "up",
    "database-backup": "down",
    "invoice-export": "late",
    "model-retraining": "paused",
    "quarterly-audit": "new",
}


def _wait_for_states(server: LiveServer) -> None:
    states: dict[str, str] = {}

    def reached() -> bool:
        states.update((slug, server.tracker(slug)["state"]) for slug in STATES)
        return states == STATES

    wait_until(reached, lambda: f"the trackers' states {STATES}, not {states}", interval=0.5)


def _arrive(browser: Any, title: str) -> None:
    """Wait for the navigation a click started (the click may return before it)."""
    from selenium.webdriver.support import expected_conditions as ec
    from selenium.webdriver.support.ui import WebDriverWait

    WebDriverWait(browser, 20).until(ec.title_is(f"{title} - TelemHQ"))


def _sign_in(browser: Any, server: LiveServer) -> None:
    from selenium.webdriver.common.by import By

    browser.get(server.base_url + "/dashboard/")
    _arrive(browser, "Sign in")
    assert browser.current_url.startswith(server.base_url + "/dashboard/login")
    browser.find_element(By.ID, "api_key").send_keys(server.api_key)
    browser.find_element(By.CSS_SELECTOR, "form.login button[type=submit]").click()
    _arrive(browser, "Trackers")


def test_it_signs_in_and_shows_trackers_runs_and_charts(browser: Any, server: LiveServer) -> None:
    from selenium.webdriver.common.by import By

    _sign_in(browser, server)

    # The trackers page: the state as coloured text, the last run, a sparkline.
    assert browser.find_element(By.TAG_NAME, "h1").text == "Trackers"
    row = browser.find_element(By.CSS_SELECTOR, 'tr[data-tracker="nightly-etl"]')
    pill = row.find_element(By.CSS_SELECTOR, ".state")
    assert pill.is_displayed()
    assert pill.text == "failing"
    assert pill.value_of_css_property("background-color") == "rgba(198, 40, 40, 1)"
    assert row.find_element(By.CSS_SELECTOR, "svg.sparkline").is_displayed()

    # One tracker: its runs with the failed assertion, and the charts.
    row.find_element(By.LINK_TEXT, "Nightly ETL").click()
    _arrive(browser, "Nightly ETL")
    assert "Nightly ETL" in browser.find_element(By.TAG_NAME, "h1").text
    runs = browser.find_elements(By.CSS_SELECTOR, "table.runs tr.run")
    assert len(runs) == 3
    assert "records_processed was 0, expected > 0" in runs[0].text
    assert "failed" in runs[0].text
    charts = browser.find_elements(By.CSS_SELECTOR, "svg.chart")
    titles = [c.find_element(By.CSS_SELECTOR, "text.chart-title").text for c in charts]
    assert titles == ["duration (ms)", "cost_usd", "records_processed"]
    for chart in charts:
        assert chart.is_displayed()
        assert chart.size["width"] > 200
        assert chart.size["height"] > 50
    assert len(charts[0].find_elements(By.CSS_SELECTOR, "circle.chart-dot")) == 3


def test_the_trackers_page_shows_every_state_and_can_be_saved_as_a_picture(
    browser: Any, server: LiveServer, request: pytest.FixtureRequest
) -> None:
    from selenium.webdriver.common.by import By

    _wait_for_states(server)
    _sign_in(browser, server)
    for slug, state in STATES.items():
        row = browser.find_element(By.CSS_SELECTOR, f'tr[data-tracker="{slug}"]')
        pill = row.find_element(By.CSS_SELECTOR, ".state")
        assert (slug, pill.get_attribute("class")) == (slug, f"state state-{state}")
        assert pill.text.startswith(state)  # "new (no ping yet)"
        assert pill.is_displayed()

    # The page alone, at a width where every column fits: the picture ends where the page does.
    browser.set_window_size(1200, 900)
    png = browser.find_element(By.TAG_NAME, "body").screenshot_as_png
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    width, height = struct.unpack(">II", png[16:24])
    assert width >= 900, width
    assert 300 <= height <= 900, height
    target = os.environ.get(SCREENSHOT_ENV)
    if target and request.node.callspec.params["browser"] == "javascript on":
        path = Path(target)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(png)
