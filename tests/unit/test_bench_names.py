"""`python -m bench NAME ...`: a name it does not know is a usage error, said at once."""

from __future__ import annotations

import subprocess
import sys

from tests.conftest import ROOT


def _bench(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(  # noqa: S603 - this interpreter
        [sys.executable, "-m", "bench", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_a_misspelt_name_is_a_usage_error_that_suggests_the_name_meant() -> None:
    # It exited 1 with the whole list and no hint, where argparse's own errors exit 2.
    refused = _bench("--quick", "lifecycle_througput")
    assert refused.returncode == 2
    assert refused.stderr.startswith("usage: python -m bench")
    assert "unknown benchmark 'lifecycle_througput'; did you mean lifecycle_throughput?" in (
        refused.stderr
    )
    assert refused.stdout == ""


def test_an_unknown_name_lists_the_known_ones() -> None:
    refused = _bench("zzz")
    assert refused.returncode == 2
    assert "unknown benchmark 'zzz' (known: detection_latency, connect_cold_start," in (
        refused.stderr
    )


def test_help_names_every_benchmark() -> None:
    shown = _bench("--help")
    assert shown.returncode == 0
    said = " ".join(shown.stdout.split())
    assert "benchmarks: detection_latency, connect_cold_start," in said
    assert "lifecycle_throughput" in said
    assert "adoption_blocking" in said
