"""The management API ``/api/v1``, on SQLite and PostgreSQL."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest
import sqlalchemy as sa
from telemhq_server.app import TelemHQ
from telemhq_server.db import api_keys

from tests.server.helpers import ADMIN_KEY, AppClient, flips_of, make_tracker, runs_of

# --- authentication and scopes ---------------------------------------------------------------


def test_it_requires_an_api_key(client: AppClient) -> None:
    response = client.get("/api/v1/trackers", headers={"Authorization": ""})
    assert response.status_code == 401
    assert response.json() == {
        "error": "missing API key: send the header 'Authorization: Bearer <key>'"
    }
    wrong = client.get("/api/v1/trackers", headers={"Authorization": "Bearer thq_wrong"})
    assert wrong.status_code == 401
    assert wrong.json() == {"error": "invalid API key"}
    basic = client.get("/api/v1/trackers", headers={"Authorization": "Basic abc"})
    assert basic.status_code == 401


def test_keys_are_stored_hashed(app: TelemHQ, client: AppClient) -> None:
    created = client.post("/api/v1/keys", json={"name": "ci", "scope": "read"}).json()
    with app.engine.connect() as conn:
        stored = [tuple(r) for r in conn.execute(sa.select(api_keys.c.key_hash, api_keys.c.prefix))]
    values = {value for row in stored for value in row}
    assert ADMIN_KEY not in values
    assert created["key"] not in values
    assert all(len(digest) == 64 for digest, _ in stored)
    listed = client.get("/api/v1/keys").json()["items"]
    assert {k["name"] for k in listed} == {"admin (TELEMHQ_API_KEY)", "ci"}
    assert all("key" not in k and "key_hash" not in k for k in listed)


def test_a_read_key_reads_but_cannot_write(client: AppClient) -> None:
    tracker = make_tracker(client)
    created = client.post("/api/v1/keys", json={"name": "dashboard", "scope": "read"})
    assert created.status_code == 201
    read_key = created.json()["key"]
    assert read_key.startswith("thq_")
    headers = {"Authorization": f"Bearer {read_key}"}
    assert client.get("/api/v1/trackers", headers=headers).status_code == 200
    assert client.get(f"/api/v1/trackers/{tracker['id']}/runs", headers=headers).status_code == 200
    for method, path in [
        ("POST", "/api/v1/trackers"),
        ("PATCH", f"/api/v1/trackers/{tracker['id']}"),
        ("DELETE", f"/api/v1/trackers/{tracker['id']}"),
        ("POST", f"/api/v1/trackers/{tracker['id']}/pause"),
        ("POST", f"/api/v1/trackers/{tracker['id']}/rotate-token"),
        ("POST", "/api/v1/keys"),
        ("GET", "/api/v1/keys"),
        ("POST", "/api/v1/ping-keys"),
    ]:
        response = client.request(method, path, headers=headers, json={"name": "x"})
        assert response.status_code == 403, (method, path)
        assert response.json() == {
            "error": "this API key is read-only; this action needs a read-write key"
        }


def test_a_write_key_can_do_everything_and_keys_can_be_revoked(client: AppClient) -> None:
    created = client.post("/api/v1/keys", json={"name": "ops", "scope": "write"}).json()
    headers = {"Authorization": f"Bearer {created['key']}"}
    assert (
        client.post("/api/v1/trackers", json={"name": "by ops"}, headers=headers).status_code == 201
    )
    assert client.delete(f"/api/v1/keys/{created['id']}").status_code == 204
    assert client.get("/api/v1/trackers", headers=headers).status_code == 401
    assert client.delete(f"/api/v1/keys/{created['id']}").status_code == 404


def test_a_key_scope_must_be_known(client: AppClient) -> None:
    response = client.post("/api/v1/keys", json={"scope": "admin"})
    assert response.status_code == 422
    assert response.json()["field"] == "scope"


# --- trackers CRUD ---------------------------------------------------------------------------


def test_create_answers_201_with_the_tracker(client: AppClient) -> None:
    response = client.post(
        "/api/v1/trackers",
        json={
            "name": "Nightly ETL",
            "assertions": ["records_processed > 0", "errors = 0"],
            "schedule": {
                "kind": "cron",
                "cron": "0 3 * * *",
                "timezone": "Europe/Paris",
                "grace_seconds": 600,
            },
            "max_runtime_seconds": 3600,
            "failure_threshold": 2,
            "tags": ["etl", "nightly"],
        },
    )
    assert response.status_code == 201
    tracker = response.json()
    required = {
        "id",
        "name",
        "slug",
        "token",
        "ping_url",
        "state",
        "assertions",
        "schedule",
        "n_runs",
        "last_run_at",
        "badge_url",
    }
    assert required <= set(tracker)
    assert tracker["slug"] == "nightly-etl"
    assert tracker["state"] == "new"
    assert tracker["ping_url"] == f"http://testserver/ping/{tracker['token']}"
    assert len(tracker["token"]) >= 22  # >= 128 random bits, URL-safe
    assert tracker["badge_url"].startswith("http://testserver/badge/")
    assert tracker["assertions"] == ["records_processed > 0", "errors = 0"]
    assert tracker["schedule"] == {
        "kind": "cron",
        "cron": "0 3 * * *",
        "timezone": "Europe/Paris",
        "grace_seconds": 600,
    }
    assert tracker["max_runtime_seconds"] == 3600
    assert tracker["failure_threshold"] == 2
    assert tracker["tags"] == ["etl", "nightly"]
    assert tracker["n_runs"] == 0
    assert tracker["last_run_at"] is None
    assert client.get(f"/api/v1/trackers/{tracker['id']}").json() == tracker
    assert client.get("/api/v1/trackers/nightly-etl").json() == tracker  # by slug too


def test_an_assertion_syntax_error_is_a_422_that_points_at_it(client: AppClient) -> None:
    response = client.post(
        "/api/v1/trackers", json={"name": "x", "assertions": ["errors = 0", "records >> 1"]}
    )
    assert response.status_code == 422
    body = response.json()
    assert body["field"] == "assertions[1]"
    assert body["expression"] == "records >> 1"
    assert body["position"] == 9
    assert body["pointer"] == "records >> 1\n         ^"
    assert body["error"].startswith("assertions[1]: ")
    assert "at position 9" in body["error"]
    assert client.get("/api/v1/trackers").json()["items"] == []


@pytest.mark.parametrize(
    ("fields", "field"),
    [
        ({"name": ""}, "name"),
        ({"name": "x", "slug": "Not A Slug"}, "slug"),
        ({"name": "x", "assertions": "errors = 0"}, "assertions"),
        ({"name": "x", "schedule": {"kind": "weekly"}}, "schedule.kind"),
        ({"name": "x", "schedule": {"kind": "period"}}, "schedule.period_seconds"),
        ({"name": "x", "schedule": {"kind": "cron", "cron": "every day"}}, "schedule.cron"),
        (
            {
                "name": "x",
                "schedule": {"kind": "cron", "cron": "0 3 * * *", "timezone": "Mars/Base"},
            },
            "schedule.timezone",
        ),
        ({"name": "x", "failure_threshold": 0}, "failure_threshold"),
        ({"name": "x", "max_runtime_seconds": "1h"}, "max_runtime_seconds"),
        ({"name": "x", "tags": [1]}, "tags"),
        ({"name": "x", "colour": "red"}, "colour"),
    ],
)
def test_invalid_fields_are_422_naming_the_field(
    client: AppClient, fields: dict[str, Any], field: str
) -> None:
    response = client.post("/api/v1/trackers", json=fields)
    assert response.status_code == 422
    assert response.json()["field"] == field


def test_a_body_that_is_not_json_is_400(client: AppClient) -> None:
    response = client.post("/api/v1/trackers", content=b"{nope")
    assert response.status_code == 400
    assert response.json()["error"].startswith("body is not valid JSON")


def test_an_oversized_api_body_is_413(client: AppClient) -> None:
    response = client.post("/api/v1/trackers", content=b"x" * 1_000_001)
    assert response.status_code == 413
    assert response.json() == {"error": "body is larger than the limit of 1000000 bytes"}


def test_a_taken_slug_is_409(client: AppClient) -> None:
    make_tracker(client, name="etl")
    response = client.post("/api/v1/trackers", json={"name": "ETL"})
    assert response.status_code == 409
    assert response.json() == {
        "error": "slug 'etl' is already used by another tracker",
        "field": "slug",
    }


def test_update_changes_only_the_given_fields(client: AppClient) -> None:
    tracker = make_tracker(client, name="etl", assertions=["errors = 0"], tags=["a"])
    response = client.patch(
        f"/api/v1/trackers/{tracker['id']}",
        json={
            "assertions": ["records_processed > 0"],
            "schedule": {"kind": "period", "period_seconds": 3600, "grace_seconds": 60},
        },
    )
    assert response.status_code == 200
    updated = response.json()
    assert updated["assertions"] == ["records_processed > 0"]
    assert updated["schedule"] == {"kind": "period", "period_seconds": 3600, "grace_seconds": 60}
    assert updated["name"] == "etl"
    assert updated["tags"] == ["a"]
    assert updated["token"] == tracker["token"]
    # The new assertions apply to the next ping at once (this process's cache is refreshed).
    answer = client.post(f"/ping/{tracker['token']}", json={"records_processed": 0}).json()
    assert answer["assertions"][0]["expression"] == "records_processed > 0"
    assert answer["state"] == "failing"
    bad = client.patch(f"/api/v1/trackers/{tracker['id']}", json={"assertions": ["x >"]})
    assert bad.status_code == 422
    assert client.patch("/api/v1/trackers/999999", json={"name": "y"}).status_code == 404


def test_a_period_schedule_sets_the_next_expected_ping(client: AppClient) -> None:
    tracker = make_tracker(client, schedule={"kind": "period", "period_seconds": 60})
    # Never pinged: the first ping is due one period after the schedule was set.
    created = dt.datetime.fromisoformat(tracker["created_at"].replace("Z", "+00:00"))
    first = dt.datetime.fromisoformat(tracker["next_expected_at"].replace("Z", "+00:00"))
    assert first - created == dt.timedelta(seconds=60)
    client.post(f"/ping/{tracker['token']}/start")
    started = client.get(f"/api/v1/trackers/{tracker['id']}").json()
    assert started["last_ping_at"] is None  # a start is not the ping the schedule waits for
    assert started["next_expected_at"] == tracker["next_expected_at"]
    client.post(f"/ping/{tracker['token']}")
    stored = client.get(f"/api/v1/trackers/{tracker['id']}").json()
    assert stored["last_ping_at"] is not None
    assert stored["next_expected_at"] is not None
    assert stored["next_expected_at"] > stored["last_ping_at"]
    client.post(f"/ping/{tracker['token']}", json={"status": "skipped"})  # the job did run
    skipped = client.get(f"/api/v1/trackers/{tracker['id']}").json()
    assert skipped["last_ping_at"] > stored["last_ping_at"]
    assert skipped["next_expected_at"] > stored["next_expected_at"]


def test_delete_removes_the_tracker_and_its_runs(client: AppClient) -> None:
    tracker = make_tracker(client)
    client.post(f"/ping/{tracker['token']}/fail")
    assert client.delete(f"/api/v1/trackers/{tracker['id']}").status_code == 204
    assert client.get(f"/api/v1/trackers/{tracker['id']}").status_code == 404
    assert client.get(f"/api/v1/trackers/{tracker['id']}/runs").status_code == 404
    assert client.post(f"/ping/{tracker['token']}").status_code == 404


def test_list_pages_trackers(client: AppClient) -> None:
    ids = [make_tracker(client, tags=["even" if i % 2 == 0 else "odd"])["id"] for i in range(5)]
    first = client.get("/api/v1/trackers", params={"limit": 2}).json()
    assert [t["id"] for t in first["items"]] == ids[:2]
    assert first["next"] is not None
    second = client.get("/api/v1/trackers", params={"limit": 2, "cursor": first["next"]}).json()
    assert [t["id"] for t in second["items"]] == ids[2:4]
    third = client.get("/api/v1/trackers", params={"limit": 2, "cursor": second["next"]}).json()
    assert [t["id"] for t in third["items"]] == ids[4:]
    assert third["next"] is None
    even = client.get("/api/v1/trackers", params={"tag": "even", "limit": 500}).json()["items"]
    assert [t["id"] for t in even] == ids[0::2]
    page = client.get("/api/v1/trackers", params={"tag": "even", "limit": 2}).json()
    assert [t["id"] for t in page["items"]] == [ids[0], ids[2]]
    rest = client.get(
        "/api/v1/trackers", params={"tag": "even", "limit": 2, "cursor": page["next"]}
    ).json()
    assert [t["id"] for t in rest["items"]] == [ids[4]]
    assert rest["next"] is None
    client.post(f"/ping/{client.get(f'/api/v1/trackers/{ids[1]}').json()['token']}")
    up = client.get("/api/v1/trackers", params={"state": "up"}).json()["items"]
    assert [t["id"] for t in up] == [ids[1]]
    assert client.get("/api/v1/trackers", params={"limit": 0}).status_code == 400
    assert client.get("/api/v1/trackers", params={"cursor": "x"}).status_code == 400


# --- runs, flips, pause/resume, rotation ------------------------------------------------------


def test_runs_are_paged_newest_first_and_filter_by_status(client: AppClient) -> None:
    tracker = make_tracker(client)
    statuses = ["success", "failure", "success", "retry", "success"]
    for i, status in enumerate(statuses):
        client.post(f"/ping/{tracker['token']}", json={"status": status, "n": i})
    page = client.get(f"/api/v1/trackers/{tracker['id']}/runs", params={"limit": 2}).json()
    assert [r["payload"]["n"] for r in page["items"]] == [4, 3]
    page2 = client.get(
        f"/api/v1/trackers/{tracker['id']}/runs", params={"limit": 2, "cursor": page["next"]}
    ).json()
    assert [r["payload"]["n"] for r in page2["items"]] == [2, 1]
    rest = client.get(
        f"/api/v1/trackers/{tracker['id']}/runs", params={"limit": 2, "cursor": page2["next"]}
    ).json()
    assert [r["payload"]["n"] for r in rest["items"]] == [0]
    assert rest["next"] is None
    successes = runs_of(client, tracker["id"], status="success")
    assert [r["payload"]["n"] for r in successes] == [4, 2, 0]
    run = successes[0]
    assert {"id", "ping_id", "status", "passed", "assertions", "payload", "received_at"} <= set(run)
    bad = client.get(f"/api/v1/trackers/{tracker['id']}/runs", params={"status": "done"})
    assert bad.status_code == 400


def test_pause_and_resume_are_flips(client: AppClient) -> None:
    tracker = make_tracker(client)
    client.post(f"/ping/{tracker['token']}")
    paused = client.post(f"/api/v1/trackers/{tracker['id']}/pause").json()
    assert paused["paused"] is True
    assert paused["state"] == "paused"
    again = client.post(f"/api/v1/trackers/{tracker['id']}/pause").json()  # idempotent
    assert again["state"] == "paused"
    resumed = client.post(f"/api/v1/trackers/{tracker['id']}/resume").json()
    assert resumed["paused"] is False
    assert resumed["state"] == "new"
    flips = flips_of(client, tracker["id"])
    assert [(f["old_state"], f["new_state"], f["reason"]) for f in flips] == [
        ("paused", "new", "resumed through the API"),
        ("up", "paused", "paused through the API"),
        ("new", "up", "first successful run"),
    ]


def test_rotate_token_gives_a_new_token(client: AppClient) -> None:
    tracker = make_tracker(client)
    rotated = client.post(f"/api/v1/trackers/{tracker['id']}/rotate-token")
    assert rotated.status_code == 200
    assert rotated.json()["token"] != tracker["token"]
    assert client.post(f"/ping/{tracker['token']}").status_code == 404


# --- ping keys, OpenAPI, ops ------------------------------------------------------------------


def test_ping_keys_can_be_listed_and_deleted(client: AppClient) -> None:
    key = client.post("/api/v1/ping-keys", json={"name": "project", "auto_create": False})
    assert key.status_code == 201
    assert key.json()["auto_create"] is False
    listed = client.get("/api/v1/ping-keys").json()["items"]
    assert [k["key"] for k in listed] == [key.json()["key"]]
    assert client.delete(f"/api/v1/ping-keys/{key.json()['id']}").status_code == 204
    assert client.post(f"/ping/{key.json()['key']}/job").status_code == 404


def test_the_openapi_document_is_served_without_a_key(client: AppClient) -> None:
    response = client.get("/api/v1/openapi.json", headers={"Authorization": ""})
    assert response.status_code == 200
    doc = response.json()
    assert doc["openapi"].startswith("3.")
    assert "/api/v1/trackers" in doc["paths"]
    assert "/ping/{token}" in doc["paths"]
    tracker_schema = doc["components"]["schemas"]["Tracker"]
    assert {"id", "token", "ping_url", "badge_url", "n_runs"} <= set(tracker_schema["required"])


def test_healthz_checks_the_database(client: AppClient) -> None:
    response = client.get("/healthz")
    assert response.status_code == 200
    assert response.json() == {"status": "ok", "database": "ok"}


def test_healthz_reports_a_broken_database(
    client: AppClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    def down(_engine: Any) -> None:
        raise sa.exc.OperationalError("SELECT 1", {}, Exception("connection refused"))

    monkeypatch.setattr("telemhq_server.host.check_database", down)
    broken = client.get("/healthz")
    assert broken.status_code == 503
    assert broken.json()["status"] == "error"
    assert "connection refused" in broken.json()["database"]


def test_it_applies_a_new_schedule_from_the_last_ping(client: AppClient) -> None:
    tracker = make_tracker(client, schedule={"kind": "period", "period_seconds": 86400})
    assert client.post(f"/ping/{tracker['token']}").status_code == 200
    before = client.get(f"/api/v1/trackers/{tracker['id']}").json()
    last_ping = dt.datetime.fromisoformat(before["last_ping_at"].replace("Z", "+00:00"))
    changed = client.patch(
        f"/api/v1/trackers/{tracker['id']}",
        json={"schedule": {"kind": "period", "period_seconds": 60, "grace_seconds": 30}},
    ).json()
    due = dt.datetime.fromisoformat(changed["next_expected_at"].replace("Z", "+00:00"))
    assert due - last_ping == dt.timedelta(seconds=60)
    cleared = client.patch(
        f"/api/v1/trackers/{tracker['id']}", json={"schedule": {"kind": "none"}}
    ).json()
    assert cleared["next_expected_at"] is None
