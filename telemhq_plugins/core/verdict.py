"""What every assertion returns, and the few rules both assertion kinds share: the result of
one assertion on one run, the syntax error that points at its position, what counts as a
number, and how an actual value is shown in a reason."""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from typing import Any, Final

__all__ = ["AssertionResult", "AssertionSyntaxError", "as_number", "show_value"]

#: A numeric string read as an exact integer (longer ones are read as floats).
_INTEGER_RE: Final = re.compile(r"[+-]?[0-9]{1,300}")


class AssertionSyntaxError(ValueError):
    """An assertion that does not parse; ``position`` is the 0-based offset of the problem."""

    def __init__(self, expression: str, position: int, problem: str) -> None:
        self.expression = expression
        self.position = position
        self.problem = problem
        pointer = " " * position + "^"
        super().__init__(f"{problem} at position {position}:\n  {expression}\n  {pointer}")


@dataclass(frozen=True, slots=True)
class AssertionResult:
    """The verdict of one assertion on one payload.

    A history-relative assertion also says whether it was ``evaluated`` (False when the
    tracker has too little history: it then neither fails nor passes the run, ``passed`` is
    True and ``reason`` says why) and its ``baseline``: the computed right-hand side and how it
    was made (``{"value": 49000, "text": "0.5 x median 98000 of the last 20 runs"}``, with a
    multiplication sign for the x)."""

    expression: str
    passed: bool
    actual: Any
    reason: str
    evaluated: bool = True
    baseline: dict[str, Any] | None = None
    #: False for a plain assertion: its dict keeps the four fields it always had.
    relative: bool = False

    def to_dict(self) -> dict[str, Any]:
        result = {
            "expression": self.expression,
            "passed": self.passed,
            "actual": self.actual,
            "reason": self.reason,
        }
        if self.relative:
            result["evaluated"] = self.evaluated
            result["baseline"] = self.baseline
        return result


def as_number(value: Any) -> float | int | None:
    """ints, floats but NaN and numeric strings are numbers; bools are not. Integers (and
    integer strings) stay exact, so two integers compare without rounding, whatever their size
    (Python compares an int with a float exactly too)."""
    if isinstance(value, bool):
        return None
    if isinstance(value, (int, float)):
        return value if not (isinstance(value, float) and math.isnan(value)) else None
    if isinstance(value, str):
        text = value.strip()
        if _INTEGER_RE.fullmatch(text):
            return int(text)  # exact: compared with an integer without rounding
        try:
            number = float(text)
        except ValueError:
            return None
        return None if math.isnan(number) else number
    return None


def show_value(value: Any) -> str:
    """The actual value as JSON text, at most 80 characters (fast paths for plain values)."""
    kind = type(value)
    if kind is int or (kind is float and math.isfinite(value)):
        return repr(value)
    if kind is str and len(value) <= 78 and value.isprintable() and '"' not in value:
        return f'"{value}"' if "\\" not in value else json.dumps(value, ensure_ascii=False)
    try:
        shown = json.dumps(value, ensure_ascii=False, default=str)
    except ValueError:
        shown = repr(value)
    return shown if len(shown) <= 80 else shown[:77] + "..."
