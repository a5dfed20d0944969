"""The adapter against a real worker (solo pool, in a thread) on the real Redis broker,
delivering over real HTTP to the real reference server."""

from __future__ import annotations

import time
import uuid
from typing import Any

import pytest

from telemhq_plugins.celery import CeleryInstrumentor
from tests.celery.conftest import make_client
from tests.celery.server import TelemHQ
from tests.kit import dead_endpoint, process_client

pytestmark = [pytest.mark.services, pytest.mark.usefixtures("worker", "instrumented")]
RESULT_TIMEOUT = 60


def test_it_records_success_with_metrics_and_the_celery_block(
    tasks: dict[str, Any], server: TelemHQ
) -> None:
    result = tasks["add"].delay(2, 3)
    assert result.get(timeout=RESULT_TIMEOUT) == 5

    (run,) = server.wait_finals("tests.add", result.id)
    assert run.status == "success"
    assert run.passed is True
    body = run.body
    assert body["job"] == "tests.add"
    assert body["orchestrator"] == "celery"
    assert body["run_id"] == result.id
    assert body["attempt"] == 1
    assert body["records_processed"] == 5
    assert body["errors"] == 0
    assert body["duration"] >= 0
    celery = body["celery"]
    assert celery["task_id"] == result.id
    assert celery["root_id"] == result.id
    assert celery["parent_id"] is None
    assert celery["queue"].endswith("tasks")
    assert celery["retries"] == 0
    assert celery["hostname"]
    assert {"eta", "expires", "routing_key"} <= set(celery)
    assert server.tracker("tests.add")["state"] == "up"


def test_it_records_failure_with_the_error(tasks: dict[str, Any], server: TelemHQ) -> None:
    result = tasks["boom"].delay()
    with pytest.raises(ValueError, match="boom"):
        result.get(timeout=RESULT_TIMEOUT)

    (run,) = server.wait_finals("tests.boom", result.id)
    assert run.status == "failure"
    assert run.body["job"] == "tests.boom"
    assert run.body["error"]["type"] == "ValueError"
    assert run.body["error"]["message"] == "boom: the input was empty"
    assert "raise ValueError" in run.body["error"]["traceback"]
    assert server.tracker("tests.boom")["state"] == "failing"


def test_it_records_retry_then_success_under_one_run_id(
    tasks: dict[str, Any], server: TelemHQ
) -> None:
    result = tasks["flaky"].delay()
    assert result.get(timeout=RESULT_TIMEOUT) == "ok"

    retry, success = server.wait_finals("tests.flaky", result.id, count=2)
    assert retry.status == "retry"
    assert retry.body["attempt"] == 1
    assert retry.body["error"]["type"] == "RuntimeError"
    assert retry.body["error"]["message"] == "transient outage"
    assert success.status == "success"
    assert success.body["attempt"] == 2
    assert success.body["celery"]["retries"] == 1
    assert success.body["records_processed"] == 1
    assert retry.body["run_id"] == success.body["run_id"] == result.id
    assert retry.body["ping_id"] != success.body["ping_id"]
    # A retry is not a failure: the tracker never went failing.
    tracker = server.tracker("tests.flaky")
    assert tracker["state"] == "up"
    assert tracker["consecutive_failures"] == 0


def test_it_skips_a_task_that_opted_out(tasks: dict[str, Any], server: TelemHQ) -> None:
    quiet = tasks["quiet"].delay()
    marker = tasks["add"].delay(1, 1)  # the solo pool runs tasks in order
    assert quiet.get(timeout=RESULT_TIMEOUT) == "unmonitored"
    marker.get(timeout=RESULT_TIMEOUT)

    server.wait_finals("tests.add", marker.id)
    assert server.runs("tests.quiet") == []
    assert server.runs("default", quiet.id) == []


def test_it_sends_a_task_to_its_own_token(tasks: dict[str, Any], server: TelemHQ) -> None:
    result = tasks["tokened"].delay()
    result.get(timeout=RESULT_TIMEOUT)

    (run,) = server.wait_finals("special", result.id)
    assert run.status == "success"
    assert run.body["job"] == "tests.tokened"


def test_it_records_cancelled_for_a_revoked_task(
    celery_app: Any, tasks: dict[str, Any], server: TelemHQ
) -> None:
    task_id = str(uuid.uuid4())
    celery_app.control.revoke(task_id)
    # The revoke is a broadcast; wait until the worker holds it before sending the task.
    deadline = time.monotonic() + RESULT_TIMEOUT
    while time.monotonic() < deadline:
        replies = celery_app.control.inspect(timeout=1.0).revoked() or {}
        if any(task_id in ids for ids in replies.values()):
            break
    tasks["add"].apply_async((1, 2), task_id=task_id)

    (run,) = server.wait_finals("tests.add", task_id)
    assert run.status == "cancelled"
    assert run.body["job"] == "tests.add"
    assert run.body["celery"]["revoked"] == {
        "terminated": False,
        "signum": None,
        "expired": False,
    }


def test_it_records_skipped_for_an_ignored_task(tasks: dict[str, Any], server: TelemHQ) -> None:
    result = tasks["ignored"].delay()
    (run,) = server.wait_finals("tests.ignored", result.id)
    assert run.status == "skipped"
    assert run.body["job"] == "tests.ignored"


def test_it_keeps_tasks_running_when_the_endpoint_is_down(
    tasks: dict[str, Any], server: TelemHQ
) -> None:
    down = make_client(server, base_url=dead_endpoint(), trackers=(), max_retries=1)
    with process_client(down):
        results = [tasks["add"].delay(i, i) for i in range(3)]
        assert [r.get(timeout=RESULT_TIMEOUT) for r in results] == [0, 2, 4]
        # Every ping is accounted for as not delivered (failed, or dropped while the
        # client's circuit to the dead endpoint is open): none is lost silently.
        deadline = time.monotonic() + RESULT_TIMEOUT
        while down.failed + down.dropped < 3 and time.monotonic() < deadline:
            down.flush(1.0)
        assert down.failed + down.dropped == 3
        assert down.delivered == 0
    # The worker is unharmed: the next task is monitored as usual once the endpoint is back.
    after = tasks["add"].delay(5, 5)
    assert after.get(timeout=RESULT_TIMEOUT) == 10
    server.wait_finals("tests.add", after.id)
    for result in results:
        assert server.runs("tests.add", result.id) == []


def test_it_stops_recording_after_uninstrument(
    instrumented: CeleryInstrumentor, tasks: dict[str, Any], server: TelemHQ
) -> None:
    assert instrumented.uninstrument() is True
    assert instrumented.uninstrument() is False
    result = tasks["add"].delay(1, 1)
    result.get(timeout=RESULT_TIMEOUT)
    assert instrumented.instrument() is True  # back on: this marker is monitored again
    assert instrumented.instrument() is False
    marker = tasks["add"].delay(2, 2)
    marker.get(timeout=RESULT_TIMEOUT)
    server.wait_finals("tests.add", marker.id)
    assert server.runs("tests.add", result.id) == []


def test_a_task_running_when_instrumentation_starts_still_reports_its_success(
    tasks: dict[str, Any], server: TelemHQ, instrumented: CeleryInstrumentor
) -> None:
    instrumented.uninstrument()
    result = tasks["sleepy"].delay(1.5)
    time.sleep(0.5)  # running by now, unseen: no prerun reached the handlers
    instrumented.instrument()
    assert result.get(timeout=RESULT_TIMEOUT) == "slept"
    (run,) = server.wait_finals("tests.sleepy", result.id)
    assert run.status == "success"
    assert run.body["celery"]["task_id"] == result.id
    assert "duration" not in run.body  # no prerun: the start was not seen


def test_an_in_process_pool_stops_listening_for_received_tasks(
    tasks: dict[str, Any], instrumented: CeleryInstrumentor
) -> None:
    from celery import signals

    handlers = instrumented.handlers
    assert handlers is not None
    assert tasks["add"].delay(1, 1).get(timeout=RESULT_TIMEOUT) == 2
    # The solo pool runs prerun and the end in this process: nothing to remember from
    # task_received, so that signal no longer costs each task a dispatch.
    live = [r for _, r in signals.task_received.receivers]
    assert all(getattr(r, "__self__", None) is not handlers for r in live)
