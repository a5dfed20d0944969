"""Server-rendered SVG charts: no JavaScript, no CDN, readable offline and in a text browser.

Every chart is a complete ``<svg>`` element with a ``<title>`` (accessible name) and, for each
point, a ``<title>`` tooltip with the exact value. Text is escaped here, so callers may pass
user-provided labels (metric names come from payloads).
"""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Sequence
from html import escape
from typing import Final

__all__ = ["Point", "format_number", "line_chart", "sparkline"]

Point = tuple[dt.datetime, float]
_PAD_LEFT: Final = 56
_PAD_RIGHT: Final = 12
_PAD_TOP: Final = 24
_PAD_BOTTOM: Final = 26


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
) -> str:
    """A line chart of ``points`` (oldest first or not: they are sorted by time)."""
    data = sorted(_finite(points), key=lambda p: p[0])
    label = escape(title)
    head = (
        f'<svg class="{escape(css_class)}" role="img" viewBox="0 0 {width} {height}" '
        f'width="{width}" height="{height}" xmlns="http://www.w3.org/2000/svg">'
        f"<title>{label}</title>"
        f'<text x="{_PAD_LEFT}" y="15" class="chart-title">{label}</text>'
    )
    if not data:
        return (
            f'{head}<text x="{width / 2:.0f}" y="{height / 2:.0f}" text-anchor="middle" '
            'class="chart-empty">no data yet</text></svg>'
        )
    plot_w = width - _PAD_LEFT - _PAD_RIGHT
    plot_h = height - _PAD_TOP - _PAD_BOTTOM
    values = [v for _, v in data]
    lo, hi = min(0.0, *values), max(values)
    if lo == hi:
        hi = lo + 1.0
    t0 = data[0][0].timestamp()
    t1 = data[-1][0].timestamp()
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
        f"{escape(data[0][0].strftime('%Y-%m-%d %H:%M'))}</text>",
        f'<text x="{width - _PAD_RIGHT}" y="{height - 6}" text-anchor="end" class="chart-tick">'
        f"{escape(data[-1][0].strftime('%Y-%m-%d %H:%M'))}</text>",
        f'<polyline points="{path}" class="chart-line" fill="none"/>',
    ]
    if len(coords) <= 200:  # one dot per point with its exact value; skipped when too dense
        for (x, y), (t, v) in zip(coords, data, strict=True):
            tip = f"{t.strftime('%Y-%m-%d %H:%M:%S')} UTC: {format_number(v)}{suffix}"
            parts.append(
                f'<circle cx="{x:.1f}" cy="{y:.1f}" r="2.5" class="chart-dot">'
                f"<title>{escape(tip)}</title></circle>"
            )
    parts.append("</svg>")
    return "".join(parts)


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
