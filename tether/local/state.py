"""``.tether/dev.json``: what a running ``tether dev`` says of itself (its database,
gateway and ``@connections`` endpoint, and its pid), for ``tether simulate`` and the
commands run with ``--embedded``. Standard library only: the commands read it without
the ``local`` extra."""

from __future__ import annotations

import fcntl
import json
import os
from pathlib import Path
from typing import IO, Any

from tether.folders import make_folder

PATH = Path(".tether") / "dev.json"
LOCK = Path(".tether") / "dev.lock"

SWEEP_SETTINGS = (
    "idle_timeout_seconds",
    "max_duration_seconds",
    "limit_grace_seconds",
    "suspect_after_seconds",
    "heartbeat_interval_seconds",
    "heartbeat_throttle_seconds",
    "heartbeat_grace_seconds",
    "gone_settle_seconds",
    "sweep_check_every_seconds",
    "sweep_schedule_seconds",
)
"""The settings a dev's sweep runs with (its flags among them: --heartbeat-grace off,
--idle-timeout 1m, ...), which a command's sweep on its database runs with too."""


def hold(lock: Path = LOCK) -> IO[str] | None:
    """This folder's `tether dev` lock (or the one at ``lock``), held until the returned
    file is closed or the process ends (a crash included: the system releases it); None
    when another process holds it."""
    make_folder(lock.parent)
    handle = lock.open("a")
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        handle.close()
        return None
    return handle


def held_elsewhere(lock: Path = LOCK) -> bool:
    """Whether another process holds this folder's `tether dev` lock (or the one at
    ``lock``): a dev runs here, whatever its note says."""
    handle = hold(lock)
    if handle is None:
        return True
    handle.close()
    return False


def started_by(data_dir: Path) -> Path:
    """Beside an embedded Postgres's data: the pid of the process that started it for
    itself (a command, or `tether dev`), so that one left by a killed starter is known."""
    return data_dir.with_name(f"{data_dir.name}.started-by")


def write(
    *,
    database_url: str,
    ws_url: str,
    connections_endpoint: str,
    embedded_data_dir: Path | None = None,
    sweep_settings: dict[str, float | None] | None = None,
) -> None:
    """Say which database, gateway and @connections endpoint this process serves, the
    embedded server's data it runs on, if any (its URL's socket alone does not say: a
    deep folder's socket is kept elsewhere, its path too long for one), and the settings
    its sweep runs with (``SWEEP_SETTINGS``)."""
    make_folder(PATH.parent)
    # Written aside and renamed: a reader sees the whole note or none. The URL may carry
    # a password: readable by this user alone.
    partial = PATH.with_suffix(f".{os.getpid()}.tmp")
    descriptor = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    os.fchmod(descriptor, 0o600)
    with os.fdopen(descriptor, "w") as note:
        note.write(
            json.dumps(
                {
                    "database_url": database_url,
                    "ws_url": ws_url,
                    "connections_endpoint": connections_endpoint,
                    "embedded_data_dir": str(embedded_data_dir) if embedded_data_dir else None,
                    "sweep_settings": sweep_settings or {},
                    "pid": os.getpid(),
                }
            )
        )
    os.replace(partial, PATH)


def clear() -> None:
    """Take this process's note away (another's stays)."""
    if read().get("pid") == os.getpid():
        PATH.unlink(missing_ok=True)


def read() -> dict[str, Any]:
    """What was written in this folder, live or not; {} without it."""
    try:
        state = json.loads(PATH.read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return {}
    return state if isinstance(state, dict) else {}


def is_live(state: dict[str, Any]) -> bool:
    """True when the ``tether dev`` that wrote ``state`` still runs: a killed one (or a
    machine restarted under it) leaves its file behind."""
    pid = state.get("pid")
    if not isinstance(pid, int) or pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # alive, run by another user
    return True


def running() -> dict[str, Any]:
    """The state of the ``tether dev`` running in this folder; {} when none runs."""
    state = read()
    return state if is_live(state) else {}
