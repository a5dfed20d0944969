"""The tracker state machine, pure: given where a tracker is and what happened, where it goes.

No I/O here; the ingest writer and the missed-run detector call these functions inside their
transactions and store the result (a state change through ``flips.record_flip``).

States: ``new`` (never pinged), ``up``, ``failing`` (a run failed: status ``failure``, or an
assertion failed, on ``failure_threshold`` consecutive runs), ``late`` (expected ping overdue,
within grace), ``down`` (past grace, or a ``start`` without end past max runtime), ``paused``.

Run statuses (``telemhq_plugins.core.payload.STATUSES``):

- ``success`` (also a ping without status) with every assertion passing: the tracker is ``up``
  and its consecutive-failure count resets.
- ``failure``, or any status-bearing end whose assertions failed: one more consecutive failure;
  at ``failure_threshold`` the tracker turns ``failing``. Below it, the state stays.
- ``start``: no verdict (it opens a run); the state stays.
- ``retry``, ``skipped``, ``cancelled``: recorded, no verdict; the state and the count stay.
- A paused tracker records runs but none of this applies: its state stays ``paused``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

__all__ = [
    "NEUTRAL_STATUSES",
    "TrackerStatus",
    "Transition",
    "on_missed",
    "on_run",
    "run_passed",
]

#: Statuses that never change a tracker's state or failure count.
NEUTRAL_STATUSES: Final = frozenset({"start", "retry", "skipped", "cancelled"})


@dataclass(frozen=True, slots=True)
class TrackerStatus:
    """The part of a tracker row the state machine needs."""

    state: str
    consecutive_failures: int = 0
    failure_threshold: int = 1
    paused: bool = False


@dataclass(frozen=True, slots=True)
class Transition:
    """The outcome: the new state and count, and why (``reason`` is set only on a change)."""

    state: str
    consecutive_failures: int
    reason: str | None = None

    @property
    def changed(self) -> bool:
        return self.reason is not None


def run_passed(status: str, assertions_failed: list[str]) -> bool | None:
    """The verdict of one run: None for a neutral status, else no failure and no failed
    assertion."""
    if status in NEUTRAL_STATUSES:
        return None
    return status != "failure" and not assertions_failed


def on_run(tracker: TrackerStatus, status: str, assertions_failed: list[str]) -> Transition:
    """Apply one recorded run. ``assertions_failed`` holds the reasons of failed assertions."""
    stay = Transition(tracker.state, tracker.consecutive_failures)
    if tracker.paused or status in NEUTRAL_STATUSES:
        return stay
    if status != "failure" and not assertions_failed:
        if tracker.state == "up":
            return Transition("up", 0)
        return Transition("up", 0, _recovered_reason(tracker.state))
    count = tracker.consecutive_failures + 1
    if count < max(tracker.failure_threshold, 1) or tracker.state == "failing":
        return Transition(tracker.state, count)
    if status == "failure":
        why = "run reported status failure"
    else:
        why = "assertion failed: " + "; ".join(assertions_failed)
    if tracker.failure_threshold > 1:
        why += f" ({count} consecutive failures, threshold {tracker.failure_threshold})"
    return Transition("failing", count, why)


def on_missed(tracker: TrackerStatus, new_state: str, reason: str) -> Transition:
    """A missed-run verdict from the detector (``late`` or ``down``); paused trackers and
    trackers already in that state stay."""
    if tracker.paused or tracker.state in (new_state, "paused"):
        return Transition(tracker.state, tracker.consecutive_failures)
    return Transition(new_state, tracker.consecutive_failures, reason)


def _recovered_reason(old: str) -> str:
    if old == "new":
        return "first successful run"
    return "run succeeded"
