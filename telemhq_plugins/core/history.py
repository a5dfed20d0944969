"""History-relative and window assertions: judge a run against the tracker's own past.

``records_processed >= 0.5 * median(last 20)`` compares this run's field with an arithmetic
expression of numbers and *history aggregates* over the previous counted runs;
``sum(cost_usd, 24h) <= 50`` puts a *window aggregate* (this run included) on the left.

Grammar::

    assertion := left op expr
    left      := path | aggregate            (on the left an aggregate names its field)
    op        := "=" | "==" | "!=" | ">" | ">=" | "<" | "<="
    expr      := term (("+" | "-") term)*
    term      := factor (("*" | "/") factor)*
    factor    := number | "-" factor | "(" expr ")" | aggregate
    aggregate := func "(" [field ","] window ("," option)* ")"
    func      := median | mean | min | max | sum | count | stddev | mad | p1 ... p99
    window    := "last" N | duration         (duration: 30m, 24h, 7d; also s and w)
    option    := "same weekday" | "same hour" | "min" N

Semantics:

- An aggregate on the right reads the *counted* previous runs: status ``success``, passed
  all their assertions (one not evaluated counts as passed), and the field is a number.
  With no field name it reads the left-hand field. ``count(STATUS, window)`` counts runs of
  that status instead.
- With fewer counted runs than its minimum (``min N``; default 5, or N for ``last N`` with
  N < 5) the assertion is *not evaluated*: it neither passes nor fails the run, and its
  reason says ``history: 3 of 5 runs``.
- An aggregate on the left reads every run in its window that has the field, whatever its
  status, this run included, and has no minimum (a budget holds from the first run).
- ``same weekday`` / ``same hour`` keep the runs whose weekday / hour, in the tracker's
  timezone (UTC when it has none), are this run's.
- ``stddev`` is the population standard deviation, ``mad`` the median absolute deviation
  (unscaled), ``pN`` the N-th percentile with linear interpolation (``median`` is ``p50``).

Evaluation never raises: a missing field fails with reason ``missing`` like a plain
assertion, a non-number fails, an empty window or an undefined baseline (a division by zero)
is *not evaluated* with a reason that says so.
"""

from __future__ import annotations

import bisect
import datetime as dt
import functools
import math
import re
import zoneinfo
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final, Literal

from telemhq_plugins.core.verdict import (
    AssertionResult,
    AssertionSyntaxError,
    as_number,
    show_value,
)

__all__ = [
    "AGGREGATES",
    "Aggregate",
    "History",
    "HistoryAssertion",
    "PastRun",
    "Window",
    "parse_history_assertion",
]

Compare = Literal["=", "!=", ">", ">=", "<", "<="]

#: The aggregate functions, besides ``p1`` ... ``p99``.
AGGREGATES: Final = ("median", "mean", "min", "max", "sum", "count", "stddev", "mad")
DEFAULT_MINIMUM: Final = 5
#: The multiplication sign in a baseline's words ("0.5 x median 98000 of the last 20 runs").
_TIMES: Final = "\u00d7"
#: The statuses a run's end can have (``start`` opens a run and is never aggregated).
_STATUSES: Final = frozenset({"success", "failure", "retry", "skipped", "cancelled"})
_UNITS: Final = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
_DAYS: Final = ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday")
_PERCENTILE_RE: Final = re.compile(r"p([1-9][0-9]?)")
_TOKEN_RE: Final = re.compile(
    r"""
    (?P<num>[0-9]+(?:\.[0-9]+)?(?:[eE][+-]?[0-9]+)?)(?P<unit>[smhdw])?(?![A-Za-z0-9_.])
    | (?P<name>[A-Za-z_][A-Za-z0-9_\-]*(?:\.[A-Za-z_][A-Za-z0-9_\-]*)*)
    | (?P<op>==|!=|>=|<=|=|>|<)
    | (?P<punct>[()+\-*/,])
    """,
    re.VERBOSE,
)
_COMPARE: Final = {
    "=": lambda a, b: a == b,
    "!=": lambda a, b: a != b,
    ">": lambda a, b: a > b,
    ">=": lambda a, b: a >= b,
    "<": lambda a, b: a < b,
    "<=": lambda a, b: a <= b,
}


# --- the past ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class PastRun:
    """One stored run as history aggregates see it. ``passed`` is the run's verdict (None for
    a neutral status such as ``retry``)."""

    at: dt.datetime
    status: str
    passed: bool | None
    payload: Mapping[str, Any]


class History:
    """A tracker's past runs, oldest first, kept in columns so that a window is a slice.

    ``limit`` keeps only the newest ``limit`` runs visible (the server's retention), whatever
    was appended. The server appends each run it stores and evaluates the next run against
    the result; :meth:`truncate` takes back runs whose transaction did not commit."""

    def __init__(self, runs: Iterable[PastRun] = (), *, limit: int | None = None) -> None:
        self.limit = limit
        self._at: list[float] = []
        self._status: list[str] = []
        self._counted: list[bool] = []
        self._payloads: list[Mapping[str, Any]] = []
        self._columns: dict[tuple[str, ...], list[float | None]] = {}
        self._clocks: dict[str, list[tuple[int, int]]] = {}
        #: running exact sums and counts (see :meth:`prefix`), index i: the runs before i
        self._prefixes: dict[tuple[Any, ...], tuple[list[int], list[int]]] = {}
        self._moment: tuple[tuple[dt.datetime, str], tuple[float, int, int]] | None = None
        #: how many of the oldest runs :meth:`compact` has dropped
        self.dropped = 0
        for run in runs:
            self.append(run)

    def __len__(self) -> int:
        return len(self._at) - self.start

    @property
    def times(self) -> list[float]:
        """Each run's time (a POSIX timestamp); read-only."""
        return self._at

    @property
    def statuses(self) -> list[str]:
        """Each run's status; read-only."""
        return self._status

    @property
    def counted(self) -> list[bool]:
        """Whether each run can be counted in a baseline (a success that passed); read-only."""
        return self._counted

    @property
    def start(self) -> int:
        """The index of the oldest visible run."""
        if self.limit is None:
            return 0
        return max(0, len(self._at) - self.limit)

    def append(self, run: PastRun) -> None:
        self.add(run.at, run.status, run.passed, run.payload)

    def add(
        self, at: dt.datetime, status: str, passed: bool | None, payload: Mapping[str, Any]
    ) -> None:
        """:meth:`append` without building a :class:`PastRun`."""
        at = at if at.tzinfo is not None else at.replace(tzinfo=dt.UTC)
        # A run is placed in time no earlier than the run stored before it (two server
        # processes may store runs a few ms out of order): the times stay sorted, so a
        # duration window is found by bisection and is the same for every reader.
        stamp = at.timestamp()
        self._at.append(max(stamp, self._at[-1]) if self._at else stamp)
        self._status.append(status)
        self._counted.append(status == "success" and passed is True)
        self._payloads.append(payload)
        # Columns and clocks already in use follow at once (cheaper than catching up later).
        n = len(self._at)
        for path, column in self._columns.items():
            if len(column) == n - 1:
                column.append(_number_at(payload, path))
        for tz, clock in self._clocks.items():
            if len(clock) == n - 1:
                local = dt.datetime.fromtimestamp(self._at[-1], _zone(tz))
                clock.append((local.weekday(), local.hour))

    def truncate(self, length: int) -> None:
        """Forget the runs appended after the first ``length`` (stored ones, not visible)."""
        for values in (self._at, self._status, self._counted, self._payloads):
            del values[length:]
        for column in self._columns.values():
            del column[length:]
        for clock in self._clocks.values():
            del clock[length:]
        for sums, counts in self._prefixes.values():
            del sums[length + 1 :]
            del counts[length + 1 :]

    @property
    def stored(self) -> int:
        """How many runs are held, visible or not (what :meth:`truncate` takes)."""
        return len(self._at)

    def compact(self, length: int | None = None) -> None:
        """Drop runs older than the visible ones (memory only: nothing visible changes), as
        seen from the first ``length`` runs (all by default: runs after them may be taken
        back). :attr:`dropped` counts the runs dropped so far."""
        held = len(self._at) if length is None else min(length, len(self._at))
        drop = 0 if self.limit is None else max(0, held - self.limit)
        if drop < 64 or (self.limit is not None and drop < self.limit):
            return
        self.dropped += drop
        for values in (self._at, self._status, self._counted, self._payloads):
            del values[:drop]
        for column in self._columns.values():
            del column[:drop]
        for clock in self._clocks.values():
            del clock[:drop]
        for sums, counts in self._prefixes.values():
            del sums[:drop]
            del counts[:drop]

    def column(self, path: tuple[str, ...]) -> list[float | None]:
        """The field's numeric value in each run (None where missing or not a number)."""
        column = self._columns.setdefault(path, [])
        if len(column) < len(self._payloads):
            column.extend(_number_at(p, path) for p in self._payloads[len(column) :])
        return column

    def prefix(self, key: tuple[Any, ...]) -> tuple[list[int], list[int]]:
        """Running exact sums (of :func:`_exact` values) and counts over the runs, so that a
        duration window's sum, count and mean cost one subtraction: ``("field", path,
        counted)`` sums the field's values (of counted runs only, or of every run but a
        start), ``("status", status)`` counts the runs of that status."""
        sums, counts = self._prefixes.setdefault(key, ([0], [0]))
        done = len(sums) - 1
        if done < len(self._at):
            total, count = sums[-1], counts[-1]
            if key[0] == "status":
                for status in self._status[done:]:
                    count += status == key[1]
                    sums.append(total)
                    counts.append(count)
            else:
                column = self.column(key[1])
                for i in range(done, len(self._at)):
                    value = column[i]
                    if value is not None and (
                        self._counted[i] if key[2] else self._status[i] != "start"
                    ):
                        total += _exact(value)
                        count += 1
                    sums.append(total)
                    counts.append(count)
        return sums, counts

    def moment(self, when: dt.datetime, tz: str) -> tuple[float, int, int]:
        """``when`` as a timestamp, and its weekday and hour in ``tz`` (the last answer is
        kept: a run's assertions all ask for the same moment)."""
        key = (when, tz)
        if self._moment is None or self._moment[0] != key:
            local = when.astimezone(_zone(tz))
            self._moment = (key, (when.timestamp(), local.weekday(), local.hour))
        return self._moment[1]

    def since(self, cutoff: float) -> int:
        """The index of the first visible run after ``cutoff`` (a POSIX timestamp)."""
        return bisect.bisect_right(self._at, cutoff, self.start)

    def clock(self, tz: str) -> list[tuple[int, int]]:
        """Each run's (weekday, hour) in timezone ``tz``."""
        clock = self._clocks.setdefault(tz, [])
        if len(clock) < len(self._at):
            zone = _zone(tz)
            for at in self._at[len(clock) :]:
                local = dt.datetime.fromtimestamp(at, zone)
                clock.append((local.weekday(), local.hour))
        return clock


#: Floats are summed exactly as integers in units of the smallest float (2**-1074): a sum
#: does not depend on the order or the grouping of its terms, so a window's sum read from
#: running sums equals the sum of its values, in every process.
_UNIT: Final = 2**1074


def _exact(value: float) -> int:
    numerator, denominator = value.as_integer_ratio()
    return numerator * (_UNIT // denominator)


def _exact_sum(values: Iterable[float]) -> int:
    return sum(_exact(v) for v in values)


def _number_at(payload: Mapping[str, Any], path: tuple[str, ...]) -> float | None:
    value: Any = payload
    for part in path:
        if not (type(value) is dict or isinstance(value, Mapping)) or part not in value:
            return None
        value = value[part]
    kind = type(value)
    if kind is float:
        return value if math.isfinite(value) else None
    if kind is int and -(2**53) <= value <= 2**53:
        return float(value)
    return _finite(value)


def _finite(value: Any) -> float | None:
    number = as_number(value)
    if number is None:
        return None
    try:
        as_float = float(number)
    except OverflowError:
        return None
    return as_float if math.isfinite(as_float) else None


@functools.lru_cache(maxsize=256)
def _zone(name: str) -> dt.tzinfo:
    if not name or name.upper() == "UTC":
        return dt.UTC
    try:
        return zoneinfo.ZoneInfo(name)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError, OSError):
        return dt.UTC


# --- the parsed form --------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Window:
    """``last N`` runs (``runs``) or a duration (``seconds``), with its options."""

    runs: int | None
    seconds: float | None
    text: str
    weekday: bool = False
    hour: bool = False
    minimum: int = DEFAULT_MINIMUM
    explicit_minimum: bool = False

    def __str__(self) -> str:
        parts = [self.text]
        if self.weekday:
            parts.append("same weekday")
        if self.hour:
            parts.append("same hour")
        if self.explicit_minimum:
            parts.append(f"min {self.minimum}")
        return ", ".join(parts)


@dataclass(frozen=True, slots=True)
class Aggregate:
    """``median(last 20)``, ``sum(cost_usd, 24h)``, ``count(failure, 24h)``."""

    func: str
    path: tuple[str, ...] | None  # None: the left-hand field (filled in at parse time)
    status: str | None  # count(STATUS, ...)
    window: Window
    named: bool  # the field (or status) was written

    def __str__(self) -> str:
        subject = self.status if self.status is not None else ".".join(self.path or ())
        head = f"{subject}, " if self.named else ""
        return f"{self.func}({head}{self.window})"


@dataclass(frozen=True, slots=True)
class _Number:
    value: float | int
    text: str

    def __str__(self) -> str:
        return self.text


@dataclass(frozen=True, slots=True)
class _Negate:
    operand: _Node

    def __str__(self) -> str:
        return f"-{self.operand}"


@dataclass(frozen=True, slots=True)
class _Group:
    inner: _Node

    def __str__(self) -> str:
        return f"({self.inner})"


@dataclass(frozen=True, slots=True)
class _Binary:
    op: str
    left: _Node
    right: _Node

    def __str__(self) -> str:
        return f"{self.left} {self.op} {self.right}"


_Node = _Number | _Negate | _Group | _Binary | Aggregate


class _NotEvaluated(Exception):
    """Raised inside evaluation only: the assertion is not evaluated, for ``reason``."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(slots=True)
class _Context:
    """What one evaluation reads: the history, this run, its time and timezone."""

    history: History
    payload: Mapping[str, Any]
    status: str
    now: float
    tz: str
    weekday: int = 0
    hour: int = 0
    #: aggregate text -> (value, words) for the baseline text
    seen: dict[int, tuple[float, str]] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class HistoryAssertion:
    """A parsed history-relative or window assertion; ``str()`` gives canonical text."""

    left: tuple[str, ...] | Aggregate
    op: Compare
    right: _Node
    _text: str = field(repr=False, compare=False, hash=False, default="")
    #: the right side's aggregates, and whether any aggregate reads a season (parse time)
    _right_aggregates: tuple[Aggregate, ...] = field(
        repr=False, compare=False, hash=False, default=()
    )
    _seasonal: bool = field(repr=False, compare=False, hash=False, default=False)

    def __str__(self) -> str:
        return self._text

    @property
    def needs_history(self) -> bool:
        return True

    @property
    def aggregates(self) -> tuple[Aggregate, ...]:
        found = [self.left] if isinstance(self.left, Aggregate) else []
        return (*found, *_aggregates(self.right))

    @property
    def largest_window(self) -> tuple[int, float]:
        """The largest ``last N`` and the longest duration (seconds) it reads (0 if none)."""
        runs = [a.window.runs for a in self.aggregates if a.window.runs is not None]
        seconds = [a.window.seconds for a in self.aggregates if a.window.seconds is not None]
        return max(runs, default=0), max(seconds, default=0.0)

    def evaluate(
        self,
        payload: Mapping[str, Any],
        history: History | None = None,
        *,
        now: dt.datetime | None = None,
        timezone: str | None = None,
    ) -> AssertionResult:
        """Evaluate against ``payload`` (this run) and ``history`` (the previous runs, oldest
        first); never raises. ``now`` is this run's time (default: the current time)."""
        try:
            return self._evaluate(payload, history, now, timezone)
        except Exception as exc:  # a defensive net: evaluation must never raise
            return self._result(
                True, None, f"not evaluated: internal error ({type(exc).__name__})", False
            )

    def baseline(
        self, history: History, *, now: dt.datetime | None = None, timezone: str | None = None
    ) -> dict[str, Any]:
        """The right-hand side as it stands now (what "normal" is): ``{"value", "text"}``, or
        ``{"value": None, "reason": ...}`` when it cannot be computed yet."""
        try:
            context = self._context({}, history, now, timezone)
            value, words = self._right(context)
        except _NotEvaluated as exc:
            return {"value": None, "text": None, "reason": exc.reason}
        except Exception as exc:  # never raises, as evaluation
            return {"value": None, "text": None, "reason": f"internal error ({exc})"}
        return {"value": _plain(value), "text": words}

    # --- evaluation -------------------------------------------------------------------------

    def _context(
        self,
        payload: Mapping[str, Any],
        history: History | None,
        now: dt.datetime | None,
        timezone: str | None,
    ) -> _Context:
        when = now if now is not None else dt.datetime.now(dt.UTC)
        if when.tzinfo is None:
            when = when.replace(tzinfo=dt.UTC)
        tz = timezone or "UTC"
        past = history if history is not None else History()
        stamp, weekday, hour = past.moment(when, tz)
        status = (
            payload.get("status", "success")
            if type(payload) is dict or isinstance(payload, Mapping)
            else "success"
        )
        return _Context(
            past,
            payload,
            status if isinstance(status, str) else "success",
            stamp,
            tz,
            weekday,
            hour,
        )

    def _evaluate(
        self,
        payload: Mapping[str, Any],
        history: History | None,
        now: dt.datetime | None,
        timezone: str | None,
    ) -> AssertionResult:
        context = self._context(payload, history, now, timezone)
        try:
            expected, words = self._right(context)
        except _NotEvaluated as exc:
            return self._result(True, _field(payload, self.left), exc.reason, False)
        baseline = {"value": _plain(expected), "text": words}
        if isinstance(self.left, Aggregate):
            try:
                actual, n = _read(self.left, context, this_run=True)
            except _NotEvaluated as exc:
                return self._result(True, None, exc.reason, False, baseline)
            shown = f"{self.left} was {_fmt(actual)}"
            if self.left.status is None:
                shown += f" ({_runs(n)})"
            passed = bool(_COMPARE[self.op](actual, expected))
            reason = shown if passed else shown + self._expects(expected, words)
            return self._result(passed, _plain(actual), reason, True, baseline)
        value: Any = payload
        for part in self.left:
            if (type(value) is dict or isinstance(value, Mapping)) and part in value:
                value = value[part]
            else:
                return self._result(False, None, "missing", True, baseline)
        number = _finite(value)
        shown = f"{self._left_text} was {_fmt_actual(value)}"
        if number is None:
            reason = f"{shown}{self._expects(expected, words)} (not a number)"
            return self._result(False, value, reason, True, baseline)
        passed = bool(_COMPARE[self.op](number, expected))
        # As a plain assertion's, a passing reason is what the field was; the baseline says
        # what was expected.
        reason = shown if passed else shown + self._expects(expected, words)
        return self._result(passed, value, reason, True, baseline)

    def _expects(self, expected: float, words: str) -> str:
        suffix = "" if isinstance(self.right, _Number) else f" ({words})"
        return f", expected {self.op} {_fmt(expected)}{suffix}"

    @property
    def _left_text(self) -> str:
        return _left_text(self.left)

    def _result(
        self,
        passed: bool,
        actual: Any,
        reason: str,
        evaluated: bool,
        baseline: dict[str, Any] | None = None,
    ) -> AssertionResult:
        return AssertionResult(self._text, passed, actual, reason, evaluated, baseline, True)

    def _right(self, context: _Context) -> tuple[float, str]:
        # Every aggregate's minimum first: too little history is "not evaluated" even where
        # an arithmetic problem would come later.
        for aggregate in self._right_aggregates:
            running = _running(aggregate, context, this_run=False)
            values = (
                [] if running is not None else _window_values(aggregate, context, this_run=False)
            )
            n = running[1] if running is not None else len(values)
            needed = 0 if aggregate.status is not None else aggregate.window.minimum
            if n < needed:
                raise _NotEvaluated(f"history: {n} of {needed} runs")
            value = (
                running[0] if running is not None else _aggregate(aggregate.func, values, aggregate)
            )
            context.seen[id(aggregate)] = (value, _describe(aggregate, value, n, context))
        value, words = _compute(self.right, context)
        if not math.isfinite(value):
            raise _NotEvaluated(f"not evaluated: the baseline is not a finite number ({words})")
        return value, words


def _field(payload: Mapping[str, Any], left: tuple[str, ...] | Aggregate) -> Any:
    """The left-hand field's value in this run (None when missing, or for an aggregate)."""
    if isinstance(left, Aggregate):
        return None
    value: Any = payload
    for part in left:
        if not (type(value) is dict or isinstance(value, Mapping)) or part not in value:
            return None
        value = value[part]
    return value


def _aggregates(node: _Node) -> list[Aggregate]:
    if isinstance(node, Aggregate):
        return [node]
    if isinstance(node, _Binary):
        return _aggregates(node.left) + _aggregates(node.right)
    if isinstance(node, _Negate):
        return _aggregates(node.operand)
    if isinstance(node, _Group):
        return _aggregates(node.inner)
    return []


def _compute(node: _Node, context: _Context) -> tuple[float, str]:
    """The value of an arithmetic node and its words (aggregates as "median 98000 of ...")."""
    if isinstance(node, _Number):
        return float(node.value), node.text
    if isinstance(node, Aggregate):
        return context.seen[id(node)]
    if isinstance(node, _Negate):
        value, words = _compute(node.operand, context)
        return -value, f"-{words}"
    if isinstance(node, _Group):
        value, words = _compute(node.inner, context)
        return value, f"({words})"
    left, left_words = _compute(node.left, context)
    right, right_words = _compute(node.right, context)
    if node.op == "+":
        value = left + right
    elif node.op == "-":
        value = left - right
    elif node.op == "*":
        value = left * right
    else:
        if right == 0:
            raise _NotEvaluated(f"not evaluated: division by zero in {left_words} / {right_words}")
        value = left / right
    symbol = _TIMES if node.op == "*" else node.op
    return value, f"{left_words} {symbol} {right_words}"


def _in_season(window: Window, context: _Context, clock: list[tuple[int, int]], i: int) -> bool:
    weekday, hour = clock[i]
    return (not window.weekday or weekday == context.weekday) and (
        not window.hour or hour == context.hour
    )


def _window_values(aggregate: Aggregate, context: _Context, *, this_run: bool) -> list[float]:
    """The values an aggregate reads, newest first.

    On the right (``this_run`` False): the previous counted runs that have the field. On the
    left: this run's and every previous run's in the window that has the field, whatever its
    status (a run's start is not a run). ``count(STATUS, ...)`` reads a 1 per run of that
    status among the window's runs."""
    history, window = context.history, aggregate.window
    at, statuses, counted = history.times, history.statuses, history.counted
    seasonal = window.weekday or window.hour
    clock = history.clock(context.tz) if seasonal else []
    cutoff = context.now - window.seconds if window.seconds is not None else None
    limit = window.runs
    values: list[float] = []
    i, lo = len(at) - 1, history.start
    if aggregate.status is not None:
        seen = 0
        if this_run and context.status in _STATUSES:
            seen = 1
            if context.status == aggregate.status:
                values.append(1.0)
        while i >= lo and (limit is None or seen < limit):
            if cutoff is not None and at[i] <= cutoff:
                break
            if statuses[i] in _STATUSES and (not seasonal or _in_season(window, context, clock, i)):
                seen += 1
                if statuses[i] == aggregate.status:
                    values.append(1.0)
            i -= 1
        return values
    assert aggregate.path is not None
    column = history.column(aggregate.path)
    if this_run:
        own = _number_at(context.payload, aggregate.path)
        if own is not None:
            values.append(own)
    need = (limit if limit is not None else len(at) + 1) - len(values)
    if need <= 0:
        return values
    if not this_run and not seasonal and cutoff is None:
        # The usual baseline (median(last 20)): the newest counted runs with the field.
        for j in range(i, lo - 1, -1):
            value = column[j]
            if value is not None and counted[j]:
                values.append(value)
                need -= 1
                if not need:
                    break
        return values
    floor = cutoff if cutoff is not None else -math.inf
    day = context.weekday if window.weekday else None
    hour = context.hour if window.hour else None
    for j in range(i, lo - 1, -1):
        if at[j] <= floor:
            break
        value = column[j]
        if value is None or not (statuses[j] != "start" if this_run else counted[j]):
            continue
        if seasonal:
            run_day, run_hour = clock[j]
            if (day is not None and run_day != day) or (hour is not None and run_hour != hour):
                continue
        values.append(value)
        need -= 1
        if not need:
            break
    return values


def _running(
    aggregate: Aggregate, context: _Context, *, this_run: bool
) -> tuple[float, int] | None:
    """``sum``, ``count`` and ``mean`` over a duration window without a season, from the
    history's running sums (:meth:`History.prefix`): the same value as over the window's
    values, at the cost of a bisection. None where that does not apply."""
    window = aggregate.window
    if window.seconds is None or (
        window.runs is not None
        or window.weekday
        or window.hour
        or aggregate.func not in ("sum", "count", "mean")
    ):
        return None
    history = context.history
    lo, hi = history.since(context.now - window.seconds), len(history.times)
    if aggregate.status is not None:
        if aggregate.func != "count":
            return None
        _, counts = history.prefix(("status", aggregate.status))
        n = counts[hi] - counts[lo] + (this_run and context.status == aggregate.status)
        return float(n), n
    assert aggregate.path is not None
    sums, counts = history.prefix(("field", aggregate.path, not this_run))
    total, n = sums[hi] - sums[lo], counts[hi] - counts[lo]
    own = _number_at(context.payload, aggregate.path) if this_run else None
    if own is not None:
        total, n = total + _exact(own), n + 1
    if aggregate.func == "count":
        return float(n), n
    if aggregate.func == "sum":
        return total / _UNIT, n
    if n == 0:
        raise _NotEvaluated(f"not evaluated: no values in {aggregate}")
    return total / (_UNIT * n), n


def _aggregate(func: str, values: Sequence[float], aggregate: Aggregate) -> float:
    if func == "count":
        return float(len(values))
    if func == "sum":
        return _exact_sum(values) / _UNIT
    if not values:
        raise _NotEvaluated(f"not evaluated: no values in {aggregate}")
    if func == "mean":
        return _exact_sum(values) / (_UNIT * len(values))
    if func == "min":
        return min(values)
    if func == "max":
        return max(values)
    if func == "median":
        return _percentile(sorted(values), 50)
    if func == "stddev":
        mean = _exact_sum(values) / (_UNIT * len(values))
        return math.sqrt(math.fsum((v - mean) ** 2 for v in values) / len(values))
    if func == "mad":
        median = _percentile(sorted(values), 50)
        return _percentile(sorted(abs(v - median) for v in values), 50)
    return _percentile(sorted(values), int(func[1:]))


def _percentile(ordered: Sequence[float], percent: int) -> float:
    """Linear interpolation between the closest ranks (numpy's default)."""
    rank = (len(ordered) - 1) * percent / 100
    low = math.floor(rank)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


def _read(aggregate: Aggregate, context: _Context, *, this_run: bool) -> tuple[float, int]:
    """An aggregate's value and how many values it read."""
    running = _running(aggregate, context, this_run=this_run)
    if running is not None:
        return running
    values = _window_values(aggregate, context, this_run=this_run)
    return _aggregate(aggregate.func, values, aggregate), len(values)


def _describe(aggregate: Aggregate, value: float, n: int, c: _Context) -> str:
    """``median 98000 of the last 20 runs`` (remembered: a tracker's baseline seldom moves)."""
    key = (id(aggregate), value, n, c.weekday, c.hour)
    known = _DESCRIBED.get(key)
    if known is not None and known[0] is aggregate:  # (an id may be reused once freed)
        return known[1]
    if len(_DESCRIBED) >= 4096:
        _DESCRIBED.clear()
    words = _words(aggregate, value, n, c)
    _DESCRIBED[key] = (aggregate, words)
    return words


_DESCRIBED: dict[tuple[int, float, int, int, int], tuple[Aggregate, str]] = {}


def _words(aggregate: Aggregate, value: float, n: int, c: _Context) -> str:
    window = aggregate.window
    if window.runs is not None:
        span = f"the last {_runs(n)}" if aggregate.status is None else ""
        span = span or f"the last {window.runs} runs"
    else:
        span = f"the {_runs(n)} of the last {window.text}"
        if aggregate.status is not None:
            span = f"the last {window.text}"
    if window.weekday:
        span += f" on {_DAYS[c.weekday]}s"
    if window.hour:
        span += f" at {c.hour:02d}h"
    if aggregate.status is not None:
        return f"{_fmt(value)} {aggregate.status} runs in {span}"
    field_name = "" if not aggregate.named else f" {'.'.join(aggregate.path or ())}"
    return f"{aggregate.func}{field_name} {_fmt(value)} of {span}"


def _runs(n: int) -> str:
    return "1 run" if n == 1 else f"{n} runs"


def _plain(value: float) -> float | int:
    """A float that holds an integer is given as one (JSON ``49000``, not ``49000.0``)."""
    if value.is_integer() and abs(value) < 2**53:
        return int(value)
    return value


def _fmt(value: float) -> str:
    """A number for a reason: integers as such, others with 6 significant digits."""
    if not math.isfinite(value):
        return str(value)
    if value.is_integer() and abs(value) < 1e15:
        return str(int(value))
    if abs(value) >= 1e5:
        return f"{value:.1f}"
    return f"{value:.6g}"


def _fmt_actual(value: Any) -> str:
    if isinstance(value, float):
        return _fmt(value)
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    number = _finite(value)
    if isinstance(value, str) and number is not None:
        return f'"{value}"'
    return show_value(value)


# --- parsing ----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Token:
    kind: str  # num, name, op, punct, end
    text: str
    pos: int
    unit: str | None = None


def _tokens(text: str) -> list[_Token]:
    tokens: list[_Token] = []
    pos = 0
    while True:
        while pos < len(text) and text[pos].isspace():
            pos += 1
        if pos >= len(text):
            tokens.append(_Token("end", "", pos))
            return tokens
        match = _TOKEN_RE.match(text, pos)
        if match is None:
            raise AssertionSyntaxError(text, pos, f"unexpected character {text[pos]!r}")
        kind = match.lastgroup if match.lastgroup != "unit" else "num"
        assert kind is not None
        value = match.group("num") if kind == "num" else match.group(kind)
        tokens.append(_Token(kind, value, pos, match.group("unit")))
        pos = match.end()


class _Parser:
    def __init__(self, text: str) -> None:
        self.text = text
        self.tokens = _tokens(text)
        self.i = 0

    @property
    def token(self) -> _Token:
        return self.tokens[self.i]

    def fail(self, problem: str, token: _Token | None = None) -> AssertionSyntaxError:
        return AssertionSyntaxError(self.text, (token or self.token).pos, problem)

    def take(self, kind: str, text: str | None = None) -> _Token | None:
        token = self.token
        if token.kind == kind and (text is None or token.text == text):
            self.i += 1
            return token
        return None

    def expect(self, kind: str, text: str, problem: str) -> _Token:
        token = self.take(kind, text)
        if token is None:
            raise self.fail(problem)
        return token

    def assertion(self) -> HistoryAssertion:
        first = self.take("name")
        if first is None:
            raise self.fail("expected a field name or an aggregate such as sum(cost_usd, 24h)")
        left: tuple[str, ...] | Aggregate
        if self.token.kind == "punct" and self.token.text == "(":
            inside = self.tokens[self.i + 1]  # where the field's name belongs
            left = self.aggregate(first, None, on_left=True)
            if not left.named:
                raise self.fail(
                    f"on the left an aggregate names its field: {left.func}(FIELD, {left.window})",
                    inside,
                )
        else:
            left = tuple(first.text.split("."))
        op_token = self.take("op")
        if op_token is None:
            raise self.fail("expected an operator (=, !=, >, >=, <, <=)")
        op = _as_compare("=" if op_token.text == "==" else op_token.text)
        if self.token.kind == "end":
            raise self.fail("expected a number or an aggregate after the operator")
        subject = left.path if isinstance(left, Aggregate) else left
        right = self.expression(subject)
        if self.token.kind != "end":
            raise self.fail(f"unexpected {self.token.text!r}: expected + - * / or the end")
        text = f"{_left_text(left)} {op} {right}"
        found = _aggregates(right)
        everything = [left, *found] if isinstance(left, Aggregate) else found
        seasonal = any(a.window.weekday or a.window.hour for a in everything)
        return HistoryAssertion(left, op, right, text, tuple(found), seasonal)

    def expression(self, subject: tuple[str, ...] | None) -> _Node:
        node = self.term(subject)
        while self.token.kind == "punct" and self.token.text in "+-":
            op = self.token.text
            self.i += 1
            node = _Binary(op, node, self.term(subject))
        return node

    def term(self, subject: tuple[str, ...] | None) -> _Node:
        node = self.factor(subject)
        while self.token.kind == "punct" and self.token.text in "*/":
            op = self.token.text
            self.i += 1
            node = _Binary(op, node, self.factor(subject))
        return node

    def factor(self, subject: tuple[str, ...] | None) -> _Node:
        token = self.token
        if self.take("punct", "-"):
            return _Negate(self.factor(subject))
        if self.take("punct", "("):
            inner = self.expression(subject)
            self.expect("punct", ")", "expected ) to close the parenthesis")
            return _Group(inner)
        if token.kind == "num":
            if token.unit is not None:
                raise self.fail("a duration is a window: use it inside an aggregate")
            self.i += 1
            return _Number(_number(token.text), token.text)
        if token.kind == "name":
            self.i += 1
            if not (self.token.kind == "punct" and self.token.text == "("):
                raise self.fail(
                    "expected a number or an aggregate such as median(last 20); "
                    "a field on the right is not supported",
                    token,
                )
            aggregate = self.aggregate(token, subject)
            if aggregate.path is None and aggregate.status is None:
                raise self.fail(
                    f"name the field: {token.text}(FIELD, ...) (the left side has none)", token
                )
            return aggregate
        raise self.fail("expected a number, ( or an aggregate such as median(last 20)")

    def aggregate(
        self, name: _Token, subject: tuple[str, ...] | None, *, on_left: bool = False
    ) -> Aggregate:
        func = name.text.lower()
        if func not in AGGREGATES and not _PERCENTILE_RE.fullmatch(func):
            raise self.fail(
                f"unknown aggregate {name.text!r}: use median, mean, min, max, sum, count, "
                "stddev, mad or p1 ... p99",
                name,
            )
        self.expect("punct", "(", "expected (")
        path: tuple[str, ...] | None = subject
        status: str | None = None
        named = False
        token = self.token
        if (
            token.kind == "name"
            and token.text != "last"
            and self.tokens[self.i + 1].kind == "punct"
            and self.tokens[self.i + 1].text == ","
        ):
            self.i += 2
            named = True
            if func == "count" and token.text in _STATUSES:
                path, status = None, token.text
            else:
                path = tuple(token.text.split("."))
        window = self.window(on_left)
        self.expect("punct", ")", "expected ) or , followed by same weekday, same hour or min N")
        return Aggregate(func, path, status, window, named)

    def window(self, on_left: bool) -> Window:
        token = self.token
        runs: int | None = None
        seconds: float | None = None
        if self.take("name", "last"):
            count = self.token
            if count.kind != "num" or count.unit is not None or not count.text.isdigit():
                raise self.fail("expected a whole number of runs: last 20")
            runs = int(count.text)
            if not 1 <= runs <= 100_000:
                raise self.fail("last N takes 1 to 100000 runs")
            self.i += 1
            text = f"last {runs}"
        elif token.kind == "num" and token.unit is not None:
            amount = float(token.text)
            seconds = amount * _UNITS[token.unit]
            if not 0 < seconds <= 400 * 86400:
                raise self.fail("a duration is more than 0 and at most 400 days")
            self.i += 1
            text = f"{token.text}{token.unit}"
        else:
            raise self.fail("expected a window: last N (runs) or a duration such as 24h")
        weekday = hour = explicit = False
        minimum = min(DEFAULT_MINIMUM, runs) if runs is not None else DEFAULT_MINIMUM
        while self.take("punct", ","):
            option = self.token
            if self.take("name", "same"):
                which = self.take("name", "weekday") or self.take("name", "hour")
                if which is None:
                    raise self.fail("expected same weekday or same hour")
                if which.text == "weekday":
                    weekday = True
                else:
                    hour = True
            elif on_left and option.kind == "name" and option.text == "min":
                raise self.fail("an aggregate on the left has no minimum (it includes this run)")
            elif self.take("name", "min"):
                count = self.token
                if count.kind != "num" or count.unit is not None or not count.text.isdigit():
                    raise self.fail("expected a whole number of runs: min 10")
                minimum, explicit = int(count.text), True
                if runs is not None and minimum > runs:
                    raise self.fail(f"the minimum cannot exceed the window's {runs} runs")
                self.i += 1
            else:
                raise self.fail("expected same weekday, same hour or min N", option)
        return Window(runs, seconds, text, weekday, hour, minimum, explicit)


def _left_text(left: tuple[str, ...] | Aggregate) -> str:
    return str(left) if isinstance(left, Aggregate) else ".".join(left)


def _as_compare(raw: str) -> Compare:
    for op in ("=", "!=", ">", ">=", "<", "<="):
        if op == raw:
            return op
    raise AssertionError(raw)  # pragma: no cover - the token regex admits only these


def _number(text: str) -> float | int:
    if text.isdigit():
        return int(text)
    return float(text)


def parse_history_assertion(text: str) -> HistoryAssertion:
    """Parse a history-relative or window assertion, raising :class:`AssertionSyntaxError`
    with the offending position."""
    return _Parser(text).assertion()
