"""History-relative assertions at ingest: judged in the writer's transaction against the
tracker's stored runs, on SQLite and PostgreSQL, alike in every server process."""

from __future__ import annotations

import datetime as dt
import json
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from telemhq_server.app import TelemHQ, create_app
from telemhq_server.baselines import history_assertions, retention_warning
from telemhq_server.config import Settings

from telemhq_plugins.core.assertions import History, parse_assertion
from telemhq_plugins.core.cli import main
from telemhq_plugins.core.history import PastRun
from tests.live_server import LiveServer
from tests.server.helpers import ADMIN_KEY, AppClient, flips_of, make_tracker, runs_of, tracker_of
from tests.server.test_webhooks import Receiver

X = "\u00d7"  # the multiplication sign baselines are written with
MEDIAN_FLOOR = "records_processed >= 0.5 * median(last 20)"
BASELINE = f"0.5 {X} median 98000 of the last 20 runs"


def ping(client: AppClient, token: str, **body: Any) -> dict[str, Any]:
    response = client.post(f"/ping/{token}", json=body)
    assert response.status_code == 200, response.text
    answer: dict[str, Any] = response.json()
    return answer


def wait_for_event(receiver: Receiver, event: str, timeout: float = 30) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        for _, body in list(receiver.requests):
            document: dict[str, Any] = json.loads(body)
            if document["event"] == event:
                return document
        assert time.monotonic() < deadline, f"no {event} webhook arrived"
        time.sleep(0.05)


def test_a_run_far_below_the_median_flips_the_tracker_to_failing(client: AppClient) -> None:
    receiver = Receiver()
    try:
        hook = client.post("/api/v1/webhooks", json={"url": receiver.url})
        assert hook.status_code == 201, hook.text
        tracker = make_tracker(client, assertions=[MEDIAN_FLOOR, "errors = 0"])
        for i in range(40):  # 97000 and 99000 in turn: the median is 98000
            answer = ping(
                client, tracker["token"], records_processed=97_000 + 2000 * (i % 2), errors=0
            )
            assert answer["passed"] is True
        answer = ping(client, tracker["token"], records_processed=1200, errors=0)
        reason = f"records_processed was 1200, expected >= 49000 ({BASELINE})"
        assert answer["passed"] is False
        assert answer["state"] == "failing"
        assert answer["assertions"][0] == {
            "expression": MEDIAN_FLOOR,
            "passed": False,
            "actual": 1200,
            "reason": reason,
            "evaluated": True,
            "baseline": {"value": 49000, "text": BASELINE},
        }
        assert answer["assertions"][1] == {  # a plain assertion's result is as it was
            "expression": "errors = 0",
            "passed": True,
            "actual": 0,
            "reason": "errors was 0",
        }
        flip = flips_of(client, tracker["id"])[0]
        assert (flip["new_state"], flip["reason"]) == ("failing", f"assertion failed: {reason}")
        failing = wait_for_event(receiver, "tracker.failing")
        assert failing["reason"] == f"assertion failed: {reason}"
        assert failing["failed_assertions"][0]["baseline"] == {"value": 49000, "text": BASELINE}
        # The failed run is not counted: "normal" is still 98000.
        shown = tracker_of(client, tracker["id"])
        assert shown["baselines"] == [
            {"expression": MEDIAN_FLOOR, "value": 49000, "text": BASELINE}
        ]
        assert shown["retention_warning"] is None
        stored = runs_of(client, tracker["id"])[0]
        assert stored["assertions"] == answer["assertions"]
    finally:
        receiver.close()


def test_a_new_tracker_with_three_runs_is_not_judged(client: AppClient) -> None:
    tracker = make_tracker(client, assertions=[MEDIAN_FLOOR])
    answers = [ping(client, tracker["token"], records_processed=n) for n in (98_000, 0, 5)]
    assert [a["assertions"][0]["reason"] for a in answers] == [
        "history: 0 of 5 runs",
        "history: 1 of 5 runs",
        "history: 2 of 5 runs",
    ]
    assert all(a["assertions"][0]["evaluated"] is False for a in answers)
    assert all(a["passed"] is True and a["state"] == "up" for a in answers)
    shown = tracker_of(client, tracker["id"])
    assert shown["state"] == "up"
    assert shown["baselines"] == [
        {"expression": MEDIAN_FLOOR, "value": None, "text": None, "reason": "history: 3 of 5 runs"}
    ]


def test_a_window_budget_holds_from_the_first_run_and_counts_every_status(
    client: AppClient,
) -> None:
    tracker = make_tracker(
        client, assertions=["sum(cost_usd, 24h) <= 50", "count(failure, 24h) < 2"]
    )
    assert ping(client, tracker["token"], cost_usd=20)["passed"] is True
    answer = client.post(f"/ping/{tracker['token']}/fail", json={"cost_usd": 20}).json()
    assert [r["passed"] for r in answer["assertions"]] == [True, True]
    answer = ping(client, tracker["token"], cost_usd=15, status="failure")
    assert [r["reason"] for r in answer["assertions"]] == [
        "sum(cost_usd, 24h) was 55 (3 runs), expected <= 50",
        "count(failure, 24h) was 2, expected < 2",
    ]
    assert answer["state"] == "failing"


def test_two_server_processes_judge_against_the_same_history(settings: Settings) -> None:
    """Two apps on one database stand for two processes: each holds its own history cache,
    and each ping is judged against every run stored before it, whichever app stored it."""
    first: TelemHQ = create_app(settings)
    second: TelemHQ = create_app(settings)
    headers = {"Authorization": f"Bearer {ADMIN_KEY}"}
    with AppClient(first, headers=headers) as a, AppClient(second, headers=headers) as b:
        tracker = make_tracker(a, assertions=["n >= max(last 50)"])
        for i in range(1, 31):  # each app stores every other run: n rises, so each is a max
            answer = ping(a if i % 2 else b, tracker["token"], n=i)
            result = answer["assertions"][0]
            if i > 5:
                assert result["baseline"]["value"] == i - 1, (i, result)
                assert answer["passed"] is True
        for client in (a, b):
            low = ping(client, tracker["token"], n=29)
            assert low["assertions"][0]["reason"] == (
                "n was 29, expected >= 30 (max 30 of the last 30 runs)"
            )
        assert tracker_of(b, tracker["id"])["baselines"][0]["value"] == 30


def test_a_retention_shorter_than_the_history_read_is_reported(client: AppClient) -> None:
    tracker = make_tracker(client, assertions=["n >= median(last 5000)"])
    warning = tracker_of(client, tracker["id"])["retention_warning"]
    assert warning == (
        "n >= median(last 5000) reads the last 5000 runs, but retention keeps 1000 "
        "(TELEMHQ_RETENTION_RUNS)"
    )
    window = history_assertions(["sum(cost_usd, 7d) <= 5"])
    now = dt.datetime(2026, 11, 2, tzinfo=dt.UTC)
    young = now - dt.timedelta(days=2)
    assert retention_warning(window, 1000, n_runs=999, oldest=young, now=now) is None
    assert retention_warning(window, 1000, n_runs=5000, oldest=young, now=now) == (
        "sum(cost_usd, 7d) <= 5 reads 7d of runs, but retention keeps 1000 runs "
        "(TELEMHQ_RETENTION_RUNS), which span 2d"
    )


@pytest.mark.parametrize(("text", "position"), [("n >= median(last", 16), ("avg(n, 24h) < 3", 0)])
def test_a_syntax_error_is_refused_with_its_position(
    client: AppClient, text: str, position: int
) -> None:
    response = client.post("/api/v1/trackers", json={"name": "bad", "assertions": [text]})
    assert response.status_code == 422
    assert response.json()["position"] == position


@pytest.mark.slow
def test_two_real_server_processes_agree_under_concurrent_pings(db_url: str) -> None:
    """Two ``telemhq-server`` processes on one database, pinged at once from several
    clients: every stored run was judged against exactly the runs stored before it, as core
    judges them offline from the API's list of runs."""
    assertions = ["n >= 0.5 * median(last 10)", "sum(n, 24h) <= 100000"]
    with LiveServer(db_url) as first, LiveServer(db_url) as second:
        tracker = first.create_tracker(name="shared history", assertions=assertions)
        servers = [first, second]

        def client(c: int) -> None:
            for i in range(12):
                n = 100 + (c * 12 + i) % 7 * 10 if i != 9 else 1  # one run far below
                answer = servers[(c + i) % 2].ping(tracker, {"n": n})
                assert answer.status_code == 200, answer.text

        with ThreadPoolExecutor(4) as pool:
            list(pool.map(client, range(4)))
        stored = list(reversed(first.runs(tracker["id"])))  # oldest first
    assert len(stored) == 48
    assert judged_as_offline(stored, assertions) >= 40


def judged_as_offline(stored: list[dict[str, Any]], assertions: list[str]) -> int:
    """Check that each stored run (oldest first) was judged as core judges it against the runs
    stored before it; returns how many were evaluated."""
    parsed = [parse_assertion(text) for text in assertions]
    judged = 0
    for i, run in enumerate(stored):
        past = History(
            PastRun(
                dt.datetime.fromisoformat(r["received_at"]), r["status"], r["passed"], r["payload"]
            )
            for r in stored[:i]
        )
        now = dt.datetime.fromisoformat(run["received_at"])
        status = run["status"]
        payload = run["payload"] if status == "start" else {**run["payload"], "status": status}
        expected = (
            []
            if status == "start"
            else [a.evaluate(payload, past, now=now).to_dict() for a in parsed]
        )
        assert run["assertions"] == expected, (i, run)
        judged += bool(expected and expected[0]["evaluated"])
    return judged


def test_pings_queued_together_are_judged_in_order(client: AppClient) -> None:
    """Pings arriving at once (one batch), duplicates and starts among them, are each judged
    against exactly the runs stored before them."""
    assertions = ["n >= 0.9 * max(last 5)", "count(failure, 1h) < 3"]
    tracker = make_tracker(client, assertions=assertions)
    token = tracker["token"]

    def post(path: str, body: dict[str, Any]) -> Any:
        return lambda: client.client.post(f"/ping/{token}{path}", json=body)

    for round_ in range(3):
        calls = []
        for i in range(12):
            n = 100 + round_ * 12 + i
            body: dict[str, Any] = {"n": n if i != 7 else 1, "ping_id": f"p{round_}-{i % 10}"}
            path = "/fail" if i == 3 else ("/start" if i == 5 else "")
            calls.append(post(path, body))
        answers = client.gather(calls)
        assert all(a.status_code == 200 for a in answers), [a.text for a in answers]
    stored = list(reversed(runs_of(client, tracker["id"])))
    assert len(stored) == 30  # two duplicate ping_ids in each round
    assert judged_as_offline(stored, assertions) >= 20


@pytest.mark.slow
def test_telemhq_check_gives_the_servers_verdict(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    with LiveServer() as live:
        tracker = live.create_tracker(name="nightly load", assertions=[MEDIAN_FLOOR])
        for i in range(40):
            live.ping(tracker, {"records_processed": 97_000 + 2000 * (i % 2)})
        monkeypatch.setenv("TELEMHQ_BASE_URL", live.base_url)
        monkeypatch.setenv("TELEMHQ_API_KEY", live.api_key)
        runs_file = tmp_path / "runs.json"
        runs_file.write_text(live.api("GET", f"/trackers/{tracker['id']}/runs").text)
        payload = ["--json", '{"records_processed": 1200}']
        fetched = main(["check", MEDIAN_FLOOR, *payload, "--tracker", tracker["slug"]])
        saved = main(["check", MEDIAN_FLOOR, *payload, "--history", str(runs_file)])
        answer = live.ping(tracker, {"records_processed": 1200}).json()
    lines = capsys.readouterr().out.splitlines()
    reason = answer["assertions"][0]["reason"]
    assert reason == f"records_processed was 1200, expected >= 49000 ({BASELINE})"
    assert (fetched, saved) == (1, 1)
    assert lines == [f"FAIL  {MEDIAN_FLOOR}  ({reason})"] * 2
