"""The writer's statements as driver SQL, one set per dialect."""

from __future__ import annotations

import datetime as dt
import functools
from typing import Any, Final

from telemhq_server.db import as_utc

__all__ = ["Statements"]


class Statements:
    """The writer's statements as driver SQL: no SQLAlchemy compilation or type processing
    per batch. Datetimes cross as SQLAlchemy stores them (SQLite: ISO text without offset,
    always UTC; PostgreSQL: timestamptz)."""

    TRACKER_COLUMNS: Final = (
        "id",
        "token",
        "state",
        "consecutive_failures",
        "failure_threshold",
        "paused",
        "open_start_at",
        "open_start_run_id",
        "schedule_kind",
        "period_seconds",
        "cron",
        "timezone",
        "n_runs",
    )

    def __init__(self, dialect: str) -> None:
        self.sqlite = dialect == "sqlite"
        self.p = p = "?" if self.sqlite else "%s"
        ts = p if self.sqlite else "%s::timestamptz"
        columns = (
            "tracker_id, ping_id, run_id, status, passed, duration_ms, payload, assertions, "
            "received_at, started_at"
        )
        self._insert_head = f"INSERT INTO runs ({columns}) VALUES "
        self._insert_row = f"({', '.join([p] * 10)})"
        self.update_tracker = (
            f"UPDATE trackers SET state = {p}, consecutive_failures = {p}, "
            f"state_changed_at = COALESCE({ts}, state_changed_at), "
            f"open_start_at = {ts}, open_start_run_id = {p}, last_run_at = {ts}, "
            f"last_ping_at = COALESCE({ts}, last_ping_at), "
            f"next_expected_at = CASE WHEN {p} THEN {ts} ELSE next_expected_at END, "
            f"n_runs = n_runs + {p} WHERE id = {p}"
        )

        #: a tracker's newest runs, for history-relative assertions
        self.recent_runs = (
            "SELECT status, passed, payload, received_at FROM runs "
            f"WHERE tracker_id = {p} ORDER BY id DESC LIMIT {p}"
        )

    @functools.cache  # noqa: B019 - a few instances, one per dialect, live as long as the app
    def insert_runs(self, n: int) -> str:
        return self._insert_head + ", ".join([self._insert_row] * n)

    def _list(self, n: int) -> str:
        return ", ".join([self.p] * n)

    def lock_trackers(self, n: int) -> str:
        lock = "" if self.sqlite else " ORDER BY id FOR UPDATE"
        return (
            f"SELECT {', '.join(self.TRACKER_COLUMNS)} FROM trackers "
            f"WHERE id IN ({self._list(n)}){lock}"
        )

    def find_ping_ids(self, n_trackers: int, n_pings: int) -> str:
        return (
            "SELECT tracker_id, ping_id, run_id, assertions, status, received_at FROM runs "
            f"WHERE tracker_id IN ({self._list(n_trackers)}) "
            f"AND ping_id IN ({self._list(n_pings)})"
        )

    def find_starts(self, n_trackers: int, n_runs: int) -> str:
        return (
            "SELECT tracker_id, run_id, MAX(received_at) FROM runs "
            f"WHERE tracker_id IN ({self._list(n_trackers)}) "
            f"AND run_id IN ({self._list(n_runs)}) AND status = 'start' "
            "GROUP BY tracker_id, run_id"
        )

    def to_db(self, value: dt.datetime | None) -> Any:
        """An aware UTC datetime as a statement parameter."""
        if value is None or not self.sqlite:
            return value
        return value.replace(tzinfo=None).isoformat(" ", "microseconds")

    def from_db(self, value: Any) -> dt.datetime:
        """A datetime column as read by driver SQL, as an aware UTC datetime."""
        if isinstance(value, str):
            value = dt.datetime.fromisoformat(value)
        aware = as_utc(value)
        assert aware is not None
        return aware
