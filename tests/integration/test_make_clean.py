"""`make clean`: every embedded Postgres under .tether stopped before its data goes, and
never from under a running `tether dev`."""

from __future__ import annotations

import fcntl
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

from tests.conftest import ROOT
from tether.local import embedded


@pytest.fixture
def project() -> Iterator[Path]:
    """A folder with the project's Makefile and a .venv that runs this interpreter.
    Inside the checkout: the embedded server's own user must be able to reach it."""
    place = ROOT / ".tether" / f"clean-test-{os.getpid()}"
    (place / ".venv" / "bin").mkdir(parents=True)
    place.chmod(0o755)
    shutil.copy(ROOT / "Makefile", place / "Makefile")
    # A script, not a symlink: Python finds its environment from the path it was run by.
    python = place / ".venv" / "bin" / "python"
    python.write_text(f'#!/bin/sh\nexec "{sys.executable}" "$@"\n')
    python.chmod(0o755)
    yield place
    # Whatever still runs from here (a clean that removed a server's data under it).
    for process in psutil.process_iter(["cmdline"]):
        if str(place) in " ".join(process.info["cmdline"] or []):
            process.kill()
    shutil.rmtree(place, ignore_errors=True)


def _make_clean(project: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["make", "--no-print-directory", "clean"],  # noqa: S607 - the user's make
        cwd=project,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )


@pytest.mark.skipif(shutil.which("make") is None, reason="make is not installed")
def test_clean_waits_for_the_dev_then_stops_what_a_killed_chaos_run_left(project: Path) -> None:
    data = project / ".tether" / "chaos-1a2b3c4d" / "pgdata"
    data.parent.mkdir(parents=True)
    data.parent.chmod(0o755)
    server = embedded.start(data)
    postmaster = psutil.Process(int((data / "postmaster.pid").read_text().split()[0]))

    # This folder's `tether dev`, then the one a running `tether chaos` started.
    (data.parent / ".tether").mkdir()
    for lock, where in (
        (project / ".tether" / "dev.lock", project),
        (data.parent / ".tether" / "dev.lock", data.parent),
    ):
        with lock.open("a") as dev:
            fcntl.flock(dev, fcntl.LOCK_EX | fcntl.LOCK_NB)  # as a running `tether dev` does
            refused = _make_clean(project)
        assert refused.returncode != 0
        assert f"a tether dev is running in {where}: stop it (Ctrl-C) first" in refused.stderr
        assert (project / ".venv").exists() and embedded.is_running(data)

    # What installing and building leave beside the sources goes too.
    left = [project / name for name in ("build", "dist", "tether.egg-info", ".hypothesis")]
    for folder in left:
        folder.mkdir()
    cleaned = _make_clean(project)
    assert cleaned.returncode == 0, cleaned.stderr
    assert not (project / ".tether").exists() and not (project / ".venv").exists()
    assert [folder for folder in left if folder.exists()] == []
    postmaster.wait(timeout=30)  # it stopped: its data was not removed from under it
    assert server.started_here


@pytest.mark.skipif(shutil.which("make") is None, reason="make is not installed")
def test_clean_waits_for_a_benchmark_run(project: Path) -> None:
    # It stopped the run's server and removed its data: the run failed halfway.
    (project / ".tether").mkdir()
    with (project / ".tether" / "bench.lock").open("a") as run:
        fcntl.flock(run, fcntl.LOCK_EX | fcntl.LOCK_NB)  # as a running `make bench` does
        refused = _make_clean(project)
    assert refused.returncode != 0
    assert "a benchmark run is using" in refused.stderr
    assert "bench-pgdata: let it end (or Ctrl-C it) first" in refused.stderr
    assert (project / ".venv").exists() and (project / ".tether").exists()
    # Once it has ended, clean goes ahead.
    cleaned = _make_clean(project)
    assert cleaned.returncode == 0, cleaned.stderr
    assert not (project / ".tether").exists()
