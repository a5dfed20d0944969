"""The agent: takes pings from local processes, acknowledges each once it is synced to disk,
and delivers them with the client's own machinery.

* A request's pings are checked (:func:`allowed_url`: only ping URLs of the server this agent
  was configured with), written to the spool with ``synchronous=FULL`` (the write is on disk
  when it returns; requests that arrive together share one transaction:
  :mod:`~telemhq_plugins.core.agent.commit`), and only then acknowledged.
* They are then queued on a :class:`~telemhq_plugins.core.delivery.Client` made for the agent
  (``prestored``): batching, retries, circuit breaker, ``Retry-After`` as in any process; a
  ping is deleted from the spool once the server settled it, released there for replay
  otherwise. What the agent did not deliver before it stopped (or died) is replayed from the
  spool at its next start.
* The spool is bounded by ``max_bytes`` of ping bodies: a request that would pass it is
  refused (the client then delivers the pings itself). An acknowledged ping is never dropped
  to make room.
"""

from __future__ import annotations

import logging
import os
import re
import threading
import time
from dataclasses import replace
from pathlib import Path
from typing import Any, Final

import orjson

from telemhq_plugins.core.agent.commit import GroupCommit
from telemhq_plugins.core.agent.listen import Listener, listen_tcp, listen_unix
from telemhq_plugins.core.agent.lock import SpoolLock
from telemhq_plugins.core.agent.paths import AgentError, default_socket_path
from telemhq_plugins.core.agent.protocol import ProtocolError, split_pings
from telemhq_plugins.core.config import Settings
from telemhq_plugins.core.delivery import PRESTORED_LEASE, Client
from telemhq_plugins.core.spool import Spool, SpooledPing

__all__ = ["DISK_RESERVE", "Agent", "allowed_url"]

logger = logging.getLogger("telemhq")

#: the agent keeps every acknowledged ping: the row bound of the spool is a safeguard only
_MAX_ROWS: Final = 10_000_000
#: free bytes the disk keeps for the agent to drain its spool: deleting delivered rows and
#: checkpointing the write-ahead log (up to SQLite's 1,000 pages before a checkpoint) take
#: room too, so pings are refused below it rather than stuck on a disk filled to the last byte
DISK_RESERVE: Final = 8 << 20
#: what may follow ``<base>/ping/``: a token, or a ping key and a slug
_PING_PATH: Final = re.compile(r"[A-Za-z0-9._~%+-]+(/[A-Za-z0-9._~%+-]+)*")


def allowed_url(url: str, base_url: str) -> bool:
    """True for ``<base_url>/ping/<token>`` and ``<base_url>/ping/<key>/<slug>`` (a suffix
    such as ``/start`` too): the agent sends nothing else, so it cannot be used to reach
    another host, nor another path of its own server."""
    prefix = base_url.rstrip("/") + "/ping/"
    if not url.startswith(prefix):
        return False
    rest = url[len(prefix) :]
    return bool(_PING_PATH.fullmatch(rest)) and ".." not in rest.split("/")


class Agent:
    """One agent: :meth:`start`, then :meth:`stop` (which flushes what it can)."""

    def __init__(
        self,
        settings: Settings,
        *,
        spool_dir: Path,
        socket_path: Path | None = None,
        tcp: tuple[str, int] | None = None,
        max_bytes: int | None = None,
    ) -> None:
        # The agent delivers itself: it never hands pings to an agent (itself).
        self.settings = replace(settings, agent=None)
        self.spool_dir = spool_dir
        self.socket_path = socket_path
        self.tcp = tcp
        self.max_bytes = settings.spool_max_bytes if max_bytes is None else max_bytes
        self.listeners: list[Listener] = []
        self._lock = SpoolLock(spool_dir)
        self._count_lock = threading.Lock()
        self._bytes = 0  # bytes in the spool: exact when measured, plus what was added since
        self._stopping = False
        self.received = 0
        self.acked = 0
        self.refused = 0
        self.spool: Spool | None = None
        self.commit: GroupCommit | None = None
        self.client: Client | None = None

    def start(self) -> None:
        """Take the spool's lock, open it, start delivering what it holds, then listen.
        Raises :class:`~telemhq_plugins.core.agent.paths.AgentError` when it cannot."""
        self._lock.acquire()
        try:
            spool = Spool(self.spool_dir, max_rows=_MAX_ROWS, durable=True)
            if spool.count() < 0:  # the error is logged
                raise AgentError(f"cannot open the spool {spool.path}")
            # The lock makes this the spool's only user: claims of a dead agent are void.
            spool.unclaim_all()
            _sync_dir(self.spool_dir)  # the spool's files exist on disk from now on
            self.spool = spool
            self.commit = GroupCommit(spool, PRESTORED_LEASE)
            self._bytes = max(0, spool.body_bytes())
            # Delivering before listening: a request may come the instant the socket exists.
            self.client = Client(self.settings, spool=spool, prestored=True)
            self.client.start()
            if self.socket_path is not None:
                private = self.socket_path == default_socket_path()
                self.listeners.append(
                    listen_unix(self.socket_path, self.answer, private_parent=private)
                )
            if self.tcp is not None:
                self.listeners.append(listen_tcp(*self.tcp, self.answer))
        except BaseException:
            self.stop(0)
            raise

    def stop(self, timeout: float | None = None) -> None:
        """Stop listening, deliver what is queued within ``timeout`` seconds (default
        ``settings.flush_timeout``); the rest stays in the spool for the next start."""
        self._stopping = True
        for listener in self.listeners:
            listener.close()
        self.listeners = []
        if self.client is not None:
            self.client.close(timeout)
        if self.spool is not None:
            self.spool.close()
        self._lock.release()

    # -- requests -----------------------------------------------------------------------

    def answer(self, header: dict[str, Any], body: bytes) -> dict[str, Any]:
        op = header.get("op")
        if op == "pings":
            return self.accept(split_pings(header, body))
        if op == "status":
            return {"ok": True, "status": self.status()}
        raise ProtocolError(f"unknown op {op!r}")

    def accept(self, pings: list[tuple[str, str, bytes]]) -> dict[str, Any]:
        """Keep ``pings`` on disk and queue them for delivery; the reply acknowledges them
        only once they are synced. All or none: a refused request is the client's to
        deliver."""
        size = sum(len(body) for _, _, body in pings)
        with self._count_lock:
            self.received += len(pings)
        unacceptable = self._unacceptable(pings)
        why = unacceptable or self._no_room(size)
        if why is None:
            assert self.commit is not None
            if not self.commit.write(pings):
                why = "the spool cannot be written (disk full?)"
        if why is not None:
            with self._count_lock:
                self.refused += len(pings)
            # Pings it may not take say nothing of the agent: the client need not pass it over.
            return {"ok": False, "error": why, "cool_down": unacceptable is None}
        with self._count_lock:
            self.acked += len(pings)
            self._bytes += size
        client = self.client
        assert client is not None
        assert self.spool is not None
        for ping_id, url, body in pings:
            if not client.enqueue(SpooledPing(ping_id, url, body), url):
                self.spool.release(ping_id, 0.0, attempted=False)  # the replay sends it
        return {"ok": True, "acked": len(pings)}

    def _unacceptable(self, pings: list[tuple[str, str, bytes]]) -> str | None:
        """Why the agent may not take these pings, whatever its state (None: it may)."""
        for _, url, body in pings:
            if not allowed_url(url, self.settings.base_url):
                return f"not a ping URL of {self.settings.base_url}: {url[:200]}"
            if not body.startswith(b"{"):
                return "a ping body is not a JSON object"
        return None

    def _no_room(self, size: int) -> str | None:
        """Why the agent takes no ``size`` more bytes now (None: it does)."""
        if self._stopping or self.spool is None:
            return "the agent is stopping"
        free = _free_bytes(self.spool_dir)
        if free is not None and free - size < DISK_RESERVE:
            free += self.spool.reusable_bytes()  # rows deleted since: room inside the file
        if free is not None and free - size < DISK_RESERVE:
            return f"the disk of the spool is full ({free} bytes free)"
        if self.max_bytes and self._bytes + size > self.max_bytes:
            # The estimate only grows between measures: measure before refusing.
            measured = self.spool.body_bytes()
            with self._count_lock:
                self._bytes = max(0, measured)
            if self._bytes + size > self.max_bytes:
                return f"the spool is full ({self._bytes} of {self.max_bytes} bytes)"
        return None

    def status(self) -> dict[str, Any]:
        """The counters ``telemhq agent status`` prints."""
        spool, client = self.spool, self.client
        stats = client.stats() if client is not None else {}
        spool_bytes = spool.body_bytes() if spool is not None else 0
        with self._count_lock:
            if spool_bytes >= 0:
                self._bytes = spool_bytes
            return {
                "pid": os.getpid(),
                "base_url": self.settings.base_url,
                "listening": [listener.where for listener in self.listeners],
                "spool": str(self.spool_dir),
                "received": self.received,
                "acked": self.acked,
                "refused": self.refused,
                "delivered": stats.get("delivered", 0),
                "rejected": stats.get("rejected", 0),
                "retrying": stats.get("spooled", 0),
                "dropped": spool.dropped if spool is not None else 0,
                "spool_pings": spool.count() if spool is not None else 0,
                "spool_bytes": spool_bytes,
                "writes": self.commit.writes if self.commit is not None else 0,
                "max_bytes": self.max_bytes,
                "time": time.time(),
            }


def _free_bytes(directory: Path) -> int | None:
    """Bytes free for this user on the disk of ``directory`` (None when it cannot tell)."""
    try:
        info = os.statvfs(directory)
    except OSError:
        return None
    return info.f_bavail * info.f_frsize


def _sync_dir(directory: Path) -> None:
    """fsync a folder, so the files just created in it survive a power loss."""
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def status_json(status: dict[str, Any]) -> str:
    return orjson.dumps(status, option=orjson.OPT_INDENT_2).decode()
