"""The exceptions of the ping path: a ping refused with an HTTP status, and a slug a ping key
may create a tracker for."""

from __future__ import annotations

__all__ = ["NewSlug", "PingError"]


class PingError(Exception):
    """A ping refused with ``status`` and ``message``; ``reason`` labels the metric."""

    def __init__(self, status: int, reason: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.reason = reason
        self.message = message


class NewSlug(PingError):
    """A ping key that creates trackers named a slug that has none yet: the ping's payload
    describes the tracker (``TrackerCache.auto_create``)."""

    def __init__(self, key: str, slug: str) -> None:
        super().__init__(
            404, "unknown_slug", f"no tracker with slug {slug!r} yet (its first ping creates it)"
        )
        self.key = key
        self.slug = slug
