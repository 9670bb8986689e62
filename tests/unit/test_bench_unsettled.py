"""A lifecycle run whose baseline the machine disturbed does not say the goal was met."""

from __future__ import annotations

from typing import Any

from bench import common
from bench.lifecycle import _disturbed


def _rates(*runs: float) -> dict[str, Any]:
    return {"pgbench_pairs_per_second": common.spread(list(runs), 1)}


def test_a_pgbench_turn_slowed_by_other_work_unsettles_the_run() -> None:
    # A quick run on a busy machine: one pgbench turn at 274/s among ~800 made the
    # handlers' ratio 1.64, "met", though they had not changed.
    why = _disturbed({"1": _rates(274.0, 810.0), "2": _rates(1500.0, 1540.0)})
    assert why is not None
    assert "c=1 ranged from 274 to 810" in why


def test_two_clients_slower_than_one_unsettles_the_run() -> None:
    why = _disturbed({"1": _rates(634.0, 640.0), "2": _rates(549.0, 560.0)})
    assert why is not None
    assert "slower at c=2" in why


def test_a_steady_baseline_leaves_the_verdict_alone() -> None:
    assert _disturbed({"1": _rates(780.0, 823.0), "2": _rates(1500.0, 1537.0)}) is None


def test_an_unsettled_result_says_so_in_the_table_and_the_chart() -> None:
    result = common.entry("pairs", measured={}, ratio=1.64, goal=">= 0.8")
    assert result["goal_met"] is True
    common.unsettled(result, "pgbench's own pairs at c=1 ranged from 274 to 810 per second")
    assert result["goal_met"] is None
    document = {
        "meta": {
            "mode": "quick",
            "date": "2026-11-30T23:00:00+00:00",
            "cpu_count": 2,
            "memory_gib": 23.5,
            "postgres_version": "18.6",
        },
        "benchmarks": {"lifecycle_throughput": result},
    }
    row = next(line for line in common.table(document).splitlines() if "lifecycle" in line)
    assert " ? " in row and "yes" not in row
    assert "#9e9e9e" in common.svg_chart(document)
