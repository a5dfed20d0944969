"""Helpers of the Airflow tests: a client from explicit settings, the server's view."""

from __future__ import annotations

import os
import time
from typing import Any

from telemhq_plugins.core import Client, load_settings, slugify
from tests.live_server import LiveServer


def make_client(server: LiveServer | None, **overrides: Any) -> Client:
    """A delivery client from explicit settings only (the developer's environment and config
    file never leak in): short timeouts, no retries."""
    options: dict[str, Any] = {"timeout": 2.0, "max_retries": 0, "flush_timeout": 10.0}
    if server is not None:
        options["base_url"] = server.base_url
    options.update(overrides)
    return Client(load_settings(env={}, config_file=os.devnull, **options))


def new_ping_key(server: LiveServer) -> str:
    response = server.api("POST", "/ping-keys", json={"name": "airflow", "auto_create": True})
    assert response.status_code == 201, response.text
    key: str = response.json()["key"]
    return key


def tracker(server: LiveServer, job: str) -> dict[str, Any] | None:
    response = server.api("GET", f"/trackers/{slugify(job)}")
    if response.status_code == 404:
        return None
    assert response.status_code == 200, response.text
    found: dict[str, Any] = response.json()
    return found


def runs_of(
    server: LiveServer, job: str, count: int, timeout: float = 20.0
) -> list[dict[str, Any]]:
    """The runs of ``job``'s tracker, oldest first, once there are ``count`` (fails with what
    it saw after ``timeout``). Start pings are runs too."""
    deadline = time.monotonic() + timeout
    seen: list[dict[str, Any]] = []
    while time.monotonic() < deadline:
        found = tracker(server, job)
        if found is not None:
            seen = server.runs(found["id"])
            if len(seen) >= count:
                break
        time.sleep(0.1)
    assert len(seen) >= count, f"{job}: expected {count} runs, saw {[r['status'] for r in seen]}"
    return list(reversed(seen))


def statuses(runs: list[dict[str, Any]]) -> list[str]:
    return [r["status"] for r in runs]
