"""The live page's chart, drawn on the server: well-formed SVG, one bar per day with
its count, both axes on round numbers, and text that cannot inject markup."""

from __future__ import annotations

import xml.etree.ElementTree as ET  # our own output, not untrusted input
from datetime import date, timedelta

import pytest

from tether.admin.chart import RIGHT, WIDTH, daily_chart, nice_ceiling
from tether.sweep_and_admin_models import DailyStats

SVG = "{http://www.w3.org/2000/svg}"


def _day(offset: int, total: int, average: float | None) -> DailyStats:
    return DailyStats(
        day=date(2026, 11, 28) - timedelta(days=offset),
        total_sessions=total,
        still_active=min(total, 1),
        ended_sessions=max(total - 1, 0),
        avg_duration_seconds=average,
        max_duration_seconds=average,
    )


def test_one_bar_per_day_oldest_first_with_its_count() -> None:
    days = [_day(0, 7, 95.0), _day(1, 0, None), _day(2, 13, 30.0)]
    root = ET.fromstring(  # noqa: S314
        daily_chart(days)
    )
    bars = root.findall(f".//{SVG}rect[@class='bar']")
    assert [b.get("data-day") for b in bars] == ["2026-11-26", "2026-11-27", "2026-11-28"]
    assert [b.get("data-sessions") for b in bars] == ["13", "0", "7"]
    heights = [float(b.get("height", "0")) for b in bars]
    assert heights[1] == 0 and heights[0] > heights[2] > 0
    # Days without sessions have no average: the line joins the others only.
    (line,) = root.findall(f".//{SVG}polyline")
    assert len(line.get("points", "").split()) == 2


def test_axes_use_round_numbers_and_a_readable_duration_unit() -> None:
    text = daily_chart([_day(0, 99, 5400.0)])
    labels = [
        t.text
        for t in ET.fromstring(  # noqa: S314
            text
        ).iter(f"{SVG}text")
    ]
    assert "100" in labels and "75" in labels
    assert "average duration (minutes)" in labels
    hours = daily_chart([_day(0, 3, 4 * 3600.0)])
    assert "average duration (hours)" in hours


@pytest.mark.parametrize("average", [0.9, 0.18, 0.018, 9.0, 95.0])
def test_each_gridline_of_the_duration_axis_says_its_own_value(average: float) -> None:
    """Sessions of under a second on average put the gridlines a quarter of a second
    (or less) apart: they were labelled 0.2s, 0.5s, 0.8s, or twice 0.1s."""
    root = ET.fromstring(  # noqa: S314
        daily_chart([_day(0, 3, average)])
    )
    labels = [t.text or "" for t in root.iter(f"{SVG}text") if t.get("x") == str(WIDTH - RIGHT + 8)]
    values = [float(label.rstrip("s")) for label in labels]
    assert len(values) == 5, labels
    step = values[1]
    assert step > 0 and values == pytest.approx([step * tick for tick in range(5)]), labels
    assert values[-1] >= average


@pytest.mark.parametrize(
    ("value", "ceiling"), [(0, 1), (1, 1), (1.1, 2), (2.4, 2.5), (7, 10), (24.75, 25), (101, 200)]
)
def test_nice_ceiling(value: float, ceiling: float) -> None:
    assert nice_ceiling(value) == ceiling


def test_no_days_still_draws_a_valid_document() -> None:
    root = ET.fromstring(  # noqa: S314
        daily_chart([])
    )
    assert "no days to show" in "".join(root.itertext())


def test_the_svg_has_no_style_element_or_script() -> None:
    # The page inlines it under a CSP that allows neither inline styles nor scripts.
    text = daily_chart([_day(0, 3, 12.0)])
    assert "<style" not in text and "<script" not in text
