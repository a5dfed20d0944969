"""The step hooks on real Dagster runs (``execute_in_process`` and asset jobs) against the real
reference server over HTTP."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest
from dagster import (
    DagsterEventType,
    DagsterInstance,
    Definitions,
    job,
    materialize,
    op,
)

from telemhq_plugins.core import Client, set_client
from telemhq_plugins.dagster import _compat, telemhq_hooks
from tests.dagster import jobs
from tests.dagster.conftest import Stored
from tests.kit import assert_one_ping_per_event, breaking_core, client_for, dead_endpoint


def hook_errors(result: Any) -> list[Any]:
    return [e for e in result.all_events if e.event_type == DagsterEventType.HOOK_ERRORED]


def test_success_carries_report_and_numeric_metadata(
    server: Stored, client: Client, instance: DagsterInstance
) -> None:
    result = jobs.plain_job.execute_in_process(instance=instance)
    assert result.success
    run_id = result.run_id

    (extract,) = server.wait("plain_job.extract", 1, f"{run_id}:extract")
    assert extract["status"] == "success"
    assert extract["orchestrator"] == "dagster"
    assert extract["job"] == "plain_job.extract"
    assert extract["attempt"] == 1
    assert extract["records_processed"] == 450  # report() inside the op
    assert extract["source"] == "orders"
    assert extract["rows"] == 450  # numeric output metadata
    assert extract["ratio"] == 0.25
    assert "label" not in extract  # text metadata is not a metric
    assert extract["duration"] >= 0
    block = extract["dagster"]
    assert block["run_id"] == run_id
    assert block["job_name"] == "plain_job"
    assert block["op"] == "extract"
    assert block["step_key"] == "extract"
    assert block["attempt"] == 1
    assert "partition_key" not in block

    (load,) = server.wait("plain_job.load", 1, f"{run_id}:load")
    assert load["status"] == "success"
    assert "records_processed" not in load  # report() reached only its own step


def test_failure_names_the_users_error(
    server: Stored, client: Client, instance: DagsterInstance
) -> None:
    result = jobs.broken.execute_in_process(instance=instance, raise_on_error=False)
    assert not result.success
    assert not hook_errors(result)

    (ping,) = server.wait("broken.explode", 1, f"{result.run_id}:explode")
    assert ping["status"] == "failure"
    assert ping["error"]["type"] == "LoadError"
    assert ping["error"]["message"] == "warehouse refused the batch"
    assert "warehouse refused the batch" in ping["error"]["traceback"]
    assert ping["duration"] >= 0


def test_retry_policy_reports_retry_then_success(
    server: Stored,
    client: Client,
    instance: DagsterInstance,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("TELEMHQ_TEST_MARKER", str(tmp_path))
    result = jobs.flaky_job.execute_in_process(instance=instance)
    assert result.success

    pings = server.wait("flaky_job.sometimes", 2, f"{result.run_id}:sometimes")
    assert [(p["status"], p["attempt"]) for p in pings] == [("retry", 1), ("success", 2)]
    assert pings[0]["error"]["type"] == "ConnectionError"
    assert pings[0]["error"]["message"] == "upstream timed out"
    assert pings[1]["dagster"]["attempt"] == 2
    tracker = server.tracker("flaky_job.sometimes")
    assert tracker is not None
    assert tracker["state"] == "up"
    assert all(flip["new_state"] != "down" for flip in server.live.flips(tracker["id"]))


def test_partitioned_asset_job_carries_the_partition_key(
    server: Stored, client: Client, instance: DagsterInstance
) -> None:
    defs = Definitions(assets=[jobs.rows], jobs=[jobs.assets_job])
    result = defs.resolve_job_def("assets_job").execute_in_process(
        instance=instance, partition_key="b"
    )
    assert result.success

    (ping,) = server.wait("assets_job.warehouse/rows", 1, f"{result.run_id}:warehouse__rows")
    assert ping["status"] == "success"
    assert ping["row_count"] == 12  # MaterializeResult metadata
    assert ping["partition_seen"] == 1  # report() inside an asset
    block = ping["dagster"]
    assert block["partition_key"] == "b"
    assert block["asset_key"] == "warehouse/rows"
    assert block["tags"]["dagster/partition"] == "b"


def test_materialize_names_the_step_by_its_asset_key(
    server: Stored, client: Client, instance: DagsterInstance
) -> None:
    result = materialize([jobs.counted], instance=instance)
    assert result.success
    (ping,) = server.wait("counted", 1, f"{result.run_id}:counted")
    assert ping["job"] == "counted"
    assert ping["n"] == 3
    assert ping["dagster"]["job_name"] == "__ephemeral_asset_job__"


def test_endpoint_down_same_outcome_bounded_time(
    server: Stored, instance: DagsterInstance, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TELEMHQ_TEST_MARKER", str(tmp_path))
    dead = client_for(server.live, base_url=dead_endpoint(), ping_key="k" * 22, flush_timeout=2.0)
    previous = set_client(dead)
    try:
        assert jobs.plain_job.execute_in_process(instance=instance).success
        assert jobs.flaky_job.execute_in_process(instance=instance).success
        failed = jobs.broken.execute_in_process(instance=instance, raise_on_error=False)
        assert not failed.success
        assert not hook_errors(failed)
        started = time.monotonic()
        dead.close()  # what the process's exit does: flush within flush_timeout
        assert time.monotonic() - started < 2.0 + 1.5
    finally:
        set_client(previous)


def test_adapter_failing_never_fails_the_op(
    server: Stored, client: Client, instance: DagsterInstance
) -> None:
    with breaking_core() as reached:
        result = jobs.plain_job.execute_in_process(instance=instance)
        failed = jobs.broken.execute_in_process(instance=instance, raise_on_error=False)
    assert result.success
    assert result.output_for_node("extract") == 450
    assert not failed.success
    assert failed.failure_data_for_node("explode") is not None
    assert {"plain_job.extract", "plain_job.load", "broken.explode"} <= set(reached)
    assert not hook_errors(result)
    assert not hook_errors(failed)


def test_hooks_attached_twice_send_one_ping(
    server: Stored, client: Client, instance: DagsterInstance
) -> None:
    twice = jobs.plain_job.with_hooks(telemhq_hooks())  # the job's own hooks, and these
    result = twice.execute_in_process(instance=instance)
    assert result.success
    server.wait("plain_job.load", 1, f"{result.run_id}:load")
    client.flush()
    stored = server.runs("plain_job.extract", f"{result.run_id}:extract")
    assert len(stored) == 1
    assert_one_ping_per_event(server.runs("plain_job.load"))


def test_public_hooks_fallback_reports_success_and_failure(
    server: Stored, client: Client, instance: DagsterInstance, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(_compat, "RAW_HOOKS", False)
    fallback = telemhq_hooks()
    assert {h.name for h in fallback} == {"telemhq_step", "telemhq_step_failure"}
    ok = jobs.plain_job.graph.to_job(hooks=fallback).execute_in_process(instance=instance)
    bad = jobs.broken.graph.to_job(hooks=fallback).execute_in_process(
        instance=instance, raise_on_error=False
    )
    (success,) = server.wait("plain_job.extract", 1, f"{ok.run_id}:extract")
    assert success["status"] == "success"
    assert success["records_processed"] == 450
    (failure,) = server.wait("broken.explode", 1, f"{bad.run_id}:explode")
    assert failure["status"] == "failure"
    assert failure["error"]["type"] == "LoadError"


def test_exclude_globs_and_the_op_tag_opt_out(
    server: Stored, client: Client, instance: DagsterInstance
) -> None:
    @op(tags={"telemhq/enabled": "false"})
    def secret() -> int:
        return 1

    @op
    def public(value: int) -> int:
        return value

    @op
    def noisy(value: int) -> None:
        pass

    @job(hooks=telemhq_hooks(exclude=["*.noisy"]))
    def selective() -> None:
        noisy(public(secret()))

    result = selective.execute_in_process(instance=instance)
    assert result.success
    (ping,) = server.wait("selective.public", 1, f"{result.run_id}:public")
    assert ping["status"] == "success"
    assert client.flush()
    assert server.tracker("selective.secret") is None
    assert server.tracker("selective.noisy") is None
