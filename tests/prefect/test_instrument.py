"""Instrument-all: through Prefect's plugin switch in a fresh process, and ``instrument()`` /
``uninstrument()`` in this one (Prefect's engines put back exactly as they were)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from prefect import flow, task
from prefect.flow_engine import AsyncFlowRunEngine, FlowRunEngine
from prefect.task_engine import AsyncTaskRunEngine, SyncTaskRunEngine

import telemhq_plugins
from telemhq_plugins.core import Client
from telemhq_plugins.prefect import PrefectInstrumentor, hooks, instrument, uninstrument
from tests.kit import assert_one_ping_per_event, statuses_oldest_first, wait_for_runs
from tests.live_server import LiveServer
from tests.prefect import auto_flows
from tests.prefect.conftest import telemhq_env

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("prefect_api")]

ENGINES = (FlowRunEngine, AsyncFlowRunEngine, SyncTaskRunEngine, AsyncTaskRunEngine)


def test_the_plugin_switch_instruments_flows_tasks_and_subflows(
    live_server: LiveServer, ping_key: str
) -> None:
    env = telemhq_env(live_server, ping_key)
    env.update(PREFECT_PLUGINS_ENABLED="1", TELEMHQ_PREFECT_AUTO="1", TELEMHQ_PREFECT_TASKS="1")
    proc = subprocess.run(
        [sys.executable, str(Path(auto_flows.__file__))],
        env=env,
        capture_output=True,
        timeout=180,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr.decode()[-3000:]
    [parent] = wait_for_runs(live_server, "auto-parent", 1)
    assert parent["status"] == "success"
    assert parent["payload"]["records_processed"] == 7
    [child] = wait_for_runs(live_server, "auto-child", 1)
    assert child["status"] == "success"
    assert child["payload"]["prefect"]["flow_name"] == "auto-child"
    [in_child] = wait_for_runs(live_server, "auto-child-transform", 1)
    assert in_child["payload"]["rows_transformed"] == 3
    [in_parent] = wait_for_runs(live_server, "auto-parent-transform", 1)
    assert in_parent["payload"]["rows_transformed"] == 1
    # Prefect's own task run that tracks the subflow in the parent is not a task of ours.
    assert live_server.api("GET", "/trackers/auto-parent-auto-child").status_code == 404
    # Explicit hooks and instrument-all on one flow (and its with_options copy): one ping each.
    for slug in ("auto-explicit", "auto-explicit-explicit-task", "auto-explicit-copy"):
        runs = wait_for_runs(live_server, slug, 1)
        assert statuses_oldest_first(runs) == ["success"], slug
        assert_one_ping_per_event(runs)


def test_without_the_switch_nothing_is_instrumented(live_server: LiveServer, ping_key: str) -> None:
    env = telemhq_env(live_server, ping_key)
    env.update(PREFECT_PLUGINS_ENABLED="1")
    code = (
        "import prefect\n"
        "from telemhq_plugins.prefect import PrefectInstrumentor\n"
        "print(PrefectInstrumentor().is_instrumented)\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, timeout=120, check=False
    )
    assert proc.stdout.decode().strip() == "False", proc.stderr.decode()[-2000:]


def test_instrument_then_uninstrument_restores_prefects_engines(
    live_server: LiveServer, client: Client
) -> None:
    originals = [engine.__dict__["call_hooks"] for engine in ENGINES]

    @task(name="inproc-task")
    def inproc_task() -> int:
        return 2

    @flow(name="inproc-flow")
    def inproc_flow() -> int:
        return inproc_task()

    assert instrument(tasks=True) is True
    try:
        assert instrument(tasks=True) is False  # already on: changes nothing
        assert all(
            engine.__dict__["call_hooks"] is not original
            for engine, original in zip(ENGINES, originals, strict=True)
        )
        assert inproc_flow() == 2
    finally:
        assert uninstrument() is True
    assert [engine.__dict__["call_hooks"] for engine in ENGINES] == originals
    assert not PrefectInstrumentor().is_instrumented
    assert statuses_oldest_first(wait_for_runs(live_server, "inproc-flow", 1)) == ["success"]
    in_flow = wait_for_runs(live_server, "inproc-flow-inproc-task", 1)
    assert statuses_oldest_first(in_flow) == ["success"]
    # Off again: a second run pings nothing.
    assert inproc_flow() == 2
    client.flush()
    assert len(live_server.runs("inproc-flow")) == 1

    # Flows with explicit hooks still reach their run from report() after uninstrument().
    @flow(name="inproc-hooked", **hooks())
    def hooked() -> None:
        telemhq_plugins.report(records_processed=5)

    hooked()
    [run] = wait_for_runs(live_server, "inproc-hooked", 1)
    assert run["payload"]["records_processed"] == 5


def test_include_and_exclude_globs_choose_the_jobs(live_server: LiveServer, client: Client) -> None:
    @task(name="noisy")
    def noisy() -> int:
        return 1

    @flow(name="policy-kept")
    def kept() -> int:
        return noisy()

    @flow(name="policy-skipped")
    def skipped() -> int:
        return 2

    assert instrument(tasks=True, exclude=["policy-skipped", "*.noisy"]) is True
    try:
        assert kept() == 1
        assert skipped() == 2
    finally:
        uninstrument()
    assert statuses_oldest_first(wait_for_runs(live_server, "policy-kept", 1)) == ["success"]
    client.flush()
    assert live_server.api("GET", "/trackers/policy-skipped").status_code == 404
    assert live_server.api("GET", "/trackers/policy-kept-noisy").status_code == 404
