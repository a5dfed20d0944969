"""The run status sensors, evaluated by Dagster's own tick code (``evaluate_tick``) on real runs
in a temporary ``DAGSTER_HOME``, against the real reference server over HTTP."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from dagster import (
    DagsterInstance,
    DefaultScheduleStatus,
    Definitions,
    EnvVar,
    RunStatusSensorDefinition,
    ScheduleDefinition,
    SensorDefinition,
    build_sensor_context,
)

from telemhq_plugins.core import Client
from telemhq_plugins.core.provision import PAUSED_TAG
from telemhq_plugins.dagster import TelemHQResource, _links, telemhq_sensors
from tests.dagster import jobs
from tests.dagster.conftest import Stored
from tests.kit import breaking_core

ROOT = Path(__file__).resolve().parents[2]
SENSORS = telemhq_sensors(monitor_all_code_locations=True, send_start=True)


def definitions(**extra: Any) -> Definitions:
    return Definitions(jobs=[jobs.plain_job, jobs.broken, jobs.flaky_job], sensors=SENSORS, **extra)


class Ticks:
    """One sensor ticked as the daemon does: its cursor carried from tick to tick."""

    def __init__(self, defs: Definitions, name: str, instance: DagsterInstance) -> None:
        self.repo = defs.get_repository_def()
        self.sensor: SensorDefinition = self.repo.get_sensor_def(name)
        self.instance = instance
        self.cursor: str | None = None

    def tick(self) -> Any:
        context = build_sensor_context(
            instance=self.instance, cursor=self.cursor, repository_def=self.repo
        )
        data = self.sensor.evaluate_tick(context)
        if isinstance(self.sensor, RunStatusSensorDefinition):
            assert data.cursor is not None  # Dagster's, moved by Dagster
        self.cursor = data.cursor
        return data


def test_defaults() -> None:
    names = [s.name for s in telemhq_sensors()]
    assert names == [
        "telemhq_run_success",
        "telemhq_run_failure",
        "telemhq_run_canceled",
        "telemhq_schedules",
    ]
    for sensor in telemhq_sensors():
        assert sensor.default_status.value == "RUNNING"
        assert sensor.minimum_interval_seconds == 30


def test_one_ping_per_run_and_nothing_twice(
    server: Stored, client: Client, instance: DagsterInstance
) -> None:
    ticks = Ticks(definitions(), "telemhq_run_success", instance)
    before = jobs.plain_job.execute_in_process(instance=instance)
    ticks.tick()  # the first tick only sets the cursor: ``before`` is not reported

    first = jobs.plain_job.execute_in_process(instance=instance)
    second = jobs.plain_job.execute_in_process(instance=instance)
    ticks.tick()
    (one,) = server.wait("plain_job", 1, first.run_id)
    (two,) = server.wait("plain_job", 1, second.run_id)
    record = instance.get_run_record_by_id(first.run_id)
    assert record is not None
    assert record.start_time is not None
    assert record.end_time is not None
    assert one["status"] == "success"
    assert one["job"] == "plain_job"
    assert one["orchestrator"] == "dagster"
    assert one["duration"] == pytest.approx((record.end_time - record.start_time) * 1000, abs=1)
    assert one["dagster"]["run_id"] == first.run_id
    assert two["status"] == "success"

    ticks.tick()  # nothing new: nothing sent
    assert client.flush()
    assert len(server.runs("plain_job", first.run_id)) == 1
    assert len(server.runs("plain_job", second.run_id)) == 1
    assert server.runs("plain_job", before.run_id) == []


def test_failure_names_the_step_and_the_users_error(
    server: Stored, client: Client, instance: DagsterInstance
) -> None:
    ticks = Ticks(definitions(), "telemhq_run_failure", instance)
    ticks.tick()
    result = jobs.broken.execute_in_process(instance=instance, raise_on_error=False)
    ticks.tick()
    (ping,) = server.wait("broken", 1, result.run_id)
    assert ping["status"] == "failure"
    assert ping["error"]["type"] == "LoadError"
    assert ping["error"]["message"] == "step explode failed: warehouse refused the batch"
    assert ping["dagster"]["failed_steps"] == ["explode"]
    assert ping["duration"] >= 0


def test_the_run_links_to_dagsters_ui_when_the_process_knows_its_address(
    server: Stored, client: Client, instance: DagsterInstance, monkeypatch: pytest.MonkeyPatch
) -> None:
    ticks = Ticks(definitions(), "telemhq_run_success", instance)
    ticks.tick()
    monkeypatch.setenv("TELEMHQ_DAGSTER_UI_URL", "https://dagster.example.com/")
    _links.base_url.cache_clear()  # read once per process: forgotten around this test
    try:
        linked = jobs.plain_job.execute_in_process(instance=instance)
        ticks.tick()
        monkeypatch.delenv("TELEMHQ_DAGSTER_UI_URL")
        _links.base_url.cache_clear()
        plain = jobs.plain_job.execute_in_process(instance=instance)
        ticks.tick()
    finally:
        _links.base_url.cache_clear()
    (ping,) = server.wait("plain_job", 1, linked.run_id)
    assert ping["dagster"]["ui_url"] == f"https://dagster.example.com/runs/{linked.run_id}"
    (other,) = server.wait("plain_job", 1, plain.run_id)
    assert "ui_url" not in other["dagster"]  # no address known: no link


def test_send_start_sensor_sends_start(
    server: Stored, client: Client, instance: DagsterInstance
) -> None:
    started = Ticks(definitions(), "telemhq_run_started", instance)
    ended = Ticks(definitions(), "telemhq_run_success", instance)
    started.tick()
    ended.tick()
    result = jobs.plain_job.execute_in_process(instance=instance)
    started.tick()
    ended.tick()
    pings = server.wait("plain_job", 2, result.run_id)
    assert [p["status"] for p in pings] == ["start", "success"]


def test_a_broken_core_never_breaks_the_tick(
    server: Stored, client: Client, instance: DagsterInstance
) -> None:
    ticks = Ticks(definitions(), "telemhq_run_failure", instance)
    ticks.tick()
    result = jobs.broken.execute_in_process(instance=instance, raise_on_error=False)
    with breaking_core() as reached:
        data = ticks.tick()
    assert reached == ["broken"]
    assert data.run_requests == []
    assert data.dagster_run_reactions is not None
    assert all(r.error is None for r in data.dagster_run_reactions)
    assert result.run_id in {r.dagster_run.run_id for r in data.dagster_run_reactions}


def test_schedules_reach_the_server(
    server: Stored, instance: DagsterInstance, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TELEMHQ_DAGSTER_TEST_API_KEY", server.live.api_key)
    defs = definitions(
        schedules=[
            ScheduleDefinition(
                name="nightly",
                job=jobs.plain_job,
                cron_schedule="0 3 * * *",
                execution_timezone="Europe/Paris",
                default_status=DefaultScheduleStatus.RUNNING,
            ),
            ScheduleDefinition(
                name="twice_a_day",
                job=jobs.broken,
                cron_schedule=["0 1 * * *", "0 13 * * *"],
                default_status=DefaultScheduleStatus.RUNNING,
            ),
            ScheduleDefinition(name="stopped", job=jobs.flaky_job, cron_schedule="*/5 * * * *"),
        ],
        resources={
            "telemhq": TelemHQResource(
                base_url=server.base_url,
                ping_key=server.ping_key,
                api_key=EnvVar("TELEMHQ_DAGSTER_TEST_API_KEY"),
                timeout=2.0,
            )
        },
    )
    Ticks(defs, "telemhq_schedules", instance).tick()
    deadline = time.monotonic() + 30
    while True:
        found = {job: server.tracker(job) for job in ("plain_job", "broken", "flaky_job")}
        synced = [t for t in found.values() if t and t["schedule"]["kind"] == "cron"]
        paused = found["flaky_job"] is not None and found["flaky_job"]["paused"]
        if (len(synced) == 3 and paused) or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    plain, broken, flaky = found["plain_job"], found["broken"], found["flaky_job"]
    assert plain is not None
    assert broken is not None
    assert flaky is not None
    assert plain["schedule"] == {
        "kind": "cron",
        "cron": "0 3 * * *",
        "timezone": "Europe/Paris",
        "grace_seconds": 300,
    }
    assert broken["schedule"]["cron"] == "0 1,13 * * *"
    assert broken["schedule"]["timezone"] == "UTC"
    # A stopped schedule pauses its job's tracker, which keeps the cron for when it runs again.
    assert (flaky["paused"], flaky["schedule"]["cron"]) == (True, "*/5 * * * *")
    assert PAUSED_TAG in flaky["tags"]
    assert plain["paused"] is False
    assert "dagster" in plain["tags"]


def test_a_run_that_dies_outside_any_step_and_a_canceled_run(
    server: Stored, client: Client, instance: DagsterInstance
) -> None:
    """What Dagster's run monitoring reports for a crashed run worker (a failure with no step
    failure), and a termination: the sensors are the only place these are seen."""
    failed = Ticks(definitions(), "telemhq_run_failure", instance)
    canceled = Ticks(definitions(), "telemhq_run_canceled", instance)
    failed.tick()
    canceled.tick()
    crashed = instance.create_run_for_job(jobs.flaky_job)
    instance.report_run_failed(crashed, message="run worker exited unexpectedly")
    stopped = instance.create_run_for_job(jobs.flaky_job)
    instance.report_run_canceled(stopped, message="terminated from the UI")
    failed.tick()
    canceled.tick()
    (crash,) = server.wait("flaky_job", 1, crashed.run_id)
    assert crash["status"] == "failure"
    assert crash["error"]["message"] == "run worker exited unexpectedly"
    assert "failed_steps" not in crash["dagster"]
    (stop,) = server.wait("flaky_job", 1, stopped.run_id)
    assert stop["status"] == "cancelled"


def dagster_cli(home: str, *args: str) -> None:
    """``dagster ARGS`` on the instance in ``home``, for the code location in schedule_defs."""
    done = subprocess.run(
        [
            str(Path(sys.executable).with_name("dagster")),
            *args,
            "-m",
            "tests.dagster.schedule_defs",
        ],
        env={**os.environ, "DAGSTER_HOME": home},
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr


@pytest.mark.slow
def test_a_stopped_schedule_pauses_its_tracker_and_starting_it_resumes_it(
    server: Stored, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TELEMHQ_DAGSTER_TEST_BASE_URL", server.base_url)
    monkeypatch.setenv("TELEMHQ_DAGSTER_TEST_PING_KEY", server.ping_key)
    monkeypatch.setenv("TELEMHQ_DAGSTER_TEST_API_KEY", server.live.api_key)
    home = str(tmp_path)
    (tmp_path / "dagster.yaml").write_text("")
    from tests.dagster.schedule_defs import defs

    def synced(paused: bool) -> dict[str, Any]:
        with DagsterInstance.from_config(home) as instance:
            Ticks(defs, "telemhq_schedules", instance).tick()
        deadline = time.monotonic() + 30
        while True:
            found = server.tracker("hourly_job")
            if (found and found["paused"] is paused) or time.monotonic() > deadline:
                assert found is not None
                assert found["paused"] is paused, found
                return found
            time.sleep(0.1)

    running = synced(False)
    assert running["schedule"]["cron"] == "0 * * * *"
    server.live.ping(running)  # pinged before the pause: a clock to restart
    dagster_cli(home, "schedule", "stop", "pausable")
    paused = synced(True)
    assert (paused["state"], paused["schedule"]["cron"]) == ("paused", "0 * * * *")
    dagster_cli(home, "schedule", "start", "pausable")
    resumed = synced(False)
    assert resumed["state"] == "new"
    # The clock restarted: the next run is due after the resume, not before the pause.
    assert resumed["next_expected_at"] > resumed["state_changed_at"]
