"""One cron expression for a job that several expressions schedule (Dagster takes a list).

A tracker's schedule holds one cron expression, and the server expects a run at each time it
fires. :func:`combine_crons` picks the expression to send:

* expressions equal in four fields and different in one (minute, hour or month, or a day
  field while the other day field is ``*`` everywhere) merge exactly: ``0 9 * * *`` and
  ``0 17 * * *`` become ``0 9,17 * * *``;
* otherwise the one that fires most often (the tightest) is chosen. Every time it fires is a
  time the job really runs, so the server never expects a run that does not come (no false
  alarm); runs due only under the other expressions are not checked.

Expressions this module cannot read (six fields, unusual syntax) count as firing least often;
the server checks the chosen one and answers with its own message when it is invalid.

:func:`cron_from_fields` writes an expression from the values each field allows, for the
adapters that translate another schedule form into cron (Celery's ``crontab``, Prefect's
RRules).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Final

__all__ = ["combine_crons", "cron_field", "cron_from_fields", "fires_per_year"]

#: (first, last) of each of the five fields, in order.
_RANGES: Final = ((0, 59), (0, 23), (1, 31), (1, 12), (0, 7))
_MONTHS: Final = (
    "jan",
    "feb",
    "mar",
    "apr",
    "may",
    "jun",
    "jul",
    "aug",
    "sep",
    "oct",
    "nov",
    "dec",
)
_WEEKDAYS: Final = ("sun", "mon", "tue", "wed", "thu", "fri", "sat")
_NAMES: Final = {
    3: {name: i + 1 for i, name in enumerate(_MONTHS)},
    4: {name: i for i, name in enumerate(_WEEKDAYS)},
}
_ALIASES: Final = {
    "@yearly": "0 0 1 1 *",
    "@annually": "0 0 1 1 *",
    "@monthly": "0 0 1 * *",
    "@weekly": "0 0 * * 0",
    "@daily": "0 0 * * *",
    "@midnight": "0 0 * * *",
    "@hourly": "0 * * * *",
}
_DAYS_PER_MONTH: Final = 365.25 / 12


def _value(text: str, index: int) -> int:
    names = _NAMES.get(index, {})
    return names[text.lower()] if text.lower() in names else int(text)


def _field_values(text: str, index: int) -> set[int]:
    """The values a cron field allows (``ValueError`` for syntax this module does not read)."""
    first, last = _RANGES[index]
    values: set[int] = set()
    for part in text.split(","):
        base, _, step_text = part.partition("/")
        step = int(step_text) if step_text else 1
        if step < 1:
            raise ValueError(f"step {step_text!r}")
        if base == "*":
            low, high = first, last
        elif "-" in base:
            low_text, high_text = base.split("-", 1)
            low, high = _value(low_text, index), _value(high_text, index)
        else:
            low = _value(base, index)
            high = last if step_text else low
        if not first <= low <= high <= last:
            raise ValueError(f"{part!r} is out of range")
        values.update(range(low, high + 1, step))
    if index == 4 and 7 in values:  # Sunday is 0 or 7
        values = (values - {7}) | {0}
    return values


def _fields(expression: str) -> list[str]:
    text = expression.strip()
    return _ALIASES.get(text.lower(), text).split()


def fires_per_year(expression: str) -> float:
    """About how many times a year ``expression`` fires (0.0 when it cannot be read)."""
    fields = _fields(expression)
    if len(fields) != 5:
        return 0.0
    try:
        minutes, hours, days, months, weekdays = (
            len(_field_values(text, index)) for index, text in enumerate(fields)
        )
    except (ValueError, KeyError):
        return 0.0
    day_restricted, weekday_restricted = fields[2] != "*", fields[4] != "*"
    if day_restricted and weekday_restricted:  # cron fires when either matches
        per_month = days + weekdays * _DAYS_PER_MONTH / 7
    elif day_restricted:
        per_month = days
    else:
        per_month = weekdays * _DAYS_PER_MONTH / 7
    return minutes * hours * per_month * months


def _merged(expressions: Sequence[str]) -> str | None:
    """The exact union when the expressions differ in one mergeable field, else None."""
    split = [_fields(e) for e in expressions]
    if any(len(fields) != 5 for fields in split):
        return None
    differing = [i for i in range(5) if len({fields[i] for fields in split}) > 1]
    if len(differing) != 1:
        return None
    (index,) = differing
    if index in (2, 4) and split[0][6 - index] != "*":
        return None  # with both day fields restricted cron fires on either: not a union
    parts = list(dict.fromkeys(fields[index] for fields in split))
    merged = "*" if "*" in parts else ",".join(parts)
    return " ".join([*split[0][:index], merged, *split[0][index + 1 :]])


def combine_crons(expressions: Sequence[str]) -> str:
    """One cron expression for a job scheduled by all of ``expressions`` (see the module
    docstring); ``ValueError`` when there is none."""
    cleaned = list(dict.fromkeys(e.strip() for e in expressions if e.strip()))
    if not cleaned:
        raise ValueError("no cron expression given")
    if len(cleaned) == 1:
        return cleaned[0]
    merged = _merged(cleaned)
    if merged is not None:
        return merged
    # max() keeps the first of equals: the order the caller gave breaks ties.
    return max(cleaned, key=fires_per_year)


def cron_field(values: Iterable[int] | None, index: int) -> str:
    """Field ``index`` (0 minute ... 4 day of week, Sunday = 0) allowing ``values``: ``*``
    for every value (or None), else the values in order with runs of three or more written
    as ranges: ``{1, 2, 3, 4, 5}`` -> ``1-5``, ``{2, 3}`` -> ``2,3``."""
    first, last = _RANGES[index]
    if index == 4:
        last = 6  # 7 is Sunday again: every day is 0-6
    if values is None:
        return "*"
    ordered = sorted(set(values))
    if set(ordered) >= set(range(first, last + 1)):
        return "*"
    parts: list[str] = []
    begin = 0
    for i in range(1, len(ordered) + 1):
        if i == len(ordered) or ordered[i] != ordered[i - 1] + 1:
            run = ordered[begin:i]
            if len(run) >= 3:
                parts.append(f"{run[0]}-{run[-1]}")
            else:
                parts.extend(str(v) for v in run)
            begin = i
    return ",".join(parts)


def cron_from_fields(fields: Sequence[Iterable[int] | None]) -> str:
    """A 5-field expression from the values of minute, hour, day of month, month and day of
    week (Sunday = 0; None: every value), each written by :func:`cron_field`."""
    if len(fields) != 5:
        raise ValueError(f"a cron expression has 5 fields, not {len(fields)}")
    return " ".join(cron_field(values, index) for index, values in enumerate(fields))
