"""`make dev ARGS=...`: the flags reach `tether dev` and are not shown on the way."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import ROOT


@pytest.mark.skipif(shutil.which("make") is None, reason="make is not installed")
def test_make_dev_does_not_repeat_a_database_url_it_passes_on(tmp_path: Path) -> None:
    # The project's Makefile, with a .venv whose tether is this checkout's.
    shutil.copy(ROOT / "Makefile", tmp_path / "Makefile")
    shutil.copy(ROOT / "pyproject.toml", tmp_path / "pyproject.toml")
    bin_dir = tmp_path / ".venv" / "bin"
    bin_dir.mkdir(parents=True)
    tether = bin_dir / "tether"
    tether.write_text(f'#!/bin/sh\nexec "{sys.executable}" -m tether "$@"\n')
    tether.chmod(0o755)
    (tmp_path / ".venv" / ".installed").touch()
    url = "postgresql://app:S3cr3tPW-xyz@127.0.0.1:1/app"
    # Port 0 is refused before anything starts: the run is over at once.
    done = subprocess.run(  # noqa: S603 - the test's own arguments
        ["make", "--no-print-directory", "dev", f"ARGS=--database-url {url} --port 0"],  # noqa: S607
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    assert "--port: a port between 1 and 65535" in done.stderr
    assert "S3cr3tPW" not in done.stdout + done.stderr
