"""The reference server (a real ``telemhq-server`` subprocess) with one tracker per test task,
and helpers to wait for what it stored."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from tests.kit import wait_until
from tests.live_server import LiveServer

__all__ = ["JOBS", "Stored", "TelemHQ"]

#: every task name the tests run; each gets its own tracker.
JOBS = (
    "tests.add",
    "tests.boom",
    "tests.flaky",
    "tests.quiet",
    "tests.ignored",
    "tests.sleepy",
)


@dataclass(frozen=True)
class Stored:
    """One run row as the server stored it."""

    tracker: str  # the tracker's job name ("special" for the token-option tracker)
    status: str
    passed: bool
    body: dict[str, Any]


class TelemHQ:
    """Trackers on a live server: ``trackers_map`` routes each job to its own tracker
    (``TELEMHQ_TRACKERS``), ``special_token`` is for the task that names its token itself."""

    def __init__(self, live: LiveServer) -> None:
        self.live = live
        self.base_url = live.base_url
        self.trackers: dict[str, dict[str, Any]] = {
            job: live.create_tracker(name=job) for job in (*JOBS, "special", "default")
        }
        self.trackers_map = tuple((job, self.trackers[job]["token"]) for job in JOBS)
        self.special_token: str = self.trackers["special"]["token"]
        self.default_token: str = self.trackers["default"]["token"]

    def tracker(self, job: str) -> dict[str, Any]:
        return self.live.tracker(self.trackers[job]["id"])

    def runs(self, job: str, task_id: str | None = None) -> list[Stored]:
        """Runs of ``job``'s tracker, oldest first; only ``task_id``'s when given."""
        stored = [
            Stored(job, run["status"], run["passed"], run["payload"])
            for run in reversed(self.live.runs(self.trackers[job]["id"]))
        ]
        if task_id is not None:
            stored = [s for s in stored if s.body.get("run_id") == task_id]
        return stored

    def wait_finals(
        self, job: str, task_id: str, *, count: int = 1, timeout: float = 60.0
    ) -> list[Stored]:
        """The first ``count`` non-``start`` runs of ``task_id`` (a generous bound for a busy
        machine, not a speed assertion)."""
        return self._wait(job, task_id, lambda s: s.status != "start", count, timeout)

    def wait_start(self, job: str, task_id: str, *, timeout: float = 60.0) -> Stored:
        return self._wait(job, task_id, lambda s: s.status == "start", 1, timeout)[0]

    def _wait(self, job: str, task_id: str, keep: Any, count: int, timeout: float) -> list[Stored]:
        found: list[Stored] = []

        def enough() -> bool:
            found[:] = [s for s in self.runs(job, task_id) if keep(s)]
            return len(found) >= count

        wait_until(
            enough,
            lambda: (
                f"{job}: {count} run(s) of {task_id}; stored "
                f"{[(s.status, s.body.get('run_id')) for s in self.runs(job)]}"
            ),
            timeout=timeout,
        )
        return found[:count]
