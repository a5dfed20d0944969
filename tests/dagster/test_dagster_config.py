"""A bad setting never changes a Dagster run: monitoring is off for the process (or for the
resource's settings), with one ERROR line naming the setting, and ``execute_in_process``
ends as it would without TelemHQ."""

from __future__ import annotations

import logging
from collections.abc import Iterator

import pytest
from dagster import DagsterInstance, Definitions

from telemhq_plugins.core import set_client
from telemhq_plugins.dagster import TelemHQResource
from tests.dagster.conftest import Stored
from tests.dagster.jobs import broken, plain_job
from tests.dagster.test_dagster_resource import resourced


@pytest.fixture
def rebuilt_client() -> Iterator[None]:
    """The process's client is built from the settings on first use, and put back after."""
    previous = set_client(None)
    yield
    set_client(previous)


def _telemhq_lines(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "telemhq"]


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
    assert _telemhq_lines(caplog) == [
        "TelemHQ: monitoring is off, the job runs as without it: "
        "TELEMHQ_TIMEOUT='abc' (environment): not a number; "
        "expected a number of seconds above 0 (default 15)"
    ]
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
    assert _telemhq_lines(caplog) == [
        "TelemHQ: monitoring is off, the job runs as without it: "
        "timeout=-1.0 (Dagster resource TelemHQResource): out of range; "
        "expected a number of seconds above 0 (default 15)"
    ]
    assert server.runs("resourced.measured", f"{result.run_id}:measured") == []
    assert server.runs("resource-manual") == []
