"""Server-rendered SVG charts: no JavaScript, no CDN, readable offline and in a text browser.

Every chart is a complete ``<svg>`` element with a ``<title>`` (accessible name) and, for each
point, a ``<title>`` tooltip with the exact value. Text is escaped here, so callers may pass
user-provided labels (metric names come from payloads).

A line chart may carry :class:`Band` s: what a history-relative assertion expected of each
run (the baseline it was judged against, as stored with the run), the side of it that passes
shaded, and a cross on every run that failed it. A cross is a shape, not a colour, and says
why in its tooltip.
"""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from html import escape
from typing import Final

__all__ = ["Band", "Miss", "Point", "exact_number", "format_number", "line_chart", "sparkline"]

Point = tuple[dt.datetime, float]
_PAD_LEFT: Final = 56
_PAD_RIGHT: Final = 12
_PAD_TOP: Final = 24
_PAD_BOTTOM: Final = 26
#: Above this many points a chart draws no per-point tooltips (the line alone stays readable).
DOTS: Final = 200
#: The comparisons whose passing side is above the baseline, and below it.
_ABOVE: Final = frozenset({">", ">="})
_BELOW: Final = frozenset({"<", "<="})


@dataclass(frozen=True, slots=True)
class Miss:
    """A run that failed an assertion: when, the value drawn (None: the baseline's height),
    and the assertion's reason."""

    at: dt.datetime
    value: float | None
    reason: str


@dataclass(frozen=True, slots=True)
class Band:
    """What one history-relative assertion expected over time: ``op`` (``>=``, ``<``, ...)
    against each judged run's baseline (oldest first or not), and the runs that failed it."""

    label: str
    op: str
    baselines: Sequence[Point]
    misses: Sequence[Miss] = ()


def format_number(value: float) -> str:
    """Short human form: 1234567 -> 1.23M, 0.1234 -> 0.123, 12 -> 12."""
    if not math.isfinite(value):
        return str(value)
    magnitude = abs(value)
    for threshold, unit, suffix in ((1e9, 1e9, "G"), (1e6, 1e6, "M"), (1e4, 1e3, "k")):
        if magnitude >= threshold:
            return f"{value / unit:.3g}{suffix}"
    if value == int(value):
        return str(int(value))
    return f"{value:.3g}"


def exact_number(value: float) -> str:
    """The value in full (a baseline is read to check a run against it): 49000, 1234.5678."""
    if value.is_integer() and abs(value) < 1e15:
        return str(int(value))
    return repr(value)


def _finite(points: Sequence[Point]) -> list[Point]:
    return [(t, float(v)) for t, v in points if math.isfinite(float(v))]


def _scale(lo: float, hi: float, size: float, invert: bool) -> tuple[float, float]:
    """(factor, offset) mapping [lo, hi] onto [0, size] (inverted for the y axis)."""
    span = hi - lo or 1.0
    factor = size / span
    return (-factor, size + lo * factor) if invert else (factor, -lo * factor)


def line_chart(
    points: Sequence[Point],
    *,
    title: str,
    unit: str = "",
    width: int = 640,
    height: int = 180,
    css_class: str = "chart",
    bands: Sequence[Band] = (),
) -> str:
    """A line chart of ``points`` (oldest first or not: they are sorted by time), with the
    expected ``bands`` of the assertions judged on them."""
    data = sorted(_finite(points), key=lambda p: p[0])
    expected = [sorted(_finite(b.baselines), key=lambda p: p[0]) for b in bands]
    label = escape(_chart_title(title, bands))
    shown = escape(title)
    head = (
        f'<svg class="{escape(css_class)}" role="img" viewBox="0 0 {width} {height}" '
        f'width="{width}" height="{height}" xmlns="http://www.w3.org/2000/svg">'
        f"<title>{label}</title>"
        f'<text x="{_PAD_LEFT}" y="15" class="chart-title">{shown}</text>'
    )
    if not data and not any(expected):
        return (
            f'{head}<text x="{width / 2:.0f}" y="{height / 2:.0f}" text-anchor="middle" '
            'class="chart-empty">no data yet</text></svg>'
        )
    plot_w = width - _PAD_LEFT - _PAD_RIGHT
    plot_h = height - _PAD_TOP - _PAD_BOTTOM
    every = [*data, *(p for line in expected for p in line)]
    values = [v for _, v in every]
    lo, hi = min(0.0, *values), max(values)
    if lo == hi:
        hi = lo + 1.0
    t0 = min(t for t, _ in every).timestamp()
    t1 = max(t for t, _ in every).timestamp()
    xf, xo = _scale(t0, t1 if t1 > t0 else t0 + 1, plot_w, invert=False)
    yf, yo = _scale(lo, hi, plot_h, invert=True)

    def xy(point: Point) -> tuple[float, float]:
        t, v = point
        x = _PAD_LEFT + (t.timestamp() * xf + xo if t1 > t0 else plot_w / 2)
        return x, _PAD_TOP + v * yf + yo

    coords = [xy(p) for p in data]
    path = " ".join(f"{x:.1f},{y:.1f}" for x, y in coords)
    suffix = f" {escape(unit)}" if unit else ""
    parts = [
        head,
        f'<line x1="{_PAD_LEFT}" y1="{_PAD_TOP + plot_h}" x2="{width - _PAD_RIGHT}" '
        f'y2="{_PAD_TOP + plot_h}" class="chart-axis"/>',
        f'<line x1="{_PAD_LEFT}" y1="{_PAD_TOP}" x2="{_PAD_LEFT}" y2="{_PAD_TOP + plot_h}" '
        'class="chart-axis"/>',
        f'<text x="{_PAD_LEFT - 4}" y="{_PAD_TOP + 4}" text-anchor="end" class="chart-tick">'
        f"{escape(format_number(hi))}</text>",
        f'<text x="{_PAD_LEFT - 4}" y="{_PAD_TOP + plot_h}" text-anchor="end" '
        f'class="chart-tick">{escape(format_number(lo))}</text>',
        f'<text x="{_PAD_LEFT}" y="{height - 6}" class="chart-tick">'
        f"{escape(_stamp(t0, '%Y-%m-%d %H:%M'))}</text>",
        f'<text x="{width - _PAD_RIGHT}" y="{height - 6}" text-anchor="end" class="chart-tick">'
        f"{escape(_stamp(t1, '%Y-%m-%d %H:%M'))}</text>",
    ]
    # The bands under the line: the shaded passing side would hide it otherwise.
    for band, line in zip(bands, expected, strict=True):
        parts.extend(_band(band, line, xy, top=_PAD_TOP, bottom=_PAD_TOP + plot_h))
    parts.append(f'<polyline points="{path}" class="chart-line" fill="none"/>')
    if len(coords) <= DOTS:  # one dot per point with its exact value; skipped when too dense
        for (x, y), (t, v) in zip(coords, data, strict=True):
            tip = f"{t.strftime('%Y-%m-%d %H:%M:%S')} UTC: {format_number(v)}{suffix}"
            parts.append(
                f'<circle cx="{x:.1f}" cy="{y:.1f}" r="2.5" class="chart-dot">'
                f"<title>{escape(tip)}</title></circle>"
            )
    for band, line in zip(bands, expected, strict=True):
        parts.extend(_misses(band, line, xy, suffix))
    misses = sum(len(b.misses) for b in bands)
    if bands:
        legend = (
            f"shaded: expected side; \u00d7 failed ({misses})"
            if misses
            else "shaded: expected side"
        )
        parts.append(
            f'<text x="{width - _PAD_RIGHT}" y="15" text-anchor="end" class="chart-tick '
            f'chart-legend">{escape(legend)}</text>'
        )
    parts.append("</svg>")
    return "".join(parts)


def _chart_title(title: str, bands: Sequence[Band]) -> str:
    """The chart's accessible name: its title, then each band and how many runs failed it."""
    if not bands:
        return title
    told = "; ".join(
        f"expected {b.label}" + (f", failed by {len(b.misses)} run(s)" if b.misses else "")
        for b in bands
    )
    return f"{title} ({told})"


def _stamp(seconds: float, layout: str) -> str:
    return dt.datetime.fromtimestamp(seconds, dt.UTC).strftime(layout)


def _band(
    band: Band,
    line: Sequence[Point],
    xy: Callable[[Point], tuple[float, float]],
    *,
    top: float,
    bottom: float,
) -> list[str]:
    """The baseline as a dashed line, its passing side shaded, a tooltip per run when few."""
    if not line:
        return []
    coords = [xy(p) for p in line]
    if len(coords) == 1:  # one judged run: a short level segment, so it shows
        x, y = coords[0]
        coords = [(x - 4, y), (x + 4, y)]
    path = " ".join(f"{x:.1f},{y:.1f}" for x, y in coords)
    out = []
    edge = top if band.op in _ABOVE else bottom if band.op in _BELOW else None
    if edge is not None:
        shade = f"{path} {coords[-1][0]:.1f},{edge:.1f} {coords[0][0]:.1f},{edge:.1f}"
        out.append(f'<polygon points="{shade}" class="chart-band"/>')
    out.append(
        f'<polyline points="{path}" class="chart-baseline" fill="none">'
        f"<title>expected {escape(band.label)}</title></polyline>"
    )
    if len(line) <= DOTS:
        for (x, y), (t, v) in zip((xy(p) for p in line), line, strict=True):
            tip = f"{t.strftime('%Y-%m-%d %H:%M:%S')} UTC: expected {band.op} {exact_number(v)}"
            out.append(
                f'<circle cx="{x:.1f}" cy="{y:.1f}" r="1.5" class="chart-expected">'
                f"<title>{escape(tip)}</title></circle>"
            )
    return out


def _misses(
    band: Band,
    line: Sequence[Point],
    xy: Callable[[Point], tuple[float, float]],
    suffix: str,
) -> list[str]:
    """A cross on each run that failed ``band``'s assertion, with its reason: drawn however
    many points there are, since these are the runs a reader looks for."""
    at = dict(line)
    out = []
    for miss in band.misses:
        height = miss.value if miss.value is not None else at.get(miss.at)
        if height is None or not math.isfinite(height):
            continue
        x, y = xy((miss.at, height))
        shown = "" if miss.value is None else f" {format_number(miss.value)}{suffix}"
        tip = f"{miss.at.strftime('%Y-%m-%d %H:%M:%S')} UTC:{shown} failed: {miss.reason}"
        out.append(
            f'<path d="M{x - 4:.1f},{y - 4:.1f}l8,8m0,-8l-8,8" class="chart-fail">'
            f"<title>{escape(tip)}</title></path>"
        )
    return out


def sparkline(values: Sequence[float], *, title: str, width: int = 120, height: int = 28) -> str:
    """A tiny line of recent values (oldest first), for the trackers table."""
    data = [float(v) for v in values if math.isfinite(float(v))]
    label = escape(title)
    head = (
        f'<svg class="sparkline" role="img" viewBox="0 0 {width} {height}" width="{width}" '
        f'height="{height}" xmlns="http://www.w3.org/2000/svg"><title>{label}</title>'
    )
    if len(data) < 2:
        return f"{head}</svg>"
    lo, hi = min(data), max(data)
    span = hi - lo or 1.0
    step = (width - 4) / (len(data) - 1)
    pts = " ".join(
        f"{2 + i * step:.1f},{height - 2 - (v - lo) / span * (height - 4):.1f}"
        for i, v in enumerate(data)
    )
    return f'{head}<polyline points="{pts}" class="chart-line" fill="none"/></svg>'
