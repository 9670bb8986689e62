"""How detection_latency's entry reads tether simulate's report."""

from __future__ import annotations

from typing import Any

from bench.detection_latency import result_of
from tether.local.simulate import SimulationReport

LATENCY: dict[str, float | None] = {"p50": 25.0, "p95": 39.0, "p99": 39.5, "max": 39.6}


def _simulated(get_connection_calls: float | None) -> dict[str, Any]:
    """A report as `tether simulate --json` prints it."""
    return SimulationReport(
        opened=20,
        ended_by_reason={"gone": 8, "heartbeat_timeout": 8, "client_disconnect": 4},
        active=0,
        orphaned=0,
        detection_latency_s=LATENCY,
        detection_latency_by_kind_s={"dropped": LATENCY, "silent": LATENCY},
        clients=20,
        connected=20,
        dropped=8,
        closed_by_server=0,
        failed=0,
        silent=8,
        cost_per_connection_minute={
            "heartbeat_writes": 3.9,
            "get_connection_calls": get_connection_calls,
        },
    ).as_dict()


def test_get_connection_calls_not_measured_says_why_in_the_results() -> None:
    # The JSON read "get_connection_calls": null and nothing else: a reader took it for
    # a figure lost, where the command's own text said no sweep run fit in the simulation.
    cost = result_of(_simulated(None), 20, 71.4)["measured"]["cost_per_connection_minute"]
    assert cost["get_connection_calls"] is None
    assert cost["get_connection_calls_note"] == (
        "not measured: tether simulate counts the calls of the sweep runs that began during"
        " the simulation and have ended (a run's report is written as it ends); at the"
        " production schedule a run begins each minute and lasts until the next, so only a"
        " simulation of over two minutes surely holds one, and this one took 71 s"
    )
    assert cost["heartbeat_writes"] == 3.9


def test_get_connection_calls_measured_stands_alone() -> None:
    cost = result_of(_simulated(0.4), 20, 150.0)["measured"]["cost_per_connection_minute"]
    assert cost == {"heartbeat_writes": 3.9, "get_connection_calls": 0.4}
