"""The production path with a local agent: ``dagster-daemon run`` launches queued runs whose
steps the multiprocess executor runs each in its own process, the daemon and every step process
with ``TELEMHQ_AGENT`` naming the socket of a real ``telemhq agent``, which delivers to the
reference server.

A step process then hands its ping to the agent before it exits, and the sensor (in the
daemon's code location) hands the run's: every step's end and every run's reach the server
through the agent, which counted each.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from dagster import DagsterRunStatus

from tests.dagster.conftest import Stored
from tests.dagster.daemon import daemon_home, launch, running_daemon, wait_for_end
from tests.kit import AgentProcess, wait_for_agent_delivery

pytestmark = [pytest.mark.slow, pytest.mark.timeout(420)]


def test_step_processes_hand_their_pings_to_the_agent(
    server: Stored, local_agent: AgentProcess, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    env = daemon_home(tmp_path, server, {"TELEMHQ_AGENT": str(local_agent.socket)})
    with running_daemon(tmp_path, env, monkeypatch) as instance:
        launch(tmp_path, env, "plain_job")
        launch(tmp_path, env, "broken")
        runs = {run.job_name: run.run_id for run in instance.get_runs()}
        assert wait_for_end(instance, runs["plain_job"]) == DagsterRunStatus.SUCCESS
        assert wait_for_end(instance, runs["broken"]) == DagsterRunStatus.FAILURE

        # The runs' pings come from the daemon's sensor: waited for while it runs.
        plain, broken = runs["plain_job"], runs["broken"]
        (extract,) = server.wait("plain_job.extract", 1, f"{plain}:extract")
        (load,) = server.wait("plain_job.load", 1, f"{plain}:load")
        assert extract["status"] == load["status"] == "success"
        assert extract["records_processed"] == 450
        (explode,) = server.wait("broken.explode", 1, f"{broken}:explode")
        assert explode["status"] == "failure"
        assert explode["error"]["type"] == "LoadError"
        assert explode["error"]["message"] == "warehouse refused the batch"
        (plain_run,) = server.wait("plain_job", 1, plain, timeout=120)
        assert plain_run["status"] == "success"
        (broken_run,) = server.wait("broken", 1, broken, timeout=120)
        assert broken_run["status"] == "failure"

    # Every stored ping went through the agent: it acknowledged and delivered each.
    jobs = ("plain_job.extract", "plain_job.load", "broken.explode", "plain_job", "broken")
    total = sum(len(server.runs(job)) for job in jobs)
    assert total == 5
    status = wait_for_agent_delivery(local_agent, total)
    assert status["acked"] == status["delivered"] == total, status
    assert status["refused"] == 0, status
    assert status["spool_pings"] == 0, status
