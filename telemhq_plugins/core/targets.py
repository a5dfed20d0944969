"""``TargetCache``: where each job's pings go, resolved once per job and delivery client.

An adapter whose jobs run often resolves a job's :class:`~telemhq_plugins.core.runs.Target`
(policy, token, ping URL, the "no tracker" warning) once, not per run. A new delivery client
means new settings (``set_client``, a resource with other settings), so the cache starts
again whenever the client it was filled for is not the one asked about.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Hashable
from typing import Generic, TypeVar

from telemhq_plugins.core.delivery import Client, get_client
from telemhq_plugins.core.runs import Target

__all__ = ["TargetCache"]

K = TypeVar("K", bound=Hashable)


class TargetCache(Generic[K]):
    """Targets by key (a task object, a job name) for one client at a time; None is cached
    too (not monitored)::

        targets: TargetCache[str] = TargetCache()
        target = targets.get(job, lambda client: resolve_target(job, client=client))

    A hot path may read :attr:`entries` inline when :attr:`client` is the client it uses
    (one dict lookup, no call), and call :meth:`get` on a miss."""

    __slots__ = ("_lock", "client", "entries")

    def __init__(self) -> None:
        #: key -> its target (None: not monitored), for :attr:`client`.
        self.entries: dict[K, Target | None] = {}
        #: the client the entries were resolved for.
        self.client: Client | None = None
        self._lock = threading.Lock()

    def get(
        self,
        key: K,
        resolve: Callable[[Client], Target | None],
        *,
        client: Client | None = None,
    ) -> Target | None:
        """``key``'s target for ``client`` (default: the process's), ``resolve(client)`` on
        the first ask."""
        client = client or get_client()
        if client is not self.client:  # a new client: new settings, resolve again
            with self._lock:
                self.entries = {}
                self.client = client
        try:
            return self.entries[key]
        except KeyError:
            pass
        found = resolve(client)
        with self._lock:
            if self.client is client:
                self.entries[key] = found
        return found

    def clear(self) -> None:
        with self._lock:
            self.entries = {}
            self.client = None
