"""The embedded Postgres: start, reuse, and recovery from a crash's leftovers."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from tests.conftest import ROOT
from tether.cli.common import configured_url
from tether.local import embedded


@pytest.fixture
def data_dir() -> Iterator[Path]:
    # Inside the project: the wheel's server user must be able to reach it.
    path = ROOT / ".tether" / f"embedded-test-{os.getpid()}"
    yield path
    embedded.stop_if_running(path)
    shutil.rmtree(path, ignore_errors=True)


def _ping(url: str) -> int:
    with psycopg.connect(url) as conn:
        row = conn.execute("select 1").fetchone()
    assert row is not None
    return int(row[0])


@pytest.mark.skipif(configured_url() is not None, reason="DATABASE_URL points elsewhere")
def test_start_twice_reuses_then_survives_a_stale_pid_file(data_dir: Path) -> None:
    first = embedded.start(data_dir)
    assert first.started_here
    assert _ping(first.url) == 1

    second = embedded.start(data_dir)
    assert not second.started_here
    assert second.url == first.url

    first.stop()
    assert not embedded.is_running(data_dir)
    # A crash leaves postmaster.pid behind, naming a pid that may since belong to
    # any process: here, this test's own.
    (data_dir / "postmaster.pid").write_text(
        f"{os.getpid()}\n{data_dir}\n0\n5432\n{data_dir}\n\n0 0\nready\n"
    )
    third = embedded.start(data_dir)
    assert third.started_here
    assert _ping(third.url) == 1


@pytest.mark.skipif(configured_url() is not None, reason="DATABASE_URL points elsewhere")
def test_stopping_a_server_someone_else_stopped_is_not_an_error(data_dir: Path) -> None:
    """`tether dev`'s Ctrl-C after its database was stopped under it (pg_ctl stop, a
    crash): its own stop finds nothing to stop and says nothing of it."""
    server = embedded.start(data_dir)
    embedded.EmbeddedPostgres(data_dir, server.url, started_here=False).stop("immediate")
    assert not embedded.is_running(data_dir)
    server.stop()
    assert not embedded.is_running(data_dir)
