"""The ping writer's view of each tracker's history, for history-relative assertions.

History is read in the writer's transaction, after the tracker's row is locked: what a run is
judged against is what the database holds at that moment, whichever server process stored
it. A process keeps the history it read (and the runs it stored since) only as a cache
*validated against the locked row*: the tracker's token and its count of stored runs
(``trackers.n_runs``, which every stored run increments under the same lock). When they
match, nobody else stored a run since; when another process did, the missing newest runs are
read (or everything, when too many); a transaction that did not commit takes its runs back.
So two processes never judge one ping against different histories.

On SQLite, where the writer's statements run on the event loop like the request handlers, a
ping is also judged *speculatively* when it is queued (:meth:`HistoryCache.speculate`):
against the cached history followed by the pings queued before it, as the transaction will
see it if nothing else is written meanwhile. The transaction then only checks that the run
sits where the speculation put it (same history, same position, same timezone) and keeps
its results; anything else (another process's runs, a duplicate skipped, a rolled-back
batch) throws the speculation away and the run is judged again, in the transaction. The
verdict is the same either way; the work is done while the previous batch commits.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, Final

from telemhq_plugins.core.assertions import AssertionResult, History
from telemhq_plugins.core.history import PastRun
from telemhq_server.baselines import past_run
from telemhq_server.ingest.sql import Statements

__all__ = ["HistoryCache", "Speculation"]

MAX_TRACKERS: Final = 10_000

#: ``judge(history) -> (results, run)``: a ping's results against ``history``, and the run it
#: adds to it.
Judge = Callable[[History], tuple[list[AssertionResult], PastRun]]


@dataclass(slots=True)
class _Entry:
    token: str
    #: the tracker's stored runs the history holds up to ``frontier``
    n_runs: int
    history: History
    #: absolute position (``history.dropped`` + index) of the next run a transaction adds;
    #: runs from there on are speculative
    frontier: int = 0
    #: bumped whenever speculative runs are thrown away
    epoch: int = 0


@dataclass(frozen=True, slots=True)
class Speculation:
    """A ping judged when it was queued: valid while its run is next at ``position``."""

    entry: _Entry
    epoch: int
    position: int
    timezone: str | None
    results: list[AssertionResult] = field(default_factory=list)


class HistoryCache:
    """Tracker id -> its history (the newest ``limit`` runs), validated in each transaction."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._entries: dict[int, _Entry] = {}
        #: the entries a transaction in progress uses: id -> (entry, frontier, n_runs)
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
                entry.frontier = entry.history.dropped + entry.history.stored
                if len(self._entries) >= MAX_TRACKERS:
                    self._entries.pop(next(iter(self._entries)))
                self._entries[tracker_id] = entry
            elif n_runs > entry.n_runs:  # another process stored runs since
                self._drop_speculation(entry)
                self._read(cursor, sql, tracker_id, n_runs - entry.n_runs, entry.history)
                entry.frontier = entry.history.dropped + entry.history.stored
                entry.n_runs = n_runs
            self._open[tracker_id] = (entry, entry.frontier, n_runs)
            out[tracker_id] = entry.history
        return out

    def speculate(
        self, tracker_id: int, token: str, timezone: str | None, judge: Judge
    ) -> Speculation | None:
        """Judge a ping as it is queued, against the cached history and the pings queued
        before it (see the module's docstring); None when nothing is cached yet."""
        entry = self._entries.get(tracker_id)
        if entry is None or entry.token != token:
            return None
        history = entry.history
        results, run = judge(history)
        history.append(run)
        position = history.dropped + history.stored - 1
        return Speculation(entry, entry.epoch, position, timezone, results)

    def take(
        self, tracker_id: int, speculation: Speculation | None, timezone: str | None
    ) -> list[AssertionResult] | None:
        """In the transaction: the speculation's results when its run is the next one of
        the tracker's history (it is then stored there), else None, and the speculative runs
        are dropped: judge the ping now, then :meth:`append` its run."""
        entry = self._open[tracker_id][0]
        if (
            speculation is not None
            and speculation.entry is entry
            and speculation.epoch == entry.epoch
            and speculation.position == entry.frontier
            and speculation.timezone == timezone
        ):
            entry.frontier += 1
            return speculation.results
        self._drop_speculation(entry)
        return None

    def append(self, tracker_id: int, run: PastRun) -> None:
        """Add a run judged in the transaction (after :meth:`take` said None)."""
        entry = self._open[tracker_id][0]
        entry.history.append(run)
        entry.frontier += 1

    def commit(self) -> None:
        """The transaction committed: each history now holds the runs it stored."""
        for entry, frontier, n_runs in self._open.values():
            entry.n_runs = n_runs + entry.frontier - frontier
            entry.history.compact(entry.frontier - entry.history.dropped)
        self._open.clear()

    def rollback(self) -> None:
        """The transaction did not commit: forget what it read and appended."""
        for tracker_id in self._open:
            self._entries.pop(tracker_id, None)
        self._open.clear()

    @staticmethod
    def _drop_speculation(entry: _Entry) -> None:
        history = entry.history
        kept = entry.frontier - history.dropped
        if history.stored > kept:
            history.truncate(kept)
            entry.epoch += 1

    @staticmethod
    def _read(cursor: Any, sql: Statements, tracker_id: int, n: int, history: History) -> None:
        """Append the tracker's newest ``n`` stored runs, oldest first."""
        if n <= 0:
            return
        cursor.execute(sql.recent_runs, (tracker_id, n))
        for status, passed, payload, received_at in reversed(cursor.fetchall()):
            history.append(past_run(status, passed, payload, sql.from_db(received_at)))
