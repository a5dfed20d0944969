"""The dashboard in a real headless Chromium, driven by Selenium through Debian's chromedriver.

Needs the Debian packages ``chromium`` and ``chromium-driver``
(``apt-get update && apt-get install -y chromium chromium-driver``; ``make test`` installs them
when missing). Without them the test skips and says so, except in CI (``CI=true``) or with
``TELEMHQ_REQUIRE_SERVICES=1``, where a missing browser is a failure.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from typing import Any

import pytest

from tests.live_server import LiveServer

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMEDRIVER = shutil.which("chromedriver") or "/usr/bin/chromedriver"
APT_LINE = "apt-get update && apt-get install -y chromium chromium-driver"


def _require_browser() -> None:
    missing = [p for p in (CHROMIUM, CHROMEDRIVER) if not os.path.exists(p)]
    try:
        import selenium  # noqa: F401
    except ImportError:
        missing.append("the selenium package (dev extra)")
    if not missing:
        return
    reason = f"no browser for the dashboard test: missing {', '.join(missing)}; run `{APT_LINE}`"
    if os.environ.get("CI") == "true" or os.environ.get("TELEMHQ_REQUIRE_SERVICES") == "1":
        pytest.fail(f"{reason} (CI requires it)")
    pytest.skip(reason)


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
        yield live


def test_it_signs_in_and_shows_trackers_runs_and_charts(browser: Any, server: LiveServer) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ec
    from selenium.webdriver.support.ui import WebDriverWait

    def arrive(title: str) -> None:
        """Wait for the navigation a click started (the click may return before it)."""
        WebDriverWait(browser, 20).until(ec.title_is(f"{title} - TelemHQ"))

    browser.get(server.base_url + "/dashboard/")
    arrive("Sign in")
    assert browser.current_url.startswith(server.base_url + "/dashboard/login")
    browser.find_element(By.ID, "api_key").send_keys(server.api_key)
    browser.find_element(By.CSS_SELECTOR, "form.login button[type=submit]").click()
    arrive("Trackers")

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
    arrive("Nightly ETL")
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
