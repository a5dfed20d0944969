"""Runs served by ``serve()``. Cancelling one: the runner kills the run's process and calls
``on_cancellation`` in its own process, by keyword; the ping says ``cancelled``. The
deployment's name comes from the Prefect API in the runner's process, and from the variable
Prefect sets in the run's own subprocess for a run that completes."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from prefect.client.orchestration import SyncPrefectClient, get_client
from prefect.client.schemas.objects import FlowRun, State
from prefect.states import Cancelling

from tests.kit import statuses_oldest_first, wait_for_runs, wait_until
from tests.live_server import LiveServer, dies_with_parent
from tests.prefect import served
from tests.prefect.conftest import PrefectAPI, telemhq_env

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("prefect_api")]

WAIT = 90  # the bound on waiting for the runner and the API (a busy machine, not a speed claim)


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
        dies_with_parent([sys.executable, str(Path(served.__file__))]),
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


def start_served_run(client: SyncPrefectClient, name: str) -> tuple[str, FlowRun]:
    """A new run of the served deployment ``name`` (``flow/deployment``), once the runner has
    registered it: (the deployment's id, the flow run)."""

    def deployment() -> object:
        try:
            return client.read_deployment_by_name(name)
        except Exception:
            return None

    found: Any = wait_until(deployment, f"the served deployment {name}", timeout=WAIT, interval=0.5)
    return str(found.id), client.create_flow_run_from_deployment(found.id)


def final_state(client: SyncPrefectClient, flow_run: FlowRun, what: str) -> State:
    def final() -> bool:
        state = client.read_flow_run(flow_run.id).state
        return state is not None and state.is_final()

    wait_until(final, what, timeout=WAIT, interval=0.5)
    state = client.read_flow_run(flow_run.id).state
    assert state is not None
    return state


def test_a_cancelled_served_run_pings_cancelled(
    live_server: LiveServer, runner: subprocess.Popen[bytes]
) -> None:
    with get_client(sync_client=True) as client:
        deployment_id, flow_run = start_served_run(client, "served-sleeper/sleeper")

        def running() -> bool:
            state = client.read_flow_run(flow_run.id).state
            return state is not None and state.is_running()

        wait_until(running, "the run to be Running", timeout=WAIT, interval=0.5)
        client.set_flow_run_state(flow_run.id, Cancelling(), force=True)
        final_state(client, flow_run, "the run to be cancelled")
    [run] = wait_for_runs(live_server, "served-sleeper", 1, timeout=60)
    assert statuses_oldest_first([run]) == ["cancelled"]
    assert run["run_id"] == str(flow_run.id)
    block = run["payload"]["prefect"]
    # The runner's process asks the Prefect API for the deployment's name.
    assert block["deployment"] == {"id": deployment_id, "name": "sleeper"}
    assert block["flow_run_id"] == str(flow_run.id)
    # Timed by Prefect's clock: the run was opened in another process.
    assert run["payload"]["duration"] > 0


def test_a_served_run_killed_by_sigkill_is_marked_crashed_and_pings_failure(
    live_server: LiveServer, runner: subprocess.Popen[bytes], pid_file: Path
) -> None:
    """The runner sees its child die (exit -9), marks the run Crashed and calls ``on_crashed``
    in its own process: the ping arrives although the flow's process never ran a hook."""
    with get_client(sync_client=True) as client:
        deployment_id, flow_run = start_served_run(client, "served-victim/victim")
        wait_until(pid_file.exists, "the run's process id", timeout=WAIT, interval=0.5)
        time.sleep(0.5)
        os.kill(int(pid_file.read_text()), signal.SIGKILL)
        state = final_state(client, flow_run, "the run to end")
        assert state.is_crashed()
    [run] = wait_for_runs(live_server, "served-victim", 1, timeout=60)
    assert statuses_oldest_first([run]) == ["failure"]
    assert run["run_id"] == str(flow_run.id)
    assert run["payload"]["error"]["type"] == "Crashed"
    assert run["payload"]["prefect"]["deployment"] == {"id": deployment_id, "name": "victim"}


def test_a_served_run_that_completes_sends_its_deployment_name_from_its_own_process(
    live_server: LiveServer, runner: subprocess.Popen[bytes]
) -> None:
    """The run's subprocess has ``PREFECT__DEPLOYMENT_NAME`` (set by the runner): the success
    ping carries the name with no API call. Its subflow has no deployment and sends none."""
    with get_client(sync_client=True) as client:
        deployment_id, flow_run = start_served_run(client, "served-quick/quick")
        state = final_state(client, flow_run, "the run to end")
        assert state.is_completed()
    [run] = wait_for_runs(live_server, "served-quick", 1, timeout=60)
    assert statuses_oldest_first([run]) == ["success"]
    assert run["run_id"] == str(flow_run.id)
    block = run["payload"]["prefect"]
    assert block["deployment"] == {"id": deployment_id, "name": "quick"}
    [child] = wait_for_runs(live_server, "served-quick-child", 1, timeout=60)
    assert statuses_oldest_first([child]) == ["success"]
    assert "deployment" not in child["payload"]["prefect"]
