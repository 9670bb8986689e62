"""``.tether``: the folder in the project where tether keeps what it makes for this
machine alone (the embedded Postgres, the deploy's downloads and bundles, the dev's
note and lock)."""

from __future__ import annotations

import contextlib
from pathlib import Path

NAME = ".tether"
IGNORE = "# Made by tether: a database and downloads for this machine alone.\n*\n"


def make_folder(path: Path) -> None:
    """``mkdir -p path``; the ``.tether`` it is in gets a ``.gitignore`` that ignores all
    of it (as pytest's and mypy's caches have theirs): in a team's own project, nothing
    else keeps its database and downloads out of a ``git add -A``. One already there is
    left as it is."""
    path.mkdir(parents=True, exist_ok=True)
    folder = next((p for p in (path, *path.parents) if p.name == NAME), None)
    if folder is None:
        return
    # "x": never over a .gitignore of the team's, nor half of one another process writes.
    with contextlib.suppress(OSError), (folder / ".gitignore").open("x") as ignore:
        ignore.write(IGNORE)
