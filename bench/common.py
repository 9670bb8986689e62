"""What every benchmark shares: where results go, and how they are printed."""

from __future__ import annotations

import json
import platform
import statistics
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).resolve().parent / "results"


def write_result(name: str, payload: dict[str, Any]) -> Path:
    RESULTS.mkdir(exist_ok=True)
    path = RESULTS / f"{name}.json"
    document = {
        "benchmark": name,
        "measured_at": datetime.now(UTC).isoformat(),
        "python": platform.python_version(),
        "machine": platform.machine(),
        **payload,
    }
    path.write_text(json.dumps(document, indent=2) + "\n")
    return path


def median(values: list[float]) -> float:
    return statistics.median(values)


def report(line: str) -> None:
    print(line, flush=True)
