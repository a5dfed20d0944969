"""The one exception of the ping path: a ping refused with an HTTP status."""

from __future__ import annotations

__all__ = ["PingError"]


class PingError(Exception):
    """A ping refused with ``status`` and ``message``; ``reason`` labels the metric."""

    def __init__(self, status: int, reason: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.reason = reason
        self.message = message
