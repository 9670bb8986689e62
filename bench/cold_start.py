"""Cold start: the import time of each handler module, against the obvious
alternative stack (``supabase.create_client`` plus ``boto3``), both measured in
fresh interpreters in the same run. A ratio below 1 means the handler's cold
path is lighter than merely importing that stack."""

from __future__ import annotations

import subprocess
import sys
import time

from bench.common import median, report, write_result

MODULES = {
    "connect": "import functions.connect",
    "disconnect": "import functions.disconnect",
    "message": "import functions.message",
    "session_ended": "import functions.session_ended",
}
BASELINE = "from supabase import create_client; import boto3"
RUNS = 7


def _import_seconds(statement: str) -> float:
    # -X importtime would count only imports; wall time of the whole interpreter,
    # minus an empty interpreter's, is what a cold Lambda pays.
    started = time.perf_counter()
    subprocess.run([sys.executable, "-c", statement], check=True)
    return time.perf_counter() - started


def main() -> dict[str, float]:
    empty = median([_import_seconds("pass") for _ in range(RUNS)])
    baseline = median([_import_seconds(BASELINE) for _ in range(RUNS)]) - empty
    results: dict[str, float] = {}
    report(f"cold start  baseline (supabase + boto3 import): {baseline * 1000:.0f} ms")
    for name, statement in MODULES.items():
        seconds = median([_import_seconds(statement) for _ in range(RUNS)]) - empty
        ratio = seconds / baseline
        results[name] = ratio
        report(f"cold start  {name:<14} {seconds * 1000:6.0f} ms   ratio {ratio:.2f}")
    write_result(
        "cold_start",
        {
            "baseline": BASELINE,
            "runs": RUNS,
            "ratio_to_baseline": results,
            "baseline_seconds": baseline,
        },
    )
    return results


if __name__ == "__main__":
    main()
