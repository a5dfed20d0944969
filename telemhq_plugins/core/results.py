"""What happened to one ping: the outcome delivery reports to callers and to plugins."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

__all__ = ["DeliveryResult", "Outcome"]

Outcome = Literal["delivered", "rejected", "failed", "dropped", "filtered", "spooled", "handed"]


@dataclass(frozen=True, slots=True)
class DeliveryResult:
    """What happened to one ping. ``response`` is the server's JSON answer when there was one.

    ``delivered``: 2xx. ``rejected``: the server refused it for good (4xx other than 429, or
    a redirect); not retried. ``failed``: retries exhausted, no spool. ``spooled``: kept on
    disk for a later replay. ``dropped``: queue full, or the server's circuit was open and
    there is no spool. ``filtered``: a plugin's ``telemhq_filter_ping`` dropped it.
    ``handed``: the local agent acknowledged it (it is on the agent's disk; the agent
    delivers it).
    """

    outcome: Outcome
    status_code: int | None = None
    attempts: int = 0
    response: dict[str, Any] | None = None
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.outcome == "delivered"
