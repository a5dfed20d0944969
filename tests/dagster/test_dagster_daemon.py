"""The production path: ``dagster-daemon run`` on a workspace whose code location has
``telemhq_sensors()``, and a run launched through the instance (queued, then launched by the
daemon; the multiprocess executor runs each step in its own process). The step pings come
from the step processes, which flush them at their exit; the sensor pings the run once."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from dagster import DagsterInstance, DagsterRunStatus

from tests.dagster.conftest import Stored
from tests.kit import wait_until
from tests.live_server import dies_with_parent

pytestmark = [pytest.mark.slow, pytest.mark.timeout(420)]

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
SENSOR = "telemhq_run_success"


def sensor_state(instance: DagsterInstance) -> Any:
    from dagster._core.scheduler.instigation import InstigatorType

    for state in instance.all_instigator_state(instigator_type=InstigatorType.SENSOR):
        if state.instigator_name == SENSOR:
            return state
    return None


def sensor_cursor(instance: DagsterInstance) -> str | None:
    state = sensor_state(instance)
    if state is None or state.instigator_data is None:
        return None
    cursor: str | None = state.instigator_data.cursor
    return cursor


def sensor_ticks(instance: DagsterInstance) -> int:
    state = sensor_state(instance)
    if state is None:
        return 0
    return len(instance.get_ticks(state.instigator_origin_id, state.selector_id, limit=1000))


@pytest.fixture
def home(tmp_path: Path, server: Stored) -> tuple[Path, dict[str, str]]:
    (tmp_path / "dagster.yaml").write_text(
        "run_coordinator:\n"
        "  module: dagster._core.run_coordinator\n"
        "  class: QueuedRunCoordinator\n"
        "telemetry:\n"
        "  enabled: false\n"
    )
    (tmp_path / "workspace.yaml").write_text(
        "load_from:\n"
        "  - python_module:\n"
        "      module_name: tests.dagster.daemon_defs\n"
        f"      working_directory: {ROOT}\n"
        "      location_name: telemhq_tests\n"
    )
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("TELEMHQ_", "DAGSTER_"))
    }
    env.update(
        DAGSTER_HOME=str(tmp_path),
        PYTHONPATH=str(ROOT),
        TELEMHQ_BASE_URL=server.base_url,
        TELEMHQ_PING_KEY=server.ping_key,
        TELEMHQ_TIMEOUT="2",
        TELEMHQ_MAX_RETRIES="0",
    )
    return tmp_path, env


def test_daemon_sensor_and_step_processes(
    server: Stored, home: tuple[Path, dict[str, str]], monkeypatch: pytest.MonkeyPatch
) -> None:
    path, env = home
    log = (path / "daemon.log").open("wb")
    daemon = subprocess.Popen(
        dies_with_parent([str(BIN / "dagster-daemon"), "run", "-w", str(path / "workspace.yaml")]),
        cwd=ROOT,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        monkeypatch.setenv("DAGSTER_HOME", str(path))
        with DagsterInstance.from_ref(DagsterInstance.get().get_ref()) as instance:
            # The sensor's first tick only sets its cursor: launch after it.
            wait_until(
                lambda: sensor_cursor(instance),
                "the sensor's first tick",
                timeout=120,
                interval=0.5,
            )
            subprocess.run(
                [
                    str(BIN / "dagster"),
                    "job",
                    "launch",
                    "-w",
                    str(path / "workspace.yaml"),
                    "-j",
                    "plain_job",
                ],
                cwd=ROOT,
                env=env,
                check=True,
                capture_output=True,
                timeout=120,
            )
            (run,) = instance.get_runs()
            wait_until(
                lambda: (
                    instance.get_run_by_id(run.run_id).status  # type: ignore[union-attr]
                    in (DagsterRunStatus.SUCCESS, DagsterRunStatus.FAILURE)
                ),
                "the run to succeed",
                timeout=120,
                interval=0.5,
            )
            assert instance.get_run_by_id(run.run_id).status == DagsterRunStatus.SUCCESS  # type: ignore[union-attr]

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
    except BaseException:
        sys.stderr.write((path / "daemon.log").read_text(errors="replace")[-6000:])
        raise
    finally:
        os.killpg(daemon.pid, signal.SIGTERM)
        try:
            daemon.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(daemon.pid, signal.SIGKILL)
            daemon.wait(timeout=10)
        log.close()
