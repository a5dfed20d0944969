"""Runs, ``report()``, ``@monitor`` and ``monitored()``: what the user API puts in the pings.

Delivery is exercised for real (over loopback) in test_delivery*.py and tests/e2e; here the
HTTP edge is an ``httpx.MockTransport`` so each test can read back exactly what was sent.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import logging
import time
from typing import Any

import pytest

import telemhq_plugins
from telemhq_plugins.core import runs as runs_module
from telemhq_plugins.core.delivery import set_client
from telemhq_plugins.core.payload import ErrorInfo, stable_ping_id
from telemhq_plugins.core.runs import (
    Run,
    Target,
    add_run_finder,
    current_run,
    remove_run_finder,
    resolve_target,
    start_run,
)
from tests.core.recording import Recorder


def test_it_sends_success_with_duration_and_reported_metrics(recorder: Recorder) -> None:
    @telemhq_plugins.monitor
    def sync_job() -> int:
        telemhq_plugins.report(records_processed=450, cost_usd=0.12)
        return 7

    assert sync_job() == 7
    [body] = recorder.bodies()
    assert body["status"] == "success"
    test_name = "test_it_sends_success_with_duration_and_reported_metrics"
    assert body["job"] == f"{__name__}.{test_name}.<locals>.sync_job"
    assert body["records_processed"] == 450
    assert body["cost_usd"] == 0.12
    assert body["duration"] >= 0
    assert recorder.requests[0][0] == "http://telemhq.test/ping/tok"


def test_it_sends_failure_with_the_error_and_reraises(recorder: Recorder) -> None:
    @telemhq_plugins.monitor(token="other", job="nightly")
    def broken() -> None:
        raise ValueError("0 rows loaded")

    with pytest.raises(ValueError, match="0 rows loaded"):
        broken()
    recorder.bodies()
    [(url, body)] = recorder.requests
    assert url == "http://telemhq.test/ping/other"
    assert body["status"] == "failure"
    assert body["job"] == "nightly"
    assert body["error"]["type"] == "ValueError"
    assert body["error"]["message"] == "0 rows loaded"
    assert "in broken" in body["error"]["traceback"]


def test_it_monitors_async_functions_and_blocks(recorder: Recorder) -> None:
    @telemhq_plugins.monitor(job="async-job", send_start=True)
    async def job() -> str:
        await asyncio.sleep(0)
        telemhq_plugins.report(eval_score=0.91)
        return "done"

    async def block() -> None:
        async with telemhq_plugins.monitored("async-block") as r:
            r.report(tokens=1200)

    assert asyncio.run(job()) == "done"
    asyncio.run(block())
    start, end, other = recorder.bodies()
    assert (start["status"], end["status"]) == ("start", "success")
    assert start["run_id"] == end["run_id"]
    assert start["ping_id"] != end["ping_id"]
    assert end["eval_score"] == 0.91
    assert (other["job"], other["tokens"]) == ("async-block", 1200)


def test_it_keeps_concurrent_runs_apart(recorder: Recorder) -> None:
    async def one(n: int) -> None:
        async with telemhq_plugins.monitored(f"job-{n}"):
            await asyncio.sleep(0.01 * (3 - n))
            telemhq_plugins.report(n=n)

    async def main() -> None:
        await asyncio.gather(*(one(n) for n in range(3)))

    asyncio.run(main())
    assert sorted((b["job"], b["n"]) for b in recorder.bodies()) == [
        ("job-0", 0),
        ("job-1", 1),
        ("job-2", 2),
    ]


def test_the_block_still_answers_to_its_first_name(recorder: Recorder) -> None:
    """``telemhq_plugins.run`` was the block's documented name before ``monitored``."""
    assert telemhq_plugins.run is telemhq_plugins.monitored
    with telemhq_plugins.run("first-name") as r:
        r.report(records_processed=3)
    [body] = recorder.bodies()
    assert (body["job"], body["status"], body["records_processed"]) == ("first-name", "success", 3)


def test_it_marks_cancellation_and_clean_system_exit(recorder: Recorder) -> None:
    with pytest.raises(KeyboardInterrupt), telemhq_plugins.monitored("interrupted"):
        raise KeyboardInterrupt
    with pytest.raises(SystemExit), telemhq_plugins.monitored("exits"):
        raise SystemExit(0)
    interrupted, exits = recorder.bodies()
    assert interrupted["status"] == "cancelled"
    assert exits["status"] == "success"
    assert "error" not in exits


def test_it_finishes_a_run_once_and_unbinds_it(recorder: Recorder) -> None:
    current = start_run("adapter.task", orchestrator="celery", context={"celery": {"id": "t1"}})
    assert current_run() is current
    current.report(records_processed=3)
    assert current.finish("retry", attempt_note="will retry") is True
    assert current.finish("failure") is False
    current.report(records_processed=99)  # too late: the ping may be on its way
    assert current_run() is None
    [body] = recorder.bodies()
    assert body["status"] == "retry"
    assert body["orchestrator"] == "celery"
    assert body["celery"] == {"id": "t1"}
    assert body["records_processed"] == 3
    assert body["attempt_note"] == "will retry"


def test_a_finished_run_is_built_into_its_ping_by_delivery(recorder: Recorder) -> None:
    url = "http://telemhq.test/ping/tok"
    current = Run("etl", url=url, client=recorder.client, run_id="r1", attempt=2, context={"c": 1})
    try:
        raise ValueError("bad row")
    except ValueError as exc:
        current.finish("failure", error=exc, duration_ms=12.5, note="x")
    ping = current.to_ping()
    assert (ping.status, ping.job, ping.run_id, ping.attempt) == ("failure", "etl", "r1", 2)
    assert ping.duration == 12.5
    assert ping.fields == {"c": 1, "note": "x"}
    assert ping.error is not None
    assert ping.error.type == "ValueError"
    assert ping.error.traceback is not None
    assert "bad row" in ping.error.traceback
    assert ping.finished_at is not None
    assert ping.started_at is not None
    assert ping.started_at <= ping.finished_at
    [body] = recorder.bodies()
    assert body["error"]["message"] == "bad row"
    assert body["ping_id"] != body["run_id"]


def test_the_orchestrator_object_is_sent_under_the_orchestrator_name(recorder: Recorder) -> None:
    url = "http://telemhq.test/ping/tok"
    block = {"task_id": "t1", "retries": 0}
    current = Run(
        "etl",
        url=url,
        client=recorder.client,
        orchestrator="celery",
        context={"c": 1},
        details=block,
    )
    current.report(records_processed=3, c=2)  # metrics win over context
    current.finish("success")
    [body] = recorder.bodies()
    assert body["celery"] == block
    assert (body["c"], body["records_processed"]) == (2, 3)


def test_a_ping_made_for_plugin_hooks_has_fields_of_its_own(recorder: Recorder) -> None:
    # A run with no context, details or metrics shares one empty dict for its fields: a
    # plugin hook that adds a field to its ping must not add it to every later ping.
    url = "http://telemhq.test/ping/tok"
    first = Run("etl", url=url, client=recorder.client)
    first.finish("success")
    first.to_ping().fields["team"] = "data"
    second = Run("etl", url=url, client=recorder.client)
    second.finish("success")
    assert second.to_ping().fields == {}
    assert all("team" not in body for body in recorder.bodies())


def test_a_run_built_bound_is_current_until_it_finishes(recorder: Recorder) -> None:
    url = "http://telemhq.test/ping/tok"
    current = Run("adapter.task", url=url, client=recorder.client, run_id="t9", bind=True)
    telemhq_plugins.report(records_processed=7)
    assert current_run() is current
    current.finish("success")
    assert current_run() is None
    [body] = recorder.bodies()
    assert body["run_id"] == "t9"
    assert body["records_processed"] == 7
    assert body["duration"] >= 0


def test_it_ignores_report_outside_a_run(
    recorder: Recorder, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="telemhq")
    telemhq_plugins.report(records_processed=1)
    assert recorder.bodies() == []


@pytest.mark.parametrize("options", [{"disabled": True}, {"token": None}])
def test_it_is_inert_when_disabled_or_unconfigured(options: dict[str, Any]) -> None:
    rec = Recorder(**options)
    previous = set_client(rec.client)
    try:
        with telemhq_plugins.monitored("quiet") as block:
            telemhq_plugins.report(records_processed=1)
        current = start_run("quiet-job")
        assert not current.active
        assert not block.active
        assert current.finish() is False
    finally:
        set_client(previous)
    assert rec.bodies() == []


def test_it_resolves_a_jobs_target_once_for_many_runs() -> None:
    rec = Recorder(send_start=True)
    target = resolve_target("etl.load", token="tok-1", client=rec.client)
    assert target == Target(f"{rec.client.settings.base_url}/ping/tok-1", True, rec.client)
    quiet = resolve_target("etl.load", token="tok-1", send_start=False, client=rec.client)
    assert quiet is not None
    assert quiet.send_start is False
    assert resolve_target("etl.load", client=Recorder(token=None).client) is None
    assert resolve_target("etl.load", token="t", client=Recorder(disabled=True).client) is None


def test_a_target_builds_the_runs_of_its_job(recorder: Recorder) -> None:
    target = resolve_target("etl.load", token="tok-1", client=recorder.client)
    assert target is not None
    timed = target.run("etl.load", orchestrator="acme", run_id="r-1", attempt=2, details={"a": 1})
    started = dt.datetime(2026, 1, 2, 3, 4, 5, tzinfo=dt.UTC)
    late = target.run("etl.load", orchestrator="acme", timed=False, started_at=started)
    assert timed.finish("success")
    assert late.finish("failure", duration_ms=1500.0)
    first, second = recorder.bodies()
    assert recorder.requests[0][0] == f"{recorder.client.settings.base_url}/ping/tok-1"
    assert first["job"] == "etl.load"
    assert first["orchestrator"] == "acme"
    assert first["run_id"] == "r-1"
    assert first["attempt"] == 2
    assert first["acme"] == {"a": 1}
    assert first["duration"] >= 0
    assert "started_at" in first
    assert second["started_at"] == "2026-01-02T03:04:05Z"
    assert second["duration"] == 1500.0
    assert second["run_id"]  # a new one


def test_a_run_whose_start_was_not_seen_sends_no_made_up_times(recorder: Recorder) -> None:
    url = "http://telemhq.test/ping/tok"
    late = Run("adapter.task", url=url, client=recorder.client, timed=False)
    time.sleep(0.01)
    late.finish("success")
    given = Run("adapter.task", url=url, client=recorder.client, timed=False)
    given.finish("failure", duration_ms=250.0)
    untimed, with_duration = recorder.bodies()
    assert "duration" not in untimed
    assert "started_at" not in untimed
    assert "finished_at" in untimed
    assert with_duration["duration"] == 250.0


def test_a_finished_run_encodes_the_body_its_ping_would_have(recorder: Recorder) -> None:
    """Delivery without hooks encodes a run straight to bytes; with hooks it builds the Ping:
    both give the same body (the ping id aside), the slow path for odd or huge values too."""
    url = "http://telemhq.test/ping/tok"
    for extra in ({}, {"blob": "x" * 100_000, "odd": float("nan"), "when": dt.date(2026, 1, 2)}):
        current = Run("etl", url=url, client=recorder.client, attempt=1, context={"c": {"k": 1}})
        current.report(records_processed=5, **extra)
        current.finish("failure", error=ErrorInfo("E", "boom", "tb"))
        ping_id, body = current.encode()
        twin = current.to_ping()
        twin.ping_id = ping_id
        assert body == twin.to_json()
        decoded = json.loads(body)
        assert decoded["ping_id"] == ping_id
        assert decoded["records_processed"] == 5
        assert decoded["c"] == {"k": 1}
        assert decoded["error"]["type"] == "E"
        if extra:
            assert "chars cut" in decoded["blob"]  # too big for the fast path: converted
            assert decoded["odd"] is None
            assert decoded["when"] == "2026-01-02"


def test_an_adapters_run_finder_answers_when_no_run_is_bound(
    recorder: Recorder, caplog: pytest.LogCaptureFixture
) -> None:
    url = "http://telemhq.test/ping/tok"
    found = Run("adapter.task", url=url, client=recorder.client)

    def broken() -> Run | None:
        raise RuntimeError("finder bug")

    add_run_finder(broken)
    add_run_finder(lambda: found)
    try:
        telemhq_plugins.report(rows=1)  # the broken finder is skipped, logged once
        assert current_run() is found
        with telemhq_plugins.monitored("inner") as inner:  # a bound run comes first
            assert current_run() is inner
        found.finish("success")
    finally:
        remove_run_finder(broken)
        for finder in list(runs_module._finders):
            remove_run_finder(finder)
    assert current_run() is None
    bodies = {b["job"]: b for b in recorder.bodies()}
    assert bodies["adapter.task"]["rows"] == 1
    assert "run finder" in caplog.text


def test_a_run_sends_the_ping_ids_its_adapter_derives(recorder: Recorder) -> None:
    """Two reporters of one event (in-process hooks, a watcher of the orchestrator's API) derive
    the same ping id from (run id, attempt, status), and the server keeps one run per id."""
    url = "http://telemhq.test/ping/tok"
    first = Run("etl", url=url, client=recorder.client, run_id="r1", attempt=1)
    first.start(ping_id=stable_ping_id("r1", 1, "start"))
    first.finish("retry", ping_id=stable_ping_id("r1", 1, "retry"))
    second = Run("etl", url=url, client=recorder.client, run_id="r1", attempt=2)
    second.finish("success", ping_id=stable_ping_id("r1", 2, "success"))
    drawn = Run("etl", url=url, client=recorder.client, run_id="r1", attempt=2)
    drawn.finish("success")
    start, retry, success, other = recorder.bodies()
    assert start["ping_id"] == stable_ping_id("r1", 1, "start")
    assert retry["ping_id"] == stable_ping_id("r1", 1, "retry") == first.to_ping().ping_id
    assert success["ping_id"] == stable_ping_id("r1", 2, "success")
    assert other["ping_id"] not in {start["ping_id"], retry["ping_id"], success["ping_id"]}
    ids = {stable_ping_id(r, a, s) for r in ("r1", "r2") for a in (1, 2) for s in ("a", "b")}
    assert len(ids) == 8
    assert stable_ping_id("r1", None, "success") != stable_ping_id("r1", 1, "success")
