"""History-relative and window assertions: the grammar, baselines computed by hand, the
semantics of counted runs and minimums, and evaluation that never raises."""

from __future__ import annotations

import datetime as dt
import math
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from telemhq_plugins.core.assertions import (
    AssertionSyntaxError,
    History,
    HistoryAssertion,
    evaluate_all,
    parse_assertion,
)
from telemhq_plugins.core.history import PastRun

NOW = dt.datetime(2026, 11, 2, 6, 0, tzinfo=dt.UTC)  # a Monday, 06:00 UTC
HOUR = dt.timedelta(hours=1)
X = "\u00d7"  # the multiplication sign baselines are written with


def run(
    at: dt.datetime, status: str = "success", passed: bool | None = True, **payload: Any
) -> PastRun:
    return PastRun(at, status, passed if status != "retry" else None, {"status": status, **payload})


def hourly(field: str, values: list[Any], *, start: dt.datetime = NOW) -> list[PastRun]:
    """One counted run per hour before ``start``, the last value the newest."""
    n = len(values)
    return [run(start - (n - i) * HOUR, **{field: v}) for i, v in enumerate(values)]


def history_assertion(text: str) -> HistoryAssertion:
    parsed = parse_assertion(text)
    assert isinstance(parsed, HistoryAssertion)
    return parsed


# --- the examples, with baselines computed by hand ------------------------------------

EXAMPLES: list[tuple[str, list[PastRun], dict[str, Any], bool, float, str]] = [
    (
        # last 20 of 1000..25000: 6000..25000, median (15000 + 16000) / 2 = 15500; x 0.5
        "records_processed >= 0.5 * median(last 20)",
        hourly("records_processed", [1000 * i for i in range(1, 26)]),
        {"records_processed": 7000},
        False,
        7750,
        f"records_processed was 7000, expected >= 7750 (0.5 {X} median 15500 of the last 20 runs)",
    ),
    (
        "records_processed >= 0.5 * median(last 20)",
        hourly("records_processed", [1000 * i for i in range(1, 26)]),
        {"records_processed": 7750},
        True,
        7750,
        "records_processed was 7750",  # a pass says what the field was, as a plain one
    ),
    (
        # p90 of 1..10: rank 9 x 0.9 = 8.1 -> 9 + 0.1 x (10 - 9) = 9.1; x 3 = 27.3
        "duration <= 3 * p90(last 50)",
        hourly("duration", list(range(1, 11))),
        {"duration": 28},
        False,
        27.3,
        f"duration was 28, expected <= 27.3 (3 {X} p90 9.1 of the last 10 runs)",
    ),
    (
        # median 14, |x - 14| = 4 2 0 2 4 -> mad 2; 14 - 4 x 2 = 6
        "records_processed >= median(last 30) - 4 * mad(last 30)",
        hourly("records_processed", [10, 12, 14, 16, 18]),
        {"records_processed": 5},
        False,
        6,
        "records_processed was 5, expected >= 6 "
        f"(median 14 of the last 5 runs - 4 {X} mad 2 of the last 5 runs)",
    ),
    (
        # Mondays 100..600 (median 350, x 0.7 = 245); the other days' 1s are not read
        "records_processed >= 0.7 * median(last 8, same weekday)",
        [
            run(NOW - dt.timedelta(days=7 * w), records_processed=700 - 100 * w)
            for w in range(6, 0, -1)
        ]
        + [run(NOW - dt.timedelta(days=d), records_processed=1) for d in range(1, 6)],
        {"records_processed": 240},
        False,
        245,
        "records_processed was 240, expected >= 245 "
        f"(0.7 {X} median 350 of the last 6 runs on Mondays)",
    ),
    (
        # mean of five 0.9 and five 0.8 = 0.85; - 0.05 = 0.8
        "eval_score >= mean(last 10) - 0.05",
        hourly("eval_score", [0.9] * 5 + [0.8] * 5),
        {"eval_score": 0.79},
        False,
        0.8,
        "eval_score was 0.79, expected >= 0.8 (mean 0.85 of the last 10 runs - 0.05)",
    ),
    (
        # 20 (a failure counts in a budget) + 20 + this 15 = 55; 100 is 25 h old
        "sum(cost_usd, 24h) <= 50",
        [
            run(NOW - 25 * HOUR, cost_usd=100),
            run(NOW - 20 * HOUR, "failure", False, cost_usd=20),
            run(NOW - HOUR, cost_usd=20),
        ],
        {"cost_usd": 15},
        False,
        50,
        "sum(cost_usd, 24h) was 55 (3 runs), expected <= 50",
    ),
    (
        "max(duration, 7d) < 3600000",
        [run(NOW - 8 * 24 * HOUR, duration=3_600_000), run(NOW - 24 * HOUR, duration=1000)],
        {"duration": 2000},
        True,
        3_600_000,
        "max(duration, 7d) was 2000 (2 runs)",
    ),
    (
        # failures 2 h and 3 h ago and this one; the one 30 h ago is outside the window
        "count(failure, 24h) < 3",
        [
            run(NOW - 30 * HOUR, "failure", False),
            run(NOW - 3 * HOUR, "failure", False),
            run(NOW - 2 * HOUR, "failure", False),
            run(NOW - HOUR),
        ],
        {"status": "failure"},
        False,
        3,
        "count(failure, 24h) was 3, expected < 3",
    ),
    (
        # this 0.5 and nine 0.9: rank 9 x 0.1 = 0.9 -> 0.5 + 0.9 x 0.4 = 0.86
        "p10(eval_score, last 10) >= 0.8",
        hourly("eval_score", [0.1] * 5 + [0.9] * 9),
        {"eval_score": 0.5},
        True,
        0.8,
        "p10(eval_score, last 10) was 0.86 (10 runs)",
    ),
    (
        # two 0.5 in the last 10: the 10th percentile is 0.5
        "p10(eval_score, last 10) >= 0.8",
        hourly("eval_score", [0.9] * 8 + [0.5]),
        {"eval_score": 0.5},
        False,
        0.8,
        "p10(eval_score, last 10) was 0.5 (10 runs), expected >= 0.8",
    ),
]


@pytest.mark.parametrize("example", EXAMPLES, ids=[f"{e[0]}-{e[3]}" for e in EXAMPLES])
def test_it_judges_each_example_against_a_baseline_computed_by_hand(
    example: tuple[str, list[PastRun], dict[str, Any], bool, float, str],
) -> None:
    text, past, payload, passed, baseline, reason = example
    result = parse_assertion(text).evaluate(payload, History(past), now=NOW)
    assert (result.passed, result.evaluated, result.reason) == (passed, True, reason)
    assert result.baseline is not None
    assert result.baseline["value"] == pytest.approx(baseline)
    stored = result.to_dict()
    assert set(stored) == {"expression", "passed", "actual", "reason", "evaluated", "baseline"}
    assert stored["expression"] == text


def test_it_shows_the_baseline_value_and_how_it_was_made() -> None:
    past = hourly("records_processed", [98_000] * 20)
    assertion = parse_assertion("records_processed >= 0.5 * median(last 20)")
    result = assertion.evaluate({"records_processed": 1200}, History(past), now=NOW)
    assert result.reason == (
        f"records_processed was 1200, expected >= 49000 (0.5 {X} median 98000 of the last 20 runs)"
    )
    assert result.baseline == {
        "value": 49000,
        "text": f"0.5 {X} median 98000 of the last 20 runs",
    }
    assert result.actual == 1200


# --- which runs count ---------------------------------------------------------------------------


def test_it_counts_only_previous_successes_that_passed_and_have_the_field() -> None:
    past = [
        run(NOW - 10 * HOUR, records_processed=100),
        run(NOW - 9 * HOUR, "failure", False, records_processed=1),
        run(NOW - 8 * HOUR, "success", False, records_processed=2),  # failed an assertion
        run(NOW - 7 * HOUR, "retry", records_processed=3),
        run(NOW - 6 * HOUR, "skipped", None, records_processed=4),
        run(NOW - 5 * HOUR, "cancelled", None, records_processed=5),
        run(NOW - 4 * HOUR, "start", None, records_processed=6),
        run(NOW - 3 * HOUR),  # no field
        run(NOW - 2 * HOUR, records_processed="many"),  # not a number
        run(NOW - 2 * HOUR, records_processed=200),
        run(NOW - HOUR, records_processed=300),
        run(NOW - HOUR, records_processed="400"),  # a numeric string is a number
    ]
    assertion = parse_assertion("records_processed >= median(last 20)")
    result = assertion.evaluate({"records_processed": 1}, History(past), now=NOW)
    assert (result.evaluated, result.reason) == (False, "history: 4 of 5 runs")
    past.append(run(NOW - HOUR, records_processed=500))
    result = assertion.evaluate({"records_processed": 1}, History(past), now=NOW)
    assert result.evaluated
    assert result.baseline == {"value": 300, "text": "median 300 of the last 5 runs"}


def test_a_run_with_too_little_history_is_not_evaluated_and_does_not_fail() -> None:
    assertion = parse_assertion("records_processed >= 0.5 * median(last 20)")
    result = assertion.evaluate(
        {"records_processed": 0}, History(hourly("records_processed", [9, 9, 9])), now=NOW
    )
    assert result.to_dict() == {
        "expression": "records_processed >= 0.5 * median(last 20)",
        "passed": True,
        "actual": 0,
        "reason": "history: 3 of 5 runs",
        "evaluated": False,
        "baseline": None,
    }
    # No history at all (telemhq check without --history): not evaluated either.
    assert assertion.evaluate({"records_processed": 0}).reason == "history: 0 of 5 runs"


def test_min_sets_the_minimum_and_a_short_window_lowers_the_default() -> None:
    past = History(hourly("x", [1, 2, 3, 4, 5, 6, 7, 8]))
    assert parse_assertion("x >= median(last 20, min 10)").evaluate(
        {"x": 1}, past, now=NOW
    ).reason == ("history: 8 of 10 runs")
    short = parse_assertion("x >= median(last 3)").evaluate({"x": 1}, past, now=NOW)
    assert short.evaluated
    assert short.baseline == {
        "value": 7,
        "text": "median 7 of the last 3 runs",
    }


def test_a_window_aggregate_on_the_left_holds_from_the_first_run() -> None:
    result = parse_assertion("sum(cost_usd, 24h) <= 50").evaluate({"cost_usd": 51}, now=NOW)
    assert (result.passed, result.evaluated, result.actual) == (False, True, 51)


def test_a_duration_window_on_the_right_reads_previous_counted_runs_in_it() -> None:
    past = [run(NOW - 30 * HOUR, duration=1)] + [
        run(NOW - h * HOUR, duration=10 * h) for h in range(5, 0, -1)
    ]
    result = parse_assertion("duration <= 2 * max(24h)").evaluate({"duration": 101}, History(past))
    # now defaults to the current time: every run above is more than 24 h old.
    assert result.reason == "history: 0 of 5 runs"
    result = parse_assertion("duration <= 2 * max(24h)").evaluate(
        {"duration": 101}, History(past), now=NOW
    )
    assert result.reason == (
        f"duration was 101, expected <= 100 (2 {X} max 50 of the 5 runs of the last 24h)"
    )


def test_same_hour_and_the_trackers_timezone() -> None:
    # 23:30 UTC on a Sunday is Monday 00:30 in Berlin (UTC+1 from November to March).
    sunday_night = dt.datetime(2026, 12, 6, 23, 30, tzinfo=dt.UTC)
    past = [run(sunday_night - dt.timedelta(days=7 * w), n=100) for w in range(1, 6)]
    past += [run(sunday_night - dt.timedelta(days=7 * w, hours=12), n=1) for w in range(1, 6)]
    past.sort(key=lambda r: r.at)
    history = History(past)
    same_hour = parse_assertion("n >= median(last 5, same hour)")
    assert same_hour.evaluate({"n": 99}, history, now=sunday_night).baseline == {
        "value": 100,
        "text": "median 100 of the last 5 runs at 23h",
    }
    berlin = same_hour.evaluate({"n": 99}, history, now=sunday_night, timezone="Europe/Berlin")
    assert berlin.baseline is not None
    assert berlin.baseline["text"] == "median 100 of the last 5 runs at 00h"
    weekday = parse_assertion("n >= median(last 10, same weekday)")
    utc = weekday.evaluate({"n": 99}, history, now=sunday_night)
    assert utc.baseline is not None
    assert utc.baseline["text"] == "median 50.5 of the last 10 runs on Sundays"
    local = weekday.evaluate({"n": 99}, history, now=sunday_night, timezone="Europe/Berlin")
    assert local.baseline is not None
    assert local.baseline["text"] == "median 100 of the last 5 runs on Mondays"


def test_retention_hides_runs_beyond_the_limit() -> None:
    past = hourly("x", [1000] * 5 + [1] * 5)
    assertion = parse_assertion("x >= median(last 10)")
    assert assertion.evaluate({"x": 1}, History(past), now=NOW).baseline == {
        "value": 500.5,
        "text": "median 500.5 of the last 10 runs",
    }
    limited = History(past, limit=5)
    assert assertion.evaluate({"x": 1}, limited, now=NOW).baseline == {
        "value": 1,
        "text": "median 1 of the last 5 runs",
    }


def test_appended_runs_can_be_taken_back() -> None:
    history = History(hourly("x", [10] * 5))
    assertion = parse_assertion("x >= max(last 10)")
    history.column(("x",))  # a column built before the append must follow it
    history.append(run(NOW, x=99))
    assert assertion.baseline(history, now=NOW)["value"] == 99
    history.truncate(5)
    assert assertion.baseline(history, now=NOW)["value"] == 10


# --- what cannot be judged ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "payload", "passed", "evaluated", "reason"),
    [
        ("x >= median(last 5)", {}, False, True, "missing"),
        ("x >= median(last 5)", {"x": "lots"}, False, True, "(not a number)"),
        ("x >= median(last 5)", {"x": None}, False, True, "(not a number)"),
        ("x >= 100 / (median(last 5) - 10)", {"x": 1}, True, False, "division by zero"),
        ("x >= median(y, last 5)", {"x": 1}, True, False, "history: 0 of 5 runs"),
        ("mean(y, 24h) >= 1", {"x": 1}, True, False, "no values in mean(y, 24h)"),
        ("sum(y, 24h) <= 1", {"x": 1}, True, True, "sum(y, 24h) was 0 (0 runs)"),
        ("x >= 1e308 * 10 * median(last 5)", {"x": 1}, True, False, "not a finite number"),
    ],
)
def test_it_explains_what_it_cannot_judge(
    text: str, payload: dict[str, Any], passed: bool, evaluated: bool, reason: str
) -> None:
    result = parse_assertion(text).evaluate(payload, History(hourly("x", [10] * 5)), now=NOW)
    assert (result.passed, result.evaluated) == (passed, evaluated)
    assert reason in result.reason


# --- the grammar --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "canonical"),
    [
        ("records_processed>=0.5*median(last 20)", "records_processed >= 0.5 * median(last 20)"),
        ("x == -(1 + 2) * mean(last 3)", "x = -(1 + 2) * mean(last 3)"),
        ("x < p99(y, 30m, same hour, min 3)", "x < p99(y, 30m, same hour, min 3)"),
        ("count(success, last 10) >= 8", "count(success, last 10) >= 8"),
        ("x != stddev(7d, same weekday, same hour)", "x != stddev(7d, same weekday, same hour)"),
        ("a.b > 2 * 3", "a.b > 2 * 3"),
    ],
)
def test_it_parses_into_canonical_text(text: str, canonical: str) -> None:
    parsed = parse_assertion(text)
    assert str(parsed) == canonical
    assert str(parse_assertion(canonical)) == canonical


@pytest.mark.parametrize(
    ("text", "position", "problem"),
    [
        ("records_processed >= 0.5 * median(last 20", 41, "expected )"),
        ("x >= median(last twenty)", 17, "expected a whole number of runs"),
        ("x >= median(yesterday)", 12, "expected a window"),
        ("x >= avg(last 5)", 5, "unknown aggregate 'avg'"),
        ("avg(n, 24h) < 3", 0, "unknown aggregate 'avg'"),
        ("x >= median(last 5, same day)", 25, "expected same weekday or same hour"),
        ("x >= median(last 5, min 10)", 24, "cannot exceed the window's 5 runs"),
        ("x >= median(last 5, often)", 20, "expected same weekday, same hour or min N"),
        ("median(last 5) > 3", 7, "on the left an aggregate names its field"),
        ("sum(cost_usd, 24h, min 3) <= 5", 19, "has no minimum"),
        ("sum(cost_usd, 24h) <= 50 USD", 25, "unexpected 'USD'"),
        ("x >= 0.5 * y", 11, "a field on the right is not supported"),
        ("x >= 2 * 24h", 9, "a duration is a window"),
        ("x >= 2 * ", 9, "expected a number"),
        ("count(failure, 24h) < median(last 5)", 22, "name the field"),
        ("x >= median(last 0)", 17, "last N takes 1 to 100000 runs"),
        ("x >= max(0s)", 9, "a duration is more than 0"),
        ("x >= median(last 5) $ 2", 20, "unexpected character '$'"),
    ],
)
def test_it_points_at_the_syntax_error(text: str, position: int, problem: str) -> None:
    with pytest.raises(AssertionSyntaxError) as info:
        parse_assertion(text)
    assert (info.value.position, problem in info.value.problem) == (position, True), info.value


def test_plain_assertions_stay_plain() -> None:
    for text in ("records_processed > 0", "status = success", "run_id ~ ^(a|b)$", "x = a-b"):
        parsed = parse_assertion(text)
        assert not parsed.needs_history
        assert "evaluated" not in parsed.evaluate({"x": 1}).to_dict()


def test_evaluate_all_mixes_plain_and_history_assertions() -> None:
    assertions = [parse_assertion("errors = 0"), parse_assertion("x >= median(last 5)")]
    results = evaluate_all(
        assertions, {"errors": 0, "x": 1}, History(hourly("x", [2] * 5)), now=NOW
    )
    assert [(r.passed, r.evaluated) for r in results] == [(True, True), (False, True)]


# --- properties -------------------------------------------------------------------------------

TEXTS = [example[0] for example in EXAMPLES] + [
    "x >= 100 / (median(last 5) - 10)",
    "x < p99(x, 30m, same hour, min 3) + stddev(last 7, same weekday)",
    "count(retry, last 3) = 0",
    "mad(y, 2h) > -1",
]
values = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(10**6), 10**6),
    st.sampled_from([10**400, -(10**400), 2**63]),
    st.floats(),
    st.text(max_size=5),
    st.lists(st.integers(), max_size=2),
    st.dictionaries(st.text(max_size=3), st.integers(), max_size=2),
)
fields = st.sampled_from(
    ["records_processed", "duration", "eval_score", "cost_usd", "x", "y", "status"]
)
payloads = st.dictionaries(fields, values, max_size=5)
past_runs = st.builds(
    PastRun,
    st.datetimes(
        min_value=dt.datetime(2026, 1, 1),
        max_value=dt.datetime(2027, 1, 1),
        timezones=st.just(dt.UTC),
    ),
    st.sampled_from(["success", "failure", "retry", "skipped", "cancelled", "start", "odd"]),
    st.sampled_from([True, False, None]),
    payloads,
)


@settings(max_examples=200)
@given(
    st.sampled_from(TEXTS),
    payloads,
    st.lists(past_runs, max_size=30),
    st.sampled_from([None, "UTC", "Europe/Berlin", "Not/AZone", ""]),
    st.integers(1, 40),
)
def test_it_never_raises_on_any_payload_or_history(
    text: str, payload: dict[str, Any], past: list[PastRun], timezone: str | None, limit: int
) -> None:
    assertion = parse_assertion(text)
    history = History(sorted(past, key=lambda r: r.at), limit=limit)
    result = assertion.evaluate(payload, history, now=NOW, timezone=timezone)
    assert isinstance(result.passed, bool)
    assert isinstance(result.reason, str)
    assert result.reason
    assert result.evaluated or result.passed
    assert isinstance(history_assertion(text).baseline(history, now=NOW), dict)


@settings(max_examples=200)
@given(
    st.lists(
        st.tuples(
            st.integers(0, 4 * 3600),
            st.sampled_from(["success", "failure", "start", "retry"]),
            st.one_of(st.none(), st.floats(-1e9, 1e9), st.integers(-(10**6), 10**6)),
        ),
        max_size=40,
    ),
    st.one_of(st.none(), st.floats(-1e9, 1e9)),
)
def test_a_window_sum_read_from_running_sums_is_the_exact_sum_of_its_values(
    past: list[tuple[int, str, Any]], own: float | None
) -> None:
    """``sum``/``mean``/``count`` over a duration read running sums; the answer is the
    correctly rounded sum of exactly the values in the window."""
    runs = [
        run(NOW - dt.timedelta(seconds=s), status, **({} if v is None else {"x": v}))
        for s, status, v in sorted(past, key=lambda p: -p[0])
    ]
    payload = {} if own is None else {"x": own}
    in_window = [
        float(v) for s, status, v in past if s < 2 * 3600 and status != "start" and v is not None
    ] + ([] if own is None else [own])
    history = History(runs)
    total = parse_assertion("sum(x, 2h) <= 0").evaluate(payload, history, now=NOW)
    assert total.actual == _plain(math.fsum(in_window))
    count = parse_assertion("count(x, 2h) <= 0").evaluate(payload, history, now=NOW)
    assert count.actual == len(in_window)
    counted = [
        float(v) for s, status, v in past if s < 2 * 3600 and status == "success" and v is not None
    ]
    baseline = parse_assertion("x >= sum(2h, min 0)").baseline(history, now=NOW)
    assert baseline["value"] == _plain(math.fsum(counted))


def _plain(value: float) -> float | int:
    return int(value) if value.is_integer() and abs(value) < 2**53 else value
