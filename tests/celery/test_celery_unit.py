"""The adapter's own decisions, with tasks run eagerly (``task.apply()``: Celery's real tracer
and signals, in this thread) and pings delivered to the real reference server."""

from __future__ import annotations

import importlib.metadata
import os
import subprocess
import sys
import threading
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest
from celery import Celery, signals
from celery.app.task import Context

import telemhq_plugins
from telemhq_plugins.celery import CeleryInstrumentor, resolve_policy, setup
from telemhq_plugins.celery._context import celery_block, current_request
from telemhq_plugins.core import Client, JobPolicy, set_client
from tests.celery.conftest import make_client
from tests.celery.server import TelemHQ
from tests.kit import (
    assert_one_ping_per_event,
    breaking_core,
    client_for,
    new_ping_key,
    statuses_oldest_first,
    wait_for_runs,
)

ROOT = Path(__file__).resolve().parents[2]


# -- policy -----------------------------------------------------------------------------------


def test_it_monitors_every_task_but_celerys_own_by_default() -> None:
    assert resolve_policy("proj.load", None) == JobPolicy()
    assert resolve_policy("celery.chord_unlock", None) is None


def test_it_applies_include_and_exclude_globs() -> None:
    include = ("etl.*",)
    assert resolve_policy("etl.load", None, include=include) == JobPolicy()
    assert resolve_policy("web.email", None, include=include) is None
    assert resolve_policy("etl.tmp_x", None, include=include, exclude=("etl.tmp_*",)) is None


def test_it_lets_the_task_option_win_over_the_globs() -> None:
    assert resolve_policy("celery.x", {"enabled": True}) == JobPolicy()
    assert resolve_policy("web.email", True, include=("etl.*",)) == JobPolicy()
    assert resolve_policy("etl.load", {"enabled": False}, include=("etl.*",)) is None
    assert resolve_policy("etl.load", False) is None
    assert resolve_policy("etl.load", {"token": "abc", "send_start": True}) == JobPolicy(
        token="abc", send_start=True
    )


def test_it_treats_an_unusable_option_as_no_option() -> None:
    assert resolve_policy("etl.load", "not a mapping") == JobPolicy()


def test_it_builds_only_the_id_from_an_unrelated_request() -> None:
    class Request:
        id = "other"

    assert celery_block("mine", Request()) == {"task_id": "mine"}
    assert celery_block("mine", None) == {"task_id": "mine"}


def test_it_reads_a_celery_context_and_any_other_request_alike() -> None:
    # The prerun's request is Celery's Context (read with plain attribute reads); the main
    # process holds other request objects (read with getattr and defaults). Same block.
    values = {
        "id": "t1",
        "root_id": "r1",
        "parent_id": "p1",
        "delivery_info": {"routing_key": "etl", "exchange": "jobs"},
        "hostname": "celery@w1",
        "retries": 2,
        "eta": "2026-11-26T12:00:00+00:00",
        "expires": None,
    }

    class Other:
        pass

    other = Other()
    other.__dict__.update(values)
    expected = {
        "task_id": "t1",
        "root_id": "r1",
        "parent_id": "p1",
        "queue": "etl",
        "routing_key": "etl",
        "exchange": "jobs",
        "hostname": "celery@w1",
        "retries": 2,
        "eta": "2026-11-26T12:00:00+00:00",
        "expires": None,
    }
    assert celery_block("t1", Context(values)) == expected
    assert celery_block("t1", other) == expected
    # A bare Context has Celery's class defaults; a partial object has ours.
    bare = {"task_id": "t2", "root_id": None, "parent_id": None, "queue": None}
    bare |= {"routing_key": None, "exchange": None, "hostname": None, "retries": 0}
    bare |= {"eta": None, "expires": None}
    assert celery_block("t2", Context({"id": "t2"})) == bare
    partial = Other()
    partial.id = "t2"  # type: ignore[attr-defined]
    assert celery_block("t2", partial) == bare
    assert celery_block("t1", Context({"id": "other"})) == {"task_id": "t1"}


def test_it_finds_the_request_on_top_of_the_tasks_stack_per_thread() -> None:
    app = Celery("telemhq_tests_request", set_as_current=False)
    try:

        @app.task(name="etl.request", shared=False)
        def job() -> None:
            pass

        task = app.tasks["etl.request"]
        outer, inner = Context({"id": "outer"}), Context({"id": "inner"})
        task.request_stack.push(outer)
        task.request_stack.push(inner)
        try:
            assert current_request(task) is inner is task.request_stack.top
            seen: list[Any] = []
            other = threading.Thread(target=lambda: seen.append(current_request(task)))
            other.start()
            other.join()
            # Another thread has no request pushed: Celery's default request, as ``top or
            # task.request`` gives.
            assert seen[0] is not inner
            assert seen[0] is not outer
            assert seen[0].id is None
        finally:
            task.request_stack.pop()
            task.request_stack.pop()

        class Stackless:  # a layout other than Celery's Local: the public property instead
            request_stack = type("Stack", (), {"top": inner})()
            request = None

        assert current_request(Stackless()) is inner
    finally:
        app.close()


# -- eager runs through the real tracer -------------------------------------------------------


@pytest.fixture
def app() -> Iterator[Celery]:
    app = Celery("telemhq_tests_unit", set_as_current=False)
    app.conf.task_always_eager = False
    yield app
    app.close()


def final_runs(server: TelemHQ, task_id: str) -> list[Any]:
    return [r for r in server.runs("default", task_id) if r.status != "start"]


@pytest.mark.services
def test_it_reaches_report_and_records_an_eager_run(
    app: Celery, server: TelemHQ, client: Client, instrumented: CeleryInstrumentor
) -> None:
    @app.task(name="unit.eager", shared=False)
    def eager() -> int:
        telemhq_plugins.report(records_processed=7, cost_usd=0.25)
        return 7

    result = eager.apply()
    assert result.get() == 7
    assert client.flush()
    (run,) = server.wait_finals("default", result.id)
    assert run.body["records_processed"] == 7
    assert run.body["cost_usd"] == 0.25
    assert run.body["job"] == "unit.eager"
    assert telemhq_plugins.current_run() is None  # nothing left bound to this thread
    assert instrumented.handlers is not None
    assert instrumented.handlers.runs == {}


@pytest.mark.services
def test_report_reaches_the_innermost_run_of_a_task(
    app: Celery, server: TelemHQ, client: Client, instrumented: CeleryInstrumentor
) -> None:
    """The task's run is found by thread (not bound), so a ``monitored()`` block inside the task
    takes its own reports, and a task called directly inside another reports to the outer."""

    @app.task(name="unit.helper", shared=False)
    def helper() -> None:
        telemhq_plugins.report(from_helper=1)

    @app.task(name="unit.outer", shared=False)
    def outer() -> None:
        telemhq_plugins.report(before=1)
        with telemhq_plugins.monitored("unit.inner-step") as step:
            telemhq_plugins.report(inside=2)
            assert telemhq_plugins.current_run() is step
        helper()  # a plain call: no message, no run of its own
        telemhq_plugins.report(after=3)

    result = outer.apply()
    assert result.successful(), result.traceback
    assert client.flush()
    (run,) = server.wait_finals("default", result.id)
    assert {k: run.body.get(k) for k in ("before", "after", "from_helper", "inside")} == {
        "before": 1,
        "after": 3,
        "from_helper": 1,
        "inside": None,
    }
    [step] = [r for r in server.runs("default") if r.body.get("job") == "unit.inner-step"]
    assert step.body["inside"] == 2
    assert "before" not in step.body
    assert telemhq_plugins.current_run() is None


@pytest.mark.services
def test_it_sends_start_when_asked(app: Celery, server: TelemHQ, client: Client) -> None:
    @app.task(name="unit.started", shared=False)
    def started() -> None: ...

    instrumentor = CeleryInstrumentor()
    instrumentor.instrument(send_start=True)
    try:
        result = started.apply()
        assert client.flush()
    finally:
        instrumentor.uninstrument()
    start = server.wait_start("default", result.id)
    (end,) = server.wait_finals("default", result.id)
    assert start.body["run_id"] == end.body["run_id"] == result.id
    assert end.status == "success"


@pytest.mark.services
def test_it_only_monitors_the_given_app(app: Celery, server: TelemHQ, client: Client) -> None:
    other = Celery("telemhq_tests_other", set_as_current=False)

    # The same task name in both apps: which task is monitored is decided per task object.
    @app.task(name="unit.shared_name", shared=False)
    def mine() -> None: ...

    @other.task(name="unit.shared_name", shared=False)
    def theirs() -> None: ...

    instrumentor = CeleryInstrumentor()
    instrumentor.instrument(app)
    try:
        skipped = theirs.apply()
        monitored = mine.apply()
        skipped_again = theirs.apply()
        assert client.flush()
    finally:
        instrumentor.uninstrument()
        other.close()
    server.wait_finals("default", monitored.id)
    assert final_runs(server, skipped.id) == []
    assert final_runs(server, skipped_again.id) == []


@pytest.mark.services
def test_it_sends_nothing_when_telemhq_is_disabled(
    app: Celery, server: TelemHQ, instrumented: CeleryInstrumentor
) -> None:
    @app.task(name="unit.disabled", shared=False)
    def disabled() -> str:
        telemhq_plugins.report(records_processed=1)  # harmless outside a run
        return "done"

    client = make_client(server, disabled=True)
    previous = set_client(client)
    try:
        result = disabled.apply()
        assert result.get() == "done"
        assert client.flush()
        assert client.stats()["delivered"] == 0
    finally:
        set_client(previous)
        client.close()
    assert server.runs("default", result.id) == []


@pytest.mark.services
def test_it_never_breaks_a_task_when_the_adapter_fails(
    app: Celery, server: TelemHQ, client: Client, instrumented: CeleryInstrumentor
) -> None:
    class Exploding(Mapping[str, Any]):
        def __getitem__(self, key: str) -> Any:
            raise RuntimeError("broken option")

        def __iter__(self) -> Iterator[str]:
            raise RuntimeError("broken option")

        def __len__(self) -> int:
            return 1

    @app.task(name="unit.exploding", shared=False, telemhq=Exploding())
    def exploding() -> str:
        return "still fine"

    result = exploding.apply()
    assert result.get() == "still fine"
    assert result.successful()


@pytest.mark.services
def test_a_task_succeeds_while_core_fails(
    app: Celery, server: TelemHQ, client: Client, instrumented: CeleryInstrumentor
) -> None:
    @app.task(name="unit.core-broken", shared=False)
    def job() -> str:
        return "done"

    with breaking_core() as reached:
        result = job.apply()
    assert result.successful(), result.traceback
    assert result.get() == "done"
    assert reached == ["unit.core-broken"]  # the adapter did reach core, which raised
    assert client.flush()
    assert server.runs("default", result.id) == []


@pytest.mark.services
def test_instrumented_twice_a_task_sends_one_ping_per_event(app: Celery, server: TelemHQ) -> None:
    @app.task(name="unit.twice", shared=False)
    def twice() -> int:
        return 2

    keyed = client_for(server.live, ping_key=new_ping_key(server.live))
    previous = set_client(keyed)
    instrumentor = CeleryInstrumentor()
    try:
        assert instrumentor.instrument(send_start=True) is True
        assert instrumentor.instrument(send_start=True) is False
        assert setup(app) is instrumentor
        results = [twice.apply() for _ in range(2)]
        assert keyed.flush()
    finally:
        instrumentor.uninstrument()
        keyed.close()
        set_client(previous)
    runs = wait_for_runs(server.live, "unit-twice", 4)
    assert statuses_oldest_first(runs) == ["start", "success", "start", "success"]
    assert_one_ping_per_event(runs)
    assert {run["run_id"] for run in runs} == {result.id for result in results}


# -- instrumentation lifecycle ----------------------------------------------------------------


def test_it_connects_once_and_disconnects_everything() -> None:
    watched = (signals.task_prerun, signals.task_postrun, signals.task_failure)
    before = [len(s.receivers) for s in watched]
    instrumentor = CeleryInstrumentor()
    assert instrumentor is CeleryInstrumentor()  # one per process
    assert instrumentor.instrument() is True
    assert instrumentor.instrument() is False
    assert [len(s.receivers) for s in watched] == [n + 1 for n in before]
    assert instrumentor.uninstrument() is True
    assert [len(s.receivers) for s in watched] == before
    assert instrumentor.is_instrumented is False


def test_it_takes_back_a_half_connected_instrumentation(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    watched = (signals.task_prerun, signals.task_postrun, signals.task_failure)
    before = [len(s.receivers) for s in watched]

    def refuse(*args: Any, **kwargs: Any) -> None:
        raise RuntimeError("signal refused")

    # task_revoked comes after prerun, failure, retry and postrun are connected
    monkeypatch.setattr(signals.task_revoked, "connect", refuse)
    instrumentor = CeleryInstrumentor()
    assert instrumentor.instrument() is False
    assert instrumentor.is_instrumented is False
    assert instrumentor.handlers is None
    assert [len(s.receivers) for s in watched] == before
    assert "CeleryInstrumentor failed to instrument" in caplog.text
    monkeypatch.undo()
    assert instrumentor.instrument() is True  # nothing left behind blocks a real install
    assert instrumentor.uninstrument() is True


def test_it_refuses_a_celery_older_than_supported(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    before = len(signals.task_prerun.receivers)
    real_version = importlib.metadata.version
    monkeypatch.setattr(
        importlib.metadata,
        "version",
        lambda name: "5.2.7" if name == "celery" else real_version(name),
    )
    instrumentor = CeleryInstrumentor()
    assert instrumentor.instrument() is False
    assert instrumentor.is_instrumented is False
    assert len(signals.task_prerun.receivers) == before
    assert "celery 5.2.7 is installed but telemhq-plugins needs celery>=5.3" in caplog.text


def _python(code: str, **env: str) -> subprocess.CompletedProcess[str]:
    environ = {k: v for k, v in os.environ.items() if not k.startswith("TELEMHQ_")}
    environ.update(PYTHONPATH=str(ROOT), **env)
    return subprocess.run(
        [sys.executable, "-c", code],
        check=False,
        env=environ,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_it_instruments_on_import_with_telemhq_celery_auto() -> None:
    code = "import telemhq_plugins.celery as c; print(c.CeleryInstrumentor().is_instrumented)"
    assert _python(code, TELEMHQ_CELERY_AUTO="1").stdout.strip() == "True"
    assert _python(code, TELEMHQ_CELERY_AUTO=" Yes ").stdout.strip() == "True"
    assert _python(code).stdout.strip() == "False"
    unreadable = _python(code, TELEMHQ_CELERY_AUTO="sometimes")
    assert unreadable.stdout.strip() == "False"
    assert "TELEMHQ_CELERY_AUTO='sometimes' (environment): not a switch" in unreadable.stderr


def test_it_names_the_extra_when_celery_is_missing() -> None:
    code = (
        "import sys; sys.modules['celery'] = None\n"
        "try:\n    import telemhq_plugins.celery\n"
        "except ImportError as exc:\n    print(exc)\n"
    )
    out = _python(code).stdout
    assert 'pip install ".[celery]"' in out


def test_it_lists_monitored_tasks_with_the_celery_command() -> None:
    environ = {k: v for k, v in os.environ.items() if not k.startswith("TELEMHQ_")}
    environ.update(
        PYTHONPATH=str(ROOT),
        TELEMHQ_CELERY_AUTO="1",
        TELEMHQ_CONFIG=os.devnull,
        TELEMHQ_TOKEN="default-token-1234",
        TELEMHQ_TEST_BROKER="memory://",
        TELEMHQ_TEST_PREFIX="unit-",
        TELEMHQ_TEST_SPECIAL_TOKEN="special-token-5678",
    )
    done = subprocess.run(
        [sys.executable, "-m", "celery", "-A", "tests.celery.worker_app", "telemhq"],
        check=False,
        env=environ,
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
    )
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0] == "instrumentation in this process: on"
    assert "  tests.add: https://telemhq.com/ping/defa..." in lines
    assert "  tests.tokened: https://telemhq.com/ping/spec..." in lines
    assert "  tests.quiet: not monitored" in lines
    assert "  celery.chord_unlock: not monitored" in lines
    assert "default-token-1234" not in done.stdout  # tokens are secrets: never printed whole
