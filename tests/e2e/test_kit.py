"""The adapters' test kit (``tests/kit.py``) against the real reference server: what each
helper reports is what the server stored."""

from __future__ import annotations

import pytest

from telemhq_plugins.core import Client, Ping, current_client, start_run
from tests.kit import (
    CoreBroken,
    assert_one_ping_per_event,
    breaking_core,
    client_for,
    dead_endpoint,
    new_ping_key,
    process_client,
    require_tool,
    statuses_oldest_first,
    tracker_by_slug,
    wait_for_runs,
    wait_until,
)
from tests.live_server import LiveServer


def test_a_job_reaches_its_auto_created_tracker(live_server: LiveServer, client: Client) -> None:
    assert tracker_by_slug(live_server, "kit-etl-load") is None
    run = start_run("kit.etl.load", run_id="r-1", attempt=1, send_start=True, client=client)
    run.finish("success", rows=3)
    assert client.flush(10)

    runs = wait_for_runs(live_server, "kit-etl-load", 2)
    assert statuses_oldest_first(runs) == ["start", "success"]
    assert statuses_oldest_first(runs[::-1]) == ["start", "success"]  # whatever the list's order
    assert runs[0]["run_id"] == "r-1"
    assert runs[0]["payload"]["rows"] == 3
    assert_one_ping_per_event(runs)
    tracker = tracker_by_slug(live_server, "kit-etl-load")
    assert tracker is not None
    assert wait_for_runs(live_server, tracker["id"], 2) == runs  # by id as well as by slug


def test_a_key_without_auto_create_makes_no_tracker(live_server: LiveServer) -> None:
    client = client_for(live_server, ping_key=new_ping_key(live_server, auto_create=False))
    try:
        start_run("kit.unknown", client=client).finish()
        assert client.flush(10)
    finally:
        client.close()
    assert tracker_by_slug(live_server, "kit-unknown") is None


def test_waiting_fails_with_what_was_stored(live_server: LiveServer, client: Client) -> None:
    start_run("kit.once", run_id="r-2", client=client).finish("failure")
    assert client.flush(10)
    with pytest.raises(AssertionError, match=r"expected 2 run\(s\).*1 run\(s\).*'r-2', 'failure'"):
        wait_for_runs(live_server, "kit-once", 2, timeout=0.5)
    with pytest.raises(AssertionError, match="no such tracker"):
        wait_for_runs(live_server, "kit-never", 1, timeout=0.2)


def test_the_same_event_twice_is_caught(live_server: LiveServer, client: Client) -> None:
    for _ in range(2):  # what a doubly instrumented adapter would send
        start_run("kit.twice", run_id="r-3", attempt=1, client=client).finish()
    start_run("kit.twice", run_id="r-3", attempt=2, client=client).finish()
    assert client.flush(10)
    runs = wait_for_runs(live_server, "kit-twice", 3)
    with pytest.raises(AssertionError, match=r"\('r-3', 'success', 1\): 2"):
        assert_one_ping_per_event(runs)
    assert_one_ping_per_event(runs[:1] + runs[2:])  # attempts 2 and 1: different events


def test_breaking_core_makes_delivery_raise_and_then_restores_it(
    live_server: LiveServer, client: Client
) -> None:
    with breaking_core() as reached:
        run = start_run("kit.broken", send_start=False, client=client)
        with pytest.raises(CoreBroken):
            run.finish()
    assert reached == ["kit.broken"]
    start_run("kit.broken", run_id="after", client=client).finish()
    assert client.flush(10)
    runs = wait_for_runs(live_server, "kit-broken", 1)
    assert [run["run_id"] for run in runs] == ["after"]  # nothing from inside the block


def test_a_dead_endpoint_refuses_connections(live_server: LiveServer) -> None:
    url = dead_endpoint()
    dead = client_for(live_server, base_url=url, token="kit-dead-token")
    try:
        result = dead.send(Ping(job="kit.dead"), dead.settings.ping_url_for("kit.dead") or "")
    finally:
        dead.close()
    assert result.outcome == "failed"
    assert result.status_code is None  # no answer at all: the connection was refused
    assert "kit-dead" not in str(live_server.api("GET", "/trackers").json())


def test_the_client_fixture_is_the_process_client_for_the_test(client: Client) -> None:
    assert current_client() is client


def test_a_process_client_is_closed_and_the_previous_one_back_after(
    live_server: LiveServer, client: Client
) -> None:
    inner = client_for(live_server, ping_key=new_ping_key(live_server))
    with process_client(inner):
        assert current_client() is inner
        start_run("kit.inner", client=inner).finish()
        assert inner.flush(10)
    assert current_client() is client
    [run] = wait_for_runs(live_server, "kit-inner", 1)
    assert run["status"] == "success"


def test_waiting_answers_the_first_truthy_answer_or_says_what_it_saw() -> None:
    answers = iter([0, [], "ready", "later"])
    assert wait_until(lambda: next(answers), "a truthy answer", timeout=5, interval=0) == "ready"
    with pytest.raises(AssertionError, match=r"after 0\.1 s waiting for nothing \(saw 3\)"):
        wait_until(lambda: None, lambda: "nothing (saw 3)", timeout=0.1)


def test_a_program_the_machine_has_is_found() -> None:
    assert require_tool("sh").endswith("/sh")


def test_a_missing_program_skips_the_test_or_fails_it_when_required(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("TELEMHQ_REQUIRE_SERVICES", raising=False)
    with pytest.raises(pytest.skip.Exception, match="telemhq-no-such-program is not installed"):
        require_tool("telemhq-no-such-program")
    monkeypatch.setenv("TELEMHQ_REQUIRE_SERVICES", "1")
    with pytest.raises(pytest.fail.Exception, match="TELEMHQ_REQUIRE_SERVICES=1 requires it"):
        require_tool("telemhq-no-such-program")
