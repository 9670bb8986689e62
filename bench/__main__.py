"""``make bench``: every benchmark, one after the other; results in bench/results/."""

from __future__ import annotations

import sys

from bench import cold_start, gateway_throughput, sweep_cost

BENCHMARKS = {
    "cold_start": cold_start.main,
    "sweep_cost": sweep_cost.main,
    "gateway_throughput": gateway_throughput.main,
}


def main() -> None:
    chosen = sys.argv[1:] or list(BENCHMARKS)
    for name in chosen:
        BENCHMARKS[name]()


if __name__ == "__main__":
    main()
