"""tether keeps the session table of a serverless WebSocket application true.

What application code needs, importable from here::

    from tether import counts_as_sign_of_life, SessionEnded, EndReason, SessionStore

Names load on first use, so importing ``tether`` costs a Lambda's cold start nothing
it does not use.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.2.0"

_PUBLIC = {
    "counts_as_sign_of_life": "tether.liveness",
    "SessionEnded": "tether.models",
    "EndReason": "tether.models",
    "SessionStore": "tether.store",
    "TetherError": "tether.errors",
}

__all__ = [
    "EndReason",
    "SessionEnded",
    "SessionStore",
    "TetherError",
    "counts_as_sign_of_life",
]

if TYPE_CHECKING:
    from tether.errors import TetherError
    from tether.liveness import counts_as_sign_of_life
    from tether.models import EndReason, SessionEnded
    from tether.store import SessionStore


def __getattr__(name: str) -> Any:
    module = _PUBLIC.get(name)
    if module is None:
        raise AttributeError(f"module 'tether' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)
