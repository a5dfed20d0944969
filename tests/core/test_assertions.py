"""The assertion grammar: parsing, errors that point at the problem, evaluation semantics."""

from __future__ import annotations

import json
import re
import time
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from telemhq_plugins.core.assertions import (
    OPERATORS,
    REGEX_ENGINE,
    AssertionSyntaxError,
    _regex_engine,
    _regex_matcher,
    evaluate_all,
    parse_assertion,
    parse_assertions,
)


@pytest.mark.parametrize(
    ("text", "payload", "passed"),
    [
        # the documentation's examples
        ("status = success", {"status": "success"}, True),
        ("status = success", {"status": "failure"}, False),
        ("records_processed > 0", {"records_processed": 450}, True),
        ("records_processed > 0", {"records_processed": 0}, False),
        ("errors = 0", {"errors": 0}, True),
        ("errors = 0", {"errors": 2}, False),
        ("cost_usd <= 5", {"cost_usd": 4.99}, True),
        ("cost_usd <= 5", {"cost_usd": 5.01}, False),
        ("eval_score >= 0.8", {"eval_score": 0.8}, True),
        ("eval_score >= 0.8", {"eval_score": 0.79}, False),
        # every operator, both ways
        ("errors == 0", {"errors": 0.0}, True),
        ("status != failure", {"status": "success"}, True),
        ("status != failure", {"status": "failure"}, False),
        ("latency < 100", {"latency": 99}, True),
        ("latency < 100", {"latency": 100}, False),
        ('model in ["gpt-4o", "claude"]', {"model": "claude"}, True),
        ('model in ["gpt-4o", "claude"]', {"model": "llama"}, False),
        ("code in [200, 204]", {"code": "204"}, True),
        ("status in [success, skipped]", {"status": "skipped"}, True),
        ('status in [success, "timed out"]', {"status": "failure"}, False),
        ("run_id ~ ^nightly-[0-9]+$", {"run_id": "nightly-42"}, True),
        ("run_id matches ^nightly-[0-9]+$", {"run_id": "adhoc-1"}, False),
        ('note ~ "^a b$"', {"note": "a b"}, True),
        # numbers in strings, bools and nulls, dotted paths
        ("records_processed > 0", {"records_processed": "12"}, True),
        ("ok = true", {"ok": True}, True),
        ("ok = true", {"ok": "TRUE"}, True),
        ("ok = true", {"ok": 1}, False),
        ("parent = null", {"parent": None}, True),
        ("airflow.try_number <= 2", {"airflow": {"try_number": 2}}, True),
        ('day >= "2026-11-02"', {"day": "2026-11-10"}, True),  # ISO dates compare as text
    ],
)
def test_it_evaluates_each_operator(text: str, payload: dict[str, Any], passed: bool) -> None:
    result = parse_assertion(text).evaluate(payload)
    assert result.passed is passed, result.reason


def test_it_explains_a_failure_in_words() -> None:
    result = parse_assertion("records_processed > 0").evaluate({"records_processed": 0})
    assert result.reason == "records_processed was 0, expected > 0"
    assert result.actual == 0
    assert result.expression == "records_processed > 0"


def test_it_fails_a_missing_field_with_reason_missing() -> None:
    result = parse_assertion("eval_score >= 0.8").evaluate({"status": "success"})
    assert (result.passed, result.reason, result.actual) == (False, "missing", None)
    nested = parse_assertion("airflow.try_number = 1").evaluate({"airflow": 3})
    assert (nested.passed, nested.reason) == (False, "missing")


@pytest.mark.parametrize(
    ("text", "actual", "hint"),
    [
        ("records_processed > 0", "many", "(not a number)"),
        ("records_processed > 0", None, "(not a number)"),
        ("records_processed > 0", [1, 2], "(not a number)"),
        ("records_processed > 0", True, "(not a number)"),
        ('name >= "b"', 3, "(not a string)"),
        ("name ~ ^a", {"a": 1}, "(not a string)"),
        ("cost_usd <= 5", float("nan"), "(not a number)"),
    ],
)
def test_it_fails_a_type_mismatch_without_raising(text: str, actual: Any, hint: str) -> None:
    result = parse_assertion(text).evaluate({text.split(maxsplit=1)[0]: actual})
    assert result.passed is False
    assert result.reason.endswith(hint)


@pytest.mark.parametrize(
    ("text", "position", "problem"),
    [
        ("", 0, "expected a field name"),
        ("> 5", 0, "expected a field name"),
        ("records_processed", 17, "expected an operator"),
        ("records_processed >", 19, "expected a value"),
        ("records_processed => 5", 19, "expected a number"),
        ("cost_usd <= [1]", 12, "takes a plain value"),
        ("cost_usd <= true", 12, "takes a number or a string"),
        ("model in gpt", 9, "in takes a non-empty list"),
        ("model in []", 9, "in takes a non-empty list"),
        ('model in ["a", ', 14, "expected ] to close the list"),
        ("model in [a, , b]", 13, "expected a list item"),
        ("model in [a, two words]", 13, "invalid value"),
        ("run_id ~ (unclosed", 9, "invalid regex"),
        ("status = two words", 9, "expected a number"),
    ],
)
def test_it_points_at_the_syntax_error(text: str, position: int, problem: str) -> None:
    with pytest.raises(AssertionSyntaxError) as info:
        parse_assertion(text)
    assert info.value.position == position
    assert problem in info.value.problem
    assert "^" in str(info.value)


def test_it_parses_once_into_an_immutable_value() -> None:
    first = parse_assertion("errors  ==   0")
    assert str(first) == "errors = 0"
    assert first == parse_assertion("errors = 0")
    assert hash(first) == hash(parse_assertion("errors = 0"))
    with pytest.raises(AttributeError):
        first.op = ">"  # type: ignore[misc]


def test_it_evaluates_a_list_in_order() -> None:
    assertions = parse_assertions(["status = success", "errors = 0"])
    results = evaluate_all(assertions, {"status": "success", "errors": 1})
    assert [r.passed for r in results] == [True, False]
    assert results[1].to_dict() == {
        "expression": "errors = 0",
        "passed": False,
        "actual": 1,
        "reason": "errors was 1, expected = 0",
    }


def test_it_runs_regexes_on_a_linear_time_engine() -> None:
    assert REGEX_ENGINE == "re2"
    evil = parse_assertion("name ~ ^(a+)+$")
    started = time.monotonic()
    result = evil.evaluate({"name": "a" * 5_000 + "!"})
    # A backtracking engine needs longer than the age of the universe here; RE2 is instant.
    assert result.passed is False
    assert time.monotonic() - started < 5


@pytest.mark.parametrize(
    ("pattern", "subject"),
    [
        ("^gpt-4", "gpt-4o"),
        ("^gpt-4", "xgpt-4"),
        ("4o$", "gpt-4o"),
        ("é+", "café"),
        ("^ü.$", "üx"),
        ("(?i)ERROR", "an error"),
        ("", "anything"),
        (r"\d{3}", "ab12c"),
    ],
)
def test_it_finds_regex_matches_like_a_search(pattern: str, subject: str) -> None:
    found = _regex_matcher(pattern)(subject)
    assert found is (_regex_engine.compile(pattern).search(subject) is not None)
    assert found is (re.search(pattern, subject) is not None)


# --- properties ------------------------------------------------------------------------------

names = st.from_regex(r"[A-Za-z_][A-Za-z0-9_]{0,12}", fullmatch=True)
paths = st.lists(names, min_size=1, max_size=3).map(".".join)
scalars = st.one_of(
    st.integers(-(10**12), 10**12),
    st.floats(allow_nan=False, allow_infinity=False, width=32),
    st.text(max_size=20),
    st.booleans(),
    st.none(),
)
comparable = st.one_of(st.integers(-(10**6), 10**6), st.floats(-1e6, 1e6), st.text(max_size=20))


@st.composite
def assertion_texts(draw: st.DrawFn) -> str:
    path = draw(paths)
    op = draw(st.sampled_from([o for o in OPERATORS if o != "~"]))
    if op == "in":
        value = json.dumps(draw(st.lists(scalars, min_size=1, max_size=4)))
    elif op in (">", ">=", "<", "<="):
        value = json.dumps(draw(comparable))
    else:
        value = json.dumps(draw(scalars))
    return f"{path} {op} {value}"


@given(assertion_texts())
def test_it_round_trips_through_its_canonical_text(text: str) -> None:
    parsed = parse_assertion(text)
    assert parse_assertion(str(parsed)) == parsed
    assert str(parse_assertion(str(parsed))) == str(parsed)


@given(assertion_texts(), st.dictionaries(names, scalars, max_size=4), scalars)
def test_it_never_raises_on_any_payload(text: str, payload: dict[str, Any], value: Any) -> None:
    parsed = parse_assertion(text)
    payload[parsed.path[0]] = value if len(parsed.path) == 1 else {"x": value}
    result = parsed.evaluate(payload)
    assert isinstance(result.passed, bool)
    assert isinstance(result.reason, str)


@given(st.integers(-1000, 1000), st.integers(-1000, 1000))
def test_it_orders_numbers_like_python(actual: int, bound: int) -> None:
    payload = {"n": actual}
    assert parse_assertion(f"n > {bound}").evaluate(payload).passed is (actual > bound)
    assert parse_assertion(f"n >= {bound}").evaluate(payload).passed is (actual >= bound)
    assert parse_assertion(f"n < {bound}").evaluate(payload).passed is (actual < bound)
    assert parse_assertion(f"n <= {bound}").evaluate(payload).passed is (actual <= bound)
    assert parse_assertion(f"n = {bound}").evaluate(payload).passed is (actual == bound)
    assert parse_assertion(f"n != {bound}").evaluate(payload).passed is (actual != bound)


@given(st.text(max_size=50))
def test_it_never_raises_anything_but_a_syntax_error(text: str) -> None:
    position = 0
    try:
        parse_assertion(text)
    except AssertionSyntaxError as exc:
        position = exc.position
    assert 0 <= position <= len(text)
