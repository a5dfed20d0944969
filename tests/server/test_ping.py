"""The ping path over HTTP (in-process app, real writer), on SQLite and PostgreSQL."""

from __future__ import annotations

import json
from typing import Any

import pytest
from telemhq_server.app import create_app
from telemhq_server.config import Settings
from telemhq_server.db import make_engine, runs

from tests.server.helpers import ADMIN_KEY, AppClient, flips_of, make_tracker, runs_of, tracker_of

DOCS_BODY = {"status": "success", "duration": 1500, "records_processed": 450, "errors": 0}


def post(
    client: AppClient, tracker: dict[str, Any], body: Any = None, suffix: str = "", **kwargs: Any
) -> Any:
    if body is not None:
        kwargs["json"] = body
    return client.post(f"/ping/{tracker['token']}{suffix}", **kwargs)


# --- the happy path and the docs' clients ---------------------------------------------------


def test_it_records_a_run_and_answers_with_the_verdict(client: AppClient) -> None:
    tracker = make_tracker(client, assertions=["records_processed > 0", "errors = 0"])
    response = post(client, tracker, DOCS_BODY)
    assert response.status_code == 200
    answer = response.json()
    assert answer["ok"] is True
    assert answer["state"] == "up"
    assert answer["run_id"]
    assert answer["assertions"] == [
        {
            "expression": "records_processed > 0",
            "passed": True,
            "actual": 450,
            "reason": "records_processed was 450",
        },
        {"expression": "errors = 0", "passed": True, "actual": 0, "reason": "errors was 0"},
    ]
    [run] = runs_of(client, tracker["id"])
    assert run["status"] == "success"
    assert run["passed"] is True
    assert run["payload"] == DOCS_BODY
    assert run["run_id"] == answer["run_id"]
    assert run["duration_ms"] == 1500
    assert run["assertions"] == answer["assertions"]
    assert run["received_at"].endswith("Z")
    stored = tracker_of(client, tracker["id"])
    assert stored["state"] == "up"
    assert stored["n_runs"] == 1
    assert stored["last_run_at"] == run["received_at"]


def test_it_accepts_the_docs_curl_without_a_body(client: AppClient) -> None:
    tracker = make_tracker(client)
    response = client.post(f"/ping/{tracker['token']}")  # curl -X POST URL
    assert response.status_code == 200
    assert response.json()["state"] == "up"
    assert runs_of(client, tracker["id"])[0]["payload"] == {}


def test_it_accepts_json_sent_as_a_form_like_curl_d(client: AppClient) -> None:
    # curl -d '{...}' without -H sends application/x-www-form-urlencoded
    tracker = make_tracker(client, assertions=["records_processed > 0"])
    response = client.post(
        f"/ping/{tracker['token']}",
        content=json.dumps(DOCS_BODY),
        headers={"Content-Type": "application/x-www-form-urlencoded"},
    )
    assert response.status_code == 200, response.text
    assert response.json()["assertions"][0]["passed"] is True


@pytest.mark.parametrize(
    "content_type", ["application/json", "text/plain", "application/octet-stream", None]
)
def test_it_accepts_a_json_object_with_any_content_type(
    client: AppClient, content_type: str | None
) -> None:
    tracker = make_tracker(client)
    headers = {} if content_type is None else {"Content-Type": content_type}
    response = client.post(f"/ping/{tracker['token']}", content=b'{"errors": 0}', headers=headers)
    assert response.status_code == 200
    assert runs_of(client, tracker["id"])[0]["payload"] == {"errors": 0}


def test_it_keeps_extra_fields_and_nested_objects(client: AppClient) -> None:
    tracker = make_tracker(client, assertions=["airflow.try_number <= 2"])
    body = {"airflow": {"try_number": 1, "dag_id": "etl"}, "custom": [1, 2, 3]}
    assert post(client, tracker, body).json()["assertions"][0]["passed"] is True
    assert runs_of(client, tracker["id"])[0]["payload"] == body


def test_it_answers_cors_preflight(client: AppClient) -> None:
    tracker = make_tracker(client)
    response = client.options(f"/ping/{tracker['token']}")
    assert response.status_code == 204
    assert response.headers["access-control-allow-origin"] == "*"
    assert "content-type" in response.headers["access-control-allow-headers"]


# --- bad input: exact status and message -----------------------------------------------------


def test_it_answers_404_for_an_unknown_token(client: AppClient) -> None:
    response = client.post("/ping/no-such-token", json=DOCS_BODY)
    assert response.status_code == 404
    assert response.json() == {"ok": False, "error": "unknown token"}


@pytest.mark.parametrize("path", ["/ping/", "/ping//x", "/ping/a/b/c"])
def test_it_answers_404_for_malformed_ping_paths(client: AppClient, path: str) -> None:
    assert client.post(path).status_code == 404


def test_it_answers_413_over_the_body_limit(client: AppClient) -> None:
    tracker = make_tracker(client)
    body = b'{"blob": "' + b"x" * (100 * 1024) + b'"}'
    response = client.post(f"/ping/{tracker['token']}", content=body)
    assert response.status_code == 413
    assert response.json() == {
        "ok": False,
        "error": "body is larger than the limit of 102400 bytes",
    }
    assert runs_of(client, tracker["id"]) == []


def test_it_answers_413_for_a_chunked_body_over_the_limit(client: AppClient) -> None:
    tracker = make_tracker(client)

    async def chunks() -> Any:
        for _ in range(30):
            yield b"x" * 4096

    response = client.post(f"/ping/{tracker['token']}", content=chunks())
    assert response.status_code == 413
    assert runs_of(client, tracker["id"]) == []


def test_the_body_limit_is_configurable(settings: Settings) -> None:
    app = create_app(
        Settings(database_url=settings.database_url, api_key=ADMIN_KEY, max_body_bytes=50)
    )
    with AppClient(app, headers={"Authorization": f"Bearer {ADMIN_KEY}"}) as client:
        tracker = make_tracker(client)
        ok = client.post(f"/ping/{tracker['token']}", content=b'{"a": 1}')
        assert ok.status_code == 200
        too_big = client.post(f"/ping/{tracker['token']}", content=b'{"a": "' + b"y" * 60 + b'"}')
        assert too_big.status_code == 413
        assert too_big.json()["error"] == "body is larger than the limit of 50 bytes"


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (
            b"hello",
            "body is not valid JSON: unexpected character, expected a JSON value: "
            "line 1 column 1 (char 0)",
        ),
        (b'{"a": 1', "body is not valid JSON: unexpected end of data: line 1 column 8 (char 7)"),
        (
            b'{"a": NaN}',
            "body is not valid JSON: unexpected character, expected a JSON value: "
            "line 1 column 7 (char 6)",
        ),
        (
            b"\xff\xfe",
            "body is not valid JSON: str is not valid UTF-8: surrogates not allowed: "
            "line 1 column 1 (char 0)",
        ),
        (
            b"status=success",
            "body is not valid JSON: unexpected character, expected a JSON "
            "value: line 1 column 1 (char 0)",
        ),
    ],
)
def test_it_answers_400_for_a_body_that_is_not_json(
    client: AppClient, body: bytes, message: str
) -> None:
    tracker = make_tracker(client)
    response = client.post(f"/ping/{tracker['token']}", content=body)
    assert response.status_code == 400
    assert response.json() == {"ok": False, "error": message}
    assert runs_of(client, tracker["id"]) == []


@pytest.mark.parametrize(
    ("body", "kind"),
    [
        (b"[1, 2]", "an array"),
        (b'"success"', "a string"),
        (b"42", "a number"),
        (b"true", "a boolean"),
        (b"null", "null"),
    ],
)
def test_it_answers_400_for_json_that_is_not_an_object(
    client: AppClient, body: bytes, kind: str
) -> None:
    tracker = make_tracker(client)
    response = client.post(f"/ping/{tracker['token']}", content=body)
    assert response.status_code == 400
    assert response.json() == {"ok": False, "error": f"body must be a JSON object, got {kind}"}
    assert runs_of(client, tracker["id"]) == []


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (
            {"status": "ok"},
            'status must be one of cancelled, failure, retry, skipped, start, success; got "ok"',
        ),
        (
            {"status": 1},
            "status must be one of cancelled, failure, retry, skipped, start, success; got 1",
        ),
        ({"duration": "fast"}, "duration must be a non-negative number of milliseconds"),
        ({"duration": -1}, "duration must be a non-negative number of milliseconds"),
        ({"ping_id": 7}, "ping_id must be a non-empty string of at most 200 characters"),
        ({"run_id": "x" * 201}, "run_id must be a non-empty string of at most 200 characters"),
    ],
)
def test_it_answers_400_for_bad_standard_fields(
    client: AppClient, body: dict[str, Any], message: str
) -> None:
    tracker = make_tracker(client)
    response = post(client, tracker, body)
    assert response.status_code == 400
    assert response.json() == {"ok": False, "error": message}
    assert runs_of(client, tracker["id"]) == []


@pytest.mark.parametrize("method", ["PUT", "PATCH", "DELETE"])
def test_it_answers_405_for_other_methods(client: AppClient, method: str) -> None:
    tracker = make_tracker(client)
    response = client.request(method, f"/ping/{tracker['token']}")
    assert response.status_code == 405
    assert response.headers["allow"] == "GET, HEAD, POST, OPTIONS"
    assert response.json() == {
        "ok": False,
        "error": f"method {method} is not allowed on a ping URL: POST records a run, "
        "GET shows instructions",
    }
    assert runs_of(client, tracker["id"]) == []


def test_a_duplicate_ping_id_is_answered_200_and_stored_once(client: AppClient) -> None:
    tracker = make_tracker(client, assertions=["errors = 0"])
    body = {**DOCS_BODY, "ping_id": "6f1c6d1e-0000-4000-8000-000000000001"}
    first = post(client, tracker, body).json()
    second = post(client, tracker, body)
    assert second.status_code == 200
    assert second.json() == {
        "ok": True,
        "duplicate": True,
        "run_id": first["run_id"],
        "state": "up",
        "assertions": first["assertions"],
    }
    assert len(runs_of(client, tracker["id"])) == 1
    assert tracker_of(client, tracker["id"])["n_runs"] == 1


def test_duplicates_within_one_batch_are_stored_once(client: AppClient) -> None:
    tracker = make_tracker(client)
    url = f"/ping/{tracker['token']}"
    answers = client.gather(
        [lambda: client.client.post(url, json={"ping_id": "same-ping"}) for _ in range(16)]
    )
    assert {a.status_code for a in answers} == {200}
    assert sum(1 for a in answers if a.json().get("duplicate")) == 15
    assert len(runs_of(client, tracker["id"])) == 1
    assert len({a.json()["run_id"] for a in answers}) == 1


def test_the_same_ping_id_on_two_trackers_is_two_runs(client: AppClient) -> None:
    one, two = make_tracker(client), make_tracker(client)
    post(client, one, {"ping_id": "p-1"})
    post(client, two, {"ping_id": "p-1"})
    assert len(runs_of(client, one["id"])) == len(runs_of(client, two["id"])) == 1


# --- GET / HEAD: instructions, nothing recorded ---------------------------------------------


def test_get_shows_text_instructions_and_records_nothing(client: AppClient) -> None:
    tracker = make_tracker(client)
    response = client.get(f"/ping/{tracker['token']}", headers={"Accept": "*/*"})
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    assert "curl -X POST http://testserver/ping/" in response.text
    assert "records nothing" in response.text
    assert runs_of(client, tracker["id"]) == []
    assert tracker_of(client, tracker["id"])["state"] == "new"


def test_get_from_a_browser_shows_html(client: AppClient) -> None:
    tracker = make_tracker(client)
    response = client.get(
        f"/ping/{tracker['token']}/start", headers={"Accept": "text/html,application/xhtml+xml"}
    )
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/html")
    assert "<h1>TelemHQ ping URL</h1>" in response.text
    assert runs_of(client, tracker["id"]) == []


def test_head_answers_without_a_body(client: AppClient) -> None:
    tracker = make_tracker(client)
    response = client.head(f"/ping/{tracker['token']}/fail")
    assert response.status_code == 200
    assert response.content == b""
    assert runs_of(client, tracker["id"]) == []


def test_get_on_an_unknown_token_says_so(client: AppClient) -> None:
    response = client.get("/ping/nope")
    assert response.status_code == 404
    assert "unknown token" in response.text


# --- start / end pairing ---------------------------------------------------------------------


def test_a_start_and_its_end_pair_by_run_id(client: AppClient) -> None:
    tracker = make_tracker(client)
    started = post(client, tracker, {"run_id": "run-1"}, "/start").json()
    assert started["run_id"] == "run-1"
    assert started["passed"] is None
    ended = post(client, tracker, {"run_id": "run-1", "status": "success"}).json()
    assert ended["run_id"] == "run-1"
    end, start = runs_of(client, tracker["id"])
    assert (start["status"], end["status"]) == ("start", "success")
    assert end["started_at"] == start["received_at"]
    assert end["duration_ms"] is not None
    assert end["duration_ms"] >= 0


def test_an_end_without_run_id_pairs_with_the_latest_open_start(client: AppClient) -> None:
    tracker = make_tracker(client)
    start = post(client, tracker, None, "/start").json()
    end = post(client, tracker, {"records_processed": 3}).json()
    assert end["run_id"] == start["run_id"]
    [end_run, start_run] = runs_of(client, tracker["id"])
    assert end_run["started_at"] == start_run["received_at"]
    assert end_run["duration_ms"] is not None
    # The start is closed now: the next end is a run of its own.
    again = post(client, tracker).json()
    assert again["run_id"] != start["run_id"]
    assert runs_of(client, tracker["id"])[0]["started_at"] is None


def test_an_end_pairs_with_an_older_start_by_run_id(client: AppClient) -> None:
    tracker = make_tracker(client)
    post(client, tracker, {"run_id": "a"}, "/start")
    post(client, tracker, {"run_id": "b"}, "/start")  # the latest open start is b
    post(client, tracker, {"run_id": "a"}, "/fail")
    run_a = runs_of(client, tracker["id"])[0]
    assert run_a["run_id"] == "a"
    assert run_a["status"] == "failure"
    assert run_a["started_at"] is not None
    end_b = post(client, tracker).json()  # pairs with b, still open
    assert end_b["run_id"] == "b"


def test_a_client_duration_wins_over_the_computed_one(client: AppClient) -> None:
    tracker = make_tracker(client)
    post(client, tracker, {"run_id": "r"}, "/start")
    post(client, tracker, {"run_id": "r", "duration": 1234.5})
    assert runs_of(client, tracker["id"])[0]["duration_ms"] == 1234.5


def test_a_start_does_not_change_the_state(client: AppClient) -> None:
    tracker = make_tracker(client, assertions=["records_processed > 0"])
    answer = post(client, tracker, None, "/start").json()
    assert answer["state"] == "new"
    assert answer["assertions"] == []  # a start is not evaluated
    assert tracker_of(client, tracker["id"])["state"] == "new"


# --- evaluation and state --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("assertion", "body", "passed", "reason"),
    [
        ("status = success", {"status": "success"}, True, 'status was "success"'),
        ("errors == 0", {"errors": 1}, False, "errors was 1, expected = 0"),
        ("errors != 0", {"errors": 0}, False, "errors was 0, expected != 0"),
        ("records_processed > 0", {"records_processed": 450}, True, "records_processed was 450"),
        ("cost_usd >= 5", {"cost_usd": 4.99}, False, "cost_usd was 4.99, expected >= 5"),
        ("cost_usd < 5", {"cost_usd": 4.99}, True, "cost_usd was 4.99"),
        ("eval_score <= 0.8", {"eval_score": 0.9}, False, "eval_score was 0.9, expected <= 0.8"),
        ('env in ["prod", "staging"]', {"env": "prod"}, True, 'env was "prod"'),
        (
            'env in ["prod", "staging"]',
            {"env": "dev"},
            False,
            'env was "dev", expected in ["prod", "staging"]',
        ),
        ("host ~ ^web-[0-9]+$", {"host": "web-12"}, True, 'host was "web-12"'),
        ("host matches ^db", {"host": "web-12"}, False, 'host was "web-12", expected ~ ^db'),
        ("records_processed > 0", {}, False, "missing"),
        ("errors = 0", {"errors": "zero"}, False, 'errors was "zero", expected = 0'),
    ],
)
def test_each_assertion_operator_end_to_end(
    client: AppClient, assertion: str, body: dict[str, Any], passed: bool, reason: str
) -> None:
    tracker = make_tracker(client, assertions=[assertion])
    answer = post(client, tracker, body).json()
    [result] = answer["assertions"]
    assert result["passed"] is passed
    assert result["reason"] == reason
    assert answer["state"] == ("up" if passed else "failing")
    [run] = runs_of(client, tracker["id"])
    assert run["passed"] is passed
    assert run["assertions"] == [result]


def test_a_failure_status_turns_the_tracker_failing_and_success_recovers(
    client: AppClient,
) -> None:
    tracker = make_tracker(client)
    assert post(client, tracker, None, "/fail").json()["state"] == "failing"
    assert post(client, tracker, {"status": "success"}).json()["state"] == "up"
    flips = flips_of(client, tracker["id"])
    assert [(f["old_state"], f["new_state"]) for f in flips] == [
        ("failing", "up"),
        ("new", "failing"),
    ]
    assert flips[1]["reason"] == "run reported status failure"
    assert flips[0]["reason"] == "run succeeded"
    assert flips[0]["run_id"] == runs_of(client, tracker["id"])[0]["id"]


def test_fail_suffix_overrides_the_body_status(client: AppClient) -> None:
    tracker = make_tracker(client)
    answer = post(client, tracker, {"status": "success"}, "/fail").json()
    assert answer["status"] == "failure"
    assert runs_of(client, tracker["id"])[0]["status"] == "failure"


def test_an_assertion_failure_turns_a_successful_exit_failing(client: AppClient) -> None:
    tracker = make_tracker(client, assertions=["records_processed > 0"])
    answer = post(client, tracker, {"status": "success", "records_processed": 0}).json()
    assert answer["state"] == "failing"
    assert answer["passed"] is False
    [flip] = flips_of(client, tracker["id"])
    assert flip["reason"] == "assertion failed: records_processed was 0, expected > 0"


@pytest.mark.parametrize("status", ["retry", "skipped", "cancelled"])
def test_retry_skipped_and_cancelled_do_not_flip(client: AppClient, status: str) -> None:
    tracker = make_tracker(client, assertions=["errors = 0"])
    post(client, tracker, {"errors": 0})
    answer = post(client, tracker, {"status": status, "errors": 5}).json()
    assert answer["state"] == "up"
    assert answer["passed"] is None
    assert tracker_of(client, tracker["id"])["consecutive_failures"] == 0
    assert len(flips_of(client, tracker["id"])) == 1


def test_the_failure_threshold_is_respected(client: AppClient) -> None:
    tracker = make_tracker(client, failure_threshold=3)
    post(client, tracker)
    states = [post(client, tracker, None, "/fail").json()["state"] for _ in range(4)]
    assert states == ["up", "up", "failing", "failing"]
    assert tracker_of(client, tracker["id"])["consecutive_failures"] == 4
    flips = flips_of(client, tracker["id"])
    assert [(f["old_state"], f["new_state"]) for f in flips] == [("up", "failing"), ("new", "up")]
    assert flips[0]["reason"] == (
        "run reported status failure (3 consecutive failures, threshold 3)"
    )
    # A success resets the count: two more failures stay below the threshold.
    post(client, tracker)
    assert [post(client, tracker, None, "/fail").json()["state"] for _ in range(2)] == ["up", "up"]


def test_a_retry_between_failures_does_not_reset_the_count(client: AppClient) -> None:
    tracker = make_tracker(client, failure_threshold=2)
    post(client, tracker, None, "/fail")
    post(client, tracker, {"status": "retry"})
    assert post(client, tracker, None, "/fail").json()["state"] == "failing"


def test_a_paused_tracker_records_but_keeps_its_state(client: AppClient) -> None:
    tracker = make_tracker(client)
    assert client.post(f"/api/v1/trackers/{tracker['id']}/pause").json()["state"] == "paused"
    answer = post(client, tracker, None, "/fail").json()
    assert answer["state"] == "paused"
    assert len(runs_of(client, tracker["id"])) == 1
    assert tracker_of(client, tracker["id"])["state"] == "paused"
    resumed = client.post(f"/api/v1/trackers/{tracker['id']}/resume").json()
    assert resumed["state"] == "new"
    assert post(client, tracker).json()["state"] == "up"


def test_state_changes_in_one_batch_are_computed_in_order(app: Any, client: AppClient) -> None:
    """Pings queued together are written in one transaction, each seeing the state the
    previous one left."""
    import asyncio

    from telemhq_server.db import utcnow
    from telemhq_server.ingest import Pending

    tracker = make_tracker(client)
    statuses = ["success", "failure", "failure", "success", "failure"]

    async def burst() -> list[tuple[int, dict[str, Any]]]:
        futures = [
            app.writer.submit(
                Pending(tracker["id"], tracker["token"], s, "{}", None, None, None, [], utcnow())
            )
            for s in statuses
        ]
        return list(await asyncio.gather(*futures))

    answers = client.call(burst)
    assert [a[1]["state"] for a in answers] == ["up", "failing", "failing", "up", "failing"]
    flips = flips_of(client, tracker["id"])
    assert [f["new_state"] for f in reversed(flips)] == ["up", "failing", "up", "failing"]
    assert tracker_of(client, tracker["id"])["n_runs"] == 5


# --- rotation, slug pings ---------------------------------------------------------------------


def test_a_rotated_token_stops_working(client: AppClient) -> None:
    tracker = make_tracker(client)
    assert post(client, tracker).status_code == 200
    rotated = client.post(f"/api/v1/trackers/{tracker['id']}/rotate-token").json()
    assert rotated["token"] != tracker["token"]
    assert rotated["ping_url"].endswith(rotated["token"])
    old = post(client, tracker)
    assert old.status_code == 404
    assert old.json()["error"] == "unknown token"
    assert client.post(f"/ping/{rotated['token']}").status_code == 200
    assert len(runs_of(client, tracker["id"])) == 2


def test_a_ping_key_creates_the_tracker_on_first_ping(client: AppClient) -> None:
    key = client.post("/api/v1/ping-keys", json={"name": "project"}).json()
    assert key["auto_create"] is True
    first = client.post(f"/ping/{key['key']}/etl-daily-load", json={"records_processed": 3})
    assert first.status_code == 200, first.text
    assert first.json()["state"] == "up"
    tracker = tracker_of(client, "etl-daily-load")  # type: ignore[arg-type]
    assert tracker["slug"] == "etl-daily-load"
    fail = client.post(f"/ping/{key['key']}/etl-daily-load/fail")
    assert fail.json()["state"] == "failing"
    start = client.post(f"/ping/{key['key']}/etl-daily-load/start")
    assert start.json()["status"] == "start"
    assert len(runs_of(client, tracker["id"])) == 3


def test_a_ping_key_names_and_tags_the_tracker_after_the_first_ping(client: AppClient) -> None:
    key = client.post("/api/v1/ping-keys", json={"name": "project"}).json()["key"]
    body = {"job": "etl_daily.Load Orders", "orchestrator": "airflow", "tags": ["team-data"]}
    first = client.post(f"/ping/{key}/etl-daily-load-orders/start", json=body)
    assert first.status_code == 200, first.text
    tracker = tracker_of(client, "etl-daily-load-orders")  # type: ignore[arg-type]
    assert tracker["name"] == "etl_daily.Load Orders"
    assert tracker["tags"] == ["airflow", "team-data"]
    # Later pings change neither.
    later = {"job": "renamed", "orchestrator": "prefect", "tags": ["other"]}
    assert client.post(f"/ping/{key}/etl-daily-load-orders", json=later).status_code == 200
    again = tracker_of(client, "etl-daily-load-orders")  # type: ignore[arg-type]
    assert (again["name"], again["tags"]) == ("etl_daily.Load Orders", ["airflow", "team-data"])
    assert [r["status"] for r in runs_of(client, tracker["id"])] == ["success", "start"]


@pytest.mark.parametrize(
    ("body", "name", "tags"),
    [
        ({}, "plain-job", []),
        ({"job": "   "}, "plain-job", []),
        ({"job": "x" * 201, "orchestrator": 5}, "plain-job", []),
        ({"job": 7, "tags": "not-a-list"}, "plain-job", []),
        ({"job": " Spaced ", "tags": ["a", 3, "", "b" * 101, "a", "c"]}, "Spaced", ["a", "c"]),
        ({"tags": [f"t{i}" for i in range(80)]}, "plain-job", [f"t{i}" for i in range(50)]),
    ],
)
def test_a_ping_keys_tracker_takes_only_usable_names_and_tags(
    client: AppClient, body: dict[str, Any], name: str, tags: list[str]
) -> None:
    key = client.post("/api/v1/ping-keys", json={}).json()["key"]
    response = client.post(f"/ping/{key}/plain-job", json=body)
    assert response.status_code == 200, response.text  # the ping is recorded either way
    tracker = tracker_of(client, "plain-job")  # type: ignore[arg-type]
    assert (tracker["name"], tracker["tags"]) == (name, tags)
    assert runs_of(client, tracker["id"])[0]["payload"] == body


def test_a_batch_ping_creates_the_tracker_from_its_body(client: AppClient) -> None:
    key = client.post("/api/v1/ping-keys", json={}).json()["key"]
    body = {"job": "batch.Job", "orchestrator": "celery"}
    pings = [
        {"ping": f"{key}/batch-job/start", "body": {**body, "run_id": "r1"}},
        {"ping": f"{key}/batch-job", "body": {"job": "other", "run_id": "r1"}},
        {"ping": f"{key}/batch-job", "body": {"run_id": "r2"}},
    ]
    answer = client.post("/ping/_batch", json={"pings": pings}).json()
    assert [r["status"] for r in answer["results"]] == [200, 200, 200]
    tracker = tracker_of(client, "batch-job")  # type: ignore[arg-type]
    assert (tracker["name"], tracker["tags"]) == ("batch.Job", ["celery"])
    # Stored in the batch's order, though all three waited for the tracker's creation.
    stored = runs_of(client, tracker["id"])
    assert [(r["status"], r["run_id"]) for r in stored] == [
        ("success", "r2"),
        ("success", "r1"),
        ("start", "r1"),
    ]


def test_an_invalid_first_ping_creates_no_tracker_and_a_get_never_does(
    client: AppClient,
) -> None:
    key = client.post("/api/v1/ping-keys", json={}).json()["key"]
    bad = client.post(f"/ping/{key}/not-yet", content=b"{not json")
    assert bad.status_code == 400
    looked = client.get(f"/ping/{key}/not-yet")
    assert looked.status_code == 404
    assert "no tracker with slug 'not-yet' yet (its first ping creates it)" in looked.text
    assert client.get("/api/v1/trackers/not-yet").status_code == 404
    assert client.post(f"/ping/{key}/not-yet").status_code == 200
    assert tracker_of(client, "not-yet")["name"] == "not-yet"  # type: ignore[arg-type]


def test_a_ping_key_reaches_existing_trackers_by_slug(client: AppClient) -> None:
    key = client.post("/api/v1/ping-keys", json={"auto_create": False}).json()
    tracker = make_tracker(client, name="Nightly ETL")
    assert tracker["slug"] == "nightly-etl"
    assert client.post(f"/ping/{key['key']}/nightly-etl").status_code == 200
    missing = client.post(f"/ping/{key['key']}/other-job")
    assert missing.status_code == 404
    assert missing.json()["error"] == (
        "no tracker with slug 'other-job' (this ping key does not create trackers)"
    )


def test_slug_pings_check_the_key_and_the_slug(client: AppClient) -> None:
    key = client.post("/api/v1/ping-keys", json={}).json()
    unknown = client.post("/ping/not-a-key/some-job")
    assert unknown.status_code == 404
    assert unknown.json()["error"] == "unknown token or ping key"
    bad = client.post(f"/ping/{key['key']}/Bad_Slug")
    assert bad.status_code == 400
    assert bad.json()["error"] == (
        "invalid slug 'Bad_Slug': use lowercase letters, digits and single dashes (e.g. 'bad-slug')"
    )


# --- atomicity ---------------------------------------------------------------------------------


def test_a_failed_transaction_leaves_no_partial_rows(
    app: Any, client: AppClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    tracker = make_tracker(client)
    post(client, tracker)

    def explode(*_args: Any, **_kwargs: Any) -> None:
        raise RuntimeError("disk on fire")

    # The runs are inserted, then the tracker update fails: everything must roll back.
    monkeypatch.setattr("telemhq_server.ingest.writer._tracker_params", explode)
    response = post(client, tracker, None, "/fail")
    assert response.status_code == 503
    assert response.json() == {"ok": False, "error": "storage unavailable, nothing was recorded"}
    monkeypatch.undo()
    assert len(runs_of(client, tracker["id"])) == 1
    assert tracker_of(client, tracker["id"])["state"] == "up"
    engine = make_engine(app.settings.database_url)
    with engine.connect() as conn:
        assert conn.execute(runs.select()).all().__len__() == 1
    engine.dispose()
    # The writer carries on afterwards.
    assert post(client, tracker, None, "/fail").json()["state"] == "failing"


def test_metrics_count_accepted_and_rejected_pings(client: AppClient) -> None:
    tracker = make_tracker(client)
    post(client, tracker)
    client.post("/ping/unknown")
    client.post(f"/ping/{tracker['token']}", content=b"[]")
    text = client.get("/metrics").text
    assert 'telemhq_pings_accepted_total{status="success"} 1' in text
    assert 'telemhq_pings_rejected_total{reason="unknown_token"} 1' in text
    assert 'telemhq_pings_rejected_total{reason="not_object"} 1' in text
    assert "telemhq_ingest_latency_seconds_count 1" in text
    assert 'telemhq_ingest_latency_seconds_bucket{le="+Inf"} 1' in text


# --- the batch endpoint (used by telemhq_plugins' delivery worker) ---------------------------


def test_a_batch_is_answered_ping_by_ping_in_order(client: AppClient) -> None:
    tracker = make_tracker(client, assertions=["errors = 0"])
    key = client.post("/api/v1/ping-keys", json={}).json()["key"]
    token = tracker["token"]
    response = client.post(
        "/ping/_batch",
        json={
            "pings": [
                {"ping": token, "body": {"errors": 0, "ping_id": "b-1"}},
                {"ping": "nope", "body": {}},
                {"ping": f"{token}/fail", "body": {"errors": 0}},
                {"ping": token, "body": [1]},
                {"ping": token, "body": {"status": "bad"}},
                {"ping": token, "body": {"errors": 0, "ping_id": "b-1"}},
                {"ping": f"{key}/batch-job/start"},
                {"body": {}},
            ]
        },
    )
    assert response.status_code == 200
    results = response.json()["results"]
    assert [r["status"] for r in results] == [200, 404, 200, 400, 400, 200, 200, 400]
    assert results[0]["state"] == "up"
    assert results[0]["assertions"][0]["passed"] is True
    assert results[1] == {"status": 404, "ok": False, "error": "unknown token"}
    assert results[2]["state"] == "failing"
    assert results[3]["error"] == "body must be a JSON object, got an array"
    assert results[4]["error"].startswith("status must be one of")
    assert results[5]["duplicate"] is True
    assert results[5]["run_id"] == results[0]["run_id"]
    assert results[6]["status"] == 200
    assert results[7]["error"] == 'each batch entry needs "ping": "<token>"'
    assert [r["status"] for r in runs_of(client, tracker["id"])] == ["failure", "success"]
    assert runs_of(client, tracker["id"])[1]["payload"] == {"errors": 0, "ping_id": "b-1"}


@pytest.mark.parametrize(
    "body",
    [b"[]", b'{"pings": {}}', b'{"items": []}', b"{", b'{"pings": [' + b"{}," * 1000 + b"{}]}"],
)
def test_a_malformed_batch_is_400(client: AppClient, body: bytes) -> None:
    response = client.post("/ping/_batch", content=body)
    assert response.status_code == 400
    assert response.json()["ok"] is False
