"""A bad setting never changes a DAG run: monitoring is off for the process, with one ERROR
line naming the setting, and ``dag.test()`` ends as it would without TelemHQ."""

from __future__ import annotations

import logging
from collections.abc import Iterator

import pytest

from telemhq_plugins.airflow import callbacks, conf, dag_callbacks
from telemhq_plugins.airflow.plugin import _listeners
from telemhq_plugins.core import ConfigError, current_client
from tests.airflow.dags.telemhq_test_dags import DAGS
from tests.airflow.helpers import run_count
from tests.kit import (
    TIMEOUT_ABC,
    client_for,
    process_client,
    settings_client,
    statuses_oldest_first,
    telemhq_warnings,
    wait_for_runs,
)
from tests.live_server import LiveServer

JOBS = ("cb_success", "cb_success.load", "cb_failure", "cb_failure.broken")


@pytest.fixture
def rebuilt_client() -> Iterator[None]:
    with settings_client():
        yield


@pytest.mark.usefixtures("airflow_db", "rebuilt_client")
def test_a_bad_setting_leaves_the_dag_runs_unchanged(
    server: LiveServer,
    ping_key: str,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    monkeypatch.setenv("TELEMHQ_BASE_URL", server.base_url)
    monkeypatch.setenv("TELEMHQ_PING_KEY", ping_key)
    monkeypatch.setenv("TELEMHQ_TIMEOUT", "abc")
    before = {job: run_count(server, job) for job in JOBS}
    caplog.set_level(logging.ERROR, logger="telemhq")

    outcomes = {dag_id: DAGS[dag_id].test().state for dag_id in ("cb_success", "cb_failure")}

    assert outcomes == {"cb_success": "success", "cb_failure": "failed"}
    assert telemhq_warnings(caplog.records) == [TIMEOUT_ABC]
    assert {job: run_count(server, job) for job in JOBS} == before


@pytest.mark.parametrize(
    ("option", "value", "named"),
    [
        ("AUTOO", "True", "unknown option [telemhq] autoo in Airflow's configuration: "
         "did you mean 'auto'?"),
        ("SEND_START", "sometimes", "[telemhq] send_start = 'sometimes' in Airflow's "
         "configuration: not a switch"),
    ],
)  # fmt: skip
@pytest.mark.usefixtures("rebuilt_client")
def test_a_bad_telemhq_section_turns_the_plugin_and_the_process_client_off(
    option: str,
    value: str,
    named: str,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    monkeypatch.setenv("AIRFLOW__TELEMHQ__AUTO", "True")
    monkeypatch.setenv(f"AIRFLOW__TELEMHQ__{option}", value)
    monkeypatch.setenv("TELEMHQ_TOKEN", "tok")
    caplog.set_level(logging.ERROR, logger="telemhq")
    with pytest.raises(ConfigError, match=named.replace("[", r"\[").replace("?", r"\?")):
        conf.check()
    assert _listeners() == []
    client = current_client()
    assert client is not None
    assert client.settings.disabled
    [line] = telemhq_warnings(caplog.records)
    assert named in line


@pytest.mark.usefixtures("airflow_db")
def test_callbacks_send_start_when_telemhq_send_start_is_on(server: LiveServer) -> None:
    # A tracker of its own, so that the other tests' counts of cb_success's runs hold.
    tracker = server.create_tracker(name="send-start-default")
    current = client_for(server, trackers={"cb_success*": tracker["token"]}, send_start=True)
    with process_client(current):
        dag_run = DAGS["cb_success"].test()  # callbacks() with no send_start argument
    assert dag_run.state == "success"
    runs = wait_for_runs(server, tracker["id"], 3)
    task_runs = [r for r in reversed(runs) if r["payload"]["job"] == "cb_success.load"]
    assert statuses_oldest_first(task_runs) == ["start", "success"]
    assert {r["run_id"] for r in task_runs} == {f"cb_success/{dag_run.run_id}/load"}


def test_a_misspelt_callback_option_turns_those_callbacks_off(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.ERROR, logger="telemhq")
    found = callbacks(tokn="tok")
    assert found
    assert all(callback.enabled is False for callback in found.values())
    assert all(callback.enabled is False for callback in dag_callbacks(send_start=True).values())
    assert telemhq_warnings(caplog.records) == [
        "TelemHQ: monitoring is off, the job runs as without it: "
        "unknown option 'tokn' (callbacks()): did you mean 'token'?",
        "TelemHQ: monitoring is off, the job runs as without it: "
        "unknown option 'send_start' (dag_callbacks()): expected one of token, enabled",
    ]
