"""A real ``dagster-daemon run`` for the production-path tests: a ``DAGSTER_HOME`` with the
queued run coordinator, a workspace whose code location (``tests.dagster.daemon_defs``) has
``telemhq_sensors()``, the daemon itself, and runs launched through the instance (queued, then
launched by the daemon; the multiprocess executor runs each step in its own process)."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest
from dagster import DagsterInstance, DagsterRunStatus

from tests.dagster.conftest import Stored
from tests.kit import wait_until
from tests.live_server import dies_with_parent

__all__ = [
    "BIN",
    "ROOT",
    "SENSOR",
    "daemon_home",
    "launch",
    "running_daemon",
    "sensor_cursor",
    "sensor_ticks",
    "wait_for_end",
]

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


def daemon_home(path: Path, server: Stored, env: Mapping[str, str] | None = None) -> dict[str, str]:
    """Write ``dagster.yaml`` and ``workspace.yaml`` in ``path``; the environment of the
    daemon and of ``dagster`` commands on it, reporting to ``server`` (``env`` added)."""
    (path / "dagster.yaml").write_text(
        "run_coordinator:\n"
        "  module: dagster._core.run_coordinator\n"
        "  class: QueuedRunCoordinator\n"
        "telemetry:\n"
        "  enabled: false\n"
    )
    (path / "workspace.yaml").write_text(
        "load_from:\n"
        "  - python_module:\n"
        "      module_name: tests.dagster.daemon_defs\n"
        f"      working_directory: {ROOT}\n"
        "      location_name: telemhq_tests\n"
    )
    environment = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("TELEMHQ_", "DAGSTER_"))
    }
    environment.update(
        DAGSTER_HOME=str(path),
        PYTHONPATH=str(ROOT),
        TELEMHQ_BASE_URL=server.base_url,
        TELEMHQ_PING_KEY=server.ping_key,
        TELEMHQ_TIMEOUT="2",
        TELEMHQ_MAX_RETRIES="0",
        **(env or {}),
    )
    return environment


@contextlib.contextmanager
def running_daemon(
    path: Path, env: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> Iterator[DagsterInstance]:
    """``dagster-daemon run`` on ``path``'s workspace for the block (its log printed when the
    block fails), then SIGTERM. Yields the instance (``DAGSTER_HOME`` set to ``path`` for the
    test) once the sensor's first tick is done: that tick only sets its cursor, so runs that
    end before it are never reported."""
    monkeypatch.setenv("DAGSTER_HOME", str(path))
    # The instance's storage is created here, before the daemon starts: two processes creating
    # a SQLite storage at once can both stamp its schema version, and neither opens it again.
    with (
        DagsterInstance.from_ref(DagsterInstance.get().get_ref()) as instance,
        (path / "daemon.log").open("wb") as log,
    ):
        command = [str(BIN / "dagster-daemon"), "run", "-w", str(path / "workspace.yaml")]
        daemon = subprocess.Popen(
            dies_with_parent(command),
            cwd=ROOT,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        try:
            wait_until(
                lambda: sensor_cursor(instance),
                "the sensor's first tick",
                timeout=120,
                interval=0.5,
            )
            yield instance
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


def launch(path: Path, env: dict[str, str], job: str) -> None:
    """``dagster job launch`` ``job`` (queued; the daemon launches it)."""
    subprocess.run(
        [str(BIN / "dagster"), "job", "launch", "-w", str(path / "workspace.yaml"), "-j", job],
        cwd=ROOT,
        env=env,
        check=True,
        capture_output=True,
        timeout=120,
    )


def wait_for_end(instance: DagsterInstance, run_id: str) -> DagsterRunStatus:
    """The run's status once it succeeded or failed (a bound for a busy machine)."""
    ended = (DagsterRunStatus.SUCCESS, DagsterRunStatus.FAILURE)

    def status() -> DagsterRunStatus | None:
        run = instance.get_run_by_id(run_id)
        return run.status if run is not None and run.status in ended else None

    return wait_until(status, f"run {run_id} to end", timeout=120, interval=0.5)
