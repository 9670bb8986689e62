"""What a benchmark run leaves behind: the results, and the chart of each figure against
its goal."""

from __future__ import annotations

import json
import os
import re
import xml.etree.ElementTree as ET  # our own output, not untrusted input
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from bench import common
from bench.common import Run, entry, svg_chart

SVG = "{http://www.w3.org/2000/svg}"

# The narrowest a character of the chart's 12 px sans-serif text is drawn, on average,
# in the figures and names it shows.
NARROWEST_CHARACTER = 6.5


def _document() -> dict[str, Any]:
    waited = entry(
        "adoption",
        measured={},
        goal="<= 1",
        goal_on="longest_write_wait_seconds",
        value=0.0262,
    )
    rate = entry(
        "gateway",
        measured={},
        goal=">= 500",
        goal_on="connections_per_second",
        value=404.4,
    )
    latency = entry(
        "detection",
        measured={},
        goal="<= 45",
        goal_on="lost_clients_p99_seconds",
        value=39.214,
    )
    return {
        "meta": {"mode": "quick", "date": "2026-11-30T22:36:38+00:00"},
        "benchmarks": {
            "sweep_history_independence": entry("sweep", measured={}, ratio=0.44, goal="<= 1.3"),
            "lifecycle_throughput": entry("pairs", measured={}, ratio=1.64, goal=">= 0.8"),
            "adoption_blocking": waited,
            "gateway_connect_rate": rate,
            "detection_latency": latency,
            "heartbeat_cost": entry("wal", measured={}, ratio=3.7),
        },
    }


def test_the_chart_is_well_formed_svg_with_each_goal_written_as_it_reads() -> None:
    # A goal reads "<= 1.3": written bare, its "<" left the file unreadable to a browser.
    root = ET.fromstring(svg_chart(_document()))  # noqa: S314 - our own output
    texts = [text.text or "" for text in root.iter(f"{SVG}text")]
    assert "0.44 (ratio <= 1.3)" in texts
    assert "1.64 (ratio >= 0.8)" in texts
    assert "0.0262 (longest_write_wait_seconds <= 1)" in texts
    # One bar per goal; the benchmark without a goal has none.
    assert len(list(root.iter(f"{SVG}rect"))) == 5
    assert "heartbeat_cost" not in texts


def test_the_chart_says_how_its_bars_read() -> None:
    # A ">=" goal's bar is the goal over the figure: unexplained, 1.64 against ">= 0.8"
    # drew a shorter bar than 0.67 did, and read as the smaller figure.
    root = ET.fromstring(svg_chart(_document()))  # noqa: S314 - our own output
    texts = [text.text or "" for text in root.iter(f"{SVG}text")]
    assert (
        "Each bar is the figure over its goal (for a >= goal, the goal over the figure):"
        " a bar past the line missed its goal." in texts
    )


def test_no_label_runs_past_the_charts_edge() -> None:
    chart = svg_chart(_document())
    width = float(re.search(r'<svg [^>]*width="([\d.]+)"', chart).group(1))  # type: ignore[union-attr]
    labels = re.findall(r'<text x="([\d.]+)"[^>]*>(.*?)</text>', chart)
    assert len(labels) > 10
    for x, text in labels:
        assert float(x) + len(text) * NARROWEST_CHARACTER <= width, text


def test_results_that_cannot_all_be_written_leave_the_last_complete_runs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # latest.json was written first and the chart last: a write failing (or a run
    # stopped) in between left this run's latest.json beside the last run's chart, or a
    # latest.json cut short.
    monkeypatch.setattr(common, "RESULTS", tmp_path)
    (tmp_path / "latest.json").write_text('{"the": "last complete run"}\n')
    (tmp_path / "ratios.svg").mkdir()  # the chart cannot be written
    with pytest.raises(OSError):
        common.write_results(_document())
    assert (tmp_path / "latest.json").read_text() == '{"the": "last complete run"}\n'
    assert sorted(p.name for p in tmp_path.iterdir()) == ["latest.json", "ratios.svg"]
    (tmp_path / "ratios.svg").rmdir()
    written = common.write_results(_document())
    assert [p.name for p in written] == [
        "latest.json",
        "2026-11-30T223638Z-quick.json",
        "ratios.svg",
    ]
    assert json.loads((tmp_path / "latest.json").read_text()) == _named(
        _document(), "2026-11-30T223638Z-quick.json"
    )
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(p.name for p in written)


def _named(document: dict[str, Any], dated_copy: str) -> dict[str, Any]:
    """``document`` as written: its meta naming its dated copy."""
    return {**document, "meta": {**document["meta"], "dated_copy": dated_copy}}


def test_two_runs_of_the_same_moment_keep_both_dated_copies(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The dated copy was named by the run's start to the second and its mode: a second
    # run of the same mode begun in that second replaced the first one's copy.
    monkeypatch.setattr(common, "RESULTS", tmp_path)
    first, second = _document(), _document()
    second["benchmarks"] = {"heartbeat_cost": second["benchmarks"]["heartbeat_cost"]}
    assert common.write_results(first)[1].name == "2026-11-30T223638Z-quick.json"
    assert common.write_results(second)[1].name == "2026-11-30T223638Z-quick-2.json"
    first = _named(first, "2026-11-30T223638Z-quick.json")
    second = _named(second, "2026-11-30T223638Z-quick-2.json")
    assert json.loads((tmp_path / "2026-11-30T223638Z-quick.json").read_text()) == first
    assert json.loads((tmp_path / "2026-11-30T223638Z-quick-2.json").read_text()) == second
    assert json.loads((tmp_path / "latest.json").read_text()) == second
    assert not [p.name for p in tmp_path.iterdir() if p.name.startswith(".")]


def test_dated_copies_are_kept_apart_on_a_file_system_without_hard_links(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The dated copy was put in place by a hard link alone: where the file system has
    # none (some network and FUSE mounts), every run failed to write its results.
    monkeypatch.setattr(common, "RESULTS", tmp_path)

    def no_hard_links(source: object, target: object) -> None:
        raise PermissionError(1, "Operation not permitted")

    monkeypatch.setattr(os, "link", no_hard_links)
    first, second = _document(), _document()
    second["benchmarks"] = {"heartbeat_cost": second["benchmarks"]["heartbeat_cost"]}
    assert common.write_results(first)[1].name == "2026-11-30T223638Z-quick.json"
    assert common.write_results(second)[1].name == "2026-11-30T223638Z-quick-2.json"
    assert json.loads((tmp_path / "2026-11-30T223638Z-quick.json").read_text()) == _named(
        first, "2026-11-30T223638Z-quick.json"
    )
    assert json.loads((tmp_path / "latest.json").read_text()) == _named(
        second, "2026-11-30T223638Z-quick-2.json"
    )
    assert not [p.name for p in tmp_path.iterdir() if p.name.startswith(".")]


def test_a_runs_date_and_dated_copy_name_its_start_to_the_millisecond() -> None:
    started = datetime(2026, 12, 1, 1, 49, 0, 512_345, tzinfo=UTC)
    assert common.meta(Run(), "18.6", started, {})["date"] == "2026-12-01T01:49:00.512+00:00"


EARLIER_RUN = {"date": "2026-11-30T18:11:00+00:00", "mode": "full"}


def _earlier(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    """A full run's latest.json, as the runner wrote it before its entries named their run."""
    monkeypatch.setattr(common, "RESULTS", tmp_path)
    document = _document()
    document["meta"] = {**EARLIER_RUN, "sizes": {"adoption_blocking": "1,000,000 rows"}}
    document["benchmarks"]["adoption_blocking"]["size"] = "1,000,000 rows"
    document["benchmarks"]["connect_cold_start"] = {"error": "RuntimeError: no interpreter"}
    (tmp_path / "latest.json").write_text(json.dumps(document))
    return document


def _partial() -> dict[str, Any]:
    ran = {"date": "2026-12-01T01:00:00+00:00", "mode": "quick"}
    fast = entry("pairs", measured={}, ratio=0.75, goal=">= 0.8")
    return {
        "meta": {**ran, "sizes": {}, "carried_over": {}},
        "benchmarks": {"lifecycle_throughput": {**fast, "run": ran}},
    }


ORDER = [
    "detection_latency",
    "lifecycle_throughput",
    "connect_cold_start",
    "heartbeat_cost",
    "gateway_connect_rate",
    "sweep_history_independence",
    "adoption_blocking",
]


def test_a_partial_run_is_merged_into_the_earlier_results(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A partial run replaced latest.json with its own benchmarks alone.
    earlier = _earlier(tmp_path, monkeypatch)
    latest, gone = common.merge(_partial(), common.earlier_results(), ORDER)
    assert list(latest["benchmarks"]) == ORDER
    assert (
        latest["benchmarks"]["lifecycle_throughput"]
        == _partial()["benchmarks"]["lifecycle_throughput"]
    )
    # An entry written before entries named their run came from the file's own run.
    for name in ORDER[2:]:
        assert latest["benchmarks"][name] == {**earlier["benchmarks"][name], "run": EARLIER_RUN}
    assert latest["meta"]["carried_over"] == {
        name: EARLIER_RUN for name in ORDER if name != "lifecycle_throughput"
    }
    assert latest["meta"]["date"] == "2026-12-01T01:00:00+00:00"
    assert latest["meta"]["sizes"] == {"adoption_blocking": "1,000,000 rows"}
    assert gone == []


def test_a_benchmark_the_runner_no_longer_has_is_not_carried_over(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _earlier(tmp_path, monkeypatch)
    latest, gone = common.merge(_partial(), common.earlier_results(), ORDER[:3])
    assert list(latest["benchmarks"]) == ORDER[:3]
    assert gone == [
        "sweep_history_independence",
        "adoption_blocking",
        "gateway_connect_rate",
        "heartbeat_cost",
    ]


def test_the_chart_of_merged_results_holds_the_carried_ones_with_their_run(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The chart was drawn from the partial run alone: one bar, the others gone.
    _earlier(tmp_path, monkeypatch)
    latest, _ = common.merge(_partial(), common.earlier_results(), ORDER)
    root = ET.fromstring(svg_chart(latest))  # noqa: S314 - our own output
    texts = [text.text or "" for text in root.iter(f"{SVG}text")]
    assert (
        "tether benchmarks: each figure against its goal"
        " (quick, 2026-12-01T01:00:00+00:00; 6 from earlier runs)" in texts
    )
    # This run's figure as before; each carried one says the run it came from.
    assert "0.75 (ratio >= 0.8)" in texts
    assert "0.44 (ratio <= 1.3), full run of 2026-11-30T18:11:00+00:00" in texts
    assert (
        "0.0262 (longest_write_wait_seconds <= 1), full run of 2026-11-30T18:11:00+00:00" in texts
    )
    assert len(list(root.iter(f"{SVG}rect"))) == 5
    width = float(root.get("width") or 0)
    for text in root.iter(f"{SVG}text"):
        assert float(text.get("x") or 0) + len(text.text or "") * NARROWEST_CHARACTER <= width


def test_a_carried_entry_keeps_the_name_of_its_runs_dated_copy(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    earlier = _earlier(tmp_path, monkeypatch)
    earlier["meta"]["dated_copy"] = "2026-11-30T181100Z-full.json"
    heartbeat = earlier["benchmarks"]["heartbeat_cost"]
    heartbeat["run"] = {**EARLIER_RUN, "dated_copy": "2026-11-30T120000Z-full.json"}
    # Not a file's name in the results folder: not something to open.
    earlier["benchmarks"]["adoption_blocking"]["run"] = {**EARLIER_RUN, "dated_copy": "../x.json"}
    (tmp_path / "latest.json").write_text(json.dumps(earlier))
    latest, _ = common.merge(_partial(), common.earlier_results(), ORDER)
    carried = latest["meta"]["carried_over"]
    assert carried["heartbeat_cost"]["dated_copy"] == "2026-11-30T120000Z-full.json"
    # An entry without a run of its own is the file's run's, dated copy included.
    assert carried["connect_cold_start"]["dated_copy"] == "2026-11-30T181100Z-full.json"
    assert carried["adoption_blocking"] == EARLIER_RUN


@pytest.mark.parametrize(
    ("content", "said"),
    [
        (b"", "is not JSON"),
        (b"\xff\xfe{}", "cannot be read"),
        (b"[]", "holds no results"),
        (b'{"meta": {"date": "yesterday", "mode": "full"}, "benchmarks": {}}', "another format"),
        (b'{"meta": {"date": "2026-11-30T18:11:00+00:00", "mode": "full"}}', "another format"),
        (
            b'{"meta": {"date": "2026-11-30T18:11:00+00:00", "mode": "full"},'
            b' "benchmarks": {"x": {"workload": "w", "ratio": 1, "goal": "1.3",'
            b' "goal_on": "ratio", "goal_met": true}}}',
            "another format (x: its goal '1.3' reads neither",
        ),
        (
            b'{"meta": {"date": "2026-11-30T18:11:00+00:00", "mode": "full"},'
            b' "benchmarks": {"x": {"workload": "w", "goal": null}}}',
            "another format (x: no goal_on, goal_met)",
        ),
    ],
)
def test_a_latest_json_that_cannot_be_merged_with_says_why(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, content: bytes, said: str
) -> None:
    # Merged as found, it would have failed the run at its end, its figures unwritten.
    monkeypatch.setattr(common, "RESULTS", tmp_path)
    (tmp_path / "latest.json").write_bytes(content)
    with pytest.raises(common.UnreadableResults, match=re.escape(said)):
        common.earlier_results()


def test_no_latest_json_yet_is_nothing_to_merge(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(common, "RESULTS", tmp_path)
    assert common.earlier_results() == {}
