"""The pure state machine (telemhq_server.states)."""

from __future__ import annotations

import pytest
from telemhq_server.states import TrackerStatus, Transition, on_missed, on_run, run_passed


def test_a_first_success_is_up() -> None:
    assert on_run(TrackerStatus("new"), "success", []) == Transition(
        "up", 0, "first successful run"
    )


def test_success_while_up_changes_nothing() -> None:
    assert on_run(TrackerStatus("up"), "success", []) == Transition("up", 0)


@pytest.mark.parametrize("old", ["failing", "late", "down"])
def test_success_recovers(old: str) -> None:
    assert on_run(TrackerStatus(old, 3), "success", []) == Transition("up", 0, "run succeeded")


def test_a_failure_fails_at_the_default_threshold() -> None:
    assert on_run(TrackerStatus("up"), "failure", []) == Transition(
        "failing", 1, "run reported status failure"
    )


def test_a_failed_assertion_fails_even_on_success() -> None:
    result = on_run(TrackerStatus("up"), "success", ["errors was 2, expected = 0"])
    assert result == Transition("failing", 1, "assertion failed: errors was 2, expected = 0")


def test_failures_below_the_threshold_only_count() -> None:
    tracker = TrackerStatus("up", 0, failure_threshold=3)
    first = on_run(tracker, "failure", [])
    assert first == Transition("up", 1)
    second = on_run(TrackerStatus("up", 1, 3), "failure", [])
    assert second == Transition("up", 2)
    third = on_run(TrackerStatus("up", 2, 3), "failure", [])
    assert third.state == "failing"
    assert third.reason == "run reported status failure (3 consecutive failures, threshold 3)"


def test_failing_again_is_no_new_flip() -> None:
    assert on_run(TrackerStatus("failing", 1), "failure", []) == Transition("failing", 2)


@pytest.mark.parametrize("status", ["start", "retry", "skipped", "cancelled"])
def test_neutral_statuses_change_nothing(status: str) -> None:
    tracker = TrackerStatus("failing", 2, 1)
    assert on_run(tracker, status, ["x"]) == Transition("failing", 2)
    assert run_passed(status, ["x"]) is None


def test_paused_trackers_keep_their_state() -> None:
    tracker = TrackerStatus("paused", 0, 1, paused=True)
    assert on_run(tracker, "failure", []) == Transition("paused", 0)
    assert on_run(tracker, "success", []) == Transition("paused", 0)
    assert on_missed(tracker, "down", "no ping") == Transition("paused", 0)


def test_run_passed() -> None:
    assert run_passed("success", []) is True
    assert run_passed("failure", []) is False
    assert run_passed("success", ["x"]) is False


def test_missed_runs() -> None:
    assert on_missed(TrackerStatus("up"), "late", "overdue") == Transition("late", 0, "overdue")
    assert on_missed(TrackerStatus("late"), "late", "overdue") == Transition("late", 0)
    assert on_missed(TrackerStatus("late"), "down", "grace over").changed
