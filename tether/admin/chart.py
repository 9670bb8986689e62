"""The live page's chart, drawn on the server as SVG: sessions per day as bars, their
average duration as a line. No script library and nothing fetched from elsewhere;
every text in it is escaped."""

from __future__ import annotations

import math
from collections.abc import Sequence
from xml.sax.saxutils import escape

from tether.durations import describe_seconds
from tether.sweep_and_admin_models import DailyStats

WIDTH = 760
HEIGHT = 280
LEFT, RIGHT, TOP, BOTTOM = 52, 60, 34, 44
BAR_COLOR = "#5b8def"
LINE_COLOR = "#f2a93b"


def nice_ceiling(value: float) -> float:
    """The smallest 1, 2, 2.5 or 5 times a power of ten at or above ``value`` (1 for 0)."""
    if value <= 0:
        return 1.0
    power = 10 ** math.floor(math.log10(value))
    for step in (1, 2, 2.5, 5, 10):
        if value <= step * power:
            return float(step * power)
    return float(10 * power)  # pragma: no cover - the loop always returns


def _number(value: float) -> str:
    if value >= 10 or value == int(value):
        return f"{value:,.0f}"
    # A tick under 10 may fall on a quarter or less (0.25, 0.075 of a unit): as many
    # digits as it holds, rounded only past what float arithmetic adds to it.
    return f"{round(value, 9):g}"


_SHORTER = ((1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k"))


def _tick(value: float, top: float) -> str:
    """A gridline's label, narrow enough for the margin beside the plot: on an axis
    reaching 100,000 or more, in thousands (k), millions (M) and so on, since
    "100,000" already stands past the margin's edge (a day of many sessions, or an
    adopted history's session of centuries)."""
    if value and top >= 100_000:
        for size, suffix in _SHORTER:
            if top >= size:
                return f"{_number(value / size)}{suffix}"
    return _number(value)


def _scale(largest: float, *, whole: bool) -> float:
    """The axis top: four equal ticks of a round step (whole steps for counts)."""
    step = nice_ceiling(largest / 4)
    if whole:
        step = max(1.0, math.ceil(step))
    return step * 4


def _duration_unit(largest_seconds: float) -> tuple[float, str, str]:
    """(seconds per unit, suffix, name) that keeps the duration axis readable."""
    if largest_seconds < 120:
        return 1.0, "s", "seconds"
    if largest_seconds < 2 * 3600:
        return 60.0, "m", "minutes"
    return 3600.0, "h", "hours"


def daily_chart(stats: Sequence[DailyStats]) -> str:
    """An SVG document for these days (any order; drawn oldest to newest)."""
    days = sorted(stats, key=lambda day: day.day)
    plot_w = WIDTH - LEFT - RIGHT
    plot_h = HEIGHT - TOP - BOTTOM
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {WIDTH} {HEIGHT}"'
        f' width="100%" role="img" aria-labelledby="chart-title" class="daily-chart">',
        '<title id="chart-title">Sessions per day and their average duration</title>',
        # Attributes, not a <style>: the page inlines this SVG under a strict CSP.
        '<g font-family="system-ui, sans-serif" font-size="12" fill="currentColor">',
    ]
    if not days:
        parts.append(
            f'<text x="{WIDTH / 2}" y="{HEIGHT / 2}" text-anchor="middle">no days to show</text>'
        )
        parts.append("</g></svg>")
        return "".join(parts)

    top_count = _scale(max(day.total_sessions for day in days), whole=True)
    durations = [day.avg_duration_seconds or 0.0 for day in days]
    per_unit, suffix, unit_name = _duration_unit(max(durations))
    top_duration = _scale(max(durations) / per_unit, whole=False)
    slot = plot_w / len(days)
    bar_w = max(2.0, slot * 0.62)

    # Grid and both axes' labels: sessions on the left, minutes on the right.
    for tick in range(5):
        y = TOP + plot_h - plot_h * tick / 4
        parts.append(
            f'<line x1="{LEFT}" x2="{LEFT + plot_w}" y1="{y:.1f}" y2="{y:.1f}"'
            ' stroke="currentColor" stroke-opacity="0.15"/>'
        )
        parts.append(
            f'<text x="{LEFT - 8}" y="{y + 4:.1f}" text-anchor="end">'
            f"{_tick(top_count * tick / 4, top_count)}</text>"
        )
        parts.append(
            f'<text x="{LEFT + plot_w + 8}" y="{y + 4:.1f}">'
            f"{_tick(top_duration * tick / 4, top_duration)}{suffix}</text>"
        )

    label_every = max(1, math.ceil(len(days) / 10))
    points = []
    for index, day in enumerate(days):
        x = LEFT + slot * index + (slot - bar_w) / 2
        height = plot_h * day.total_sessions / top_count
        y = TOP + plot_h - height
        average = day.avg_duration_seconds
        tip = (
            f"{day.day.isoformat()}: {day.total_sessions} session(s), {day.still_active} active"
            + (f", average {describe_seconds(average)}" if average is not None else "")
        )
        parts.append(
            f'<rect class="bar" data-day="{day.day.isoformat()}"'
            f' data-sessions="{day.total_sessions}" x="{x:.1f}" y="{y:.1f}"'
            f' width="{bar_w:.1f}" height="{height:.1f}" rx="2" fill="{BAR_COLOR}">'
            f"<title>{escape(tip)}</title></rect>"
        )
        center = LEFT + slot * index + slot / 2
        if average is not None:
            line_y = TOP + plot_h - plot_h * (average / per_unit) / top_duration
            points.append(f"{center:.1f},{line_y:.1f}")
        if index % label_every == 0 or index == len(days) - 1:
            parts.append(
                f'<text x="{center:.1f}" y="{TOP + plot_h + 18}" text-anchor="middle">'
                f"{day.day.strftime('%m-%d')}</text>"
            )
    if points:
        parts.append(
            f'<polyline points="{" ".join(points)}" fill="none" stroke="{LINE_COLOR}"'
            ' stroke-width="2.5" stroke-linejoin="round"/>'
        )
        for point in points:
            cx, cy = point.split(",")
            parts.append(f'<circle cx="{cx}" cy="{cy}" r="3" fill="{LINE_COLOR}"/>')

    # Legend.
    parts.append(f'<rect x="{LEFT}" y="8" width="12" height="12" rx="2" fill="{BAR_COLOR}"/>')
    parts.append(f'<text x="{LEFT + 18}" y="18">sessions per day</text>')
    parts.append(
        f'<line x1="{LEFT + 150}" x2="{LEFT + 170}" y1="14" y2="14"'
        f' stroke="{LINE_COLOR}" stroke-width="2.5"/>'
    )
    parts.append(f'<text x="{LEFT + 176}" y="18">average duration ({unit_name})</text>')
    parts.append("</g></svg>")
    return "".join(parts)
