"""`.tether/dev.json`: the commands trust it only while the `tether dev` that wrote it
runs, and only for the database it serves."""

from __future__ import annotations

import argparse
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from tether.cli.common import _local_stack_defaults
from tether.local import state as dev_state

URL = "postgresql://tether@/postgres?host=/tmp/here"
ENDPOINT = "http://127.0.0.1:3001/local"


@pytest.fixture
def folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(tmp_path)
    for name in list(os.environ):
        if name.upper().startswith("TETHER_") or name.upper() == "DATABASE_URL":
            monkeypatch.delenv(name)
    return tmp_path


def _dead_pid() -> int:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def _written_by(pid: int, database_url: str = URL) -> None:
    dev_state.write(
        database_url=database_url, ws_url="ws://127.0.0.1:3001", connections_endpoint=ENDPOINT
    )
    text = dev_state.PATH.read_text().replace(f'"pid": {os.getpid()}', f'"pid": {pid}')
    dev_state.PATH.write_text(text)


def _defaults() -> dict[str, object]:
    return _local_stack_defaults(argparse.Namespace(endpoint_url=None, announce_to=None), URL)


def test_the_note_is_readable_by_its_owner_alone(folder: Path) -> None:
    (folder / ".tether").mkdir()
    dev_state.PATH.write_text("{}")
    dev_state.PATH.chmod(0o644)  # left by an older run: the new note must not inherit it
    dev_state.write(database_url=URL, ws_url="ws://x", connections_endpoint=ENDPOINT)
    assert stat.S_IMODE(dev_state.PATH.stat().st_mode) == 0o600
    assert dev_state.running()["connections_endpoint"] == ENDPOINT


def test_a_live_tether_dev_on_the_same_database_lends_its_endpoint(folder: Path) -> None:
    _written_by(os.getpid())
    assert _defaults() == {"connections_endpoint": ENDPOINT, "announce_to": "log"}


def test_a_killed_tether_dev_lends_nothing(folder: Path) -> None:
    _written_by(_dead_pid())
    assert dev_state.read()["connections_endpoint"] == ENDPOINT
    assert dev_state.running() == {}
    assert _defaults() == {"announce_to": "log"}


def test_a_tether_dev_on_another_database_lends_nothing(folder: Path) -> None:
    _written_by(os.getpid(), database_url="postgresql://tether@/other?host=/tmp/there")
    assert _defaults() == {"announce_to": "log"}


@pytest.mark.parametrize("text", ["not json", "[1, 2]", '{"pid": "12"}', '{"pid": -1}'])
def test_a_broken_note_is_no_tether_dev(folder: Path, text: str) -> None:
    (folder / ".tether").mkdir()
    dev_state.PATH.write_text(text)
    assert dev_state.running() == {}
    assert _defaults() == {"announce_to": "log"}


def test_simulate_says_the_tether_dev_that_ran_here_has_stopped(folder: Path) -> None:
    _written_by(_dead_pid())
    tether = Path(sys.executable).with_name("tether")
    result = subprocess.run(  # noqa: S603 - our own console script
        [str(tether), "simulate", "--clients", "1", "--duration", "1s"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode != 0
    assert "no gateway to simulate against (the one that ran here has stopped)" in result.stderr
    assert "Traceback" not in result.stderr


def test_a_run_takes_away_its_own_note_only(folder: Path) -> None:
    _written_by(_dead_pid())
    dev_state.clear()
    assert dev_state.PATH.exists()  # another run's: it is not this process's to clear
    _written_by(os.getpid())
    dev_state.clear()
    assert not dev_state.PATH.exists()


def _held_elsewhere(folder: Path) -> bool:
    """Whether another process finds the folder held."""
    other = subprocess.run(
        [sys.executable, "-c", "from tether.local import state; print(state.hold() is None)"],
        capture_output=True,
        text=True,
        check=True,
        cwd=folder,
    )
    return other.stdout.strip() == "True"


def test_the_folder_is_held_by_one_process_at_a_time(folder: Path) -> None:
    held = dev_state.hold()
    assert held is not None
    assert _held_elsewhere(folder)
    held.close()
    assert not _held_elsewhere(folder)


def _written_with_sweep(settings: dict[str, float | None], database_url: str = URL) -> None:
    dev_state.write(
        database_url=database_url,
        ws_url="ws://127.0.0.1:3001",
        connections_endpoint=ENDPOINT,
        sweep_settings=settings,
    )


# What `tether dev --heartbeat-grace off --idle-timeout 1m` runs its sweep with.
DEV_SWEEP = {
    "idle_timeout_seconds": 60.0,
    "max_duration_seconds": 7200.0,
    "limit_grace_seconds": 60.0,
    "suspect_after_seconds": 20.0,
    "heartbeat_interval_seconds": 15.0,
    "heartbeat_throttle_seconds": 10.0,
    "heartbeat_grace_seconds": None,
    "gone_settle_seconds": 5.0,
    "sweep_check_every_seconds": 10.0,
    "sweep_schedule_seconds": 60.0,
}


def test_a_command_beside_a_dev_sweeps_with_the_dev_s_limits(folder: Path) -> None:
    """A sweep run with --embedded beside a dev started with --heartbeat-grace off closed
    the silent clients that dev keeps, as heartbeat_timeout, and `tether stats` counted
    orphans by another idle limit than the dev's live page."""
    from tether.settings import load_settings  # noqa: PLC0415
    from tether.sweep import SweepPolicy  # noqa: PLC0415

    _written_with_sweep(DEV_SWEEP)
    defaults = _defaults()
    assert {name: defaults[name] for name in DEV_SWEEP} == DEV_SWEEP
    policy = SweepPolicy.from_settings(load_settings(database_url=URL, **defaults))
    assert policy.heartbeat_grace_seconds is None
    assert policy.idle_limit_seconds == 120.0


def test_the_environment_outweighs_the_dev_s_sweep_settings(
    folder: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from tether.settings import load_settings  # noqa: PLC0415

    short = {"heartbeat_interval_seconds": 2.0, "heartbeat_throttle_seconds": 1.0}
    _written_with_sweep({**DEV_SWEEP, **short, "heartbeat_grace_seconds": 4.0})
    monkeypatch.setenv("TETHER_IDLE_TIMEOUT_SECONDS", "300")
    monkeypatch.setenv("TETHER_HEARTBEAT_INTERVAL_SECONDS", "15")
    defaults = _defaults()
    assert "idle_timeout_seconds" not in defaults
    assert defaults["suspect_after_seconds"] == 20.0
    # The heartbeat settings are checked against each other: none of the dev's is mixed
    # with the environment's (a grace of 4 s under an interval of 15 s is refused).
    assert _local_stack_heartbeats(defaults) == set()
    load_settings(database_url=URL, **defaults)


def test_a_dev_on_another_database_lends_no_sweep_settings(folder: Path) -> None:
    _written_with_sweep(DEV_SWEEP, database_url="postgresql://tether@/other?host=/tmp/there")
    assert _defaults() == {"announce_to": "log"}


def _local_stack_heartbeats(defaults: dict[str, object]) -> set[str]:
    return {name for name in defaults if name.startswith("heartbeat_")}
