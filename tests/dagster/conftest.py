"""Fixtures for the Dagster adapter tests: the real reference server over HTTP, a ping key
(trackers auto-created per job name on first ping), the process's delivery client pointed
at it, and a temporary ``DAGSTER_HOME`` instance."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from dagster import DagsterInstance, instance_for_test

from telemhq_plugins.core import Client, set_client, slugify
from tests.kit import client_for, ping_key, tracker_by_slug
from tests.live_server import LiveServer

__all__ = ["Stored"]


class Stored:
    """The runs the server stored, found by job name (the tracker is auto-created by slug)."""

    def __init__(self, live: LiveServer) -> None:
        self.live = live
        self.base_url = live.base_url
        self.ping_key = ping_key(live)

    def tracker(self, job: str) -> dict[str, Any] | None:
        return tracker_by_slug(self.live, slugify(job))

    def runs(self, job: str, run_id: str | None = None) -> list[dict[str, Any]]:
        """The stored runs of ``job``, oldest first; ``run_id``'s only if given."""
        tracker = self.tracker(job)
        if tracker is None:
            return []
        runs = list(reversed(self.live.runs(tracker["id"])))
        return [r for r in runs if run_id is None or r["payload"].get("run_id") == run_id]

    def wait(
        self, job: str, count: int, run_id: str | None = None, *, timeout: float = 60.0
    ) -> list[dict[str, Any]]:
        """The payloads of ``job``'s first ``count`` pings (of ``run_id``), oldest first
        (a generous bound for a busy machine, not a speed assertion)."""
        deadline = time.monotonic() + timeout
        while True:
            found = self.runs(job, run_id)
            if len(found) >= count:
                return [r["payload"] for r in found]
            if time.monotonic() > deadline:
                raise AssertionError(f"{job}: expected {count} ping(s) of {run_id}; got {found}")
            time.sleep(0.1)


@pytest.fixture(scope="module")
def server() -> Iterator[Stored]:
    with LiveServer() as live:
        yield Stored(live)


@pytest.fixture
def client(server: Stored) -> Iterator[Client]:
    """The process-wide delivery client, pointed at the server through its ping key."""
    current = client_for(server.live, ping_key=server.ping_key)
    previous = set_client(current)
    yield current
    current.close()
    set_client(previous)


@pytest.fixture
def instance(tmp_path: Path) -> Iterator[DagsterInstance]:
    """A Dagster instance on a temporary ``DAGSTER_HOME`` (SQLite storage)."""
    with instance_for_test(temp_dir=str(tmp_path)) as inst:
        yield inst
