"""Payload assertions: ``records_processed > 0``, ``status = success``, ``tag in [a, b]``.

One grammar, parsed once into an immutable :class:`Assertion` and evaluated against a
payload (a JSON object as a ``dict``). The reference server evaluates with this very code, so
``telemhq check`` on a laptop gives exactly the verdict the server would.

Grammar::

    assertion := path op value
    path      := name ("." name)*            name: [A-Za-z_][A-Za-z0-9_-]*
    op        := "=" | "==" | "!=" | ">" | ">=" | "<" | "<=" | "in" | "~" | "matches"
    value     := JSON literal | bare word    (``in`` takes a JSON list; ``~`` a pattern)

A comparison may also judge a run against the tracker's own past
(``records_processed >= 0.5 * median(last 20)``, ``sum(cost_usd, 24h) <= 50``): that grammar
and its semantics are in :mod:`telemhq_plugins.core.history`; :func:`parse_assertion` reads
both.

Evaluation never raises: a missing field fails with reason ``missing``, a type mismatch fails
with a reason that says which type was expected. Regular expressions run on RE2 (linear time,
no backtracking), so no pattern can hang the evaluator; where ``google-re2`` is not installed
(a bare client install), Python's ``re`` is used with the subject capped at
:data:`MAX_REGEX_SUBJECT` characters. The server always installs RE2.
"""

from __future__ import annotations

import datetime as dt
import importlib
import json
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final, Literal

from telemhq_plugins.core.history import History, HistoryAssertion, parse_history_assertion
from telemhq_plugins.core.verdict import (
    AssertionResult,
    AssertionSyntaxError,
    as_number,
    show_value,
)

_regex_engine: Any
try:  # RE2 is linear-time; it is a dependency of the server and dev extras.
    _regex_engine = importlib.import_module("re2")
except ImportError:  # pragma: no cover - exercised only on a bare client install
    _regex_engine = re
#: "re2" or, on a bare client install without google-re2, "re".
REGEX_ENGINE: Final[str] = "re" if _regex_engine is re else "re2"

__all__ = [
    "OPERATORS",
    "REGEX_ENGINE",
    "AnyAssertion",
    "Assertion",
    "AssertionResult",
    "AssertionSyntaxError",
    "History",
    "HistoryAssertion",
    "evaluate_all",
    "parse_assertion",
    "parse_assertions",
]

Op = Literal["=", "!=", ">", ">=", "<", "<=", "in", "~"]

#: Canonical operators; ``==`` is read as ``=`` and ``matches`` as ``~``.
OPERATORS: Final[tuple[Op, ...]] = ("=", "!=", ">", ">=", "<", "<=", "in", "~")
_OP_ALIASES: Final[dict[str, Op]] = {"==": "=", "matches": "~"}
MAX_REGEX_SUBJECT: Final = 10_000
MAX_EXPRESSION: Final = 1_000

_NAME = r"[A-Za-z_][A-Za-z0-9_\-]*"
_PATH_RE = re.compile(rf"{_NAME}(?:\.{_NAME})*")
_SYMBOL_OP_RE = re.compile(r"==|!=|>=|<=|=|>|<|~")
_WORD_OP_RE = re.compile(r"(in|matches)(?=[\s\[\"]|$)", re.IGNORECASE)
_BARE_WORD_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_.\-]*")
_MISSING: Final = object()
#: Text with any of these reads as arithmetic or an aggregate: its errors are the history
#: grammar's when both grammars stop at the same place.
_ARITHMETIC_RE = re.compile(r"[()*/+]")
#: A name and a parenthesis first: only an aggregate on the left reads so.
_LEFT_AGGREGATE_RE = re.compile(rf"\s*{_NAME}\s*\(")


@dataclass(frozen=True, slots=True)
class Assertion:
    """A parsed assertion. Build with :func:`parse_assertion`; ``str()`` gives canonical text."""

    path: tuple[str, ...]
    op: Op
    expected: Any
    _check: Callable[[Any], str | None] = field(repr=False, compare=False, hash=False)
    #: canonical text and the "expected ..." phrase, built once at parse time (hot path).
    _text: str = field(repr=False, compare=False, hash=False, default="")
    _was: str = field(repr=False, compare=False, hash=False, default="")
    _expects: str = field(repr=False, compare=False, hash=False, default="")

    @property
    def field_path(self) -> str:
        return ".".join(self.path)

    @property
    def needs_history(self) -> bool:
        return False

    def __str__(self) -> str:
        return self._text

    def evaluate(
        self,
        payload: Mapping[str, Any],
        history: History | None = None,
        *,
        now: dt.datetime | None = None,
        timezone: str | None = None,
    ) -> AssertionResult:
        """Evaluate against ``payload``; never raises. (``history``, ``now`` and ``timezone``
        are for history-relative assertions; a plain one reads the payload alone.)"""
        actual: Any = payload
        for part in self.path:
            if isinstance(actual, Mapping) and part in actual:
                actual = actual[part]
            else:
                return AssertionResult(self._text, False, None, "missing")
        try:
            problem = self._check(actual)
        except Exception as exc:  # a defensive net: evaluation must never raise
            problem = f"could not compare ({type(exc).__name__})"
        if problem is None:
            return AssertionResult(self._text, True, actual, self._was + show_value(actual))
        reason = f"{self._was}{show_value(actual)}{self._expects}{problem}"
        return AssertionResult(self._text, False, actual, reason)


#: A plain assertion or a history-relative one: both evaluate the same way.
AnyAssertion = Assertion | HistoryAssertion


def parse_assertion(text: str) -> AnyAssertion:
    """Parse one assertion, raising :class:`AssertionSyntaxError` with the offending position.

    A plain assertion (``field op value``) is read first; text that is not one is read as a
    history-relative or window assertion (:mod:`telemhq_plugins.core.history`), and of the two
    syntax errors the one that got further into the text is raised."""
    if len(text) > MAX_EXPRESSION:
        raise AssertionSyntaxError(text[:60] + "...", 0, f"longer than {MAX_EXPRESSION} chars")
    try:
        return _parse_plain(text)
    except AssertionSyntaxError as plain_error:
        try:
            return parse_history_assertion(text)
        except AssertionSyntaxError as history_error:
            further = history_error.position - plain_error.position
            if (
                further > 0
                or (further == 0 and _ARITHMETIC_RE.search(text))
                or _LEFT_AGGREGATE_RE.match(text)
            ):
                raise history_error from None
        raise


def _parse_plain(text: str) -> Assertion:
    pos = _skip_space(text, 0)
    path_match = _PATH_RE.match(text, pos)
    if path_match is None:
        raise AssertionSyntaxError(text, pos, "expected a field name such as records_processed")
    path = tuple(path_match.group().split("."))
    pos = _skip_space(text, path_match.end())
    op_match = _SYMBOL_OP_RE.match(text, pos) or _WORD_OP_RE.match(text, pos)
    if op_match is None:
        raise AssertionSyntaxError(
            text, pos, "expected an operator (=, !=, >, >=, <, <=, in, ~, matches)"
        )
    raw_op = op_match.group().lower()
    op = _OP_ALIASES.get(raw_op) or _as_op(raw_op)
    pos = _skip_space(text, op_match.end())
    raw_value = text[pos:].rstrip()
    if not raw_value:
        raise AssertionSyntaxError(text, pos, "expected a value after the operator")
    expected = _parse_value(text, pos, raw_value, op)
    field_path = ".".join(path)
    value_text = _format_value(op, expected)
    return Assertion(
        path,
        op,
        expected,
        _make_check(text, pos, op, expected),
        f"{field_path} {op} {value_text}",
        f"{field_path} was ",
        f", expected {op} {value_text}",
    )


def parse_assertions(texts: Iterable[str]) -> list[AnyAssertion]:
    """Parse several assertions; the first syntax error is raised."""
    return [parse_assertion(t) for t in texts]


def evaluate_all(
    assertions: Sequence[AnyAssertion],
    payload: Mapping[str, Any],
    history: History | None = None,
    *,
    now: dt.datetime | None = None,
    timezone: str | None = None,
) -> list[AssertionResult]:
    """Evaluate each assertion against ``payload``, in order; history-relative ones against
    ``history`` (the tracker's previous runs, oldest first; none: too little history) at time
    ``now`` in the tracker's ``timezone`` (UTC when None)."""
    if history is None and now is None and timezone is None:
        return [a.evaluate(payload) for a in assertions]
    return [a.evaluate(payload, history, now=now, timezone=timezone) for a in assertions]


# --- parsing helpers -------------------------------------------------------------------------


def _as_op(raw: str) -> Op:
    for op in OPERATORS:
        if op == raw:
            return op
    raise AssertionError(raw)  # pragma: no cover - the operator regexes admit only these


def _skip_space(text: str, pos: int) -> int:
    while pos < len(text) and text[pos].isspace():
        pos += 1
    return pos


def _parse_value(text: str, pos: int, raw: str, op: Op) -> Any:
    if op == "~":
        if raw.startswith('"'):
            value = _json_literal(text, pos, raw)
            if not isinstance(value, str):
                raise AssertionSyntaxError(text, pos, "a regex must be a string")
            return value
        return raw
    if op == "in":
        if not raw.startswith("["):
            raise AssertionSyntaxError(text, pos, "in takes a non-empty list: in [a, b]")
        value = _list_literal(text, pos, raw)
        if not isinstance(value, list) or not value:
            raise AssertionSyntaxError(text, pos, "in takes a non-empty list: in [a, b]")
        for item in value:
            if isinstance(item, (list, dict)):
                raise AssertionSyntaxError(text, pos, "in takes a list of plain values")
        return value
    if raw[0] in '"[{-0123456789' or raw in ("true", "false", "null"):
        value = _json_literal(text, pos, raw)
        if isinstance(value, (list, dict)):
            raise AssertionSyntaxError(text, pos, f"{op} takes a plain value, not a list/object")
        if op in (">", ">=", "<", "<=") and not isinstance(value, (int, float, str)):
            raise AssertionSyntaxError(text, pos, f"{op} takes a number or a string")
        if isinstance(value, bool) and op in (">", ">=", "<", "<="):
            raise AssertionSyntaxError(text, pos, f"{op} takes a number or a string")
        return value
    if _BARE_WORD_RE.fullmatch(raw) is None:
        raise AssertionSyntaxError(
            text, pos, 'expected a number, true/false/null, a "quoted string" or a bare word'
        )
    return raw


def _list_literal(text: str, pos: int, raw: str) -> Any:
    """A JSON list, or a list of bare words and JSON literals: ``[success, "two words", 3]``."""
    try:
        return json.loads(raw, parse_constant=_reject_constant)
    except ValueError:
        pass
    if not raw.endswith("]"):
        raise AssertionSyntaxError(text, pos + len(raw), "expected ] to close the list")
    items: list[Any] = []
    offset = pos + 1
    for part in raw[1:-1].split(","):
        item = part.strip()
        start = offset + (len(part) - len(part.lstrip()))
        if not item:
            raise AssertionSyntaxError(text, start, "expected a list item")
        if _BARE_WORD_RE.fullmatch(item) and item not in ("true", "false", "null"):
            items.append(item)
        else:
            items.append(_json_literal(text, start, item))
        offset += len(part) + 1
    return items


def _json_literal(text: str, pos: int, raw: str) -> Any:
    try:
        value = json.loads(raw, parse_constant=_reject_constant)
    except json.JSONDecodeError as exc:
        raise AssertionSyntaxError(text, pos + exc.pos, f"invalid value: {exc.msg}") from None
    except ValueError as exc:
        raise AssertionSyntaxError(text, pos, str(exc)) from None
    return value


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a valid value")


def _format_value(op: Op, value: Any) -> str:
    if op == "~":
        # A pattern is shown bare unless bare text would not read back identically.
        if value and value == value.strip() and not value.startswith('"'):
            return str(value)
        return json.dumps(value)
    if (
        isinstance(value, str)
        and _BARE_WORD_RE.fullmatch(value)
        and value not in ("true", "false", "null")
    ):
        return value
    return json.dumps(value, ensure_ascii=False)


# --- evaluation helpers ----------------------------------------------------------------------
# A check returns None when the actual value passes, else a short suffix for the reason.


def _equals(actual: Any, expected: Any) -> bool:
    if expected is None or isinstance(expected, bool):
        if isinstance(actual, str) and expected is not None:
            return actual.strip().lower() == ("true" if expected else "false")
        return actual is expected
    if isinstance(expected, (int, float)):
        number = as_number(actual)
        return number is not None and number == expected
    if isinstance(actual, str):
        return bool(actual == expected)
    if isinstance(actual, (int, float)) and not isinstance(actual, bool):
        expected_number = as_number(expected)
        return expected_number is not None and actual == expected_number
    return False


_ORDER: Final[dict[str, Callable[[Any, Any], bool]]] = {
    ">": lambda a, b: a > b,
    ">=": lambda a, b: a >= b,
    "<": lambda a, b: a < b,
    "<=": lambda a, b: a <= b,
}


def _make_check(text: str, pos: int, op: Op, expected: Any) -> Callable[[Any], str | None]:
    if op == "=":
        return lambda actual: None if _equals(actual, expected) else ""
    if op == "!=":
        return lambda actual: "" if _equals(actual, expected) else None
    if op == "in":
        return lambda actual: None if any(_equals(actual, e) for e in expected) else ""
    if op == "~":
        try:
            matches = _regex_matcher(expected)
        except Exception as exc:
            raise AssertionSyntaxError(text, pos, f"invalid regex: {exc}") from None

        def check_regex(actual: Any) -> str | None:
            if isinstance(actual, bool) or not isinstance(actual, (str, int, float)):
                return " (not a string)"
            subject = actual if isinstance(actual, str) else str(actual)
            return None if matches(subject[:MAX_REGEX_SUBJECT]) else ""

        return check_regex
    compare = _ORDER[op]
    if isinstance(expected, str):

        def check_text(actual: Any) -> str | None:
            if not isinstance(actual, str):
                return " (not a string)"
            return None if compare(actual, expected) else ""

        return check_text

    def check_number(actual: Any) -> str | None:
        number = as_number(actual)
        if number is None:
            return " (not a number)"
        return None if compare(number, expected) else ""

    return check_number


def _regex_matcher(pattern: str) -> Callable[[str], bool]:
    """A ``subject -> found`` function for ``pattern``, searching anywhere in the subject.

    google-re2's ``search`` builds a match object and maps byte offsets back to characters,
    which costs more than the match itself; a yes/no answer needs neither, so when its
    low-level ``RE2.Match`` is there we call it directly. Tests check both paths give the same
    answers."""
    compiled = _regex_engine.compile(pattern)
    low = getattr(compiled, "_regexp", None)
    anchor = getattr(getattr(_regex_engine, "_Anchor", None), "UNANCHORED", None)
    null_span = getattr(_regex_engine, "_NULL_SPAN", None)
    if low is None or anchor is None or null_span is None or not hasattr(low, "Match"):
        return lambda subject: compiled.search(subject) is not None

    def found(subject: str) -> bool:
        data = subject.encode()
        return bool(low.Match(anchor, data, 0, len(data))[0] != null_span)

    return found
