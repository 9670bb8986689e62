"""Lambda SnapStart: what a restored snapshot must not reuse.

With SnapStart (the template turns it on for the WebSocket functions and the admin API),
Lambda initializes a function once, snapshots it, and resumes every new execution
environment from that snapshot. A database connection, a secret read from Secrets
Manager, boto3 clients and their connection pools would be shared by every restored copy
and stale by the time they run: after a restore, every per-container singleton is
forgotten (``tether.runtime.reset``), so the first invocation opens its own connection
and reads the secrets again.

The hook is registered through ``snapshot_restore_py``, which Lambda's Python runtimes
include; elsewhere (tests, the local runtime, the CLI) this module does nothing.
"""

from __future__ import annotations

import importlib.util

_registered = False


def forget_container_state() -> None:
    """Close the store(s) and drop every cached client, secret and setting."""
    from tether import runtime  # noqa: PLC0415

    runtime.reset()


def register() -> bool:
    """Register the after-restore hook once; True where SnapStart's library exists."""
    global _registered  # noqa: PLW0603 - one registration per process
    if _registered:
        return True
    if importlib.util.find_spec("snapshot_restore_py") is None:
        return False
    from snapshot_restore_py import register_after_restore  # noqa: PLC0415

    register_after_restore(forget_container_state)
    _registered = True
    return True
