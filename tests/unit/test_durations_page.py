"""The live page keeps its own copy of describe_seconds' rules in JavaScript: this runs
the page's very function in node over many durations, halves included, and holds it
to the Python one word for word."""

from __future__ import annotations

import json
import random
import re
import shutil
import subprocess

import pytest

from tests.conftest import ROOT
from tether.durations import describe_seconds

SCRIPT = ROOT / "tether" / "admin" / "static" / "dashboard.js"
NODE = shutil.which("node")


def _durations() -> list[float]:
    values: list[float] = [float(s) for s in range(0, 7500)]
    values += [s + 0.5 for s in range(0, 7500)]  # a half second: 2.5 seconds
    values += [60.0 * m + 30 for m in range(0, 130)]  # a half minute: 150.5 minutes
    values += [360.0 * t + 180 for t in range(0, 500)]  # a half tenth of an hour
    values += [8640.0 * t + 4320 for t in range(0, 400)]  # a half tenth of a day
    values += [-0.5, -1.0, 0.49, 59.5, 119.5, 7199.5, 172799.0, 172800.0]
    draw = random.Random(20261130)
    values += [draw.uniform(0, 3_000_000) for _ in range(3000)]
    return values


@pytest.mark.skipif(NODE is None, reason="node is not installed")
def test_the_page_says_every_duration_as_the_commands_do() -> None:
    source = SCRIPT.read_text()
    found = re.search(r"^\s*function amount\(.*?(?=^\s*function ago\()", source, re.S | re.M)
    assert found, "dashboard.js no longer has amount() and duration() before ago()"
    values = _durations()
    program = (
        found.group(0)
        + "\nconst values = JSON.parse(require('fs').readFileSync(0, 'utf8'));"
        + "\nprocess.stdout.write(JSON.stringify(values.map(duration)));"
    )
    assert NODE is not None
    done = subprocess.run(  # noqa: S603
        [NODE, "-e", program],
        input=json.dumps(values),
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    page = json.loads(done.stdout)
    differ = [
        (seconds, said, describe_seconds(seconds))
        for seconds, said in zip(values, page, strict=True)
        if said != describe_seconds(seconds)
    ]
    assert differ == [], f"{len(differ)} differ (seconds, page, commands): {differ[:10]}"
