"""The watcher (``python -m telemhq_plugins.prefect watch``) against the session's Prefect API
server and the reference server: runs with no hooks, runs with hooks (stored once, with the
hooks' metrics, however late the hooks' ping; the watcher's fallback when it never comes), a
SIGKILLed run reported after the heartbeat window, a deployment's cron schedule and RRule
schedule pushed to their trackers, and a restart that neither loses nor repeats a run."""

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
from prefect.client.orchestration import get_client
from prefect.client.schemas.actions import DeploymentScheduleCreate
from prefect.client.schemas.filters import FlowFilter, FlowFilterName
from prefect.client.schemas.schedules import CronSchedule, RRuleSchedule

from tests.kit import (
    HeldEndpoint,
    assert_one_ping_per_event,
    client_for,
    dead_endpoint,
    process_client,
    statuses_oldest_first,
    tracker_by_slug,
    wait_for_runs,
    wait_until,
)
from tests.live_server import LiveServer, dies_with_parent
from tests.prefect import watched
from tests.prefect.conftest import PrefectAPI, telemhq_env

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("prefect_api")]

ROOT = Path(__file__).resolve().parents[2]
HEARTBEAT = 30  # Prefect's minimum heartbeat frequency
DELAY = 5  # the watcher's wait before a final ping of a run without hooks (its default)
HOOKS_WAIT = 30  # its wait before the fallback ping of a run with hooks (default 120)
WAIT = 90  # the bound on waiting for the watcher's log (a busy machine, not a speed assertion)


class WatcherProcess:
    def __init__(self, env: dict[str, str], cursor: Path) -> None:
        self.env, self.cursor = env, cursor
        self.proc: subprocess.Popen[bytes] | None = None
        self.log = cursor.with_suffix(".log")

    def start(self) -> None:
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen(
                dies_with_parent(
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
                        "--hooks-wait",
                        str(HOOKS_WAIT),
                        "--schedules-interval",
                        "3",
                    ]
                ),
                env=self.env,
                cwd=str(ROOT),
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        self.wait_for_line("following Prefect")

    def output(self) -> str:
        return self.log.read_text() if self.log.exists() else ""

    def wait_for_line(self, text: str, timeout: float = WAIT) -> None:
        """Once the watcher's log says ``text``."""
        wait_until(lambda: text in self.output(), f"the watcher to log {text!r}", timeout=timeout)

    def stop(self) -> None:
        proc, self.proc = self.proc, None
        if proc is not None and proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


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


def test_a_run_with_hooks_is_stored_once_with_its_metrics_however_late_its_ping(
    live_server: LiveServer, ping_key: str, watcher: WatcherProcess
) -> None:
    """The hooks' ping is held back past the watcher's delay: the watcher, told by the hooks'
    announcement that they report the run, waits for it; the run stored is the hooks' (with
    the metric), and the watcher's late fallback adds nothing."""
    with HeldEndpoint(live_server.base_url) as held:
        current = client_for(live_server, ping_key=ping_key, base_url=held.url, timeout=60)
        with process_client(current):
            watched.watched_hooked()
            watcher.wait_for_line("(watched-hooked) attempt 1 Completed")
            time.sleep(DELAY + 3)  # past the wait of a run without hooks
            assert tracker_by_slug(live_server, "watched-hooked") is None  # nothing came
            held.release()
            current.flush()
    [run] = wait_for_runs(live_server, "watched-hooked", 1)
    assert run["payload"]["records_processed"] == 11
    watcher.wait_for_line("(watched-hooked) attempt 1 -> success (fallback", HOOKS_WAIT + 30)
    runs = wait_for_runs(live_server, "watched-hooked", 1)
    assert statuses_oldest_first(runs) == ["success"]
    assert_one_ping_per_event(runs)
    assert runs[0]["payload"]["records_processed"] == 11


def test_a_run_whose_hooks_ping_never_comes_is_reported_by_the_fallback_after_a_restart(
    live_server: LiveServer, ping_key: str, watcher: WatcherProcess
) -> None:
    """Hooks that announced a run but could not deliver (their endpoint is dead): the watcher's
    fallback reports the run, also when the watcher restarts while the fallback waits (the
    waiting ping is kept in its cursor)."""
    dead = client_for(live_server, base_url=dead_endpoint(), ping_key=ping_key, flush_timeout=1.0)
    with process_client(dead):
        watched.watched_hooked_lost()
    watcher.wait_for_line("(watched-hooked-lost) attempt 1 Completed")
    time.sleep(DELAY + 3)
    assert tracker_by_slug(live_server, "watched-hooked-lost") is None  # waiting for the hooks
    watcher.stop()
    watcher.start()
    [run] = wait_for_runs(live_server, "watched-hooked-lost", 1, timeout=HOOKS_WAIT + 60)
    assert run["status"] == "success"
    assert "records_processed" not in run["payload"]  # the watcher's ping: no metrics
    assert "(watched-hooked-lost) attempt 1 -> success (fallback" in watcher.output()


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


def test_a_deployments_rrule_schedule_reaches_its_tracker_as_a_cron(
    live_server: LiveServer, watcher: WatcherProcess
) -> None:
    rule = "FREQ=WEEKLY;BYDAY=MO,FR;BYHOUR=6;BYMINUTE=15"
    with get_client(sync_client=True) as prefect:
        flow_id = prefect.create_flow_from_name("watched-rrule")
        schedule = RRuleSchedule(rrule=rule, timezone="America/New_York")
        prefect.create_deployment(
            flow_id, name="twice-weekly", schedules=[DeploymentScheduleCreate(schedule=schedule)]
        )
    found = wait_until(
        lambda: tracker_by_slug(live_server, "watched-rrule"), "the tracker", timeout=60
    )
    assert found["schedule"]["kind"] == "cron"
    assert found["schedule"]["cron"] == "15 6 * * 1,5"
    assert found["schedule"]["timezone"] == "America/New_York"
    assert "prefect" in found["tags"]


def test_a_paused_deployment_or_schedule_pauses_its_tracker_and_resuming_resumes_it(
    live_server: LiveServer, watcher: WatcherProcess
) -> None:
    with get_client(sync_client=True) as prefect:
        flow_id = prefect.create_flow_from_name("watched-paused")
        deployment_id = prefect.create_deployment(
            flow_id,
            name="hourly",
            schedules=[DeploymentScheduleCreate(schedule=CronSchedule(cron="0 * * * *"))],
        )
        (entry,) = prefect.read_deployment(deployment_id).schedules

    def tracker(paused: bool) -> dict[str, Any] | None:
        found = tracker_by_slug(live_server, "watched-paused")
        return found if found is not None and found["paused"] is paused else None

    wait_until(lambda: tracker(False), "the tracker of watched-paused", timeout=60)
    live_server.ping(tracker_by_slug(live_server, "watched-paused") or {})  # a clock to restart
    for pause, resume in (
        (
            lambda prefect: prefect.pause_deployment(deployment_id),
            lambda prefect: prefect.resume_deployment(deployment_id),
        ),
        (
            lambda prefect: prefect.update_deployment_schedule(
                deployment_id, entry.id, active=False
            ),
            lambda prefect: prefect.update_deployment_schedule(
                deployment_id, entry.id, active=True
            ),
        ),
    ):
        with get_client(sync_client=True) as prefect:
            pause(prefect)
        paused = wait_until(lambda: tracker(True), "the tracker to pause", timeout=60)
        assert paused["state"] == "paused"
        assert paused["schedule"]["cron"] == "0 * * * *"  # kept for when it runs again
        with get_client(sync_client=True) as prefect:
            resume(prefect)
        resumed = wait_until(lambda: tracker(False), "the tracker to resume", timeout=60)
        assert resumed["state"] == "new"
        # The clock restarted: the next run is due after the resume, not before the pause.
        assert resumed["next_expected_at"] > resumed["state_changed_at"]
    flips = live_server.flips(resumed["id"])
    assert [f["new_state"] for f in flips if f["new_state"] in ("late", "down")] == []


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
    watcher.wait_for_line("Prefect API unreachable")
    prefect_api.start()
    # Run at once: the run may end before the watcher is back (it retries every 2 s); then
    # only the backfill from its cursor finds it.
    assert watched.watched_after_restart() == "ok"
    [run] = wait_for_runs(live_server, "watched-after-restart", 1, timeout=120)
    assert run["status"] == "success"
    time.sleep(DELAY + 2)
    assert len(live_server.runs("watched-after-restart")) == 1
    assert len(live_server.runs("watched-plain")) == 1
