"""Fixtures shared by the integration tests."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import ROOT


@pytest.fixture(scope="session")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The wheel built from this checkout, once per run (its tests are in one file, so
    one worker builds it: setuptools builds in the checkout, two at once would collide)."""
    out = tmp_path_factory.mktemp("wheel")
    built = subprocess.run(  # noqa: S603 - pip, run by this interpreter
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--quiet", "-w", str(out), str(ROOT)],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
        cwd=out,
    )
    assert built.returncode == 0, built.stderr
    (path,) = out.glob("tether-*.whl")
    return path
