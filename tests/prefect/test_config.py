"""A bad setting never changes a flow run: monitoring is off for the process, with one ERROR
line naming the setting, and the flows return and raise as they would without TelemHQ."""

from __future__ import annotations

import logging

import pytest

from telemhq_plugins.core import set_client
from tests.kit import ping_key, tracker_by_slug
from tests.live_server import LiveServer
from tests.prefect import flows

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("prefect_api")]


def test_a_bad_setting_leaves_the_flow_runs_unchanged(
    live_server: LiveServer, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv("TELEMHQ_BASE_URL", live_server.base_url)
    monkeypatch.setenv("TELEMHQ_PING_KEY", ping_key(live_server))
    monkeypatch.setenv("TELEMHQ_MAX_RETRIES", "-1")
    caplog.set_level(logging.ERROR, logger="telemhq")
    previous = set_client(None)  # the process's client is built from the settings again
    try:
        assert flows.acc_success(4) == 4
        with pytest.raises(ValueError, match="0 rows loaded"):
            flows.acc_failure()
    finally:
        set_client(previous)
    lines = [r.getMessage() for r in caplog.records if r.name == "telemhq"]
    assert lines == [
        "TelemHQ: monitoring is off, the job runs as without it: "
        "TELEMHQ_MAX_RETRIES='-1' (environment): out of range; "
        "expected a whole number, 0 or more (default 3)"
    ]
    for slug in ("acc-success", "acc-success-extract", "acc-failure"):
        assert tracker_by_slug(live_server, slug) is None
