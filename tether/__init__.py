"""tether keeps the session table of a serverless WebSocket application true.

What application code needs, importable from here::

    from tether import counts_as_sign_of_life, SessionEnded, EndReason, SessionStore
    from tether import HEARTBEAT_INTERVAL_SECONDS  # the interval clients keep by default

Names load on first use, so importing ``tether`` costs a Lambda's cold start nothing
it does not use.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

# The one place the version is written: the wheel's metadata takes it from here.
__version__ = "0.2.0"

_PUBLIC = {
    "HEARTBEAT_INTERVAL_SECONDS": "tether.limits",
    "counts_as_sign_of_life": "tether.liveness",
    "SessionEnded": "tether.models",
    "EndReason": "tether.models",
    "SessionStore": "tether.store",
    "TetherError": "tether.errors",
}

__all__ = [
    "HEARTBEAT_INTERVAL_SECONDS",
    "EndReason",
    "SessionEnded",
    "SessionStore",
    "TetherError",
    "counts_as_sign_of_life",
]

if TYPE_CHECKING:
    from tether.errors import TetherError
    from tether.limits import HEARTBEAT_INTERVAL_SECONDS
    from tether.liveness import counts_as_sign_of_life
    from tether.models import EndReason, SessionEnded
    from tether.store import SessionStore


def __getattr__(name: str) -> Any:
    module = _PUBLIC.get(name)
    if module is None:
        raise AttributeError(f"module 'tether' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)
