"""The production path: ``dagster-daemon run`` on a workspace whose code location has
``telemhq_sensors()``, and a run launched through the instance (queued, then launched by the
daemon; the multiprocess executor runs each step in its own process). The step pings come
from the step processes, which flush them at their exit; the sensor pings the run once."""

from __future__ import annotations

from pathlib import Path

import pytest
from dagster import DagsterRunStatus

from tests.dagster.conftest import Stored
from tests.dagster.daemon import (
    daemon_home,
    launch,
    running_daemon,
    sensor_ticks,
    wait_for_end,
)
from tests.kit import wait_until

pytestmark = [pytest.mark.slow, pytest.mark.timeout(420)]


def test_daemon_sensor_and_step_processes(
    server: Stored, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    env = daemon_home(tmp_path, server)
    with running_daemon(tmp_path, env, monkeypatch) as instance:
        launch(tmp_path, env, "plain_job")
        (run,) = instance.get_runs()
        assert wait_for_end(instance, run.run_id) == DagsterRunStatus.SUCCESS

        (extract,) = server.wait("plain_job.extract", 1, f"{run.run_id}:extract")
        (load,) = server.wait("plain_job.load", 1, f"{run.run_id}:load")
        assert extract["status"] == load["status"] == "success"
        assert extract["records_processed"] == 450
        assert extract["host"]
        (whole,) = server.wait("plain_job", 1, run.run_id, timeout=120)
        assert whole["status"] == "success"
        record = instance.get_run_record_by_id(run.run_id)
        assert record is not None
        assert record.start_time is not None
        assert record.end_time is not None
        assert whole["duration"] == pytest.approx(
            (record.end_time - record.start_time) * 1000, abs=1
        )
        # More ticks go by: the run is still reported once.
        ticks = sensor_ticks(instance)
        wait_until(
            lambda: sensor_ticks(instance) >= ticks + 2,
            "two more ticks",
            timeout=60,
            interval=0.5,
        )
        assert len(server.runs("plain_job", run.run_id)) == 1
