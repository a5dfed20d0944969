"""Retrying: backoff with jitter, the server's ``Retry-After``, and a circuit breaker per
server so that a dead one costs one ping's retries per cool-down rather than one per ping."""

from __future__ import annotations

import email.utils
import random
import time
from typing import Final

import httpx

__all__ = ["CircuitBreaker", "backoff", "origin", "retry_after"]

#: A longer Retry-After is read as this; it still only delays that server's pings.
RETRY_AFTER_CAP: Final = 3600.0
BACKOFF_CAP: Final = 30.0
BREAKER_CAP: Final = 300.0


def origin(url: str) -> str:
    """``https://host:port`` of a ping URL: the unit of the circuit breaker."""
    return "/".join(url.split("/", 3)[:3])


def backoff(attempts: int, base: float) -> float:
    """Seconds to wait after the ``attempts``-th failed attempt: exponential from ``base``,
    capped, with "equal jitter" (half fixed, half random)."""
    step = min(BACKOFF_CAP, base * 2.0 ** (attempts - 1))
    return step / 2 + random.uniform(0, step / 2)


def retry_after(response: httpx.Response) -> float | None:
    """The response's ``Retry-After`` in seconds (delta or HTTP date), None when absent or
    unreadable; capped at :data:`RETRY_AFTER_CAP`."""
    value = response.headers.get("Retry-After")
    if not value:
        return None
    try:
        seconds = float(value)
    except ValueError:
        try:
            parsed = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError):
            return None
        seconds = parsed.timestamp() - time.time()
    return max(0.0, min(seconds, RETRY_AFTER_CAP))


class CircuitBreaker:
    """Per origin: once a ping has failed all its retries, that server's pings are not tried
    for a cool-down (``base`` seconds, doubling up to :data:`BREAKER_CAP` while it stays
    down, at least the server's ``Retry-After``)."""

    def __init__(self, base: float) -> None:
        self.base = base
        #: origin -> (monotonic time the circuit closes again, last cool-down in seconds)
        self._open: dict[str, tuple[float, float]] = {}

    def cooling(self, origin: str) -> float | None:
        """Seconds left in the cool-down of ``origin``'s circuit, None when it is closed."""
        state = self._open.get(origin)
        if state is None:
            return None
        left = state[0] - time.monotonic()
        return left if left > 0 else None

    def trip(self, origin: str, retry_after: float | None) -> float:
        """Open ``origin``'s circuit; returns the cool-down in seconds."""
        previous = self._open.get(origin)
        cooldown = self.base if previous is None else min(BREAKER_CAP, previous[1] * 2)
        cooldown = max(cooldown, retry_after or 0.0)
        self._open[origin] = (time.monotonic() + cooldown, cooldown)
        return cooldown

    def close(self, origin: str) -> None:
        """``origin`` answered: its next failure starts again from ``base``."""
        self._open.pop(origin, None)
