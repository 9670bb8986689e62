"""``tether adopt --check``: what adopting the table would find and do, read-only.

Everything here runs in one READ ONLY transaction: it creates, changes and locks
nothing beyond what a SELECT does."""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field, replace
from datetime import datetime
from typing import TYPE_CHECKING, Any

from psycopg import sql

from tether import migrate, row_security
from tether.adopt import plan, rules
from tether.adopt.catalog import (
    ADDED_BY_LATER_MIGRATIONS,
    ADDED_COLUMNS,
    CONVERTED_DURATION,
    DURATION_TYPES,
    FUNCTION_SOURCE,
    SYNC_TRIGGER,
    TETHER_CHECKS,
    TIMESTAMPTZ,
    TRANSITIONAL_CONSTRAINTS,
    Dependent,
    Shape,
    column_privileges,
    connect,
    dependents,
    index_statements,
    quoted,
    read_shape,
    trusted,
    views_on_table,
)
from tether.adopt.dependents import (
    RECREATED_KINDS,
    generated_when_refusals,
    owner_refusals,
    refusal,
    view_refusals,
)
from tether.adopt.plan import BATCH_SIZE
from tether.errors import AdoptionError, MigrationError

if TYPE_CHECKING:
    import psycopg

EXAMPLES = 5
ORPHAN_AGE = "2 hours"
"""API Gateway's maximum connection duration: an active row older than this is an
orphan for tether (the origin's own alert query used the same bound)."""

TETHER_INDEXES = tuple(name for name, _ in index_statements())

TETHER_OBJECTS = frozenset(
    {
        "conversation_sessions_pkey",
        *TETHER_INDEXES,
        "public.conversation_session_daily_stats",
        "public.conversation_session_orphans",
        "conversation_session_daily_stats",
        "conversation_session_orphans",
        "Users can read their own sessions",
        "conversation_sessions_forget_announcement",
        "conversation_sessions_queue_direct_end",
        "conversation_sessions_ends_are_final",
        "conversation_sessions_end_after_start_check",
        "conversation_sessions_end_has_reason_check",
        "conversation_sessions_announced_after_end_check",
        "conversation_sessions_connection_id_check",
        "conversation_sessions_text_sizes_check",
        "conversation_sessions_start_readable_check",
        "conversation_sessions_moments_readable_check",
        "conversation_sessions_start_date_stats",
        "conversation_sessions_start_utc_day_stats",
        "zz_tether_adoption_sync",
    }
)
"""tether's own objects on the table (recreated as tether made them)."""

# States of the table, as --check reports them.
ABSENT = "absent"
TETHERS_OWN = "tether's own"
NOT_ADOPTED = "not adopted"
IN_PROGRESS = "adoption in progress"
TRANSITIONAL = "adopted, transitional"
FINISHED = "adopted and finished"


@dataclass(frozen=True)
class Kind:
    kind: str
    rows: int
    examples: list[str]
    rule: str


@dataclass
class Report:
    state: str
    table: str = "public.conversation_sessions"
    refusals: list[str] = field(default_factory=list)
    """What stops --apply, each with what to do."""
    warnings: list[str] = field(default_factory=list)
    finish_refusals: list[str] = field(default_factory=list)
    """What would stop --finish (it can be dealt with during the transition)."""
    rows: int = 0
    bytes: int = 0
    marked_active: int = 0
    """Rows with is_active = true, as the table says now."""
    active: int = 0
    """Rows active as tether reads them."""
    live: int = 0
    """Active and started less than 2 hours ago."""
    orphans: dict[str, int] = field(default_factory=dict)
    oldest_active_start: datetime | None = None
    ended_unrecorded: int = 0
    """Of the rows still to read (``unread``), like the three below: those the backfill
    has read are written as tether reads them already."""
    ended_unknown: int = 0
    corrected: int = 0
    """Rows whose recorded values change (their originals kept in tether.adoption_corrections)."""
    unread: int = 0
    """Rows the backfill has still to read (all of them before --apply)."""
    kinds: list[Kind] = field(default_factory=list)
    columns_added: list[str] = field(default_factory=list)
    columns_converted: list[str] = field(default_factory=list)
    columns_kept: list[str] = field(default_factory=list)
    dependents: list[dict[str, Any]] = field(default_factory=list)
    views: list[str] = field(default_factory=list)
    policies: list[str] = field(default_factory=list)
    triggers: list[str] = field(default_factory=list)
    elsewhere: list[str] = field(default_factory=list)
    """Tables named conversation_sessions in other schemas (not adopted)."""
    similar: list[dict[str, str]] = field(default_factory=list)
    """Tables named like it, public having none: each its name and the rename that
    would make it public.conversation_sessions."""
    steps: list[plan.Step] = field(default_factory=list)
    finish: plan.Step | None = None
    scan_seconds: float = 0.0
    counted: bool = False
    """The rows were read by the rules; while something is refused they are not, and
    the counts above mean nothing (the JSON gives them as null)."""

    def as_dict(self) -> dict[str, Any]:
        payload = asdict(self)
        if not self.counted:
            payload.update(dict.fromkeys(_COUNTS))
        payload["steps"] = [step.as_dict() for step in self.steps]
        payload["finish"] = self.finish.as_dict() if self.finish else None
        return payload


# What only a read of the rows by the rules can say.
_COUNTS = (
    "rows",
    "marked_active",
    "active",
    "live",
    "orphans",
    "oldest_active_start",
    "ended_unrecorded",
    "ended_unknown",
    "corrected",
    "unread",
)


SECURITY_REVOKES = frozenset({None, "anon", "authenticated"})
"""The roles sql/security.sql revokes everything on the table from (None: PUBLIC)."""


def state_of(shape: Shape) -> str:
    if not shape.exists:
        return ABSENT
    table = migrate.table_migration(migrate.shipped())
    if table.version in shape.ledger:
        if shape.ledger[table.version] != migrate.ADOPTED:
            return TETHERS_OWN
        return FINISHED if shape.steps.get(plan.FINISH) else TRANSITIONAL
    # supabase db push applied tether's files, and no tether migrate has recorded them.
    if table.fingerprint in shape.pushed:
        return TETHERS_OWN
    if shape.steps:
        return IN_PROGRESS
    return NOT_ADOPTED


def nothing_to_adopt(
    state: str, elsewhere: list[str], similar: list[dict[str, str]] | None = None
) -> str | None:
    """Why --apply has no table to take over, if it has none."""
    if state == ABSENT:
        # Both, when both are there: either may be the team's.
        found = [found_elsewhere(elsewhere)] if elsewhere else []
        found += [found_similar(similar)] if similar else []
        if found:
            return f"there is no public.conversation_sessions to adopt; {'; also '.join(found)}"
        return (
            "there is no public.conversation_sessions to adopt: `tether migrate` creates"
            " tether's own"
        )
    if state == TETHERS_OWN:
        return (
            "public.conversation_sessions is tether's own (tether's migrations created it,"
            " applied by tether migrate or supabase db push): there is nothing to adopt"
        )
    return None


def similar_tables(shape: Shape) -> list[dict[str, str]]:
    """The tables named like conversation_sessions, each with its rename to it, while
    public has none."""
    found: list[dict[str, str]] = []
    if shape.exists:
        return found
    for schema, name in shape.similar:
        table = f"{quoted(schema)}.{quoted(name)}"
        rename = f"alter table {table} rename to conversation_sessions"
        if schema != "public":
            rename += f"; alter table {quoted(schema)}.conversation_sessions set schema public"
        found.append({"table": table, "rename": rename})
    return found


def found_similar(similar: list[dict[str, str]]) -> str:
    """What to do with a table named like conversation_sessions, public having none."""
    tables = ", ".join(s["table"] for s in similar)
    renames = " or ".join(s["rename"] for s in similar)
    return (
        f"found {tables}, named like it, but tether adopts public.conversation_sessions"
        f" only. To adopt it, rename it first ({renames}), with the old server changed to"
        " write the new name at the same time, then run `tether adopt --check` again."
        " Otherwise `tether migrate` creates a new, empty public.conversation_sessions"
        " beside it"
    )


def found_elsewhere(elsewhere: list[str]) -> str:
    """What to do with a conversation_sessions of another schema, public having none."""
    moves = " or ".join(f"alter table {table} set schema public" for table in elsewhere)
    return (
        f"found {', '.join(elsewhere)}, but tether adopts public.conversation_sessions only."
        f" To adopt it, move it first ({moves}), then run `tether adopt --check` again."
        " Otherwise `tether migrate` creates a new, empty public.conversation_sessions"
        " beside it, and code whose search_path lists its schema before public goes on"
        " using the old one"
    )


def refusals(shape: Shape) -> list[str]:
    """What makes the table impossible to adopt in place as it is, and what to do."""
    found: list[str] = []
    if shape.relkind != "r":
        found.append(
            "public.conversation_sessions is not a plain table"
            f" (relkind {shape.relkind!r}): tether adopt takes over an ordinary table"
        )
    if shape.has_children:
        found.append("public.conversation_sessions has inheritance children: not supported")
    # Adopting drops and replaces columns, which an inherited column cannot be.
    for parent in shape.parents:
        if shape.is_partition:
            found.append(
                f"public.conversation_sessions is a partition of {parent}: tether adopt takes"
                f" over an ordinary table. Detach it first: alter table {parent} detach"
                " partition public.conversation_sessions"
            )
        else:
            found.append(
                f"public.conversation_sessions inherits from {parent}, and adopting replaces"
                " columns it would inherit: make it a table of its own first (its columns"
                " and rows stay): alter table public.conversation_sessions no inherit"
                f" {parent}"
            )
    if shape.rules and shape.relkind != "v":  # a view's rule is the view itself
        drops = "; ".join(
            f"drop rule {rule} on public.conversation_sessions" for rule in shape.rules
        )
        found.append(f"public.conversation_sessions has rules: drop them first: {drops}")
    # Judged as migrate and /health judge it, for the role adopting, who will own
    # tether's functions. A table that role does not own is refused by check_role.
    found += [row_security.describe(judged) for judged in shape.rls_refuses if judged.forced]
    columns = shape.columns
    session_id = columns.get("session_id")
    if session_id is None or session_id.type != "uuid":
        found.append("session_id must exist and be a uuid (tether's key)")
    if shape.primary_key != ("session_id",):
        found.append(
            "the primary key must be (session_id), found"
            f" ({', '.join(shape.primary_key) or 'none'})"
        )
    found += _column_refusals(shape)
    if not shape.steps.get(plan.FINISH):
        found += search_path_problems(shape)
        found += trigger_order_refusals(shape)
    return found


NAME_BYTES = 63
"""Postgres's longest identifier (NAMEDATALEN - 1), in bytes."""


def _name_before_sync(name: str, taken: set[str]) -> str:
    """A new name for a team's trigger that sorts before tether's (any name that starts
    with "team" does), free on the table."""
    number = 1
    while True:
        prefix = "team_" if number == 1 else f"team{number}_"
        candidate = (prefix + name).encode()[:NAME_BYTES].decode(errors="ignore")
        if candidate not in taken:
            return candidate
        number += 1


def trigger_order_refusals(shape: Shape) -> list[str]:
    """The team's BEFORE row triggers that would fire after tether's transition trigger:
    Postgres fires them in name order (byte order), and one after it could write
    is_active, duration_seconds or ended_at out of step with session_end."""
    found: list[str] = []
    for name, trigger in sorted(shape.triggers.items()):
        if (
            name in TETHER_OBJECTS
            or not trigger.before_row_write
            or name.encode() < SYNC_TRIGGER.encode()
        ):
            continue
        renamed = _name_before_sync(name, set(shape.triggers))
        found.append(
            f"trigger {name} is a BEFORE row trigger named after tether's {SYNC_TRIGGER},"
            " and Postgres fires those in name order: it would have the last word on the"
            " row, and could leave is_active, duration_seconds or ended_at out of step with"
            " session_end. Rename it to sort before: alter trigger"
            f" {quoted(name)} on public.conversation_sessions rename to {quoted(renamed)}"
        )
    return found


def search_path_problems(shape: Shape) -> list[str]:
    """The team's triggers that would make tether's own writes fail: a trigger's function
    runs with the search_path of the statement that fired it, and tether's functions
    run theirs with pg_catalog, pg_temp only (so that no object of another schema can
    stand in for one they use). A function that sets its own is left its own."""
    return [
        f"trigger {trigger.name} runs {trigger.function}, which has no search_path of its"
        " own: fired by tether's functions (each $connect and $disconnect, the sweep,"
        " close-orphans), it runs with theirs (pg_catalog, pg_temp), where a table it names"
        " without its schema does not exist, and the write fails. Give it its own:"
        f" alter function {trigger.function} set search_path = {trigger.schema} (or the"
        " schemas it names tables from)"
        for name, trigger in sorted(shape.triggers.items())
        if name not in TETHER_OBJECTS and not trigger.own_search_path
    ]


_ROLE = """
select current_user,
       has_table_privilege(%(oid)s::oid, 'select'),
       pg_has_role((select relowner from pg_catalog.pg_class where oid = %(oid)s), 'usage'),
       case when to_regnamespace('tether') is null
            then has_database_privilege(current_database(), 'create')
            else has_schema_privilege(to_regnamespace('tether'), 'create') end,
       has_schema_privilege('public', 'create'),
       pg_catalog.pg_is_in_recovery(),
       current_setting('default_transaction_read_only')::boolean
"""


@dataclass(frozen=True)
class RoleCheck:
    readable: bool
    refusals: list[str]


def check_role(conn: psycopg.Connection[tuple[Any, ...]], shape: Shape) -> RoleCheck:
    """What the connecting role lacks: reading the table (for --check), and what --apply
    and --finish do, altering the table (its owner's right) and creating tether's schema.
    Refused before anything is read or changed, rather than a step failing halfway."""
    row = conn.execute(_ROLE, {"oid": shape.oid}).fetchone()
    if row is None:
        return RoleCheck(True, [])
    role, can_read, owns, can_create, can_create_public, standby, read_only = row
    run_as = "connect as the table's owner (on Supabase: the postgres role)"
    if not can_read:
        return RoleCheck(
            False, [f"the role {role} cannot read public.conversation_sessions: {run_as}"]
        )
    found = []
    if not owns:
        found.append(
            f"the role {role} does not own public.conversation_sessions, and adopting alters"
            f" it: {run_as}"
        )
    if not can_create:
        found.append(
            f"the role {role} cannot create tether's schema in this database (no CREATE on"
            f" it): {run_as}"
        )
    if not can_create_public:
        found.append(
            f"the role {role} cannot create in schema public (no CREATE on it), where tether's"
            f" functions and outbox go: {run_as}"
        )
    # Else the first step's first write fails, and running it again fails the same.
    if standby:
        found.append(
            "this server is a standby (a read replica): nothing can be written to it."
            " Connect to the primary (on Supabase, the project's database, not a replica)"
        )
    elif read_only:
        found.append(
            "this connection's transactions are read-only (default_transaction_read_only is"
            f" on, for the role {role}, the database or the URL), and adopting writes: turn"
            " it off for this run: drop it from the URL's options, or, where the role or"
            " the database sets it, run with PGOPTIONS='-c default_transaction_read_only=off'"
        )
    return RoleCheck(True, found)


def ledger_refusals(conn: psycopg.Connection[tuple[Any, ...]]) -> list[str]:
    """What tether's and Supabase's migration ledgers make --apply refuse: a copy of
    one of tether's files that ``supabase db push`` applied with other content, or one
    of them edited after it was applied. Reads only."""
    try:
        migrate.plan(conn, migrate.shipped(), adopting=True)
    except MigrationError as exc:
        return [str(exc)]
    return []


TEXT_TYPES = frozenset({"text", "character varying", "character"})
"""user_id types whose uuid values convert with a cast (varchar(n) read without its n)."""


def _not_timestamptz(shape: Shape, name: str, type_: str) -> str:
    """A moment column of another type, refused with the statement that converts it."""
    return (
        f"{name} is {type_}; tether needs timestamptz. Convert it first, e.g. alter table"
        f" public.conversation_sessions alter column {name} type timestamptz using {name}"
        " at time zone 'UTC' (the zone its values were written in; this rewrites the table)"
        + _typed_by(shape, name)
    )


def _typed_by(shape: Shape, name: str) -> str:
    """What stops the statement converting ``name``, said with it."""
    pinning = shape.typed_by.get(name)
    if not pinning:
        return ""
    said = (
        f". Postgres changes no column's type under what is built on it: first drop"
        f" {', '.join(pinning)} (and what is built on those), then create them again"
    )
    if any(p.startswith("index ") for p in pinning):
        # Created again as it was, date(session_start) of a timestamptz is refused.
        said += (
            f", an index with its expression written for the new type"
            f" (date({name} at time zone 'UTC') where it read date({name}))"
            if name != "user_id"
            else ", an index with its expression written for a uuid"
        )
    return said


def _column_refusals(shape: Shape) -> list[str]:
    found: list[str] = []
    columns = shape.columns
    start = columns.get("session_start")
    if start is None:
        found.append("session_start must exist (timestamptz)")
    elif start.type != TIMESTAMPTZ:
        found.append(_not_timestamptz(shape, "session_start", start.type))
    ended_at = columns.get("ended_at")
    if (
        ended_at is not None
        and ended_at.type == "timestamp without time zone"
        and not shape.steps.get("columns")
    ):
        # Read as an application column, its ends would be lost to the rules (an ended
        # row with only ended_at would end at its start, end_unknown) and left out of step.
        found.append(_not_timestamptz(shape, "ended_at", ended_at.type))
    expected = {
        "session_end": {TIMESTAMPTZ},
        "user_id": {"uuid"},
        "is_active": {"boolean"},
        "duration_seconds": DURATION_TYPES,
    }
    for name, types in expected.items():
        column = columns.get(name)
        if column is None or name in shape.added:
            continue
        if name == "session_end" and column.type == "timestamp without time zone":
            found.append(_not_timestamptz(shape, name, column.type))
        elif name == "user_id" and column.type.split("(")[0] in TEXT_TYPES:
            found.append(
                f"user_id is {column.type}; tether needs uuid (Supabase Auth's user id, which"
                " its policy compares with auth.uid()). If the values are uuids, convert it"
                " first, e.g. alter table public.conversation_sessions alter column user_id"
                " type uuid using user_id::uuid (a value that is no uuid makes it fail: set"
                " those to null, keeping them in a column of your own if you need them)"
                + _typed_by(shape, name)
            )
        elif column.type not in types:
            found.append(
                f"{name} is {column.type}; tether needs {' or '.join(sorted(types))}:"
                " convert it first"
            )
        elif column.generated is not None and not shape.steps.get(plan.FINISH):
            found.append(
                f"{name} is already a generated column, which the old writers' shape has not:"
                " make it a plain column first, its values kept (--finish makes it generated"
                f" again), with alter table public.conversation_sessions alter column {name}"
                " drop expression"
            )
    if not shape.steps.get("columns"):
        taken = [
            name
            for name in (
                *(n for n, _ in ADDED_COLUMNS),
                *ADDED_BY_LATER_MIGRATIONS,
                CONVERTED_DURATION,
            )
            if name in columns
        ]
        if taken:
            renames = "; ".join(
                f"alter table public.conversation_sessions rename column {quoted(name)}"
                f" to {quoted(_name_aside(name, set(columns)))}"
                for name in taken
            )
            found.append(
                f"the table already has column(s) tether adds: {', '.join(taken)}. Rename"
                f" them aside: {renames}; and have the old server write the new name at"
                " the same time: its writes naming the old one fail until --apply adds"
                " tether's, and then write into tether's. Then run --check again"
            )
    return found


def _name_aside(name: str, taken: set[str]) -> str:
    """A free name for the team's own column that tether's takes the place of."""
    number = 1
    while True:
        prefix = "app_" if number == 1 else f"app{number}_"
        aside = prefix + name
        if aside not in taken:
            return aside
        number += 1


def conversion_refusals(shape: Shape, found: list[Dependent]) -> list[str]:
    """What stops --apply converting duration_seconds to numeric: the objects built on
    it that adoption cannot drop and recreate around the conversion."""
    converting = plan.duration_conversion(shape)
    if not converting:
        return []
    return [
        f"{dependent.kind} {dependent.name} is built on duration_seconds, which --apply"
        f" converts from {converting} to numeric: drop it, adopt, then create it again"
        for dependent in found
        if "duration_seconds" in dependent.columns
        and dependent.kind != FUNCTION_SOURCE
        and (dependent.kind == "index" or dependent.kind not in RECREATED_KINDS)
        and dependent.name not in TETHER_OBJECTS
    ]


def duration_owner_refusals(conn: psycopg.Connection[tuple[Any, ...]], shape: Shape) -> list[str]:
    """The views --apply's conversion of duration_seconds (a step still to run) would
    recreate whose owner the role connected cannot give them back to."""
    if not plan.duration_conversion(shape) or shape.steps.get("duration"):
        return []
    return owner_refusals(conn, shape.oid, ["duration_seconds"], "--apply")


def duration_view_refusals(conn: psycopg.Connection[tuple[Any, ...]], shape: Shape) -> list[str]:
    """What stands on the views --apply's conversion of duration_seconds (a step still to
    run) would recreate, and would stop it there."""
    if not plan.duration_conversion(shape) or shape.steps.get("duration"):
        return []
    return view_refusals(conn, shape.oid, ["duration_seconds"], "--apply")


def _as_backfilled(shape: Shape) -> sql.Composed:
    """The table's rows as the backfill writes them (its start, end, is_active,
    duration and ended_at by the adoption's rules; every other column as it is), under
    the table's own column names, for a check's expression to read."""
    written = {
        "session_start": sql.SQL("b.new_start"),
        "session_end": sql.SQL("b.new_end"),
        "is_active": sql.SQL("(b.new_end is null)"),
        "duration_seconds": sql.SQL("b.new_duration"),
    }
    if shape.ended_at_managed:
        written["ended_at"] = sql.SQL("b.new_end")
    columns = sql.SQL(", ").join(
        sql.SQL("{} as {}").format(
            sql.SQL("({})::{}").format(written[name], trusted(shape.columns[name].type))
            if name in written
            else sql.SQL("s.{}").format(sql.Identifier(name)),
            sql.Identifier(name),
        )
        for name in shape.columns
    )
    return sql.SQL(
        "select {} from public.conversation_sessions s"
        " cross join lateral ({}) o cross join lateral ({}) b"
    ).format(columns, rules.row_input(shape), rules.belief())


def broken_check_refusals(conn: psycopg.Connection[tuple[Any, ...]], shape: Shape) -> list[str]:
    """The team's checks that rows of the history break as the backfill writes them
    (their ends and durations read by the adoption's rules): the backfill writes a new
    version of every row, Postgres checks each, so it would stop at the first such row,
    at every run. A check NOT VALID is broken by rows as they are stored too."""
    if shape.steps.get("backfill"):
        return []
    refusals: list[str] = []
    for name, expression, validated in conn.execute(
        "select conname, pg_catalog.pg_get_expr(conbin, conrelid), convalidated"
        " from pg_catalog.pg_constraint"
        " where conrelid = %s and contype = 'c' and conname <> all (%s) order by conname",
        (shape.oid, [*TETHER_CHECKS, *TRANSITIONAL_CONSTRAINTS]),
    ).fetchall():
        # A check passes where its expression is null, as Postgres reads it.
        row = conn.execute(
            sql.SQL(
                "select count(*) from ({}) as conversation_sessions where not coalesce(({}), true)"
            ).format(_as_backfilled(shape), trusted(str(expression)))
        ).fetchone()
        broken = int(row[0]) if row else 0
        if broken:
            label = "" if validated else " (NOT VALID)"
            refusals.append(
                f"constraint {quoted(str(name))}{label} is broken by {broken}"
                f" {'row' if broken == 1 else 'rows'} of the history as the backfill writes"
                " them (their ends and durations read by the rules above), which Postgres"
                " checks against it: drop it (alter table public.conversation_sessions drop"
                f" constraint {quoted(str(name))}) and add it again after --apply (NOT VALID,"
                " or once the rows hold it)"
            )
    return refusals


# The types whose values hold rows of the table, as Postgres follows them before a
# rewrite (find_composite_type_dependencies): the row type and its array, then domains,
# arrays and ranges over a type held (a range over the row type: rows compare column by
# column) and a range's multirange, and the row types of composite types, views and
# foreign tables with a column of one. Columns of tables and materialized views store
# them.
_HELD_ROWS = """
with recursive held (typ) as (
  select t.reltype from pg_catalog.pg_class t where t.oid = %(oid)s
  union
  select next.typ
  from held h
  cross join lateral (
    select ty.oid as typ from pg_catalog.pg_type ty
    where (ty.typtype = 'd' and ty.typbasetype = h.typ)
       or (ty.typelem = h.typ and ty.typcategory = 'A')
    union
    select r.rngtypid from pg_catalog.pg_range r where r.rngsubtype = h.typ
    union
    select r.rngmultitypid from pg_catalog.pg_range r where r.rngtypid = h.typ
    union
    select c.reltype from pg_catalog.pg_attribute a
    join pg_catalog.pg_class c on c.oid = a.attrelid and c.relkind in ('c', 'v', 'f')
    where a.atttypid = h.typ and a.attnum > 0 and not a.attisdropped
  ) next
)
select distinct c.relkind::text,
       quote_ident(n.nspname) || '.' || quote_ident(c.relname), a.attname,
       a.atttypid <> (select reltype from pg_catalog.pg_class where oid = %(oid)s)
         and a.atttypid <> (select ty.typarray from pg_catalog.pg_class t
                            join pg_catalog.pg_type ty on ty.oid = t.reltype
                            where t.oid = %(oid)s)
from held h
join pg_catalog.pg_attribute a on a.atttypid = h.typ and a.attnum > 0 and not a.attisdropped
join pg_catalog.pg_class c on c.oid = a.attrelid and c.relkind in ('r', 'p', 'm')
join pg_catalog.pg_namespace n on n.oid = c.relnamespace
where c.oid <> %(oid)s
order by 2, 3
"""


def row_type_refusals(
    conn: psycopg.Connection[tuple[Any, ...]], shape: Shape, command: str
) -> list[str]:
    """Columns of other tables holding rows of the table (an audit table's ``old_row
    conversation_sessions``), directly or inside a type of their own (a composite type,
    a view's row type, a domain, an array, a range or multirange): Postgres refuses
    --finish's rewrite while one exists, and a column --apply replaces would leave the
    rows they hold without its values."""
    found = conn.execute(_HELD_ROWS, {"oid": shape.oid}).fetchall()
    if command == "--finish":
        why = "Postgres rewrites no table, as --finish does, while a column holds its rows"
    else:
        why = (
            "those rows would lose their duration_seconds when --apply converts it"
            " (Postgres reads no value of a column dropped since)"
        )
    refusals = []
    for kind, relation, column, inside in found:
        held = f"column {quoted(str(column))} of {relation} holds rows of"
        held += " public.conversation_sessions" + (" (inside its type)" if inside else "")
        if kind == "m":
            refusals.append(
                f"{held.replace('column', 'materialized view column', 1)}: {why}. Drop the"
                f" materialized view {relation}, and create it again afterwards"
            )
            continue
        refusals.append(
            f"{held}: {why}. Keep them as JSON first: alter table {relation} alter column"
            f" {quoted(str(column))} type jsonb using to_jsonb({quoted(str(column))})"
        )
    return refusals


def duration_row_type_refusals(
    conn: psycopg.Connection[tuple[Any, ...]], shape: Shape
) -> list[str]:
    """The same, while --apply's conversion of duration_seconds is still to run."""
    if not plan.duration_conversion(shape) or shape.steps.get("duration"):
        return []
    return row_type_refusals(conn, shape, "--apply")


def _columns_report(shape: Shape) -> tuple[list[str], list[str], list[str]]:
    added = [
        f"{name} {type_}"
        for name, type_ in (
            ("user_id", "uuid"),
            ("session_end", "timestamptz"),
            ("is_active", "boolean"),
            ("duration_seconds", "numeric"),
            *ADDED_COLUMNS,
        )
        if name not in shape.columns or name in shape.added
    ]
    added += [f"{name} (by a later migration)" for name in ADDED_BY_LATER_MIGRATIONS]
    converted: list[str] = []
    converting = plan.duration_conversion(shape)
    if converting:
        converted.append(
            f"duration_seconds: {converting} -> numeric (at --apply), then generated from"
            " session_end - session_start (at --finish)"
        )
    elif not shape.steps.get(plan.FINISH):
        converted.append("duration_seconds: generated from session_end - session_start at --finish")
    if not shape.steps.get(plan.FINISH):
        converted.append(
            "is_active: kept in step with session_end by a trigger, generated as"
            " (session_end is null) at --finish"
        )
        if shape.ended_at_managed:
            converted.append(
                "ended_at: kept equal to session_end by the trigger, generated as session_end"
                " at --finish"
            )
    session_id = shape.columns.get("session_id")
    if session_id and "tether_uuid_v7" not in (session_id.default or ""):
        when = "at --finish" if session_id.default else "at --apply"
        converted.append(
            f"session_id: default {session_id.default or 'none'} -> public.tether_uuid_v7()"
            f" (time-ordered), {when}"
        )
    for name in ("session_start", "connection_id", "last_seen_at"):
        column = shape.columns.get(name)
        if column is None or not column.not_null:
            converted.append(f"{name}: NOT NULL")
    kept = [f"{c.name} {c.type}" for c in shape.application_columns]
    return added, converted, kept


# PUBLIC is every role: one that reads through it holds no grant of its own to be named
# by, so the statements name the role for the team to fill in.
_THROUGH_PUBLIC = (
    ". A role that reads the table only through PUBLIC's grant (a dashboard, a report, a"
    " monitoring login) holds no grant of its own, and is refused once --apply has run."
    " Before --apply, grant each such role its own, with a policy to read by: grant select"
    ' on public.conversation_sessions to <role>; create policy "<role> reads sessions"'
    " on public.conversation_sessions for select to <role> using (true)"
)


def _security_warnings(shape: Shape) -> list[str]:
    warnings: list[str] = []
    if shape.steps.get("security"):
        return warnings
    if shape.public_grants:
        granted = "; ".join(
            f"{role}: {', '.join(sorted(privileges))}"
            for role, privileges in sorted(shape.public_grants.items())
        )
        warnings.append(
            f"--apply revokes what the public API's roles hold on the table ({granted}),"
            " enables row level security and lets signed-in users read only their own"
            " rows. An old server writing with the anon key or a user's token would be"
            " refused from then on: it must use the service role (or the table owner)"
            + (_THROUGH_PUBLIC if "SELECT" in shape.public_grants.get("PUBLIC", ()) else "")
        )
    elif not shape.rls_enabled:
        warnings.append("--apply enables row level security on the table")
    if shape.writers_under_rls and not shape.rls_enabled:
        warnings.append(
            f"role(s) {', '.join(shape.writers_under_rls)} may write the table (granted it,"
            " through a role they inherit, or pg_write_all_data) but do not bypass row"
            " level security themselves, and no policy lets them write and read the rows"
            " they write: once --apply enables it, their inserts are refused and their"
            " updates and deletes change no row. If the old server (or a clean-up job)"
            " writes as one of them, give it BYPASSRLS, or have it use the service role or"
            " the table's owner, before --apply"
        )
    if shape.readers_under_rls and not shape.rls_enabled:
        readers = shape.readers_under_rls
        example = readers[0]
        warnings.append(
            f"role(s) {', '.join(readers)} may read the table (granted it, through a role"
            " they inherit, or pg_read_all_data) but do not bypass row level security"
            " themselves, and no policy lets them read: once --apply enables it, they read"
            " no rows, and a dashboard or alert querying as one of them counts none (the"
            " orphans included). Before --apply, give each a policy, e.g. create policy"
            f" {quoted(example + ' reads sessions')} on public.conversation_sessions for"
            f" select to {quoted(example)} using (true)"
        )
    return warnings


def _restrictive_warning(shape: Shape) -> str:
    # Their expressions are the team's and cannot be judged here: say what they do, not
    # which rows they keep out, nor that a role loses its rows.
    named = ", ".join(f"{name} ({said})" for name, said in shape.restrictive_policies.items())
    warning = (
        f"the table's restrictive policies are kept as they are: {named}. A row must pass"
        " each one that applies to a role and command as well as a permissive policy,"
        " tether's (signed-in users read their own rows) included where one applies to"
        " authenticated or PUBLIC"
    )
    if not shape.rls_enabled:
        warning += (
            "; they are not in force now, and are once --apply enables row level security:"
            " a role they apply to then reads and writes only the rows that pass them"
        )
    return warning


BACKFILL_SETS = frozenset(
    {
        "session_start",
        "session_end",
        "end_reason",
        "is_active",
        "duration_seconds",
        CONVERTED_DURATION,
        "ended_at",
        "connection_id",
        "last_seen_at",
    }
)
"""The columns the backfill's update sets (apply's _BACKFILL): an UPDATE OF trigger on
none of them does not fire for it."""


def _held_off(shape: Shape, names: list[str]) -> str:
    """The statements that disable the triggers for --apply, and enable them after."""
    return (
        "; ".join(
            f"alter table public.conversation_sessions disable trigger {quoted(name)}"
            for name in names
        )
        + "; and after --apply, enable them again as they were: "
        + "; ".join(
            # enable trigger alone would leave an ALWAYS one silent on a replica.
            f"alter table public.conversation_sessions enable"
            f"{' always' if shape.triggers[name].always else ''} trigger {quoted(name)}"
            for name in names
        )
    )


def _trigger_warnings(shape: Shape, rows: int, batch_size: int) -> list[str]:
    warnings: list[str] = []
    if not shape.steps.get("backfill"):
        updating = [
            name
            for name, trigger in sorted(shape.triggers.items())
            if name not in TETHER_OBJECTS
            and trigger.on_update
            and trigger.enabled
            and (not trigger.update_of or not BACKFILL_SETS.isdisjoint(trigger.update_of))
        ]
        per_row = [name for name in updating if shape.triggers[name].for_each_row]
        per_statement = [name for name in updating if not shape.triggers[name].for_each_row]
        if per_row:
            warnings.append(
                f"trigger(s) {', '.join(per_row)} fire for each row the backfill updates"
                " (every row, once): one that stamps a column (an updated_at), writes an"
                " audit trail or calls a webhook will do so for the whole history. To spare"
                " the history, disable them for --apply and enable them after, knowing the"
                " old server's writes skip them meanwhile too: " + _held_off(shape, per_row)
            )
        if per_statement:
            # The backfill updates the rows batch by batch, one statement each (apply's
            # step_backfill); migration 20261129006100 runs one more, on the whole table.
            batches = -(-rows // batch_size)
            warnings.append(
                f"statement trigger(s) {', '.join(per_statement)} (FOR EACH STATEMENT) fire"
                " once per UPDATE statement, not once per row: the backfill runs one per"
                f" batch of up to {batch_size} rows, about {batches} for this table's {rows}"
                " rows, and one of tether's migrations one more. One that does costly work"
                " each time (refreshes a summary, sends a notice) will do so that many times;"
                " one reading its transition table sees a batch's rows. If that is too many,"
                " disable them for --apply and enable them after, knowing the old server's"
                " writes skip them meanwhile too: " + _held_off(shape, per_statement)
            )
    if shape.steps.get(plan.FINISH):
        # Nothing left to apply: said all the same, since tether's writes fail.
        warnings += search_path_problems(shape)
    return warnings


PREPARED_STATEMENTS = (
    "--apply adds and replaces columns, so what `select *` (or `returning *`) of the table"
    " returns changes: a client whose driver prepared such a statement (asyncpg, JDBC,"
    " psycopg 3 after five runs of one) gets `cached plan must not change result type` for"
    " it from then on, until it reconnects, and so does one that names duration_seconds"
    " when --apply converts it. Restart the old server (or recycle its connection pool)"
    " once --apply is done, and any reader of `select *` once --finish is (it replaces"
    " columns again); writes that name other columns, and reads through Supabase's REST"
    " API (supabase-py), which return JSON, are not affected"
)


def _warnings(
    shape: Shape, found: list[Dependent], report: Report, batch_size: int
) -> tuple[list[str], list[str]]:
    warnings = _security_warnings(shape)
    finish_refusals: list[str] = []
    if shape.policies:
        foreign = [
            p
            for p in shape.policies
            if p not in TETHER_OBJECTS and p not in shape.restrictive_policies
        ]
        if foreign:
            warnings.append(
                f"the table's own policies are kept as they are: {', '.join(foreign)}"
                " (permissive policies add to tether's)"
            )
        if shape.restrictive_policies:
            warnings.append(_restrictive_warning(shape))
    for dependent in found:
        if dependent.kind == FUNCTION_SOURCE:
            warnings.append(
                f"function {dependent.name} mentions {', '.join(dependent.columns)}: once"
                " --finish has run, is_active and duration_seconds cannot be written"
                " (generated); read it before --finish"
            )
        elif dependent.kind not in RECREATED_KINDS:
            finish_refusals.append(refusal(dependent))
    if not (shape.ended_at_managed or shape.ended_at_generated) and "ended_at" in shape.columns:
        warnings.append(
            f"ended_at is {shape.columns['ended_at'].type}, not timestamptz: tether keeps it"
            " as an application column and does not keep it in step with session_end"
        )
    if shape.publications:
        warnings.append(
            f"the table is in publication(s) {', '.join(shape.publications)}: the columns"
            " tether adds are published too, and the backfill's update of every row reaches"
            " their subscribers (Supabase Realtime, replicas) as one change per row"
        )
    warnings += _trigger_warnings(shape, report.rows, batch_size)
    warnings += _uniqueness_warnings(shape)
    if shape.elsewhere:
        warnings.append(
            f"{', '.join(shape.elsewhere)}: another table of that name. tether adopts, reads"
            " and writes public.conversation_sessions only; code whose search_path lists that"
            " schema before public reads and writes the other"
        )
    if shape.referenced_by:
        warnings.append(
            f"foreign keys of other tables point at it ({', '.join(shape.referenced_by)}):"
            " they are kept; no session_id changes"
        )
    if report.state in (NOT_ADOPTED, IN_PROGRESS):
        warnings.append(PREPARED_STATEMENTS)
    if report.live:
        warnings.append(
            f"{report.live} {'session looks' if report.live == 1 else 'sessions look'} live"
            f" (active, started within {ORPHAN_AGE}): the old"
            " server's sessions send no heartbeats, so until it is gone, run tether's sweep"
            " only as the README's cut-over says"
        )
    return warnings, finish_refusals


def _uniqueness_warnings(shape: Shape) -> list[str]:
    """The team's own unique indexes and exclusion constraints, kept as they are: tether
    opens one row per connection, and one they refuse (a user's second connection under
    a unique index on user_id) is a $connect refused, the client's handshake with it."""
    own = [
        # "CREATE UNIQUE INDEX n ON t USING btree (user_id) WHERE is_active": its columns on.
        f"{name} ({definition.split(' USING ', 1)[-1].split(' ', 1)[-1]})"
        for name, (definition, _) in shape.indexes.items()
        if name not in TETHER_OBJECTS
        and name != shape.primary_key_name
        and definition.upper().startswith("CREATE UNIQUE INDEX")
    ]
    own += [
        f"{name} ({definition})"
        for name, (definition, _) in shape.constraints.items()
        if name not in TETHER_OBJECTS and definition.upper().startswith("EXCLUDE")
    ]
    if not own:
        return []
    return [
        f"the table's own uniqueness is kept: {'; '.join(own)}. tether opens a row for every"
        " connection, so each $connect whose row it refuses (a user's second connection,"
        " say) is refused with its handshake; drop it before --apply unless that is meant"
    ]


def _comment_warnings(conn: psycopg.Connection[tuple[Any, ...]], shape: Shape) -> list[str]:
    """The team's comments that tether's own replace, said before --apply does: on the
    table and session_end (sql/security.sql), and on the columns --finish replaces
    (sql/transitional_comments.sql, sql/finish*.sql)."""
    columns = [c for c in ("session_end", *shape.replaced_columns) if c in shape.columns]
    rows = conn.execute(
        "select coalesce(a.attname, 'the table') from pg_catalog.pg_description d"
        " left join pg_catalog.pg_attribute a on a.attrelid = d.objoid"
        "  and a.attnum = d.objsubid and d.objsubid > 0"
        " where d.objoid = %s and d.classoid = 'pg_catalog.pg_class'::regclass"
        "  and (d.objsubid = 0 or a.attname = any (%s))"
        " order by d.objsubid",
        (shape.oid, columns),
    ).fetchall()
    named = [str(r[0]) for r in rows]
    if not named:
        return []
    return [
        f"the comments on {', '.join(named)} are replaced by tether's, which say what tether"
        " keeps there (at --apply; those on is_active, duration_seconds and ended_at again"
        " at --finish): keep a copy of yours if you need them"
    ]


_TOTALS = """
with r as materialized (
  select s.session_id, {normalised} as normalised,
         case when {normalised} then {current_start} else b.new_start end as start_at,
         case when {normalised} then {current_end} else b.new_end end as end_at,
         case when {normalised} then {current_reason} else b.new_reason end as reason,
         case when {normalised} then array[]::text[] else b.kinds end as kinds,
         not {normalised} and b.changed as changed,
         {marked} as marked
  from public.conversation_sessions s
  cross join lateral ({row}) o
  cross join lateral ({belief}) b
)
select
  (select jsonb_build_object(
     'rows', count(*),
     'marked_active', count(*) filter (where r.marked),
     'active', count(*) filter (where r.end_at is null),
     'live', count(*) filter (where r.end_at is null and r.start_at >= now() - {age}),
     'orphans_2h_1d', count(*) filter (where r.end_at is null and r.start_at < now() - {age}
                                         and r.start_at >= now() - interval '1 day'),
     'orphans_1d_7d', count(*) filter (where r.end_at is null
                                         and r.start_at < now() - interval '1 day'
                                         and r.start_at >= now() - interval '7 days'),
     'orphans_over_7d', count(*) filter (where r.end_at is null
                                           and r.start_at < now() - interval '7 days'),
     'oldest_active', min(r.start_at) filter (where r.end_at is null),
     'unrecorded', count(*) filter (where not r.normalised and r.reason = 'unrecorded'),
     'end_unknown', count(*) filter (where not r.normalised and r.reason = 'end_unknown'),
     'corrected', count(*) filter (where r.changed),
     'unread', count(*) filter (where not r.normalised))
   from r),
  (select coalesce(jsonb_agg(jsonb_build_object('kind', k.kind, 'rows', k.n,
                                                'examples', k.examples) order by k.kind),
                   '[]'::jsonb)
   from (select x.kind, count(*) as n,
                (array_agg(x.session_id::text order by x.session_id)
                   filter (where x.rank <= {examples})) as examples
         from (select r.session_id, u.kind,
                      row_number() over (partition by u.kind order by r.session_id) as rank
               from r cross join lateral unnest(r.kinds) as u (kind)) x
         group by x.kind) k)
"""


def _totals(
    conn: psycopg.Connection[tuple[Any, ...]], shape: Shape
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    # Rows the backfill (or the transition's trigger) has read are in step already.
    in_step = "connection_id" in shape.columns and "end_reason" in shape.columns
    normalised = sql.SQL("(s.connection_id is not null)" if in_step else "false")
    marked = (
        sql.SQL("coalesce(s.is_active, false)")
        if "is_active" in shape.columns
        else sql.SQL("false")
    )
    query = sql.SQL(_TOTALS).format(
        normalised=normalised,
        current_start=sql.SQL("s.session_start" if in_step else "null::timestamptz"),
        current_end=sql.SQL("s.session_end" if in_step else "null::timestamptz"),
        current_reason=sql.SQL("s.end_reason::text" if in_step else "null::text"),
        marked=marked,
        row=rules.row_input(shape),
        belief=rules.belief(),
        age=sql.SQL("interval {}").format(sql.Literal(ORPHAN_AGE)),
        examples=sql.Literal(EXAMPLES),
    )
    row = conn.execute(query).fetchone()
    return (row[0], row[1]) if row else ({}, [])


def scan_seconds(conn: psycopg.Connection[tuple[Any, ...]]) -> tuple[int, float]:
    """Rows, and the time of one sequential scan of the table on this server."""
    started = time.perf_counter()
    # The whole row, so that every row's tuple is read from the heap (a count alone may
    # be answered from an index).
    row = conn.execute(
        "select count(*), sum(pg_column_size(s)) from public.conversation_sessions s"
    ).fetchone()
    return (int(row[0]) if row else 0), time.perf_counter() - started


def sizing(conn: psycopg.Connection[tuple[Any, ...]], shape: Shape) -> plan.Sizing:
    rows, seconds = scan_seconds(conn)
    return plan.Sizing(rows, shape.bytes, seconds, len(shape.indexes))


def inspect(url: str, *, batch_size: int = BATCH_SIZE, lock_timeout: float = 1.0) -> Report:
    """The report of ``tether adopt --check``."""
    with connect(url) as conn, conn.transaction():
        conn.execute("set transaction read only")
        return inspect_with(conn, batch_size=batch_size, lock_timeout=lock_timeout)


def _refuse_what_cannot_be_recreated(
    conn: psycopg.Connection[tuple[Any, ...]], shape: Shape, found: list[Dependent], report: Report
) -> None:
    """What --apply (converting duration_seconds) and --finish would recreate and
    cannot: what is built on the column, and views whose owner the role connected
    cannot give them back to."""
    report.refusals += conversion_refusals(shape, found)
    report.refusals += duration_owner_refusals(conn, shape)
    report.refusals += duration_view_refusals(conn, shape)
    report.refusals += duration_row_type_refusals(conn, shape)
    report.refusals += broken_check_refusals(conn, shape)
    if report.state != FINISHED:
        report.finish_refusals += row_type_refusals(conn, shape, "--finish")
        replaced = [c for c in shape.replaced_columns if c in shape.columns]
        report.finish_refusals += owner_refusals(conn, shape.oid, replaced, "--finish")
        report.finish_refusals += view_refusals(conn, shape.oid, replaced, "--finish")
        report.finish_refusals += generated_when_refusals(conn, shape.oid, replaced, SYNC_TRIGGER)


def inspect_with(
    conn: psycopg.Connection[tuple[Any, ...]], *, batch_size: int, lock_timeout: float
) -> Report:
    shape = read_shape(conn)
    report = Report(
        state=state_of(shape), elsewhere=list(shape.elsewhere), similar=similar_tables(shape)
    )
    if report.state in (ABSENT, TETHERS_OWN):
        return report
    report.bytes = shape.bytes
    role = check_role(conn, shape)
    if not role.readable:
        raise AdoptionError(role.refusals[0])
    report.refusals = refusals(shape) + ledger_refusals(conn)
    report.columns_added, report.columns_converted, report.columns_kept = _columns_report(shape)
    report.views = views_on_table(conn, shape.oid)
    report.policies = list(shape.policies)
    report.triggers = [t for t in shape.triggers if t not in TETHER_OBJECTS]
    watched = ["is_active", "duration_seconds", "session_end", "session_start"]
    if shape.ended_at_managed:
        watched.append("ended_at")
    found = [
        d
        for d in dependents(conn, shape.oid, [c for c in watched if c in shape.columns])
        if d.name not in TETHER_OBJECTS
    ]
    found += [
        privilege.dependent()
        for privilege in column_privileges(
            conn, shape.oid, [c for c in shape.replaced_columns if c in shape.columns]
        )
        # --apply's security step takes every privilege of these from the table, as a
        # fresh install has it: theirs are not granted again.
        if shape.steps.get("security") or privilege.grantee not in SECURITY_REVOKES
    ]
    report.dependents = [d.as_dict() for d in found]
    if report.refusals and "session_start" not in shape.columns:
        return report
    measured = sizing(conn, shape)
    report.scan_seconds = measured.scan_seconds
    if not report.refusals:
        totals, kinds = _totals(conn, shape)
        report.counted = True
        report.rows = int(totals["rows"])
        report.marked_active = int(totals["marked_active"])
        report.active = int(totals["active"])
        report.live = int(totals["live"])
        report.orphans = {
            "2h to 1 day": int(totals["orphans_2h_1d"]),
            "1 to 7 days": int(totals["orphans_1d_7d"]),
            "over 7 days": int(totals["orphans_over_7d"]),
        }
        oldest = totals["oldest_active"]
        report.oldest_active_start = datetime.fromisoformat(oldest) if oldest else None
        report.ended_unrecorded = int(totals["unrecorded"])
        report.ended_unknown = int(totals["end_unknown"])
        report.corrected = int(totals["corrected"])
        report.unread = int(totals["unread"])
        report.kinds = [
            Kind(str(k["kind"]), int(k["rows"]), list(k["examples"]), rules.KINDS[str(k["kind"])])
            for k in kinds
        ]
    else:
        report.rows = measured.rows
    finish_affected = [
        d for d in found if set(d.columns) & {"is_active", "duration_seconds", "ended_at"}
    ]
    report.warnings, report.finish_refusals = _warnings(shape, finish_affected, report, batch_size)
    if report.state == NOT_ADOPTED:
        report.warnings += _comment_warnings(conn, shape)
    _refuse_what_cannot_be_recreated(conn, shape, found, report)
    # What the role lacks stops the next step there is: --finish once applied; nothing
    # once finished. The table's numbers above are read all the same.
    if report.state == TRANSITIONAL:
        report.finish_refusals += role.refusals
    elif report.state != FINISHED:
        report.refusals += role.refusals
    report.steps = plan.apply_steps(
        shape, measured, batch_size=batch_size, lock_timeout=lock_timeout
    )
    # --finish rebuilds the indexes --apply adds too.
    missing = sum(1 for name in TETHER_INDEXES if name not in shape.indexes)
    report.finish = plan.finish_step(shape, replace(measured, indexes=measured.indexes + missing))
    return report
