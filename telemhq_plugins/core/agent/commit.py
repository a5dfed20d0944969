"""Group commit: the pings of requests that arrive together are written to the spool in one
transaction, with one sync to disk.

A sync costs the same for one ping or a thousand (milliseconds on many disks), so requests
that arrive while a write is syncing wait for the next write, which takes all of them. There
is no writer thread: whichever waiting request gets the write lock first writes everything
waiting then, and the others find theirs written.
"""

from __future__ import annotations

import threading

from telemhq_plugins.core.spool import Spool

__all__ = ["GroupCommit"]


class _Request:
    __slots__ = ("pings", "written")

    def __init__(self, pings: list[tuple[str, str, bytes]]) -> None:
        self.pings = pings
        #: None until a write took it; then whether that write succeeded
        self.written: bool | None = None


class GroupCommit:
    """Writes to ``spool``, each ping claimed for ``claim_for`` seconds."""

    def __init__(self, spool: Spool, claim_for: float) -> None:
        self.spool = spool
        self.claim_for = claim_for
        self._waiting: list[_Request] = []
        self._waiting_lock = threading.Lock()
        self._write_lock = threading.Lock()
        #: writes to the spool, and the requests they carried (for the status)
        self.writes = 0
        self.requests = 0

    def write(self, pings: list[tuple[str, str, bytes]]) -> bool:
        """Store ``pings`` (all or none) and sync them to disk; True once they are."""
        request = _Request(pings)
        with self._waiting_lock:
            self._waiting.append(request)
        with self._write_lock:
            if request.written is None:  # no earlier write took it: write all that waits
                with self._waiting_lock:
                    batch, self._waiting = self._waiting, []
                rows = [ping for waiting in batch for ping in waiting.pings]
                written = self.spool.add_many(rows, claim_for=self.claim_for)
                self.writes += 1
                self.requests += len(batch)
                for waiting in batch:
                    waiting.written = written
        return bool(request.written)
