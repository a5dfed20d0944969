"""Fixtures for the Dagster adapter tests: the runs the real reference server stored, by job
name (``server``: the kit's ``live_server`` and ``ping_key``, trackers auto-created per job
name on first ping), and a temporary ``DAGSTER_HOME`` instance. The process's delivery client
is the kit's ``client``."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from dagster import DagsterInstance, instance_for_test

from telemhq_plugins.core import slugify
from tests.kit import tracker_by_slug, wait_until
from tests.live_server import LiveServer

__all__ = ["Stored"]


class Stored:
    """The runs the server stored, found by job name (the tracker is auto-created by slug)."""

    def __init__(self, live: LiveServer, ping_key: str) -> None:
        self.live = live
        self.base_url = live.base_url
        self.ping_key = ping_key

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
        found: list[dict[str, Any]] = []

        def enough() -> bool:
            found[:] = self.runs(job, run_id)
            return len(found) >= count

        wait_until(
            enough,
            lambda: f"{job}: {count} ping(s) of {run_id}; got {found}",
            timeout=timeout,
            interval=0.1,
        )
        return [r["payload"] for r in found]


@pytest.fixture(scope="module")
def server(live_server: LiveServer, ping_key: str) -> Stored:
    return Stored(live_server, ping_key)


@pytest.fixture
def instance(tmp_path: Path) -> Iterator[DagsterInstance]:
    """A Dagster instance on a temporary ``DAGSTER_HOME`` (SQLite storage)."""
    with instance_for_test(temp_dir=str(tmp_path)) as inst:
        yield inst
