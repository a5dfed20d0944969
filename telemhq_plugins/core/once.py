"""``OnceSet``: "report this event once", for the events an orchestrator may announce twice.

Airflow can call a callback and a listener for one task try, Celery's main process sends
``task_failure`` twice for a hard time limit, and Dagster runs a step's hooks once per
attachment: the first report of an event claims it and the later ones are dropped. Keys are
kept oldest first and the oldest is forgotten past a bound, so a long-lived worker keeps a
fixed amount of memory (an event repeated after thousands of others is not expected).
"""

from __future__ import annotations

import collections
import threading
from collections.abc import Hashable

__all__ = ["OnceSet"]


class OnceSet:
    """The last ``limit`` events claimed, oldest first; thread-safe::

    seen = OnceSet(limit=4096)
    if seen.claim((run_id, attempt, "end")):
        ...  # the first report of this event
    """

    __slots__ = ("_keys", "_limit", "_lock")

    def __init__(self, *, limit: int) -> None:
        self._keys: collections.OrderedDict[Hashable, None] = collections.OrderedDict()
        self._limit = limit
        self._lock = threading.Lock()

    def claim(self, key: Hashable) -> bool:
        """True the first time ``key`` is claimed (while it is remembered), False after."""
        with self._lock:
            if key in self._keys:
                return False
            self._keys[key] = None
            while len(self._keys) > self._limit:
                self._keys.popitem(last=False)
            return True

    def __contains__(self, key: Hashable) -> bool:
        return key in self._keys

    def __len__(self) -> int:
        return len(self._keys)

    def clear(self) -> None:
        with self._lock:
            self._keys.clear()
