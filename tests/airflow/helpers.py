"""Helpers of the Airflow tests over the shared test kit: the server's view of a job."""

from __future__ import annotations

from typing import Any

from telemhq_plugins.core import slugify
from tests.kit import tracker_by_slug, wait_for_runs
from tests.live_server import LiveServer

__all__ = ["block", "run_count", "runs_of", "tracker"]


def tracker(server: LiveServer, job: str) -> dict[str, Any] | None:
    return tracker_by_slug(server, slugify(job))


def runs_of(
    server: LiveServer, job: str, count: int, *, timeout: float = 30.0
) -> list[dict[str, Any]]:
    """The runs of ``job``'s tracker, oldest first, once there are ``count``, and exactly
    ``count`` (start pings are runs too)."""
    runs = list(reversed(wait_for_runs(server, slugify(job), count, timeout=timeout)))
    assert len(runs) == count, f"{job}: {[(r['status'], r['run_id']) for r in runs]}"
    return runs


def run_count(server: LiveServer, job: str) -> int:
    found = tracker(server, job)
    return 0 if found is None else len(server.runs(found["id"]))


def block(run: dict[str, Any]) -> dict[str, Any]:
    """The ``airflow`` block of a stored run."""
    found: dict[str, Any] = run["payload"]["airflow"]
    return found
