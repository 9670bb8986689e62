"""Fixtures shared by the integration tests."""

from __future__ import annotations

import os
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


@pytest.fixture(scope="session")
def sdist(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The source distribution built from this checkout, by the build backend
    pyproject.toml names (fetched as pip fetches it to build the wheel)."""
    backend = tmp_path_factory.mktemp("backend")
    fetched = subprocess.run(  # noqa: S603 - pip, run by this interpreter
        [sys.executable, "-m", "pip", "install", "--quiet", "--target", backend, "setuptools>=77"],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert fetched.returncode == 0, fetched.stderr
    out = tmp_path_factory.mktemp("sdist")
    built = subprocess.run(  # noqa: S603 - the backend, run by this interpreter
        [sys.executable, "-c", f"import setuptools.build_meta as b; b.build_sdist({str(out)!r})"],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(backend)},
    )
    assert built.returncode == 0, built.stderr
    (path,) = out.glob("tether-*.tar.gz")
    return path
