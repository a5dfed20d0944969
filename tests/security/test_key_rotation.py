"""Rotating the admin key: a new ``TELEMHQ_API_KEY`` revokes the previous one at start-up,
while keys created through the API stay valid."""

from __future__ import annotations

import httpx
from telemhq_server.app import create_app
from telemhq_server.cli import prepare
from telemhq_server.config import Settings
from telemhq_server.keys import ENV_KEY_NAME

from tests.live_server import LiveServer
from tests.server.helpers import AppClient

OLD, NEW = "thq_rotation_old_key_0123456789", "thq_rotation_new_key_9876543210"


def _status(client: AppClient, key: str) -> int:
    answer = client.get("/api/v1/trackers", headers={"Authorization": f"Bearer {key}"})
    return answer.status_code


def test_a_new_env_key_revokes_the_previous_one_and_keeps_api_keys(db_url: str) -> None:
    old = Settings(database_url=db_url, api_key=OLD, prune_interval=3600)
    prepare(old)
    with AppClient(create_app(old), headers={"Authorization": f"Bearer {OLD}"}) as client:
        made = client.post("/api/v1/keys", json={"name": "ci", "scope": "write"})
        assert made.status_code == 201, made.text
        api_key = made.json()["key"]
        login = client.post("/dashboard/login", data={"api_key": OLD})
        assert login.status_code == 303
        cookie = login.cookies["telemhq_session"]

    new = Settings(database_url=db_url, api_key=NEW, prune_interval=3600)
    prepare(new)
    prepare(new)  # a second start with the same key changes nothing
    with AppClient(create_app(new)) as client:
        assert _status(client, OLD) == 401
        assert _status(client, NEW) == 200
        assert _status(client, api_key) == 200
        listed = client.get("/api/v1/keys", headers={"Authorization": f"Bearer {NEW}"}).json()
        assert sorted(k["name"] for k in listed["items"]) == sorted([ENV_KEY_NAME, "ci"])
        # The old key's dashboard session ended with it.
        page = client.get("/dashboard/", headers={"Cookie": f"telemhq_session={cookie}"})
        assert page.status_code == 303
        assert page.headers["location"].startswith("/dashboard/login")


def test_the_reserved_name_cannot_be_taken_through_the_api(client: AppClient) -> None:
    answer = client.post("/api/v1/keys", json={"name": ENV_KEY_NAME, "scope": "write"})
    assert answer.status_code == 422
    assert answer.json()["field"] == "name"


def test_restarting_the_real_server_with_a_new_key_revokes_the_old_one() -> None:
    with LiveServer(api_key=OLD) as first:
        assert first.api("GET", "/trackers").status_code == 200
        second = LiveServer(first.database_url, api_key=NEW)
        first.stop()
        with second:
            old = httpx.get(
                f"{second.base_url}/api/v1/trackers",
                headers={"Authorization": f"Bearer {OLD}"},
                timeout=10,
            )
            assert old.status_code == 401
            assert second.api("GET", "/trackers").status_code == 200
