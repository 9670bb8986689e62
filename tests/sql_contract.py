"""The SQL API contract: every ``tether_*_vN`` function, its identity arguments and
its result type, as the migrations leave them.

``supabase/sql_contract.txt`` is the committed snapshot. A released ``_vN`` never
changes: change a function by adding ``_vN+1`` (before the code that calls it is
deployed) and drop ``_vN`` in a later release. Either is an explicit update of the
snapshot: ``make sql-contract``.
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path
from typing import Any

import psycopg

ROOT = Path(__file__).resolve().parents[1]
SNAPSHOT = ROOT / "supabase" / "sql_contract.txt"
HEADER = """\
# The SQL API contract: every versioned tether function, as `tether migrate` leaves it.
# A released tether_*_vN never changes. To change one, add tether_*_vN+1 in a new
# migration (deployed before the code that calls it) and drop the _vN a release later.
# Both are an explicit update of this file: `make sql-contract`. Never edit it by hand.
"""

QUERY = """
select p.proname || '(' || pg_catalog.pg_get_function_identity_arguments(p.oid) || ') -> '
       || pg_catalog.pg_get_function_result(p.oid)
from pg_catalog.pg_proc p
join pg_catalog.pg_namespace n on n.oid = p.pronamespace
where n.nspname = 'public' and p.proname ~ '^tether_.*_v[0-9]+$'
  and p.proname <> 'tether_uuid_v7'  -- a helper named for the UUID layout, not a version
order by 1
"""


def functions(conn: psycopg.Connection[Any]) -> list[str]:
    return [str(row[0]) for row in conn.execute(QUERY).fetchall()]


def render(lines: list[str]) -> str:
    return HEADER + "".join(f"{line}\n" for line in lines)


def committed() -> list[str]:
    return [
        line
        for line in SNAPSHOT.read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]


def main() -> int:
    """Migrate a scratch database on the embedded server and write the snapshot."""
    from tether import migrate  # noqa: PLC0415
    from tether.local import embedded  # noqa: PLC0415

    with tempfile.TemporaryDirectory(dir=ROOT / ".tether") as scratch:
        server = embedded.start(Path(scratch) / "pgdata")
        try:
            migrate.migrate(server.url)
            with psycopg.connect(server.url) as conn:
                lines = functions(conn)
        finally:
            server.stop()
    SNAPSHOT.write_text(render(lines))
    sys.stdout.write(f"wrote {SNAPSHOT.relative_to(ROOT)}: {len(lines)} functions\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
