"""``.tether/dev.json``: what a running ``tether dev`` says of itself (its database,
gateway and ``@connections`` endpoint, and its pid), for ``tether simulate`` and the
commands run with ``--embedded``. Standard library only: the commands read it without
the ``local`` extra."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

PATH = Path(".tether") / "dev.json"


def write(*, database_url: str, ws_url: str, connections_endpoint: str) -> None:
    """Say which database, gateway and @connections endpoint this process serves."""
    PATH.parent.mkdir(parents=True, exist_ok=True)
    # The URL may carry a password: readable by this user alone, even if it existed.
    descriptor = os.open(PATH, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    os.fchmod(descriptor, 0o600)
    with os.fdopen(descriptor, "w") as note:
        note.write(
            json.dumps(
                {
                    "database_url": database_url,
                    "ws_url": ws_url,
                    "connections_endpoint": connections_endpoint,
                    "pid": os.getpid(),
                }
            )
        )


def clear() -> None:
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
