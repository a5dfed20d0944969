"""The watcher (``python -m telemhq_plugins.prefect watch``) against the session's Prefect API
server and the reference server: runs with no hooks, de-duplication with hooks, a SIGKILLed
run reported after the heartbeat window, a deployment's cron schedule pushed to its tracker,
and a restart that neither loses nor repeats a run."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from prefect.client.orchestration import get_client
from prefect.client.schemas.actions import DeploymentScheduleCreate
from prefect.client.schemas.filters import FlowFilter, FlowFilterName
from prefect.client.schemas.schedules import CronSchedule

from telemhq_plugins.core import Client
from tests.kit import assert_one_ping_per_event, statuses, wait_for_runs
from tests.live_server import LiveServer
from tests.prefect import watched
from tests.prefect.conftest import PrefectAPI, telemhq_env

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("prefect_api")]

ROOT = Path(__file__).resolve().parents[2]
HEARTBEAT = 30  # Prefect's minimum heartbeat frequency
DELAY = 10  # the watcher's default wait before a final ping (the hooks' ping goes first)


class WatcherProcess:
    def __init__(self, env: dict[str, str], cursor: Path) -> None:
        self.env, self.cursor = env, cursor
        self.proc: subprocess.Popen[bytes] | None = None
        self.log = cursor.with_suffix(".log")

    def start(self) -> None:
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen(
                [
                    # The ``telemhq`` program finds the command through the adapter's entry
                    # point (``telemhq.commands``), as a user runs it.
                    str(Path(sys.executable).with_name("telemhq")),
                    "prefect",
                    "watch",
                    "--cursor",
                    str(self.cursor),
                    "--heartbeat-frequency",
                    str(HEARTBEAT),
                    "--delay",
                    str(DELAY),
                    "--schedules-interval",
                    "3",
                ],
                env=self.env,
                cwd=str(ROOT),
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        wait_until(lambda: "following Prefect" in self.output(), "the watcher to follow events")

    def output(self) -> str:
        return self.log.read_text() if self.log.exists() else ""

    def stop(self) -> None:
        proc, self.proc = self.proc, None
        if proc is not None and proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def wait_until(check: Callable[[], Any], what: str, timeout: float = 90.0) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(0.25)
    raise AssertionError(f"timed out waiting for {what}")


@pytest.fixture(scope="module")
def watcher(
    live_server: LiveServer,
    ping_key: str,
    tmp_path_factory: pytest.TempPathFactory,
    prefect_api: PrefectAPI,
) -> Iterator[WatcherProcess]:
    env = telemhq_env(live_server, ping_key)
    env["TELEMHQ_API_KEY"] = live_server.api_key
    process = WatcherProcess(env, tmp_path_factory.mktemp("watch") / "cursor.json")
    process.start()
    yield process
    process.stop()


def test_a_flow_with_no_hooks_is_reported_once(
    live_server: LiveServer, watcher: WatcherProcess
) -> None:
    assert watched.watched_plain() == "ok"
    with pytest.raises(ValueError, match="watched failure"):
        watched.watched_failing()
    [run] = wait_for_runs(live_server, "watched-plain", 1)
    assert run["status"] == "success"
    assert run["payload"]["prefect"]["flow_name"] == "watched-plain"
    assert run["payload"]["duration"] >= 0
    [failed] = wait_for_runs(live_server, "watched-failing", 1)
    assert failed["status"] == "failure"
    assert "watched failure" in failed["payload"]["error"]["message"]
    time.sleep(DELAY + 2)  # past the watcher's delay: nothing more comes
    assert len(live_server.runs("watched-plain")) == 1


def test_a_run_with_hooks_is_stored_once_with_its_metrics(
    live_server: LiveServer, client: Client, watcher: WatcherProcess
) -> None:
    watched.watched_hooked()
    wait_for_runs(live_server, "watched-hooked", 1)
    wait_until(lambda: "watched-hooked) attempt 1 -> success" in watcher.output(), "watcher")
    client.flush()
    time.sleep(1)
    runs = live_server.runs("watched-hooked")
    assert statuses(runs) == ["success"]
    assert_one_ping_per_event(runs)
    assert runs[0]["payload"]["records_processed"] == 11


@pytest.mark.timeout(300)
def test_a_sigkilled_run_is_a_failure_after_the_heartbeat_window(
    live_server: LiveServer, ping_key: str, watcher: WatcherProcess
) -> None:
    env = telemhq_env(live_server, ping_key)
    env["PREFECT_FLOWS_HEARTBEAT_FREQUENCY"] = str(HEARTBEAT)
    proc = subprocess.Popen(
        [sys.executable, str(Path(watched.__file__)), "watched-killed"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline().strip() == b"running"
        time.sleep(1)
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.wait()
        if proc.stdout is not None:
            proc.stdout.close()
    killed_at = time.monotonic()
    [run] = wait_for_runs(live_server, "watched-killed", 1, timeout=4 * HEARTBEAT)
    assert run["status"] == "failure"
    assert run["payload"]["error"]["type"] == "NoHeartbeat"
    # Reported once the run was silent for twice the frequency, not before.
    assert time.monotonic() - killed_at > HEARTBEAT


def test_a_deployments_cron_schedule_reaches_its_tracker(
    live_server: LiveServer, watcher: WatcherProcess
) -> None:
    with get_client(sync_client=True) as prefect:
        flow_id = prefect.create_flow_from_name("watched-cron")
        prefect.create_deployment(
            flow_id,
            name="nightly",
            schedules=[
                DeploymentScheduleCreate(
                    schedule=CronSchedule(cron="30 2 * * *", timezone="Europe/Paris")
                )
            ],
        )
        assert prefect.read_flows(
            flow_filter=FlowFilter(name=FlowFilterName(any_=["watched-cron"]))
        )

    def tracker() -> dict[str, Any] | None:
        response = live_server.api("GET", "/trackers/watched-cron")
        return response.json() if response.status_code == 200 else None

    found = wait_until(tracker, "the tracker of watched-cron", timeout=60)
    schedule = found["schedule"]
    assert (schedule["kind"], schedule["cron"]) == ("cron", "30 2 * * *")
    assert schedule["timezone"] == "Europe/Paris"
    assert "prefect" in found["tags"]


def test_a_restart_neither_loses_nor_repeats_a_run(
    live_server: LiveServer, watcher: WatcherProcess
) -> None:
    watcher.stop()
    assert watched.watched_restart() == "ok"  # while no watcher runs
    watcher.start()
    # Start-up (Prefect's import, the backfill) and then the final ping's delay.
    [run] = wait_for_runs(live_server, "watched-restart", 1, timeout=60 + DELAY)
    assert run["status"] == "success"
    time.sleep(DELAY + 2)
    assert len(live_server.runs("watched-restart")) == 1
    assert len(live_server.runs("watched-plain")) == 1
    assert "backfilled" in watcher.output()


@pytest.mark.timeout(400)
def test_it_reconnects_when_the_prefect_api_restarts(
    live_server: LiveServer, watcher: WatcherProcess, prefect_api: PrefectAPI
) -> None:
    prefect_api.stop()
    wait_until(lambda: "Prefect API unreachable" in watcher.output(), "the watcher to notice")
    prefect_api.start()
    # Run at once: the run may end before the watcher is back (it retries every 2 s); then
    # only the backfill from its cursor finds it.
    assert watched.watched_after_restart() == "ok"
    [run] = wait_for_runs(live_server, "watched-after-restart", 1, timeout=120)
    assert run["status"] == "success"
    time.sleep(DELAY + 2)
    assert len(live_server.runs("watched-after-restart")) == 1
    assert len(live_server.runs("watched-plain")) == 1
