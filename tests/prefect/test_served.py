"""Cancelling a served run (``flow.serve()``): the runner kills the run's process and calls
``on_cancellation`` in its own process, by keyword; the ping says ``cancelled``."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from prefect.client.orchestration import get_client
from prefect.states import Cancelling

from tests.kit import statuses, wait_for_runs
from tests.live_server import LiveServer
from tests.prefect import served
from tests.prefect.conftest import PrefectAPI, telemhq_env

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("prefect_api")]


@pytest.fixture(scope="module")
def pid_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("served") / "victim.pid"


@pytest.fixture(scope="module")
def runner(
    live_server: LiveServer, ping_key: str, pid_file: Path, prefect_api: PrefectAPI
) -> Iterator[subprocess.Popen[bytes]]:
    env = telemhq_env(live_server, ping_key)
    env.update(PREFECT_RUNNER_POLL_FREQUENCY="1", SERVED_PID_FILE=str(pid_file))
    proc = subprocess.Popen(
        [sys.executable, str(Path(served.__file__))],
        env=env,
        cwd=str(Path(served.__file__).resolve().parents[2]),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    yield proc
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def wait_until(check: object, what: str, timeout: float = 90.0) -> object:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()  # type: ignore[operator]
        if value:
            return value
        time.sleep(0.5)
    raise AssertionError(f"timed out waiting for {what}")


def test_a_cancelled_served_run_pings_cancelled(
    live_server: LiveServer, runner: subprocess.Popen[bytes]
) -> None:
    with get_client(sync_client=True) as client:

        def deployment() -> object:
            try:
                return client.read_deployment_by_name("served-sleeper/sleeper")
            except Exception:
                return None

        found = wait_until(deployment, "the served deployment")
        flow_run = client.create_flow_run_from_deployment(found.id)  # type: ignore[attr-defined]

        def running() -> bool:
            state = client.read_flow_run(flow_run.id).state
            return state is not None and state.is_running()

        wait_until(running, "the run to be Running")
        client.set_flow_run_state(flow_run.id, Cancelling(), force=True)
        wait_until(
            lambda: (s := client.read_flow_run(flow_run.id).state) is not None and s.is_final(),
            "the run to be cancelled",
        )
    [run] = wait_for_runs(live_server, "served-sleeper", 1, timeout=60)
    assert statuses([run]) == ["cancelled"]
    assert run["run_id"] == str(flow_run.id)
    block = run["payload"]["prefect"]
    assert block["deployment"] == {"id": str(found.id)}  # type: ignore[attr-defined]
    assert block["flow_run_id"] == str(flow_run.id)
    # Timed by Prefect's clock: the run was opened in another process.
    assert run["payload"]["duration"] > 0


def test_a_served_run_killed_by_sigkill_is_marked_crashed_and_pings_failure(
    live_server: LiveServer, runner: subprocess.Popen[bytes], pid_file: Path
) -> None:
    """The runner sees its child die (exit -9), marks the run Crashed and calls ``on_crashed``
    in its own process: the ping arrives although the flow's process never ran a hook."""
    with get_client(sync_client=True) as client:

        def deployment() -> object:
            try:
                return client.read_deployment_by_name("served-victim/victim")
            except Exception:
                return None

        found = wait_until(deployment, "the served deployment")
        flow_run = client.create_flow_run_from_deployment(found.id)  # type: ignore[attr-defined]
        wait_until(pid_file.exists, "the run's process id")
        time.sleep(0.5)
        os.kill(int(pid_file.read_text()), signal.SIGKILL)
        wait_until(
            lambda: (s := client.read_flow_run(flow_run.id).state) is not None and s.is_final(),
            "the run to end",
        )
        state = client.read_flow_run(flow_run.id).state
        assert state is not None
        assert state.is_crashed()
    [run] = wait_for_runs(live_server, "served-victim", 1, timeout=60)
    assert statuses([run]) == ["failure"]
    assert run["run_id"] == str(flow_run.id)
    assert run["payload"]["error"]["type"] == "Crashed"
