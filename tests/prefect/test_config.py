"""A bad setting never changes a flow run: monitoring is off for the process, with one ERROR
line naming the setting, and the flows return and raise as they would without TelemHQ."""

from __future__ import annotations

import logging

import pytest

from telemhq_plugins.prefect import hooks, task_hooks
from tests.kit import (
    client_for,
    new_ping_key,
    process_client,
    settings_client,
    statuses_oldest_first,
    telemhq_warnings,
    tracker_by_slug,
    wait_for_runs,
)
from tests.live_server import LiveServer
from tests.prefect import flows

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("prefect_api")]


def test_a_bad_setting_leaves_the_flow_runs_unchanged(
    live_server: LiveServer, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv("TELEMHQ_BASE_URL", live_server.base_url)
    monkeypatch.setenv("TELEMHQ_PING_KEY", new_ping_key(live_server))
    monkeypatch.setenv("TELEMHQ_MAX_RETRIES", "-1")
    caplog.set_level(logging.ERROR, logger="telemhq")
    with settings_client():
        assert flows.acc_success(4) == 4
        with pytest.raises(ValueError, match="0 rows loaded"):
            flows.acc_failure()
    assert telemhq_warnings(caplog.records) == [
        "TelemHQ: monitoring is off, the job runs as without it: "
        "TELEMHQ_MAX_RETRIES='-1' (environment): out of range; "
        "expected a whole number, 0 or more (default 3)"
    ]
    for slug in ("acc-success", "acc-success-extract", "acc-failure"):
        assert tracker_by_slug(live_server, slug) is None


def test_hooks_send_start_when_telemhq_send_start_is_on(live_server: LiveServer) -> None:
    current = client_for(live_server, ping_key=new_ping_key(live_server), send_start=True)
    with process_client(current):
        assert flows.acc_success(2) == 2  # hooks() with no send_start argument
    runs = wait_for_runs(live_server, "acc-success", 2)
    assert statuses_oldest_first(runs) == ["start", "success"]
    assert len({r["run_id"] for r in runs}) == 1


def test_a_misspelt_hook_option_turns_those_hooks_off(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.ERROR, logger="telemhq")
    assert hooks(send_strat=True) == {name: [] for name in hooks()}
    assert task_hooks(enabeld=False) == {name: [] for name in task_hooks()}
    assert telemhq_warnings(caplog.records) == [
        "TelemHQ: monitoring is off, the job runs as without it: "
        "unknown option 'send_strat' (hooks()): did you mean 'send_start'?",
        "TelemHQ: monitoring is off, the job runs as without it: "
        "unknown option 'enabeld' (task_hooks()): did you mean 'enabled'?",
    ]
