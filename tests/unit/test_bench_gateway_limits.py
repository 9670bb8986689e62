"""The gateway benchmark holds thousands of connections in its own process: it makes
room for them within the system's limits, or says which limit to change."""

from __future__ import annotations

import os
import resource
import subprocess
import sys

import pytest

from tests.conftest import ROOT

HOLD = """
import socket, sys
from bench.gateway_throughput import room_for
try:
    room_for(int(sys.argv[1]))
except RuntimeError as exc:
    print(exc)
    sys.exit(3)
held = [socket.socket() for _ in range(int(sys.argv[1]))]
print(len(held))
"""


def _hold(connections: int, soft: int, hard: int) -> subprocess.CompletedProcess[str]:
    def limited() -> None:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))

    return subprocess.run(  # noqa: S603 - this interpreter
        [sys.executable, "-c", HOLD, str(connections)],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        preexec_fn=limited,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


HARD = resource.getrlimit(resource.RLIMIT_NOFILE)[1]


@pytest.mark.skipif(
    HARD != resource.RLIM_INFINITY and HARD < 3256, reason="the hard limit on open files is low"
)
def test_a_soft_limit_of_1024_does_not_stop_the_full_runs_3000_connections() -> None:
    # The full run failed its gateway benchmark with "Too many open files" wherever the
    # soft limit was the usual 1,024: tether dev raised its own, the benchmark did not.
    held = _hold(3000, 1024, HARD)
    assert held.returncode == 0, held.stderr
    assert held.stdout.split() == ["3000"]


def test_a_hard_limit_too_low_is_said_with_what_to_change() -> None:
    refused = _hold(3000, 1024, 2048)
    assert refused.returncode == 3, refused.stderr
    assert refused.stdout.strip() == (
        "holding 3,000 connections needs about 3,256 open files, and this process may open"
        " at most 2,048 (ulimit -Hn): raise that limit, or set TETHER_BENCH_CONNECTIONS lower"
    )
