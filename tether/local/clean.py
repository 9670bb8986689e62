"""What `make clean` does before it removes ``.venv`` and ``.tether``: refuse while a
`tether dev` runs here (the folder's own, or the one a `tether chaos` run started) or a
benchmark run does, then stop every embedded Postgres under ``.tether``, each on its
own, so that no server has its data removed from under it."""

from __future__ import annotations

import sys
from pathlib import Path

from tether.local import embedded
from tether.local import state as dev_state

BASE = Path(".tether")
# tether dev's, the tests' (one per worker), the benchmarks', a killed chaos run's, and
# the scratch servers of `make sql-contract`.
DATA_DIRS = ("pgdata", "test-pgdata*", "bench-pgdata", "chaos-*/pgdata", "tmp*/pgdata")
DEV_LOCKS = ("dev.lock", "chaos-*/.tether/dev.lock")
# Held by a running `make bench` (bench/database.py), whose server is bench-pgdata.
BENCH_LOCK = "bench.lock"


REFUSED = 3
"""The exit status that stops `make clean`; any other failure (this module not even
importable) lets it go on removing, as it is the way out of a broken install."""


def main() -> int:
    base = BASE.resolve()
    running = [lock for pattern in DEV_LOCKS for lock in base.glob(pattern)]
    running = [lock for lock in running if lock.is_file() and dev_state.held_elsewhere(lock)]
    if running:
        where = ", ".join(str(lock.parent.parent) for lock in running)
        sys.stderr.write(f"a tether dev is running in {where}: stop it (Ctrl-C) first\n")
        return REFUSED
    bench = base / BENCH_LOCK
    if bench.is_file() and dev_state.held_elsewhere(bench):
        sys.stderr.write(
            f"a benchmark run is using {base / 'bench-pgdata'}: let it end (or Ctrl-C it) first\n"
        )
        return REFUSED
    failed = []
    for data in (data for pattern in DATA_DIRS for data in base.glob(pattern)):
        try:
            embedded.stop_if_running(data)
        except Exception as exc:  # noqa: BLE001 - said, and nothing is removed
            failed.append(f"{data}: {exc}")
    if failed:
        sys.stderr.write(
            "could not stop every embedded Postgres, so nothing was removed:\n  "
            + "\n  ".join(failed)
            + "\n"
        )
        return REFUSED
    return 0


if __name__ == "__main__":
    sys.exit(main())
