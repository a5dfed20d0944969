"""The expected bands of a tracker's history-relative assertions, read from its stored runs.

Each run stores, for each history assertion, the baseline it was judged against
(``baseline.value``), whether it was ``evaluated`` and whether it ``passed``: the band is
those values as they were, never recomputed, so it shows what each run was held to. A band
is drawn on the chart of the field its assertion judges (``duration``, or a top-level
metric); an assertion on anything else (a nested field, a window aggregate such as
``sum(cost_usd, 24h)``) gets a chart of its own, of the values it compared.
"""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

from telemhq_plugins.core.history import HistoryAssertion
from telemhq_server.baselines import history_assertions
from telemhq_server.dashboard.charts import Band, Miss, Point

__all__ = ["DURATION", "Judged", "judged"]

#: The chart key of the duration chart (the others are keyed by their metric's name).
DURATION: Final = "duration"


@dataclass(slots=True)
class Judged:
    """One history assertion over the runs read: ``chart`` is the key of the chart it is
    drawn on, ``values`` what it compared (for a chart of its own)."""

    chart: str
    own_chart: bool
    label: str
    op: str
    baselines: list[Point] = field(default_factory=list)
    misses: list[Miss] = field(default_factory=list)
    values: list[Point] = field(default_factory=list)

    def band(self) -> Band:
        return Band(self.label, self.op, self.baselines, self.misses)


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    number = float(value)
    return number if math.isfinite(number) else None


def _placed(assertion: HistoryAssertion, metrics: Iterable[str]) -> tuple[str, bool]:
    """The chart an assertion's band goes on, and whether that chart is its own."""
    left = assertion.left
    if isinstance(left, tuple) and len(left) == 1 and (left[0] == DURATION or left[0] in metrics):
        return left[0], False
    label = ".".join(left) if isinstance(left, tuple) else str(left)
    return label, True


def judged(
    assertions: Sequence[str],
    runs: Iterable[tuple[dt.datetime, Any]],
    metrics: Iterable[str],
) -> list[Judged]:
    """Each history assertion of ``assertions`` (the tracker's) as the ``runs`` (oldest first:
    time, stored assertion results) judged it; ``metrics`` are the names charted already."""
    names = set(metrics)
    found: dict[str, Judged] = {}
    for assertion in history_assertions(assertions):
        chart, own = _placed(assertion, names)
        text = str(assertion)
        found[text] = Judged(chart, own, text, assertion.op)
    if not found:
        return []
    for at, results in runs:
        if not isinstance(results, list):
            continue
        for result in results:
            if not isinstance(result, Mapping):
                continue
            one = found.get(str(result.get("expression")))
            if one is None or result.get("evaluated") is False:
                continue
            baseline = result.get("baseline")
            expected = _number(baseline.get("value")) if isinstance(baseline, Mapping) else None
            actual = _number(result.get("actual"))
            if expected is not None:
                one.baselines.append((at, expected))
            if actual is not None:
                one.values.append((at, actual))
            if result.get("passed") is False:
                one.misses.append(Miss(at, actual, str(result.get("reason") or "failed")))
    return list(found.values())
