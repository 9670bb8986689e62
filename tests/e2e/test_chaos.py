"""`tether chaos`, short: real clients and every fault the promise must survive
(PutEvents down, Postgres stopped fast and immediate, @connections throttled, two
sweeps at once, the gateway killed with SIGKILL), then every promise checked."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import psutil
import psycopg
import pytest
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from tests.conftest import set_for_database
from tests.e2e.conftest import TETHER, free_port
from tether.local import chaos

README = Path(__file__).resolve().parents[2] / "README.md"


def _readme_keys() -> set[str]:
    """The keys the README says `tether chaos --json` prints."""
    text = " ".join(README.read_text().split())
    begin = text.index("`--json` prints one object with the keys `clients`, `attempts`")
    return set(re.findall(r"`([a-z_0-9]+)`", text[begin : text.index("`make test`", begin)]))


def test_a_short_chaos_run_keeps_every_promise(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("TETHER_", "DATABASE_URL"))}
    result = subprocess.run(  # noqa: S603 - our own command
        [TETHER, "chaos", "--clients", "30", "--minutes", "1", "--seed", "7", "--json"],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
        cwd=tmp_path,
        env=env,
    )
    assert result.stdout.strip(), result.stderr[-3000:]
    report = json.loads(result.stdout)
    assert set(report) == _readme_keys()
    assert len(report["faults"]) == 6, report["faults"]
    assert report["accepted"] > 100, report  # clients came and went all along
    assert set(report["ended_by_reason"]) >= {
        "client_disconnect",
        "connection_lost",
        "gone",
        "heartbeat_timeout",
    }, report
    for promise in chaos.PROMISES:
        assert report[promise] == 0, (promise, report["examples"])
    # Measured where no fault was near (late_detections counts those over the bound),
    # for vanished and silent clients alike, however short the run.
    assert report["unmeasured"] == [], report
    latency = report["max_detection_latency_s"]
    assert latency is not None and latency <= report["bound_s"] + 3, report
    assert result.returncode == 0, result.stderr[-3000:]


def test_a_chaos_run_stopped_with_sigterm_leaves_nothing_running(tmp_path: Path) -> None:
    """As a cancelled CI job or `timeout` stops it: its gateway and its embedded
    Postgres are stopped, and its folder is removed."""
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "TETHER_DATABASE_URL")}
    started = subprocess.Popen(  # noqa: S603 - our own console script
        [TETHER, "chaos", "--clients", "5", "--minutes", "1"],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert started.stderr is not None
    for line in started.stderr:
        if "clients for" in line:
            break
    started.send_signal(signal.SIGTERM)
    started.communicate(timeout=60)
    assert started.returncode == 130
    left = [
        p.info["pid"]
        for p in psutil.process_iter(["pid", "cmdline"])
        if str(tmp_path) in " ".join(p.info["cmdline"] or [])
    ]
    assert left == []
    assert list((tmp_path / ".tether").glob("chaos-*")) == []


def test_the_restarted_gateway_keeps_the_database_password_off_its_command_line(
    database_url: str, tmp_path: Path
) -> None:
    """The run's gateway is `tether dev` in a process of its own; `ps` shows every
    process's arguments to every user of the machine."""
    url = make_conninfo("", **conninfo_to_dict(database_url), password="Chaos-Pass-1")
    gateway = chaos.Gateway(tmp_path, free_port(), url, chaos._gateway_environment("", "k" * 32))
    gateway.start()
    try:
        assert gateway.process is not None
        arguments = " ".join(psutil.Process(gateway.process.pid).cmdline())
        assert "tether" in arguments
        assert "Chaos-Pass-1" not in arguments
        assert "Chaos-Pass-1" not in gateway.logs[0].read_text()
    finally:
        gateway.stop()


def test_the_gateway_starts_where_no_tether_script_is_beside_the_interpreter(
    database_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`pip install --user` puts the console script in ~/.local/bin, apart from the
    interpreter: the run's gateway started from beside the interpreter was no file there
    (FileNotFoundError, and a traceback), and is now this interpreter's `-m tether`."""
    elsewhere = tmp_path / "bin"
    elsewhere.mkdir()
    interpreter = elsewhere / "python3"
    interpreter.write_text(f'#!/bin/sh\nexec "{sys.executable}" "$@"\n')
    interpreter.chmod(0o755)
    monkeypatch.setattr(sys, "executable", str(interpreter))
    gateway = chaos.Gateway(
        tmp_path, free_port(), database_url, chaos._gateway_environment("", "k" * 32)
    )
    gateway.start()
    try:
        assert gateway.process is not None
        assert psutil.Process(gateway.process.pid).cmdline()[1:4] == ["-m", "tether", "dev"]
    finally:
        gateway.stop()


def test_a_session_across_the_clocks_going_back_did_not_end_before_it_started(
    database_url: str, db: psycopg.Connection[dict[str, object]]
) -> None:
    """Started 01:59 EDT, ended 01:01 EST, two minutes later, on a server in New York (a
    laptop's embedded Postgres takes the machine's zone): read by psycopg in that zone,
    the two compared by their wall-clock readings, and the run failed."""
    set_for_database(database_url, "timezone", "America/New_York")
    row = db.execute(
        "insert into public.conversation_sessions"
        " (connection_id, user_agent, session_start, last_seen_at, session_end, end_reason)"
        " values ('c=', 'tether-chaos/run1/0', '2026-11-01 05:59:00+00',"
        " '2026-11-01 05:59:00+00', '2026-11-01 06:01:00+00', 'client_disconnect')"
        " returning session_id"
    ).fetchone()
    assert row is not None
    report = chaos._check(
        chaos.Run(clients=1, seconds=1, seed=0, progress=lambda _: None),
        rows=chaos.Table(database_url, "run1").rows(),
        ended_seen={},
        announced=[
            {
                "session_id": str(row["session_id"]),
                "end_reason": "client_disconnect",
                "session_end": "2026-11-01T06:01:00Z",
            }
        ],
        outputs="",
        secrets_to_hide=[],
    )
    assert report.ends_before_start == 0
    # No promise broken (the bound itself is timed on clients, and this run has none).
    assert not any(getattr(report, promise) for promise in chaos.PROMISES), report.examples


def test_chaos_reads_a_database_that_writes_dates_its_own_way(
    database_url: str, db: psycopg.Connection[dict[str, object]]
) -> None:
    set_for_database(database_url, "datestyle", "German")
    db.execute(
        "insert into public.conversation_sessions (connection_id, user_agent, session_start)"
        " values ('c=', 'tether-chaos/run1/0', now())"
    )
    [row] = chaos.Table(database_url, "run1").rows()
    assert row["is_active"] is True


def test_a_chaos_run_whose_postgres_cannot_start_says_why_in_one_line(tmp_path: Path) -> None:
    """initdb refuses (here, a locale that does not exist; a full disk alike): one line
    with initdb's own words and exit 1, not a traceback, and nothing left behind."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("TETHER_", "DATABASE_URL"))}
    result = subprocess.run(  # noqa: S603 - our own command
        [TETHER, "chaos", "--clients", "2", "--minutes", "1"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        cwd=tmp_path,
        env={**env, "LC_ALL": "xx_XX.nowhere"},
    )
    assert result.returncode == 1, result.stderr
    assert "Traceback" not in result.stderr
    said = [line for line in result.stderr.splitlines() if line.startswith("tether chaos: ")]
    assert len(said) == 1, result.stderr
    assert "could not start the embedded Postgres" in said[0]
    assert "initdb: error: invalid locale settings" in said[0], said
    assert list((tmp_path / ".tether").glob("chaos-*")) == []
