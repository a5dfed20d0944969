"""A bad setting never changes a Dagster run: monitoring is off for the process (or for the
resource's settings), with one ERROR line naming the setting, and ``execute_in_process``
ends as it would without TelemHQ."""

from __future__ import annotations

import logging
from collections.abc import Iterator

import pytest
from dagster import DagsterInstance, Definitions

from telemhq_plugins.dagster import TelemHQResource, telemhq_sensors
from tests.dagster.conftest import Stored
from tests.dagster.jobs import broken, plain_job
from tests.dagster.test_dagster_resource import resourced
from tests.kit import TIMEOUT_ABC, settings_client, telemhq_warnings


@pytest.fixture
def rebuilt_client() -> Iterator[None]:
    with settings_client():
        yield


@pytest.mark.usefixtures("rebuilt_client")
def test_a_bad_setting_leaves_the_runs_unchanged(
    server: Stored,
    instance: DagsterInstance,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    monkeypatch.setenv("TELEMHQ_BASE_URL", server.base_url)
    monkeypatch.setenv("TELEMHQ_PING_KEY", server.ping_key)
    monkeypatch.setenv("TELEMHQ_TIMEOUT", "abc")
    caplog.set_level(logging.ERROR, logger="telemhq")

    ok = plain_job.execute_in_process(instance=instance)
    failed = broken.execute_in_process(instance=instance, raise_on_error=False)

    assert ok.success
    assert not failed.success
    assert telemhq_warnings(caplog.records) == [TIMEOUT_ABC]
    assert server.runs("plain_job.extract", f"{ok.run_id}:extract") == []
    assert server.runs("broken.explode", f"{failed.run_id}:explode") == []


@pytest.mark.usefixtures("rebuilt_client")
def test_a_bad_resource_value_leaves_the_run_unchanged(
    server: Stored,
    instance: DagsterInstance,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    for name in ("TELEMHQ_TIMEOUT", "TELEMHQ_TOKEN", "TELEMHQ_PING_KEY", "TELEMHQ_CONFIG"):
        monkeypatch.delenv(name, raising=False)
    caplog.set_level(logging.ERROR, logger="telemhq")
    resource = TelemHQResource(base_url=server.base_url, ping_key=server.ping_key, timeout=-1.0)
    defs = Definitions(jobs=[resourced], resources={"telemhq": resource})

    result = defs.resolve_job_def("resourced").execute_in_process(instance=instance)

    assert result.success
    assert result.output_for_node("measured") == 3
    assert telemhq_warnings(caplog.records) == [
        "TelemHQ: monitoring is off, the job runs as without it: "
        "timeout=-1.0 (Dagster resource TelemHQResource): out of range; "
        "expected a number of seconds above 0 (default 15)"
    ]
    assert server.runs("resourced.measured", f"{result.run_id}:measured") == []
    assert server.runs("resource-manual") == []


@pytest.mark.parametrize(("value", "started"), [("1", True), ("0", False), (None, False)])
def test_the_sensors_send_start_as_telemhq_send_start_says(
    value: str | None, started: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("TELEMHQ_SEND_START", raising=False)
    if value is not None:
        monkeypatch.setenv("TELEMHQ_SEND_START", value)
    names = {sensor.name for sensor in telemhq_sensors(sync_schedules=False)}
    assert ("telemhq_run_started" in names) is started
    assert "telemhq_run_started" not in {
        s.name for s in telemhq_sensors(send_start=False, sync_schedules=False)
    }
