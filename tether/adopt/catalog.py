"""What the catalog says about the table to adopt: its columns, what the team built
on it, what tether already did to it. Reads only."""

from __future__ import annotations

import contextlib
import functools
import re
from dataclasses import dataclass, field
from importlib import resources
from typing import TYPE_CHECKING, Any

from psycopg import sql

from tether import migrate, row_security
from tether.dburl import check, unreachable
from tether.drivers.postgres import read_plainly
from tether.errors import AdoptionError

if TYPE_CHECKING:
    import psycopg

TABLE = "public.conversation_sessions"
LEGACY_PREFIX = "legacy:"
"""Connection ids of rows tether did not open: API Gateway's ids never hold a colon
(``tether.events.CONNECTION_ID_PATTERN``), so no real id can ever collide."""

SYNC_TRIGGER = "zz_tether_adoption_sync"
"""The transition's trigger. Postgres fires a table's BEFORE row triggers in name order
(byte order): it must have the last word on the row, so a team's BEFORE row trigger
named after it is refused (``inspect.trigger_order_refusals``)."""
SYNC_FUNCTION = "tether.adoption_sync_row"
CONVERTED_DURATION = "tether_duration_seconds"
"""The numeric column that replaces a duration_seconds of another type (filled, then
swapped in under its name)."""

TIMESTAMPTZ = "timestamp with time zone"

# Columns of the origin's table tether keeps and manages, with the types it accepts.
# session_start and session_id must exist; the others are added when absent.
DURATION_TYPES = frozenset({"double precision", "real", "numeric", "integer", "bigint", "smallint"})

# Columns that tether's table migration (20261126000200) creates and the origin's
# table lacks: added by the columns step, nullable and without a default (so the
# catalog alone changes), then filled by the backfill.
ADDED_COLUMNS: tuple[tuple[str, str], ...] = (
    ("connection_id", "text"),
    ("last_seen_at", "timestamptz"),
    ("end_reason", "public.tether_end_reason"),
    ("disconnect_status_code", "integer"),
    ("source_ip", "text"),
    ("user_agent", "text"),
    ("api_id", "text"),
    ("stage", "text"),
    ("announced_at", "timestamptz"),
    ("finalize_after", "timestamptz"),
    ("finalized_at", "timestamptz"),
    # A later migration's (20261129000100), added here before the end-reason domain
    # has its check: a column of a domain with a check, added after, makes Postgres
    # rewrite the whole table under a lock that stops its writes.
    ("end_intent_reason", "public.tether_end_reason"),
    ("end_intent_at", "timestamptz"),
    ("gone_seen_at", "timestamptz"),
    ("finalize_token", "uuid"),
)
ADDED_BY_LATER_MIGRATIONS = ("check_after",)
"""Columns a later migration adds to the table (20261126000600): it runs as written
(the catalog alone changes)."""

TETHER_COLUMNS = frozenset(
    {
        "session_id",
        "user_id",
        "session_start",
        "session_end",
        "is_active",
        "duration_seconds",
        *(name for name, _ in ADDED_COLUMNS),
        *ADDED_BY_LATER_MIGRATIONS,
    }
)
"""Every column of a fresh install's table (a test compares this with one)."""

FUNCTION_SOURCE = "function source"
"""A function whose source mentions the table and a column: the catalog does not
track it, nothing breaks it at the database's level, the team should read it."""

TETHER_CHECKS = (
    "conversation_sessions_connection_id_check",
    "conversation_sessions_end_after_start_check",
    "conversation_sessions_end_has_reason_check",
    "conversation_sessions_announced_after_end_check",
    "conversation_sessions_text_sizes_check",
)
"""The table migration's checks (``sql/checks.sql`` adds them NOT VALID)."""

TRANSITIONAL_CONSTRAINTS = (
    "tether_adoption_connection_id_not_null",
    "tether_adoption_session_start_not_null",
    "tether_adoption_last_seen_at_not_null",
)


def said(exc: psycopg.Error) -> str:
    """Postgres's words for a failed statement, or libpq's for a lost connection, as one
    line to go on with: libpq runs those over lines (a hint after a tab) and ends them
    with a period."""
    return " ".join((exc.diag.message_primary or str(exc)).split()).rstrip(".")


# A connection lost (class 08, the server shut down or restarted), a transaction
# Postgres chose to end (a deadlock, a serialization failure), a statement cut by the
# server's statement_timeout, no connection slot free: another run may pass.
_TRANSIENT = frozenset({"57P01", "57P02", "57P03", "40001", "40P01", "57014", "53300"})


def may_pass_again(exc: psycopg.Error) -> bool:
    """Whether the same step, run again, may pass: not a refusal that repeats."""
    import psycopg  # noqa: PLC0415 - as the module's other runtime uses

    state = exc.sqlstate
    if state is None:  # libpq's own: the connection went away
        return isinstance(exc, psycopg.OperationalError)
    return state.startswith("08") or state in _TRANSIENT


def said_in_full(exc: psycopg.Error) -> str:
    """``said``, with Postgres's DETAIL when it gives one (the object in the way)."""
    detail = " ".join((exc.diag.message_detail or "").split()).rstrip(".")
    return f"{said(exc)} ({detail})" if detail else said(exc)


def trusted(text: str) -> sql.SQL:
    """SQL text tether did not type here but trusts: its own files, and definitions
    Postgres itself wrote (``pg_get_viewdef``, ``pg_get_indexdef``, ...)."""
    return sql.SQL(text)


def sql_file(name: str) -> str:
    """One of the adoption's SQL files, shipped in the package (``tether/adopt/sql``)."""
    return (resources.files("tether.adopt") / "sql" / name).read_text()


def connect(url: str) -> psycopg.Connection[tuple[Any, ...]]:
    import psycopg  # noqa: PLC0415

    url = check(url)
    try:
        conn = psycopg.connect(
            url,
            autocommit=True,
            prepare_threshold=None,
            connect_timeout=10,
            application_name="tether adopt",
        )
    except psycopg.Error as exc:
        raise unreachable(exc, url) from None
    # Scans, index builds and validations of a long history take what they take; what
    # could make writers wait is bounded by lock_timeout instead, step by step.
    conn.execute("set statement_timeout = 0")
    read_plainly(conn)
    # A statement whose client is gone stops within a second (Postgres 14 and later):
    # a Ctrl-C's cancel can reach the server before the statement has started, and is
    # then lost, and the statement would run on, the adoption's lock held, after the
    # command has closed its connection.
    with contextlib.suppress(psycopg.errors.UndefinedObject):
        conn.execute("set client_connection_check_interval = '1s'")
    return conn


def backend(conn: psycopg.Connection[tuple[Any, ...]]) -> int:
    row = conn.execute("select pg_backend_pid()").fetchone()
    return int(row[0]) if row else 0


_PLAIN_NAME = re.compile(r"[a-z_][a-z0-9_]*")

# Postgres's keywords that quote_ident() quotes (pg_get_keywords(): catcode C, T and R;
# an unreserved one, U, can stand bare), as Postgres 18 has them: a policy or a trigger
# named user, order or left, written bare, is a syntax error. A test compares this with
# the running server's, so that a newer Postgres's new keywords are added here.
_QUOTED_KEYWORDS = """
    between bigint bit boolean char character coalesce dec decimal exists extract float
    greatest grouping inout int integer interval json json_array json_arrayagg json_exists
    json_object json_objectagg json_query json_scalar json_serialize json_table json_value
    least merge_action national nchar none normalize nullif numeric out overlay position
    precision real row setof smallint substring time timestamp treat trim values varchar
    xmlattributes xmlconcat xmlelement xmlexists xmlforest xmlnamespaces xmlparse xmlpi
    xmlroot xmlserialize xmltable
    authorization binary collation concurrently cross current_schema freeze full ilike inner
    is isnull join left like natural notnull outer overlaps right similar tablesample verbose
    all analyse analyze and any array as asc asymmetric both case cast check collate column
    constraint create current_catalog current_date current_role current_time
    current_timestamp current_user default deferrable desc distinct do else end except false
    fetch for foreign from grant group having in initially intersect into lateral leading
    limit localtime localtimestamp not null offset on only or order placing primary
    references returning select session_user some symmetric system_user table then to
    trailing true union unique user using variadic when where window with
"""
QUOTED_KEYWORDS = frozenset(_QUOTED_KEYWORDS.split())


def quoted(name: str) -> str:
    """An identifier as SQL needs it written, as quote_ident() writes it: bare where it
    can be (lower case, digits and underscores, no keyword that needs quotes)."""
    if _PLAIN_NAME.fullmatch(name) and name not in QUOTED_KEYWORDS:
        return name
    return '"' + name.replace('"', '""') + '"'


CONVERTIBLE_COLUMNS = ("session_start", "session_end", "ended_at", "user_id")
"""The old writers' columns of a type adoption may refuse, with the statement that
converts them."""
TYPE_PINNING_KINDS = frozenset(
    {"view", "materialized view", "policy", "trigger", "rule", "policy of another table"}
)
"""What Postgres refuses to change a column's type under (alter table ... type); an
index on an expression of the column too, where the expression does not hold for the
new type (read apart)."""


@dataclass(frozen=True)
class Column:
    name: str
    type: str
    not_null: bool
    default: str | None
    generated: str | None
    attnum: int


@dataclass(frozen=True)
class Dependent:
    """An object of the database's that depends on columns of the table."""

    kind: str
    """view, materialized view, policy, trigger, index, constraint, function, ..."""
    name: str
    columns: tuple[str, ...]
    """The table's columns it uses (for functions: those its source mentions)."""
    mine: bool = False
    """tether's own object (recreated as tether made it)."""

    def as_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "name": self.name, "columns": list(self.columns)}


@dataclass(frozen=True)
class Trigger:
    """A trigger on the table, and the function it runs."""

    name: str
    definition: str
    function: str
    """schema.name(), quoted as SQL needs it."""
    schema: str
    """The function's schema, quoted as SQL needs it."""
    own_search_path: bool
    """The function sets its own search_path (``alter function ... set search_path``),
    or resolves no names through one (C, internal, Postgres's own)."""
    before_row_write: bool = False
    """BEFORE INSERT or UPDATE, FOR EACH ROW: it can change the row being written."""
    enabled: bool = True
    """Fired by an ordinary session's writes (not disabled, not for replicas only)."""
    always: bool = False
    """ENABLE ALWAYS: fired in a replica session too (a logical replication apply)."""
    update_of: tuple[str, ...] = ()
    """The columns of an UPDATE OF trigger (empty: any update fires it)."""
    for_each_row: bool = True
    """FOR EACH ROW (else FOR EACH STATEMENT: once per statement, whatever it changes)."""
    on_update: bool = False
    """Fired by UPDATE (alone or with other events), as the catalog has it: the
    definition's text may say UPDATE in a name or a WHEN clause."""


# Roles that hold one of the privileges ``{held}`` lists (privilege, the policies'
# command letter, the predefined role granting it on every table) on the table or on
# some of its columns, through a grant to them or to a role whose rights they inherit,
# or through that predefined role; who neither own the table nor bypass row level
# security themselves (BYPASSRLS is not inherited: a login acting through a group that
# has it is judged all the same); and whom the permissive policies do not let use it:
# once row level security is enabled they read no rows, or their writes are refused or
# change none. Each command needs a policy for it and a read policy besides: an update
# or a delete finds its rows through a where clause, an insert ... returning reads its
# row back. anon and authenticated are tether's to settle.
_UNDER_RLS = """
select r.rolname
from pg_catalog.pg_class c
cross join pg_catalog.pg_roles r
cross join lateral (
  select w.command
  from (values {held}) as w (privilege, command, every_table)
  where exists (
      select 1 from aclexplode(c.relacl) a
      where a.privilege_type = w.privilege and a.grantee <> 0
        and pg_catalog.pg_has_role(r.oid, a.grantee, 'USAGE')
      union all
      select 1 from pg_catalog.pg_attribute t cross join lateral aclexplode(t.attacl) a
      where t.attrelid = c.oid and t.attnum > 0 and not t.attisdropped
        and a.privilege_type = w.privilege and a.grantee <> 0
        and pg_catalog.pg_has_role(r.oid, a.grantee, 'USAGE')
      union all
      select 1 from pg_catalog.pg_roles everything
      where everything.rolname = w.every_table
        and pg_catalog.pg_has_role(r.oid, everything.oid, 'USAGE'))
) held
where c.oid = %(oid)s
  and r.rolname !~ '^pg_'
  and not r.rolsuper and not r.rolbypassrls
  and not pg_catalog.pg_has_role(r.oid, c.relowner, 'USAGE')
  and r.rolname not in ('anon', 'authenticated')
  and not (
    exists (
      select 1 from pg_catalog.pg_policy p
      where p.polrelid = c.oid and p.polpermissive and p.polcmd in (held.command, '*')
        and (0 = any(p.polroles)
             or exists (select 1 from unnest(p.polroles) as pr(oid)
                        where pg_catalog.pg_has_role(r.oid, pr.oid, 'USAGE'))))
    and exists (
      select 1 from pg_catalog.pg_policy p
      where p.polrelid = c.oid and p.polpermissive and p.polcmd in ('r', '*')
        and (0 = any(p.polroles)
             or exists (select 1 from unnest(p.polroles) as pr(oid)
                        where pg_catalog.pg_has_role(r.oid, pr.oid, 'USAGE')))))
group by r.rolname
order by 1
"""
_READERS_UNDER_RLS = _UNDER_RLS.format(held="('SELECT', 'r', 'pg_read_all_data')")
_WRITERS_UNDER_RLS = _UNDER_RLS.format(
    held="('INSERT', 'a', 'pg_write_all_data'), ('UPDATE', 'w', 'pg_write_all_data'),"
    " ('DELETE', 'd', 'pg_write_all_data')"
)


@dataclass
class Shape:
    """The table as the catalog has it now."""

    exists: bool
    oid: int = 0
    relkind: str = ""
    columns: dict[str, Column] = field(default_factory=dict)
    primary_key: tuple[str, ...] = ()
    primary_key_name: str | None = None
    constraints: dict[str, tuple[str, bool]] = field(default_factory=dict)
    """name -> (definition, validated)"""
    indexes: dict[str, tuple[str, bool]] = field(default_factory=dict)
    """name -> (definition, valid)"""
    triggers: dict[str, Trigger] = field(default_factory=dict)
    policies: list[str] = field(default_factory=list)
    restrictive_policies: dict[str, str] = field(default_factory=dict)
    """The restrictive ones among them: name -> its command and roles."""
    rls_enabled: bool = False
    rls_forced: bool = False
    """Row level security forced on the table's owner too (relforcerowsecurity)."""
    rls_refuses: list[row_security.Judged] = field(default_factory=list)
    """tether's tables (this one among them) whose row level security would refuse
    tether's functions, owned by the role connected: the released rule's answer."""
    has_children: bool = False
    parents: list[str] = field(default_factory=list)
    """The tables it inherits from, or the one it is a partition of."""
    is_partition: bool = False
    rules: list[str] = field(default_factory=list)
    """Its rules, quoted as SQL needs them."""
    bytes: int = 0
    public_grants: dict[str, list[str]] = field(default_factory=dict)
    """privileges anon, authenticated and PUBLIC hold on the table."""
    writers_under_rls: list[str] = field(default_factory=list)
    """Other roles allowed to write the table (by a grant, a role they inherit, or
    pg_write_all_data) whom row level security would stop, no policy letting them."""
    readers_under_rls: list[str] = field(default_factory=list)
    """Other roles allowed only to read the table (all of it or some of its columns; by
    a grant, a role they inherit, or pg_read_all_data) who do not bypass row level
    security themselves, to whom no policy would show a row once it is enabled."""
    publications: list[str] = field(default_factory=list)
    typed_by: dict[str, list[str]] = field(default_factory=dict)
    """The columns whose type adoption may ask the team to convert -> the views,
    policies and triggers built on each, under which Postgres changes no column's type."""
    referenced_by: list[str] = field(default_factory=list)
    """foreign keys of other tables onto this one."""
    ledger: dict[str, str | None] = field(default_factory=dict)
    """tether's ledger: version -> recorded_from."""
    pushed: frozenset[str] = frozenset()
    """The fingerprints of the files Supabase's ledger holds (supabase db push applied
    them), which tether's ledger records only once tether migrate has run."""
    steps: dict[str, bool] = field(default_factory=dict)
    """adoption steps recorded: name -> finished."""
    added: frozenset[str] = frozenset()
    """columns the adoption added (not the old writers')."""
    elsewhere: list[str] = field(default_factory=list)
    """Tables named conversation_sessions in other schemas, schema-qualified and quoted:
    tether adopts public's only."""
    similar: list[tuple[str, str]] = field(default_factory=list)
    """Tables named like it (conversation_session, "ConversationSessions", Django's
    chat_conversationsession, ...), as (schema, name): a team's table under another
    spelling, which tether does not adopt."""

    def original(self, column: str) -> bool:
        """The column was the old writers' (not added by the adoption)."""
        return column in self.columns and column not in self.added

    @property
    def ended_at_managed(self) -> bool:
        """ended_at is the old duplicate of session_end that tether keeps in step."""
        column = self.columns.get("ended_at")
        return column is not None and column.type == TIMESTAMPTZ and column.generated is None

    @property
    def ended_at_generated(self) -> bool:
        """ended_at as --finish leaves it: generated from session_end."""
        column = self.columns.get("ended_at")
        return column is not None and (column.generated or "").strip("()") == "session_end"

    @property
    def replaced_columns(self) -> list[str]:
        """The old writers' columns that --finish drops and adds again as generated."""
        return ["is_active", "duration_seconds"] + (["ended_at"] if self.ended_at_managed else [])

    @property
    def application_columns(self) -> list[Column]:
        managed = set(TETHER_COLUMNS) | {CONVERTED_DURATION}
        if self.ended_at_managed or self.ended_at_generated:
            managed.add("ended_at")
        return [c for c in self.columns.values() if c.name not in managed]


_COLUMNS = """
select a.attname, format_type(a.atttypid, a.atttypmod), a.attnotnull,
       case when a.attgenerated = '' then pg_get_expr(d.adbin, d.adrelid) end,
       case when a.attgenerated <> '' then pg_get_expr(d.adbin, d.adrelid) end,
       a.attnum
from pg_catalog.pg_attribute a
left join pg_catalog.pg_attrdef d on d.adrelid = a.attrelid and d.adnum = a.attnum
where a.attrelid = %(oid)s and a.attnum > 0 and not a.attisdropped
order by a.attnum
"""

_CONSTRAINTS = """
select conname, pg_get_constraintdef(oid), convalidated, contype
from pg_catalog.pg_constraint
where conrelid = %(oid)s
"""

_INDEXES = """
select c.relname, pg_get_indexdef(i.indexrelid), i.indisvalid
from pg_catalog.pg_index i join pg_catalog.pg_class c on c.oid = i.indexrelid
where i.indrelid = %(oid)s
"""

_TRIGGERS = """
select t.tgname, pg_get_triggerdef(t.oid),
       quote_ident(n.nspname) || '.' || quote_ident(p.proname) || '()',
       quote_ident(n.nspname),
       l.lanname in ('c', 'internal') or n.nspname = 'pg_catalog'
         or exists (select 1 from unnest(p.proconfig) c where c like 'search_path=%%'),
       -- tgtype's bits: 1 row, 2 before, 4 insert, 16 update
       t.tgtype::int & 3 = 3 and t.tgtype::int & 20 <> 0,
       -- fired by a session in the default (origin) replication role
       t.tgenabled in ('O', 'A'),
       t.tgenabled = 'A',
       array(select a.attname::text from unnest(t.tgattr::int2[]) k
             join pg_catalog.pg_attribute a on a.attrelid = t.tgrelid and a.attnum = k),
       t.tgtype::int & 1 = 1,
       t.tgtype::int & 16 <> 0
from pg_catalog.pg_trigger t
join pg_catalog.pg_proc p on p.oid = t.tgfoid
join pg_catalog.pg_namespace n on n.oid = p.pronamespace
join pg_catalog.pg_language l on l.oid = p.prolang
where t.tgrelid = %(oid)s and not t.tgisinternal
"""

# A restrictive policy lets no row through on its own: it narrows what the permissive
# ones let through, for the commands and roles it names.
_RESTRICTIVE_POLICIES = """
select p.polname, 'for '
       || case p.polcmd when 'r' then 'select' when 'a' then 'insert' when 'w' then 'update'
                        when 'd' then 'delete' else 'all' end
       || ', to ' || array_to_string(array(
            select case when pr.oid = 0 then 'PUBLIC' else pg_catalog.pg_get_userbyid(pr.oid) end
            from unnest(p.polroles) with ordinality as pr(oid, n) order by pr.n), ', ')
from pg_catalog.pg_policy p
where p.polrelid = %(oid)s and not p.polpermissive
order by p.polname
"""

_GRANTS = """
select case when a.grantee = 0 then 'PUBLIC' else r.rolname end, a.privilege_type
from pg_catalog.pg_class c
cross join lateral aclexplode(c.relacl) a
left join pg_catalog.pg_roles r on r.oid = a.grantee
where c.oid = %(oid)s
  and (a.grantee = 0 or r.rolname in ('anon', 'authenticated'))
order by 1, 2
"""


def _relation(conn: psycopg.Connection[tuple[Any, ...]], name: str) -> int | None:
    row = conn.execute("select to_regclass(%s)::oid", (name,)).fetchone()
    return int(row[0]) if row and row[0] is not None else None


def read_shape(conn: psycopg.Connection[tuple[Any, ...]]) -> Shape:
    """The table's shape, what tether's ledger and the adoption's steps record."""
    shape = Shape(exists=False)
    if _relation(conn, "tether.schema_migrations") is not None:
        migrate.check_ledger(conn)
        source = (
            sql.Identifier("recorded_from")
            if _has_column(conn, "tether", "schema_migrations", "recorded_from")
            else sql.SQL("null")
        )
        rows = conn.execute(
            sql.SQL("select version, {} from tether.schema_migrations").format(source)
        ).fetchall()
        shape.ledger = {str(v): (str(r) if r is not None else None) for v, r in rows}
    shape.pushed = frozenset(migrate.supabase_applied(conn))
    if _relation(conn, "tether.adoption_steps") is not None:
        rows = conn.execute(
            "select step, finished_at is not null, detail -> 'added' from tether.adoption_steps"
        ).fetchall()
        shape.steps = {str(s): bool(f) for s, f, _ in rows}
        shape.added = frozenset(
            str(name) for _, _, added in rows if isinstance(added, list) for name in added
        )
    shape.elsewhere = [
        str(r[0])
        for r in conn.execute(
            "select quote_ident(n.nspname) || '.' || quote_ident(c.relname)"
            " from pg_catalog.pg_class c"
            " join pg_catalog.pg_namespace n on n.oid = c.relnamespace"
            " where c.relname = 'conversation_sessions' and c.relkind in ('r', 'p')"
            "   and n.nspname not in ('public', 'pg_catalog', 'information_schema', 'tether')"
            "   and n.nspname not like 'pg\\_%'"
            " order by 1"
        ).fetchall()
    ]
    shape.similar = [
        (str(schema), str(name))
        for schema, name in conn.execute(
            "select n.nspname, c.relname from pg_catalog.pg_class c"
            " join pg_catalog.pg_namespace n on n.oid = c.relnamespace"
            " where c.relkind in ('r', 'p') and c.relname <> 'conversation_sessions'"
            "   and (lower(regexp_replace(c.relname, '[^A-Za-z0-9]', '', 'g'))"
            "        in ('conversationsessions', 'conversationsession')"
            # Django's <app>_<model>: the model's name lower-cased, run together.
            "        or c.relname ~ '^[a-z0-9_]+_conversationsessions?$')"
            "   and n.nspname not in ('pg_catalog', 'information_schema', 'tether')"
            "   and n.nspname not like 'pg\\_%'"
            " order by 1, 2"
        ).fetchall()
    ]
    oid = _relation(conn, TABLE)
    if oid is None:
        return shape
    shape.exists = True
    shape.oid = oid
    params = {"oid": oid}
    row = conn.execute(
        # pg_class.relhasrules stays true after the last rule is dropped, until a vacuum.
        "select c.relkind, c.relrowsecurity,"
        " array(select quote_ident(r.rulename) from pg_catalog.pg_rewrite r"
        "       where r.ev_class = c.oid order by 1),"
        " exists (select 1 from pg_catalog.pg_inherits i where i.inhparent = c.oid),"
        " pg_total_relation_size(c.oid), c.relforcerowsecurity"
        " from pg_catalog.pg_class c where c.oid = %(oid)s",
        params,
    ).fetchone()
    if row is None:  # dropped between the two reads
        return Shape(
            exists=False,
            ledger=shape.ledger,
            pushed=shape.pushed,
            steps=shape.steps,
            added=shape.added,
            elsewhere=shape.elsewhere,
            similar=shape.similar,
        )
    shape.relkind, shape.rls_enabled, shape.rules, shape.has_children, shape.bytes = (
        str(row[0]),
        bool(row[1]),
        [str(rule) for rule in row[2]],
        bool(row[3]),
        int(row[4]),
    )
    shape.rls_forced = bool(row[5])
    # The rule tether_row_security_problems_v2 will apply once it exists, asked now as
    # the role whose rights tether's functions will run with.
    shape.rls_refuses = row_security.judged_tables(
        [
            {"table_name": table, "forced": forced}
            for table, forced in conn.execute(row_security.released_rule()).fetchall()
        ]
    )
    rows = conn.execute(
        "select quote_ident(n.nspname) || '.' || quote_ident(p.relname), c.relispartition"
        " from pg_catalog.pg_inherits i"
        " join pg_catalog.pg_class c on c.oid = i.inhrelid"
        " join pg_catalog.pg_class p on p.oid = i.inhparent"
        " join pg_catalog.pg_namespace n on n.oid = p.relnamespace"
        " where i.inhrelid = %(oid)s order by i.inhseqno",
        params,
    ).fetchall()
    shape.parents = [str(parent) for parent, _ in rows]
    shape.is_partition = any(bool(partition) for _, partition in rows)
    for name, type_, not_null, default, generated, attnum in conn.execute(
        _COLUMNS, params
    ).fetchall():
        shape.columns[str(name)] = Column(
            str(name), str(type_), bool(not_null), default, generated, int(attnum)
        )
    for name, definition, validated, contype in conn.execute(_CONSTRAINTS, params).fetchall():
        shape.constraints[str(name)] = (str(definition), bool(validated))
        if contype == "p":
            shape.primary_key_name = str(name)
    pk = conn.execute(
        "select array_agg(a.attname::text order by k.ord)"
        " from pg_catalog.pg_index i"
        " cross join lateral unnest(i.indkey) with ordinality k (attnum, ord)"
        " join pg_catalog.pg_attribute a on a.attrelid = i.indrelid and a.attnum = k.attnum"
        " where i.indrelid = %(oid)s and i.indisprimary",
        params,
    ).fetchone()
    shape.primary_key = tuple(pk[0] or ()) if pk else ()
    for name, definition, valid in conn.execute(_INDEXES, params).fetchall():
        shape.indexes[str(name)] = (str(definition), bool(valid))
    for (
        name,
        definition,
        function,
        schema,
        own_search_path,
        before_row_write,
        enabled,
        always,
        update_of,
        for_each_row,
        on_update,
    ) in conn.execute(_TRIGGERS, params).fetchall():
        shape.triggers[str(name)] = Trigger(
            str(name),
            str(definition),
            str(function),
            str(schema),
            bool(own_search_path),
            bool(before_row_write),
            bool(enabled),
            bool(always),
            tuple(str(column) for column in update_of),
            bool(for_each_row),
            bool(on_update),
        )
    shape.policies = [
        str(r[0])
        for r in conn.execute(
            "select polname from pg_catalog.pg_policy where polrelid = %(oid)s order by 1", params
        ).fetchall()
    ]
    shape.restrictive_policies = {
        str(r[0]): str(r[1]) for r in conn.execute(_RESTRICTIVE_POLICIES, params).fetchall()
    }
    for grantee, privilege in conn.execute(_GRANTS, params).fetchall():
        shape.public_grants.setdefault(str(grantee), []).append(str(privilege))
    shape.writers_under_rls = [
        str(r[0]) for r in conn.execute(_WRITERS_UNDER_RLS, params).fetchall()
    ]
    shape.readers_under_rls = [
        str(r[0])
        for r in conn.execute(_READERS_UNDER_RLS, params).fetchall()
        if str(r[0]) not in shape.writers_under_rls
    ]
    shape.publications = [
        str(r[0])
        for r in conn.execute(
            "select p.pubname from pg_catalog.pg_publication_rel r"
            " join pg_catalog.pg_publication p on p.oid = r.prpubid"
            " where r.prrelid = %(oid)s order by 1",
            params,
        ).fetchall()
    ]
    shape.referenced_by = [
        str(r[0])
        for r in conn.execute(
            "select conrelid::regclass::text || '.' || conname from pg_catalog.pg_constraint"
            " where confrelid = %(oid)s and contype = 'f' order by 1",
            params,
        ).fetchall()
    ]
    shape.typed_by = _typed_by(conn, shape)
    return shape


# Indexes on an expression of a column (date(session_start), lower(user_id)): Postgres
# rebuilds them with the new type, and refuses where the expression no longer holds for
# it (date() of a timestamptz is not immutable; lower() takes no uuid).
_EXPRESSION_INDEXES = """
select distinct a.attname::text, quote_ident(n.nspname) || '.' || quote_ident(ic.relname)
from pg_catalog.pg_index i
join pg_catalog.pg_class ic on ic.oid = i.indexrelid
join pg_catalog.pg_namespace n on n.oid = ic.relnamespace
join pg_catalog.pg_depend d on d.classid = 'pg_catalog.pg_class'::regclass
                            and d.objid = i.indexrelid
                            and d.refclassid = 'pg_catalog.pg_class'::regclass
                            and d.refobjid = i.indrelid
join pg_catalog.pg_attribute a on a.attrelid = i.indrelid and a.attnum = d.refobjsubid
where i.indrelid = %(oid)s and i.indexprs is not null
  and a.attname = any (%(columns)s) and a.attnum <> all (i.indkey::int2[])
order by 1, 2
"""


def _typed_by(conn: psycopg.Connection[tuple[Any, ...]], shape: Shape) -> dict[str, list[str]]:
    found: dict[str, list[str]] = {}
    converted = [c for c in CONVERTIBLE_COLUMNS if c in shape.columns]
    for dependent in dependents(conn, shape.oid, converted):
        if dependent.kind in TYPE_PINNING_KINDS:
            # A view's name comes quoted and schema-qualified, and so does another
            # table's rule or policy (its name, then "on" its table); a policy's or a
            # trigger's as the catalog has it ("Stamp"), to be written as drop needs it.
            name = (
                dependent.name
                if "view" in dependent.kind or dependent.kind in {"rule", "policy of another table"}
                else quoted(dependent.name)
            )
            for column in dependent.columns:
                found.setdefault(column, []).append(f"{dependent.kind} {name}")
    for column, index in conn.execute(
        _EXPRESSION_INDEXES, {"oid": shape.oid, "columns": converted}
    ).fetchall():
        found.setdefault(str(column), []).append(f"index {index}")
    return found


def _has_column(
    conn: psycopg.Connection[tuple[Any, ...]], schema: str, table: str, column: str
) -> bool:
    row = conn.execute(
        "select exists (select 1 from information_schema.columns"
        " where table_schema = %s and table_name = %s and column_name = %s)",
        (schema, table, column),
    ).fetchone()
    return bool(row and row[0])


# --- what depends on the columns adoption changes ------------------------------------

_DEPENDENTS = """
with cols as (
  select a.attnum, a.attname::text as attname
  from pg_catalog.pg_attribute a
  where a.attrelid = %(oid)s and a.attname = any (%(columns)s)
), deps as (
  select d.classid, d.objid, cols.attname
  from pg_catalog.pg_depend d
  join cols on d.refobjsubid = cols.attnum
  where d.refclassid = 'pg_catalog.pg_class'::regclass
    and d.refobjid = %(oid)s
    and d.deptype in ('n', 'a')
)
select kind, name, array_agg(distinct attname order by attname)
from (
  -- A view's query, or a rule of it, names the column: the view. A rule of another
  -- table names it (on insert to kick_requests do also update ...): the rule.
  select case when c.relkind = 'm' then 'materialized view'
              when c.relkind = 'v' then 'view' else 'rule' end as kind,
         case when c.relkind in ('v', 'm') then ''
              else quote_ident(r.rulename) || ' on ' end
         || quote_ident(n.nspname) || '.' || quote_ident(c.relname) as name, deps.attname
  from deps
  join pg_catalog.pg_rewrite r on deps.classid = 'pg_catalog.pg_rewrite'::regclass
                               and r.oid = deps.objid
  join pg_catalog.pg_class c on c.oid = r.ev_class
  join pg_catalog.pg_namespace n on n.oid = c.relnamespace
  where c.oid <> %(oid)s
  union all
  select 'index', c.relname::text, deps.attname
  from deps
  join pg_catalog.pg_class c on deps.classid = 'pg_catalog.pg_class'::regclass
                             and c.oid = deps.objid and c.relkind in ('i', 'I')
  union all
  select case k.contype when 'c' then 'constraint' else 'key constraint' end,
         k.conname::text, deps.attname
  from deps
  join pg_catalog.pg_constraint k on deps.classid = 'pg_catalog.pg_constraint'::regclass
                                  and k.oid = deps.objid
  where k.contype <> 'n'
  union all
  -- A policy of another table naming the column (using (exists (select ... where
  -- is_active))): not the table's, which adoption recreates, so named as its table's.
  select case when p.polrelid = %(oid)s then 'policy' else 'policy of another table' end,
         case when p.polrelid = %(oid)s then p.polname::text
              else quote_ident(p.polname) || ' on ' || (
                select quote_ident(n.nspname) || '.' || quote_ident(c.relname)
                from pg_catalog.pg_class c
                join pg_catalog.pg_namespace n on n.oid = c.relnamespace
                where c.oid = p.polrelid) end,
         deps.attname
  from deps
  join pg_catalog.pg_policy p on deps.classid = 'pg_catalog.pg_policy'::regclass
                              and p.oid = deps.objid
  union all
  select 'trigger', t.tgname::text, deps.attname
  from deps
  join pg_catalog.pg_trigger t on deps.classid = 'pg_catalog.pg_trigger'::regclass
                               and t.oid = deps.objid
  union all
  select 'function', p.oid::regprocedure::text, deps.attname
  from deps
  join pg_catalog.pg_proc p on deps.classid = 'pg_catalog.pg_proc'::regclass
                            and p.oid = deps.objid
  union all
  select 'generated column', a.attname::text, deps.attname
  from deps
  join pg_catalog.pg_attrdef ad on deps.classid = 'pg_catalog.pg_attrdef'::regclass
                                and ad.oid = deps.objid
  join pg_catalog.pg_attribute a on a.attrelid = ad.adrelid and a.attnum = ad.adnum
  where a.attname <> deps.attname
  union all
  select 'statistics', s.stxname::text, deps.attname
  from deps
  join pg_catalog.pg_statistic_ext s on deps.classid = 'pg_catalog.pg_statistic_ext'::regclass
                                     and s.oid = deps.objid
  union all
  select 'publication', p.pubname::text, deps.attname
  from deps
  join pg_catalog.pg_publication_rel pr
    on deps.classid = 'pg_catalog.pg_publication_rel'::regclass and pr.oid = deps.objid
  join pg_catalog.pg_publication p on p.oid = pr.prpubid
) found
group by kind, name
order by kind, name
"""

# Functions are not tracked by the catalog unless their body is SQL-standard; a
# function whose source names the table and a column is listed for the team to read.
_FUNCTIONS = """
select p.oid::regprocedure::text,
       array(select c from unnest(%(columns)s::text[]) c
             where p.prosrc ~* ('\\m' || c || '\\M') order by c)
from pg_catalog.pg_proc p
join pg_catalog.pg_namespace n on n.oid = p.pronamespace
where p.prosrc ~* '\\mconversation_sessions\\M'
  and n.nspname not in ('pg_catalog', 'information_schema', 'tether')
  and p.proname not like 'tether%%'
"""


def dependents(
    conn: psycopg.Connection[tuple[Any, ...]], oid: int, columns: list[str]
) -> list[Dependent]:
    """Objects that use any of ``columns`` of the table: what the catalog tracks, and
    functions whose source mentions the table and the column."""
    found = [
        Dependent(str(kind), str(name), tuple(cols))
        for kind, name, cols in conn.execute(
            _DEPENDENTS, {"oid": oid, "columns": columns}
        ).fetchall()
    ]
    tracked = {d.name for d in found if d.kind == "function"}
    for name, cols in conn.execute(_FUNCTIONS, {"columns": columns}).fetchall():
        if cols and str(name) not in tracked:
            found.append(Dependent(FUNCTION_SOURCE, str(name), tuple(cols)))
    return found


COLUMN_PRIVILEGE = "column privilege"
"""A privilege granted on a column (``grant select (is_active) on ...``): it goes
with the column when the column is replaced, so adoption grants it again."""


@dataclass(frozen=True)
class ColumnPrivilege:
    column: str
    grantee: str | None
    """The role's name as it is (not quoted); None is PUBLIC."""
    privilege: str
    grantable: bool

    def dependent(self) -> Dependent:
        option = " with grant option" if self.grantable else ""
        to = "public" if self.grantee is None else self.grantee
        return Dependent(
            COLUMN_PRIVILEGE, f"{self.privilege.lower()} to {to}{option}", (self.column,)
        )


def column_privileges(
    conn: psycopg.Connection[tuple[Any, ...]], oid: int, columns: list[str] | None
) -> list[ColumnPrivilege]:
    """The privileges granted on ``columns`` (None: every column) of the relation itself,
    not through the relation."""
    return [
        ColumnPrivilege(str(column), None if grantee is None else str(grantee), str(kind), bool(g))
        for column, grantee, kind, g in conn.execute(
            "select a.attname, case when x.grantee <> 0 then pg_get_userbyid(x.grantee) end,"
            " x.privilege_type, x.is_grantable"
            " from pg_catalog.pg_attribute a cross join lateral aclexplode(a.attacl) x"
            " where a.attrelid = %(oid)s and not a.attisdropped and a.attnum > 0"
            "   and (%(columns)s::text[] is null or a.attname = any (%(columns)s::text[]))"
            " order by 1, 2, 3",
            {"oid": oid, "columns": columns},
        ).fetchall()
    ]


def views_on_table(conn: psycopg.Connection[tuple[Any, ...]], oid: int) -> list[str]:
    """Every view that reads the table, directly."""
    return [
        str(r[0])
        for r in conn.execute(
            "select distinct quote_ident(n.nspname) || '.' || quote_ident(c.relname)"
            " from pg_catalog.pg_depend d"
            " join pg_catalog.pg_rewrite r on r.oid = d.objid"
            " join pg_catalog.pg_class c on c.oid = r.ev_class"
            " join pg_catalog.pg_namespace n on n.oid = c.relnamespace"
            " where d.classid = 'pg_catalog.pg_rewrite'::regclass"
            "   and d.refclassid = 'pg_catalog.pg_class'::regclass"
            "   and d.refobjid = %s and c.oid <> %s and c.relkind in ('v', 'm') order by 1",
            (oid, oid),
        ).fetchall()
    ]


_INDEX_NAME = re.compile(r"\bindex\s+concurrently\s+(\w+)", re.IGNORECASE)


@functools.cache
def index_statements() -> tuple[tuple[str, str], ...]:
    """(name, statement) of each index in ``indexes.sql`` (a shipped file: read once)."""
    text = "\n".join(
        line for line in sql_file("indexes.sql").splitlines() if not line.startswith("--")
    )
    found: list[tuple[str, str]] = []
    for statement in (part.strip() for part in text.split(";")):
        if statement:
            match = _INDEX_NAME.search(statement)
            if match is None:  # pragma: no cover - the file is ours
                raise AdoptionError(f"indexes.sql: no index name in {statement!r}")
            found.append((match.group(1), statement))
    return tuple(found)
