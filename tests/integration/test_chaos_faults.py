"""`tether chaos`'s Postgres faults on a real embedded server: a stop that fails once is
tried again; one that keeps failing leaves the server running and fails the run, with
pg_ctl's own words, instead of ending it in a traceback."""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import threading
import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import psutil
import psycopg
import pytest

from tests.conftest import ROOT
from tether.cli.common import configured_url
from tether.cli.local import chaos_lines
from tether.local import chaos, embedded

pytestmark = pytest.mark.skipif(
    configured_url() is not None, reason="DATABASE_URL points elsewhere"
)

REFUSAL = "pg_ctl: could not send stop signal (PID: 4242): Operation not permitted"


@pytest.fixture
def data_dir(monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    # Inside the project: the wheel's server user must be able to reach it.
    path = ROOT / ".tether" / f"chaos-faults-{os.getpid()}"
    yield path / "pgdata"
    monkeypatch.undo()  # the real pg_ctl stops it
    embedded.stop_if_running(path / "pgdata", "immediate")
    shutil.rmtree(path, ignore_errors=True)


def _pg_ctl_failing(folder: Path, times: int) -> Path:
    """A pg_ctl that refuses ``times`` times as the real one does (on stderr, exit 1),
    then is the real one. The server's user runs it, and counts in its folder."""
    folder.mkdir(parents=True, exist_ok=True)
    folder.chmod(0o777)
    stand_in = folder / "pg_ctl"
    real = embedded.binary("pg_ctl")
    stand_in.write_text(
        "#!/bin/sh\n"
        f'tries="$(cat "{folder}/tries" 2>/dev/null || echo 0)"\n'
        f'echo $((tries + 1)) > "{folder}/tries"\n'
        f'if [ "$tries" -lt {times} ]; then echo "{REFUSAL}" >&2; exit 1; fi\n'
        f'exec "{real}" "$@"\n'
    )
    stand_in.chmod(0o755)
    return stand_in


def _postmaster(data_dir: Path) -> int:
    return int((data_dir / "postmaster.pid").read_text().splitlines()[0])


def _answers(url: str) -> bool:
    with psycopg.connect(url, connect_timeout=5) as conn:
        return conn.execute("select true").fetchone() == (True,)


def test_a_stop_refused_once_is_tried_again_and_the_fault_is_made(
    data_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    server = embedded.start(data_dir)
    before = _postmaster(data_dir)
    stand_in = _pg_ctl_failing(data_dir.parent / "bin", times=1)
    monkeypatch.setattr(embedded, "binary", lambda name: stand_in)

    assert chaos._restart_database(server, "fast") is None

    assert (stand_in.parent / "tries").read_text().strip() == "2"
    # Stopped, then started again: another postmaster answers.
    assert embedded.is_running(data_dir)
    assert _postmaster(data_dir) != before
    assert _answers(server.url)


def test_a_database_that_will_not_stop_fails_the_run_saying_why(
    data_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    server = embedded.start(data_dir)
    stand_in = _pg_ctl_failing(data_dir.parent / "bin", times=2)
    monkeypatch.setattr(embedded, "binary", lambda name: stand_in)

    why = chaos._restart_database(server, "immediate")

    assert why is not None and REFUSAL in why
    assert _answers(server.url)  # left running, as it was
    run = chaos.Run(clients=1, seconds=60, seed=7, progress=lambda line: None)
    fault = run.fault("postgres stopped (immediate), restarted after 3 s")
    fault.not_injected, fault.ended = why, fault.started + 2
    report = chaos._check(run, rows=[], ended_seen={}, announced=[], outputs="", secrets_to_hide=[])
    report = replace(report, unmeasured=[])  # every other promise held
    assert not report.passed
    assert report.as_dict()["not_injected"] == [f"{fault.name}: {why}"]
    said = "\n".join(chaos_lines(report))
    assert "not injected" in said and REFUSAL in said and "FAILED" in said


def test_a_database_that_will_not_stop_at_the_end_is_named_and_its_data_kept(
    data_dir: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    server = embedded.start(data_dir)
    pid = _postmaster(data_dir)
    stand_in = _pg_ctl_failing(data_dir.parent / "bin", times=1_000)
    monkeypatch.setattr(embedded, "binary", lambda name: stand_in)

    with caplog.at_level(logging.WARNING, logger="tether.local.chaos"):
        chaos._clean_up(data_dir.parent)

    said = caplog.text
    assert f"could not stop the embedded Postgres in {data_dir}" in said and REFUSAL in said
    assert f"kill -INT {pid}" in said
    # Left running on its data, not on a folder removed under it.
    assert (data_dir / "PG_VERSION").exists()
    assert _answers(server.url)


def _poison_once_running(base: Path, done: threading.Event) -> None:
    """Once the run's server runs, give it a setting it will refuse at its next start:
    the running server does not read it, so the fault's stop works and its start fails."""
    while not done.is_set():
        for data in base.glob("chaos-*/pgdata"):
            ready = False
            with contextlib.suppress(OSError, IndexError):  # not there yet, or half written
                ready = (data / "postmaster.pid").read_text().split()[-1] == "ready"
            if ready:
                with (data / "postgresql.auto.conf").open("a") as conf:
                    conf.write("max_connections = 'many'\n")
                return
        time.sleep(0.1)


def test_a_database_that_will_not_start_again_ends_the_run_saying_so(
    data_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    workdir = data_dir.parent
    workdir.mkdir(parents=True)
    monkeypatch.chdir(workdir)
    done = threading.Event()
    poisoner = threading.Thread(target=_poison_once_running, args=(workdir / ".tether", done))
    poisoner.start()
    said: list[str] = []
    try:
        report = chaos.run_chaos(clients=2, minutes=0.2, seed=7, progress=said.append)
    finally:
        done.set()
        poisoner.join()

    assert not report.passed
    assert report.broken is not None
    assert "postgres stopped (fast)" in report.broken
    assert "could not start the embedded Postgres" in report.broken
    assert 'postgresql.auto.conf" contains errors' in report.broken
    assert report.as_dict()["orphaned"] is None  # never checked, not 0
    lines = "\n".join(chaos_lines(report))
    assert "broke the system under test" in lines and "FAILED" in lines
    assert not any("gateway killed" in fault for fault in report.faults)  # ended early
    # What it started is stopped, and its folder removed.
    assert list((workdir / ".tether").glob("chaos-*")) == []
    assert not any(
        "tether-chaos" in " ".join(p.cmdline()) or str(workdir) in " ".join(p.cmdline())
        for p in psutil.process_iter()
        if p.pid != os.getpid() and p.name() in {"postgres", "tether"}
    )
