"""Fixtures for the Dagster adapter tests: the real reference server over HTTP, a ping key
(trackers auto-created per job name on first ping), the process's delivery client pointed
at it, and a temporary ``DAGSTER_HOME`` instance."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from dagster import DagsterInstance, instance_for_test

from telemhq_plugins.core import Client, load_settings, set_client, slugify
from tests.live_server import LiveServer

__all__ = ["Stored", "make_client"]


class Stored:
    """The runs the server stored, found by job name (the tracker is auto-created by slug)."""

    def __init__(self, live: LiveServer) -> None:
        self.live = live
        self.base_url = live.base_url
        response = live.api("POST", "/ping-keys", json={"name": "dagster-tests"})
        assert response.status_code == 201, response.text
        self.ping_key: str = response.json()["key"]

    def tracker(self, job: str) -> dict[str, Any] | None:
        response = self.live.api("GET", f"/trackers/{slugify(job)}")
        if response.status_code == 404:
            return None
        assert response.status_code == 200, response.text
        return dict(response.json())

    def runs(self, job: str, run_id: str | None = None) -> list[dict[str, Any]]:
        """The stored pings of ``job`` (payloads), oldest first; ``run_id``'s only if given."""
        tracker = self.tracker(job)
        if tracker is None:
            return []
        payloads = [run["payload"] for run in reversed(self.live.runs(tracker["id"]))]
        return [p for p in payloads if run_id is None or p.get("run_id") == run_id]

    def wait(
        self, job: str, count: int, run_id: str | None = None, *, timeout: float = 60.0
    ) -> list[dict[str, Any]]:
        """The first ``count`` pings of ``job`` (a generous bound for a busy machine)."""
        deadline = time.monotonic() + timeout
        while True:
            found = self.runs(job, run_id)
            if len(found) >= count:
                return found
            if time.monotonic() > deadline:
                raise AssertionError(f"{job}: expected {count} ping(s) of {run_id}; got {found}")
            time.sleep(0.1)


def make_client(base_url: str, **overrides: Any) -> Client:
    """A delivery client from explicit settings only (the developer's environment and config
    file never leak in): short timeouts, no retries."""
    options: dict[str, Any] = {
        "base_url": base_url,
        "timeout": 2.0,
        "max_retries": 0,
        "flush_timeout": 5.0,
    }
    options.update(overrides)
    return Client(load_settings(env={}, config_file=os.devnull, **options))


@pytest.fixture(scope="module")
def server() -> Iterator[Stored]:
    with LiveServer() as live:
        yield Stored(live)


@pytest.fixture
def client(server: Stored) -> Iterator[Client]:
    """The process-wide delivery client, pointed at the server through its ping key."""
    current = make_client(server.base_url, ping_key=server.ping_key)
    previous = set_client(current)
    yield current
    current.close()
    set_client(previous)


@pytest.fixture
def instance(tmp_path: Path) -> Iterator[DagsterInstance]:
    """A Dagster instance on a temporary ``DAGSTER_HOME`` (SQLite storage)."""
    with instance_for_test(temp_dir=str(tmp_path)) as inst:
        yield inst
