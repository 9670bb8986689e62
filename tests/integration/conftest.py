"""Fixtures shared by the integration tests."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import ROOT

# What git, builds and tools leave in a checkout: never part of what is built from it.
NOT_SOURCE = (
    *(".git", ".venv", ".tether", "build", "dist", "*.egg-info", "__pycache__"),
    *(".pytest_cache", ".mypy_cache", ".ruff_cache", ".hypothesis", "node_modules"),
)


@pytest.fixture(scope="session")
def source(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """This checkout's files, copied with their links as links: setuptools builds in the
    folder it is given, and in the checkout it reused what an earlier build left there
    (build/, tether.egg-info), shipping files the configuration no longer names."""
    place = tmp_path_factory.mktemp("source") / "tether"
    shutil.copytree(ROOT, place, symlinks=True, ignore=shutil.ignore_patterns(*NOT_SOURCE))
    return place


@pytest.fixture(scope="session")
def wheel(source: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The wheel built from this checkout's files, once per worker that needs it."""
    out = tmp_path_factory.mktemp("wheel")
    built = subprocess.run(  # noqa: S603 - pip, run by this interpreter
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--quiet", "-w", str(out), str(source)],
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
def sdist(source: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The source distribution built from this checkout's files, by the build backend
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
        cwd=source,
        env={**os.environ, "PYTHONPATH": str(backend)},
    )
    assert built.returncode == 0, built.stderr
    (path,) = out.glob("tether-*.tar.gz")
    return path
