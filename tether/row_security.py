"""Row level security that judges tether's own functions, said in one place.

tether's functions are security definer: they run as the role that applied the
migrations. A table of tether's that forces row level security on its owner judges
them by its policies: unless the team gave that role permissive policies of its own,
for each command the functions run there, and no restrictive one applies to it (a row
must pass every restrictive policy too), every session opened is refused (SQLSTATE
42501), the sweep and the operators' reads see no rows. One rule judges it, the query
of ``tether_row_security_problems_v2`` (a superuser or a role with BYPASSRLS is never
judged, nor a table whose policies let that role in): ``tether migrate`` and
``/health`` call the function, as the functions' owner; ``tether adopt --check``, before
it exists, asks its query as shipped (``released_rule``), as the role that will own
the functions. All three say it in these words.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from tether.errors import DatabaseError, MigrationError

if TYPE_CHECKING:
    from tether.store import SessionStore


@dataclass(frozen=True)
class Judged:
    """A table of tether's whose row level security judges tether's functions."""

    table: str
    """Schema-qualified and quoted as SQL needs it."""
    forced: bool
    """The table forces row level security on its owner (else its owner is another role)."""


def forced_on_owner(table: str) -> str:
    """What a table that forces row level security does to tether, and what to do."""
    return (
        f"{table} forces row level security on its owner, whose rights tether's functions"
        " run with, and no permissive policy of its own lets that role in for each command"
        " they run there, or a restrictive one applies to that role: the sessions they open"
        " and end would be refused by the table's"
        " policies, and the sweep would read none. Stop forcing it first: alter table"
        f" {table} no force row level security"
    )


def describe(judged: Judged) -> str:
    """The problem in an operator's words; it names the table, never a role."""
    if judged.forced:
        return forced_on_owner(judged.table)
    return (
        f"row level security on {judged.table} judges tether's functions, whose role"
        " neither owns the table nor bypasses row level security: the sessions they open"
        " and end are refused by the table's policies, and the sweep reads none. Give the"
        " table to the role that applied tether's migrations"
        f" (alter table {judged.table} owner to ...)"
    )


def released_rule() -> str:
    """The query of ``tether_row_security_problems_v2`` as its shipped migration has it
    (a released function never changes). Asked before the function exists, as the role
    that will own it, it answers as the function will: it runs with its owner's rights,
    and judges for that role (row_security_active, pg_has_role of current_user)."""
    from tether import migrate  # noqa: PLC0415
    from tether.store import ROW_SECURITY_PROBLEMS  # noqa: PLC0415

    creates = f"create function public.{ROW_SECURITY_PROBLEMS}()"
    for migration in migrate.shipped():
        _, found, definition = migration.sql.partition(creates)
        if found:
            return definition.split("$$", 2)[1].strip().removesuffix(";")
    raise MigrationError(f"no shipped migration creates {ROW_SECURITY_PROBLEMS}")


def judged_tables(rows: list[dict[str, Any]]) -> list[Judged]:
    """The rows of ``tether_row_security_problems_v2``, whichever driver read them."""
    return [Judged(table=str(row["table_name"]), forced=bool(row["forced"])) for row in rows]


def problems(store: SessionStore) -> list[str]:
    """What row level security refuses tether's functions, in an operator's words."""
    return [describe(judged) for judged in store.row_security_problems()]


def problems_at(url: str) -> list[str]:
    """``problems`` at this database: asked once its migrations are applied (``tether
    migrate``, ``tether deploy --migrate``)."""
    from tether.drivers.postgres import PostgresStore  # noqa: PLC0415

    store = PostgresStore(url)
    try:
        return problems(store)
    finally:
        store.close()


def problems_if_askable(url: str) -> list[str] | None:
    """``problems_at``, or None where the question cannot be asked: its function not
    migrated yet, or this role not allowed to call it (only the functions' owner and
    service_role are; a read-only role may still read the ledger)."""
    try:
        return problems_at(url)
    except DatabaseError:
        return None
