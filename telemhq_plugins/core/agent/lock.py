"""One agent per spool directory: an exclusive ``fcntl`` lock on ``agent.lock`` in it.

The lock goes with the process (the kernel releases it when the process dies, ``kill -9``
included), so a crashed agent never leaves a stale lock behind.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from pathlib import Path

from telemhq_plugins.core.agent.paths import AgentError

__all__ = ["LOCK_FILENAME", "SpoolLock"]

LOCK_FILENAME = "agent.lock"


class SpoolLock:
    """The lock of the spool in ``directory`` (created 0700 if missing)."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.path = directory / LOCK_FILENAME
        self._fd: int | None = None

    def acquire(self) -> None:
        """Take the lock, or raise :class:`AgentError` naming the agent that holds it."""
        self.directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "unknown"
            os.close(fd)
            raise AgentError(
                f"another agent (pid {holder}) uses the spool {self.directory}; "
                "give each agent its own --spool"
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self._fd = fd

    def release(self) -> None:
        if self._fd is not None:
            with contextlib.suppress(OSError):
                os.close(self._fd)  # closing the descriptor releases the lock
            self._fd = None
