"""The ping writer's view of each tracker's history, for history-relative assertions.

History is read in the writer's transaction, after the tracker's row is locked: what a run is
judged against is what the database holds at that moment, whichever server process stored
it. A process keeps the history it read (and the runs it stored since) only as a cache
*validated against the locked row*: the tracker's token and its count of stored runs
(``trackers.n_runs``, which every stored run increments under the same lock). When they
match, nobody else stored a run since; when another process did, the missing newest runs are
read (or everything, when too many); a transaction that did not commit takes its runs back.
So two processes never judge one ping against different histories.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Final

from telemhq_plugins.core.assertions import History
from telemhq_server.baselines import past_run
from telemhq_server.ingest.sql import Statements

__all__ = ["HistoryCache"]

MAX_TRACKERS: Final = 10_000


@dataclass(slots=True)
class _Entry:
    token: str
    #: the tracker's stored runs the history holds (``trackers.n_runs`` when it was current)
    n_runs: int
    history: History


class HistoryCache:
    """Tracker id -> its history (the newest ``limit`` runs), validated in each transaction."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._entries: dict[int, _Entry] = {}
        #: the entries a transaction in progress uses: id -> (entry, runs held, n_runs)
        self._open: dict[int, tuple[_Entry, int, int]] = {}

    def prepare(
        self,
        cursor: Any,
        sql: Statements,
        rows: dict[int, dict[str, Any]],
        tracker_ids: Iterable[int],
    ) -> dict[int, History]:
        """The current history of each tracker in ``tracker_ids`` (their ``rows`` locked by
        the caller's transaction), reading what this process does not hold yet."""
        out: dict[int, History] = {}
        for tracker_id in tracker_ids:
            row = rows.get(tracker_id)
            if row is None:
                continue
            n_runs, token = int(row["n_runs"]), row["token"]
            entry = self._entries.get(tracker_id)
            if (
                entry is None
                or entry.token != token
                or not 0 <= n_runs - entry.n_runs <= self.limit
            ):
                entry = _Entry(token, n_runs, History(limit=self.limit))
                self._read(cursor, sql, tracker_id, min(n_runs, self.limit), entry.history)
                if len(self._entries) >= MAX_TRACKERS:
                    self._entries.pop(next(iter(self._entries)))
                self._entries[tracker_id] = entry
            elif n_runs > entry.n_runs:  # another process stored runs since
                self._read(cursor, sql, tracker_id, n_runs - entry.n_runs, entry.history)
            entry.n_runs = n_runs
            self._open[tracker_id] = (entry, entry.history.stored, n_runs)
            out[tracker_id] = entry.history
        return out

    def commit(self) -> None:
        """The transaction committed: each history now holds the runs it stored."""
        for entry, held, n_runs in self._open.values():
            entry.n_runs = n_runs + entry.history.stored - held
            entry.history.compact()
        self._open.clear()

    def rollback(self) -> None:
        """The transaction did not commit: forget what it read and appended."""
        for tracker_id in self._open:
            self._entries.pop(tracker_id, None)
        self._open.clear()

    @staticmethod
    def _read(cursor: Any, sql: Statements, tracker_id: int, n: int, history: History) -> None:
        """Append the tracker's newest ``n`` stored runs, oldest first."""
        if n <= 0:
            return
        cursor.execute(sql.recent_runs, (tracker_id, n))
        for status, passed, payload, received_at in reversed(cursor.fetchall()):
            history.append(past_run(status, passed, payload, sql.from_db(received_at)))
