"""A real ``celery worker`` subprocess with the prefork pool, instrumented by
``TELEMHQ_CELERY_AUTO=1`` alone: the child processes deliver from their own thread, and the
main process reports what kills a child (hard time limit, lost worker, terminate)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from celery import Celery

from tests.celery.conftest import close_app
from tests.celery.server import TelemHQ
from tests.celery.tasks import configure, register

pytestmark = pytest.mark.services
ROOT = Path(__file__).resolve().parents[2]
TIMEOUT = 60


class PreforkWorker:
    def __init__(self, app: Celery, tasks: dict[str, Any], proc: subprocess.Popen[bytes]) -> None:
        self.app, self.tasks, self.proc = app, tasks, proc
        #: every task id a test ran, checked once more after the worker has shut down.
        self.task_ids: list[str] = []

    def send(self, name: str, *args: Any, **options: Any) -> Any:
        result = self.tasks[name].apply_async(args, **options)
        self.task_ids.append(result.id)
        return result

    def active_pid(self, task_id: str) -> int:
        """The pid of the pool child running ``task_id`` (from the worker's own report)."""
        deadline = time.monotonic() + TIMEOUT
        while time.monotonic() < deadline:
            replies = self.app.control.inspect(timeout=1.0).active() or {}
            for active in replies.values():
                for task in active:
                    if task["id"] == task_id and task.get("worker_pid"):
                        return int(task["worker_pid"])
        raise AssertionError(f"task {task_id} never showed up as active")


@pytest.fixture(scope="module")
def prefork(
    redis_db: tuple[str, str], server: TelemHQ, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[PreforkWorker]:
    broker, prefix = redis_db
    prefix = f"{prefix}prefork-"  # its own namespace: the in-process worker never sees these
    folder = tmp_path_factory.mktemp("prefork")
    log = folder / "worker.log"
    trackers = folder / "trackers.json"
    trackers.write_text(json.dumps(dict(server.trackers_map)))
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith("TELEMHQ_") or key == "TELEMHQ_REQUIRE_SERVICES"
    }
    env.update(
        PYTHONPATH=str(ROOT),
        TELEMHQ_CELERY_AUTO="1",
        TELEMHQ_BASE_URL=server.base_url,
        TELEMHQ_TOKEN=server.default_token,
        TELEMHQ_TRACKERS=str(trackers),
        TELEMHQ_TIMEOUT="2",
        TELEMHQ_MAX_RETRIES="1",
        TELEMHQ_CONFIG=os.devnull,
        TELEMHQ_TEST_BROKER=broker,
        TELEMHQ_TEST_PREFIX=prefix,
        TELEMHQ_TEST_SPECIAL_TOKEN=server.special_token,
    )
    command = [
        sys.executable, "-m", "celery", "-A", "tests.celery.worker_app", "worker",
        "--pool=prefork", "--concurrency=2", "--loglevel=INFO",
        "--without-gossip", "--without-mingle", "--without-heartbeat",
    ]  # fmt: skip
    with log.open("wb") as out:
        proc = subprocess.Popen(command, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT)
    app = Celery("telemhq_tests_client", set_as_current=False)
    configure(app, broker, prefix)
    worker = PreforkWorker(app, register(app, server.special_token), proc)
    try:
        # Ready when it answers a task (a generous bound for a loaded 2-core machine).
        assert worker.tasks["add"].delay(0, 0).get(timeout=TIMEOUT) == 0, log.read_text()
        yield worker
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=TIMEOUT)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        close_app(app)


def test_it_records_a_run_from_a_prefork_child(prefork: PreforkWorker, server: TelemHQ) -> None:
    result = prefork.send("add", 20, 22)
    assert result.get(timeout=TIMEOUT) == 42

    (run,) = server.wait_finals("tests.add", result.id)
    assert run.status == "success"
    assert run.body["records_processed"] == 42
    assert run.body["celery"]["task_id"] == result.id


def test_it_records_failure_for_a_hard_time_limit(prefork: PreforkWorker, server: TelemHQ) -> None:
    result = prefork.send("sleepy", 30, time_limit=1)

    start = server.wait_start("tests.sleepy", result.id)  # sent by the child
    (run,) = server.wait_finals("tests.sleepy", result.id)  # sent by the main process
    body = run.body
    assert run.status == "failure"
    assert body["job"] == "tests.sleepy"
    assert body["run_id"] == result.id == start.body["run_id"]
    assert body["error"]["type"] == "TimeLimitExceeded"
    assert body["duration"] == 1000.0  # the limit: how long the killed child ran
    assert body["celery"]["task_id"] == result.id
    assert server.tracker("tests.sleepy")["state"] == "failing"


def test_it_records_cancelled_when_a_running_task_is_terminated(
    prefork: PreforkWorker, server: TelemHQ
) -> None:
    result = prefork.send("sleepy", 30)
    server.wait_start("tests.sleepy", result.id)
    prefork.app.control.revoke(result.id, terminate=True, signal="SIGKILL")

    (run,) = server.wait_finals("tests.sleepy", result.id)
    assert run.status == "cancelled"
    assert run.body["celery"]["revoked"]["terminated"] is True
    assert run.body["duration"] > 0  # measured from when the worker accepted the task


def test_it_records_failure_when_the_child_is_lost(prefork: PreforkWorker, server: TelemHQ) -> None:
    result = prefork.send("sleepy", 30)
    server.wait_start("tests.sleepy", result.id)
    os.kill(prefork.active_pid(result.id), signal.SIGKILL)

    (run,) = server.wait_finals("tests.sleepy", result.id)
    assert run.status == "failure"
    assert run.body["error"]["type"] == "WorkerLostError"
    assert run.body["attempt"] == 1
    assert run.body["duration"] > 0


def test_it_flushes_and_exits_cleanly_at_warm_shutdown(
    prefork: PreforkWorker, server: TelemHQ
) -> None:
    results = [prefork.send("add", i, 1) for i in range(5)]
    assert [r.get(timeout=TIMEOUT) for r in results] == [1, 2, 3, 4, 5]
    prefork.proc.send_signal(signal.SIGTERM)
    assert prefork.proc.wait(timeout=TIMEOUT) == 0

    for result in results:
        assert [s.status for s in server.wait_finals("tests.add", result.id)] == ["success"]
    # Everything the worker (main process and children) had queued is out now: each run of
    # this module ended with exactly one final ping (no duplicate from the main process).
    for task_id in prefork.task_ids:
        finals = [
            s
            for job in ("tests.add", "tests.sleepy")
            for s in server.runs(job, task_id)
            if s.status != "start"
        ]
        assert len(finals) == 1, (task_id, [s.status for s in finals])
