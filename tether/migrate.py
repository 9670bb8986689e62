"""Applies tether's migrations in order, once each, and remembers them.

The SQL ships inside the package (``tether/sql/``, the repository's
``supabase/migrations/``): the same files ``supabase db push`` takes. This runner
keeps its own ledger (``tether.schema_migrations``: version, name, sha-256) so the
files apply to any Postgres, and:

- runs every pending file in one transaction, under an advisory lock: a failure
  leaves no schema, role or ledger row of that run behind;
- lets each of its lock requests wait a second at most, then rolls back, pauses and
  tries again (``tether.locks``): a long transaction on a table a migration alters
  does not hold every writer of it for as long as it runs;
- refuses, by name, a file edited after it was applied;
- recognises files that ``supabase db push`` already applied (Supabase's ledger,
  ``supabase_migrations.schema_migrations``, matched by content, whatever their
  version), and records them instead of running them again;
- refuses to run over a ``conversation_sessions`` table it did not create, and
  points at ``tether adopt``.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import logging
import os
import re
import secrets
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tether.adopt import lock as adopt_lock
from tether.dburl import check, unreachable
from tether.drivers.postgres import read_plainly
from tether.errors import (
    InvalidInputError,
    MigrationError,
    error_from_psycopg,
)

if TYPE_CHECKING:
    import psycopg

    from tether.locks import LockPolicy, Progress

logger = logging.getLogger("tether.migrate")

SQL_FOLDER = "sql"
MIGRATION_NAME = re.compile(r"^(?P<version>\d{14})_(?P<name>[a-z0-9_]+)\.sql$")
VERSION_FORMAT = "%Y%m%d%H%M%S"
# Any constant works; it only has to be the same for every runner.
ADVISORY_LOCK_KEY = 7_460_501_001
SUPABASE_LEDGER = "supabase_migrations.schema_migrations"
# The migration that creates the session table: a database holding the table
# without it in either ledger has a table of its own, to adopt, not to create.
TABLE_MIGRATION_NAME = "conversation_sessions"
ADOPTED = "adopt"
"""``recorded_from`` of the table's migration when ``tether adopt`` took an existing
table over in its place."""

_SEPARATORS = re.compile(r"[\s;]+")


def fingerprint(sql_text: str) -> str:
    """A hash of a migration's content, the same for a file and for the statements
    ``supabase db push`` recorded from it.

    The CLI cuts a file after each top-level ``;`` and trims ``;`` and whitespace
    from the ends of each piece, keeping comments; so collapsing every run of
    whitespace and ``;`` to one space, on both sides, gives equal texts exactly
    when the content is the same (comments included)."""
    return hashlib.sha256(_SEPARATORS.sub(" ", sql_text).strip(" ").encode()).hexdigest()


@dataclass(frozen=True)
class Migration:
    version: str
    name: str
    sql: str
    checksum: str

    @property
    def filename(self) -> str:
        return f"{self.version}_{self.name}.sql"

    @property
    def fingerprint(self) -> str:
        return fingerprint(self.sql)


@dataclass(frozen=True)
class AppliedMigration:
    version: str
    name: str
    checksum: str
    applied_at: datetime
    recorded_from: str | None = None
    """Set when ``supabase db push`` applied it: the version in Supabase's ledger."""


@dataclass(frozen=True)
class MigrationStatus:
    applied: list[AppliedMigration]
    pending: list[Migration]
    applied_by_supabase: dict[str, str]
    """Pending tether versions that ``supabase db push`` already applied → its version."""
    refused: list[str] = field(default_factory=list)
    """Why ``migrate`` would refuse to run (``status`` says it instead of refusing)."""


def migrations_path() -> Path:
    """Where the shipped migrations are (``tether migrations path`` prints it)."""
    return Path(str(resources.files("tether") / SQL_FOLDER))


def _read(path_name: str, data: bytes) -> Migration:
    match = MIGRATION_NAME.match(path_name)
    if match is None:
        raise MigrationError(
            f"{path_name}: migration files are named YYYYMMDDHHMMSS_short_name.sql"
        )
    return Migration(
        match["version"], match["name"], data.decode(), hashlib.sha256(data).hexdigest()
    )


def discover(directory: Path | None = None) -> list[Migration]:
    """tether's migrations in order (from ``directory`` instead, for tests and tools)."""
    if directory is not None:
        if not directory.is_dir():
            raise MigrationError(f"migrations directory not found: {directory}")
        entries = [(path.name, path.read_bytes()) for path in directory.glob("*.sql")]
    else:
        folder = resources.files("tether") / SQL_FOLDER
        entries = (
            [(e.name, e.read_bytes()) for e in folder.iterdir() if e.name.endswith(".sql")]
            if folder.is_dir()
            else []
        )
        if not entries:
            raise MigrationError(f"no migrations found in the installed package ({folder})")
    migrations = sorted((_read(name, data) for name, data in entries), key=lambda m: m.version)
    versions = [migration.version for migration in migrations]
    if len(set(versions)) != len(versions):
        raise MigrationError("two migration files share a version")
    return migrations


_CREATE_LEDGER = """
create schema if not exists tether;
create table if not exists tether.schema_migrations (
  version text primary key,
  name text not null,
  checksum text not null,
  applied_at timestamptz not null default now()
);
alter table tether.schema_migrations add column if not exists recorded_from text;
comment on column tether.schema_migrations.recorded_from is
  'Set when tether migrate did not run this file: the version supabase db push applied it'
  ' as, or adopt for the table tether adopt took over in its place.';
"""


LEDGER = "tether.schema_migrations"
# The ledger's columns as _CREATE_LEDGER makes them; recorded_from came later, and a
# ledger from before it is added to.
_LEDGER_COLUMNS = {
    "version": "text",
    "name": "text",
    "checksum": "text",
    "applied_at": "timestamp with time zone",
}
_LEDGER_LATER_COLUMNS = {"recorded_from": "text"}

_LEDGER_SHAPE = """
select c.relkind::text,
       coalesce(array_agg(a.attname::text order by a.attnum)
                filter (where a.attnum is not null), '{}'),
       coalesce(array_agg(format_type(a.atttypid, a.atttypmod) order by a.attnum)
                filter (where a.attnum is not null), '{}'),
       coalesce(array_agg(a.attname::text order by a.attnum)
                filter (where a.attnotnull and not a.atthasdef and a.attidentity = ''
                        and a.attgenerated = ''), '{}')
  from pg_class c
  left join pg_attribute a
    on a.attrelid = c.oid and a.attnum > 0 and not a.attisdropped
 where c.oid = to_regclass(%s)
 group by c.relkind
"""


def check_ledger(conn: psycopg.Connection[tuple[Any, ...]]) -> None:
    """Refuse, changing nothing, a ``tether.schema_migrations`` that is not tether's
    ledger (a team's own table of that name, say): read or written, it would fail on
    its first missing column, a message that names neither the table nor the cause."""
    row = conn.execute(_LEDGER_SHAPE, (LEDGER,)).fetchone()
    if row is None:
        return  # not there: made by the first run
    relkind, names, types, required = row
    found = dict(zip(names, types, strict=True))
    problems = [
        f"no column {column}" if column not in found else f"{column} is {found[column]}"
        for column, kind in _LEDGER_COLUMNS.items()
        if found.get(column) != kind
    ]
    problems += [
        f"{column} is {found[column]}"
        for column, kind in _LEDGER_LATER_COLUMNS.items()
        if column in found and found[column] != kind
    ]
    ours = set(_LEDGER_COLUMNS) | set(_LEDGER_LATER_COLUMNS)
    problems += [
        f"{column} is required, and tether never writes it"
        for column in required
        if column not in ours
    ]
    if relkind not in {"r", "p"}:
        problems.insert(0, "it is not a table")
    if not problems:
        return
    has = ", ".join(f"{name} {kind}" for name, kind in found.items()) or "no columns"
    expected = ", ".join(f"{name} {kind}" for name, kind in _LEDGER_COLUMNS.items())
    raise MigrationError(
        f"{LEDGER} is not tether's ledger of migrations ({'; '.join(problems)}): it has"
        f" {has}, where tether's has {expected} (and recorded_from text); nothing was"
        f" changed. tether keeps its ledger by that name in its own schema: move that"
        f" table out of it (alter table {LEDGER} set schema ...), then run the command"
        " again"
    )


def ensure_ledger(conn: psycopg.Connection[tuple[Any, ...]]) -> None:
    """Create tether's ledger if it does not exist yet (in the caller's transaction);
    refuse a table of its name that is not it."""
    check_ledger(conn)
    conn.execute(_CREATE_LEDGER)


def record(
    conn: psycopg.Connection[tuple[Any, ...]],
    migration: Migration,
    *,
    recorded_from: str | None = None,
    run: bool = True,
) -> None:
    """Run one migration (unless ``run`` is false) and record it in the ledger, in the
    caller's transaction."""
    if run:
        _run(conn, migration)
    conn.execute(
        "insert into tether.schema_migrations"
        " (version, name, checksum, recorded_from) values (%s, %s, %s, %s)",
        (migration.version, migration.name, migration.checksum, recorded_from),
    )


@functools.cache
def shipped() -> tuple[Migration, ...]:
    """This release's migrations, read once per process."""
    return tuple(discover())


def outstanding(
    migrations: Sequence[Migration],
    recorded: set[str],
    pushed: Iterable[Sequence[str] | None],
) -> list[Migration]:
    """The migrations neither ledger holds: tether's by version (``recorded``), Supabase's
    by content (the statements ``supabase db push`` recorded, ``pushed``)."""
    by_content = {fingerprint(" ".join(statements)) for statements in pushed if statements}
    return [m for m in migrations if m.version not in recorded and m.fingerprint not in by_content]


IDLE_IN_TRANSACTION_SECONDS = 5
"""How long a run's transaction may wait on the runner between statements: it never
waits that long between two of its own (it pauses between tries outside any)."""


def _connect(url: str) -> psycopg.Connection[tuple[Any, ...]]:
    import psycopg  # noqa: PLC0415

    url = check(url)
    conn = None
    try:
        conn = psycopg.connect(url, prepare_threshold=None, connect_timeout=10)
        read_plainly(conn)
        conn.commit()
    except psycopg.Error as exc:
        if conn is not None:
            conn.close()
        raise unreachable(exc, url) from None
    return conn


def _exists(conn: psycopg.Connection[tuple[Any, ...]], relation: str) -> bool:
    row = conn.execute("select to_regclass(%s) is not null", (relation,)).fetchone()
    return bool(row and row[0])


def _adoption_under_way(conn: psycopg.Connection[tuple[Any, ...]]) -> bool:
    """`tether adopt --apply` began on the table there is, and did not reach the end of
    its migrations step."""
    if not _exists(conn, "tether.adoption_steps") or not _exists(
        conn, "public.conversation_sessions"
    ):
        return False
    row = conn.execute(
        "select not exists (select 1 from tether.adoption_steps"
        " where step = 'migrations' and finished_at is not null)"
    ).fetchone()
    return bool(row and row[0])


def has_supabase_ledger(conn: psycopg.Connection[tuple[Any, ...]]) -> bool:
    """Whether ``supabase db push`` keeps its ledger in this database."""
    return _exists(conn, SUPABASE_LEDGER)


def _applied(conn: psycopg.Connection[tuple[Any, ...]]) -> list[AppliedMigration]:
    if not _exists(conn, "tether.schema_migrations"):
        return []
    check_ledger(conn)
    has_source = conn.execute(
        "select exists (select 1 from information_schema.columns"
        " where table_schema = 'tether' and table_name = 'schema_migrations'"
        " and column_name = 'recorded_from')"
    ).fetchone()
    from psycopg import sql  # noqa: PLC0415

    # A ledger from before recorded_from existed reads as null there.
    source = sql.Identifier("recorded_from") if has_source and has_source[0] else sql.NULL
    rows = conn.execute(
        sql.SQL(
            "select version, name, checksum, applied_at, {}"
            " from tether.schema_migrations order by version"
        ).format(source)
    ).fetchall()
    return [AppliedMigration(str(v), str(n), str(c), a, r) for v, n, c, a, r in rows]


def _supabase_rows(
    conn: psycopg.Connection[tuple[Any, ...]],
) -> list[tuple[str, str, list[str] | None]]:
    """Supabase's ledger, as (version, name, statements). A CLI of before it recorded
    names and statements made the table with a version alone (a later one adds the
    columns as it runs): its rows read with no name and no statements."""
    if not has_supabase_ledger(conn):
        return []
    from psycopg import sql  # noqa: PLC0415

    present = {
        str(column)
        for (column,) in conn.execute(
            "select attname from pg_attribute"
            " where attrelid = to_regclass(%s) and attnum > 0 and not attisdropped",
            (SUPABASE_LEDGER,),
        ).fetchall()
    }
    name = sql.SQL("coalesce(name, '')") if "name" in present else sql.Literal("")
    statements = (
        sql.Identifier("statements") if "statements" in present else sql.SQL("null::text[]")
    )
    rows = conn.execute(
        sql.SQL(
            "select version, {}, {} from supabase_migrations.schema_migrations order by version"
        ).format(name, statements)
    ).fetchall()
    return [(str(version), str(named), ran) for version, named, ran in rows]


def supabase_applied(conn: psycopg.Connection[tuple[Any, ...]]) -> dict[str, tuple[str, str]]:
    """Supabase's ledger: fingerprint → (version, name), for rows that carry statements."""
    return {
        fingerprint(" ".join(statements)): (version, name)
        for version, name, statements in _supabase_rows(conn)
        if statements
    }


def supabase_unread(conn: psycopg.Connection[tuple[Any, ...]]) -> list[tuple[str, str]]:
    """Supabase's ledger rows that carry no statements: (version, name). An older CLI
    recorded versions alone (so did its ``migration repair``), and a row can be written
    by hand: what such a row's file ran cannot be told from it."""
    return [(version, name) for version, name, statements in _supabase_rows(conn) if not statements]


def _refuse(message: str, refusals: list[str] | None) -> None:
    """Refuse (raise), or, for a status, note the refusal and go on."""
    if refusals is None:
        raise MigrationError(message)
    refusals.append(message)


def _check_unchanged(
    migrations: Sequence[Migration],
    applied: list[AppliedMigration],
    refusals: list[str] | None = None,
) -> None:
    by_version = {migration.version: migration for migration in migrations}
    for record in applied:
        migration = by_version.get(record.version)
        if migration is None:
            # Applied by a newer release; nothing to compare against.
            continue
        if migration.checksum != record.checksum:
            _refuse(
                f"{migration.filename} was edited after it was applied "
                f"(recorded sha256 {record.checksum[:12]}, file now {migration.checksum[:12]}); "
                "add a new migration instead of changing an applied one",
                refusals,
            )


def plan(
    conn: psycopg.Connection[tuple[Any, ...]],
    migrations: Sequence[Migration],
    *,
    adopting: bool = False,
    refusals: list[str] | None = None,
) -> MigrationStatus:
    """What both ledgers hold and what is left to run or to record. Refuses an edited
    migration and a pushed copy that differs from this release's; refuses an existing
    table it did not create unless ``adopting`` (adoption takes that table over). Given
    ``refusals``, it notes each refusal there instead, and the status says them."""
    applied = _applied(conn)
    _check_unchanged(migrations, applied, refusals)
    done = {record.version for record in applied}
    pending = [m for m in migrations if m.version not in done]
    by_supabase = supabase_applied(conn)
    recognised = {
        m.version: by_supabase[m.fingerprint][0] for m in pending if m.fingerprint in by_supabase
    }
    _refuse_undecidable(
        conn, pending, recognised, by_supabase, adopting=adopting, refusals=refusals
    )
    return MigrationStatus(applied, pending, recognised, refused=list(refusals or []))


def run_or_record(
    conn: psycopg.Connection[tuple[Any, ...]],
    migration: Migration,
    status: MigrationStatus,
    *,
    prepared: Migration | None = None,
) -> str | None:
    """Record ``migration`` as applied by ``supabase db push`` when Supabase's ledger
    holds its content, or run it (``prepared``, when given: the same file made safe for
    a table in use) and record it; in the caller's transaction. Returns the push's
    version when it was only recorded, None when it ran."""
    recorded_from = status.applied_by_supabase.get(migration.version)
    if recorded_from is None:
        logger.info("applying migration", extra={"migration": migration.filename})
        record(conn, prepared or migration)
    else:
        logger.info(
            "recording migration applied by supabase db push",
            extra={"migration": migration.filename, "version": recorded_from},
        )
        record(conn, migration, recorded_from=recorded_from, run=False)
    return recorded_from


def table_migration(migrations: Sequence[Migration]) -> Migration:
    """The migration that creates ``public.conversation_sessions``."""
    return next(m for m in migrations if m.name == TABLE_MIGRATION_NAME)


def _refuse_undecidable(
    conn: psycopg.Connection[tuple[Any, ...]],
    pending: list[Migration],
    recognised: dict[str, str],
    by_supabase: dict[str, tuple[str, str]],
    *,
    adopting: bool,
    refusals: list[str] | None = None,
) -> None:
    to_run = [m for m in pending if m.version not in recognised]
    unread = _pushed_unread(conn, to_run)
    if unread:
        # Run again, each would fail on what the push made ("type ... already exists"),
        # or the table's would be taken for a team's own, to adopt.
        versions = " ".join(version for version, _ in unread)
        _refuse(
            f"Supabase's migration history ({SUPABASE_LEDGER}) records {len(unread)} of"
            f" tether's migrations as applied by supabase db push ({unread[0][1]} first),"
            " without the statements that would tell tether what they ran, and tether's"
            " ledger does not hold them: run again, they would fail on what they made;"
            " nothing was changed. If what was pushed is this release's files, have the"
            " Supabase CLI record their statements, from the project that holds them:"
            f" `supabase migration repair --status applied {versions}`, then run tether"
            " migrate again, which records them as the push's",
            refusals,
        )
        to_run = [m for m in to_run if all(m.filename != named for _, named in unread)]
    under_way = not adopting and bool(to_run) and _adoption_under_way(conn)
    # A `tether adopt` holding its lock: the adoption is running, not stopped, and an
    # --apply to resume it would be refused.
    if under_way and adopt_lock.held_by_another(conn):
        _refuse(
            "an adoption of public.conversation_sessions is under way: a `tether adopt"
            " --apply` is running on this database, and applies tether's migrations"
            " itself; nothing was changed",
            refusals,
        )
    elif under_way:
        # Its migrations step runs each file made safe for the table in use (the
        # indexes already built concurrently); the file as it is would stop on them.
        _refuse(
            "an adoption of public.conversation_sessions is under way, stopped before it"
            " applied tether's migrations: run `tether adopt --apply` to resume it (it"
            " applies them itself); nothing was changed",
            refusals,
        )
    pushed = set(by_supabase.values())
    for migration in to_run:
        # Same name, other content: an older or edited copy of tether's file was pushed,
        # exported (tether_<name>, any version) or straight from the repository (<name>
        # at tether's version). A team's own file of the same bare name, at its own
        # version (its `supabase migration new conversation_sessions`), is not one.
        twins = [
            name
            for version, name in pushed
            if name == f"tether_{migration.name}"
            or (name == migration.name and version == migration.version)
        ]
        if twins:
            _refuse(
                f"{migration.filename}: supabase db push applied a migration named {twins[0]!r}"
                " whose content differs from this release's; tether cannot tell what it did."
                " Compare it with `tether migrations export`, then either push this release's"
                " files with supabase db push, or record the difference by hand",
                refusals,
            )
    if (
        not adopting
        and not under_way
        and any(m.name == TABLE_MIGRATION_NAME for m in to_run)
        and _exists(conn, "public.conversation_sessions")
    ):
        _refuse(
            "public.conversation_sessions already exists, and tether did not create it:"
            " nothing was changed. To take an existing table over in place, run"
            " `tether adopt --check` and follow the README's 'Adopting an existing table'",
            refusals,
        )


def _pushed_unread(
    conn: psycopg.Connection[tuple[Any, ...]], to_run: list[Migration]
) -> list[tuple[str, str]]:
    """Of the migrations about to run, those Supabase's ledger records without statements:
    at tether's version (the repository's files pushed), or under the name an export
    gives it; as (the push's version, the file's name)."""
    unread = supabase_unread(conn)
    if not unread:
        return []
    found = []
    for migration in to_run:
        for version, name in unread:
            if version == migration.version or name == f"tether_{migration.name}":
                found.append((version, migration.filename))
                break
    return found


def status(url: str, directory: Path | None = None) -> MigrationStatus:
    """What is applied and pending; what would stop ``migrate`` is said, not raised: a
    status is asked for to see, among others, what is in the way."""
    import psycopg  # noqa: PLC0415

    migrations = discover(directory)
    with _connect(url) as conn:
        try:
            with conn.transaction():
                state = plan(conn, migrations, refusals=[])
        except psycopg.errors.InsufficientPrivilege as exc:
            raise MigrationError(
                f"cannot read tether's ledger: {error_from_psycopg(exc)}{_who_migrates(conn)}"
            ) from None
        # A role that may read the ledger (a monitor's) may still not migrate: the
        # status says so, as migrate would once refused, and which role may.
        who = _who_migrates(conn, then="run `tether migrate`") if state.pending else ""
    if who:
        state.refused.append(f"this role may not apply what is pending{who}")
    return state


WHEN_QUIETER = "run the command again when the table is quieter"
"""What to do when the migrations gave up on a busy table (a command says its flags)."""


def migrate(
    url: str,
    directory: Path | None = None,
    *,
    lock: LockPolicy | None = None,
    progress: Progress | None = None,
    again: str = WHEN_QUIETER,
) -> list[Migration]:
    """Apply every pending migration, all in one transaction. Returns those run or
    recorded; raises MigrationError (with nothing changed) if any fails."""
    done = apply_pending(url, directory, lock=lock, progress=progress, again=again)
    return [migration for migration, _ in done]


def apply_pending(
    url: str,
    directory: Path | None = None,
    *,
    lock: LockPolicy | None = None,
    progress: Progress | None = None,
    again: str = WHEN_QUIETER,
) -> list[tuple[Migration, str | None]]:
    """``migrate``, saying of each migration done the version ``supabase db push``
    applied it as, when it was only recorded (None: it ran).

    A migration that alters a table in use waits for the transactions reading it, and
    every writer of the table queues behind that wait: so each lock request waits at
    most ``lock.timeout_seconds``, then the whole run rolls back, pauses and tries
    again (``tether.locks``); ``progress`` hears of each try, and ``again`` is what the
    message says to do once the last try gave up."""
    import psycopg  # noqa: PLC0415

    # Here, not at the top: the operators' API reads the ledger through this module.
    from tether.locks import LockPolicy, with_lock_timeout  # noqa: PLC0415

    migrations = discover(directory)
    done_now: list[tuple[Migration, str | None]] = []
    # When this try began to run migrations (wall clock, monotonic): None before.
    running_since: tuple[datetime, float] | None = None

    def one_runner_at_a_time(conn: psycopg.Connection[tuple[Any, ...]]) -> None:
        nonlocal running_since
        running_since = None
        _not_held_by_a_runner_gone(conn)
        # A second runner waits here, queueing no writer, then finds nothing pending.
        conn.execute("select pg_advisory_xact_lock(%s)", (ADVISORY_LOCK_KEY,))

    def apply_all(conn: psycopg.Connection[tuple[Any, ...]]) -> None:
        nonlocal running_since
        done_now.clear()
        ensure_ledger(conn)
        planned = plan(conn, migrations)
        for migration in planned.pending:
            if running_since is None:
                running_since = (datetime.now(UTC), time.monotonic())
            done_now.append((migration, run_or_record(conn, migration, planned)))

    with _connect(url) as conn:
        try:
            with_lock_timeout(
                conn,
                "the migrations",
                apply_all,
                policy=lock or LockPolicy(),
                progress=progress or _log_progress,
                gives_up_with=MigrationError,
                again=again,
                first=one_runner_at_a_time,
            )
        except _NotAllowed as exc:
            raise MigrationError(f"{exc}{_who_migrates(conn)}") from None
        except psycopg.Error as exc:
            if _ended_for_idling(url, conn, exc, running_since):
                raise MigrationError(
                    f"the run stalled for more than {IDLE_IN_TRANSACTION_SECONDS}s while"
                    " holding the session table (its process stopped, its machine"
                    " suspended or its network gone), so the server ended its transaction"
                    " to let the table's writers on: nothing of it was applied; run it again"
                ) from None
            said = f"migration failed and was rolled back: {error_from_psycopg(exc)}"
            if isinstance(exc, psycopg.errors.InsufficientPrivilege):
                said += _who_migrates(conn)
            raise MigrationError(said) from None
    return done_now


class _NotAllowed(MigrationError):
    """A migration the role connected may not apply: the caller, its transaction over,
    says which role may."""


def _who_migrates(
    conn: psycopg.Connection[tuple[Any, ...]], *, then: str = "run the command again"
) -> str:
    """Which role may migrate, when the one connected was refused a privilege and is not
    it: Postgres names the object refused, not the role to run as. Empty when that role
    has the owner's rights already (the refusal is something else) or cannot be told.
    ``then`` is what to do, said before "with <owner>'s database URL"."""
    import psycopg  # noqa: PLC0415

    try:
        conn.rollback()
        with conn.transaction():
            row = conn.execute(_OWNER_AND_ROLE).fetchone()
    except psycopg.Error:
        return ""
    if row is None or row[0] is None or row[2]:
        return ""
    owner, connected, _, what = row
    return (
        f". tether's migrations run as the owner of {what}, {owner}; this connection's"
        f" role, {connected}, neither is it nor has its rights: {then}"
        f" with {owner}'s database URL"
    )


_OWNER_AND_ROLE = """
with owner as (
  select o.role, o.what from (
    select pg_get_userbyid(n.nspowner) as role, 'tether''s schema' as what, 1 as rank
      from pg_namespace n where n.nspname = 'tether'
    union all
    select pg_get_userbyid(c.relowner), 'public.conversation_sessions', 2
      from pg_class c
     where c.oid = to_regclass('public.conversation_sessions')
    union all
    select pg_get_userbyid(d.datdba), 'the database', 3
      from pg_database d where d.datname = current_database()
  ) o order by o.rank limit 1
)
select owner.role, current_user, pg_has_role(current_user, owner.role, 'USAGE'), owner.what
  from owner
"""


def _not_held_by_a_runner_gone(conn: psycopg.Connection[tuple[Any, ...]]) -> None:
    """Bound, for this run's transaction, how long the server keeps it for a runner that
    no longer drives it. Set for the transaction alone: through a transaction pooler,
    the server connection that runs it has the settings, and no other client's does."""
    import psycopg  # noqa: PLC0415

    # A runner that stalls mid-run (stopped, its machine or network gone) would hold
    # the session table's lock until the server noticed, hours later, and every
    # $connect and $disconnect fail meanwhile: the server ends the transaction instead.
    conn.execute(
        "select set_config('idle_in_transaction_session_timeout', %s, true)",
        (f"{IDLE_IN_TRANSACTION_SECONDS}s",),
    )
    # A runner killed mid-statement (kill -9, a CI job's timeout, the OOM killer) sends
    # no cancel: the statement (a check validated on a long history) would run on, the
    # table's lock held, until its end. Postgres 14 and later stop it within a second of
    # its client going, as adoption's connections do.
    try:
        with conn.transaction():
            conn.execute("select set_config('client_connection_check_interval', '1s', true)")
    except (psycopg.errors.UndefinedObject, psycopg.errors.InvalidParameterValue):
        pass  # before Postgres 14, or a platform without the check


def _ended_for_idling(
    url: str,
    conn: psycopg.Connection[tuple[Any, ...]],
    exc: Exception,
    running_since: tuple[datetime, float] | None,
) -> bool:
    """Whether the server ended the run's transaction for idling (``_not_held_by_a_runner_gone``)
    while it ran migrations. Its notice often arrives as no more than a closed connection
    (libpq's "server closed the connection unexpectedly"): that is taken for it only once
    the run had held the table longer than the timeout, and the server answers again,
    not restarted since (a crash or a restart says the same words)."""
    import psycopg  # noqa: PLC0415

    if running_since is None:
        return False
    if isinstance(exc, psycopg.errors.IdleInTransactionSessionTimeout):
        return True
    if not (isinstance(exc, psycopg.OperationalError) and exc.sqlstate is None and conn.broken):
        return False
    began, began_monotonic = running_since
    if time.monotonic() - began_monotonic < IDLE_IN_TRANSACTION_SECONDS:
        return False
    try:
        with psycopg.connect(check(url), connect_timeout=5) as again:
            row = again.execute("select pg_postmaster_start_time() < %s", (began,)).fetchone()
    except psycopg.Error:
        return False
    return bool(row and row[0])


def _log_progress(line: str) -> None:
    logger.info("migrations waiting for a lock", extra={"progress": line.strip()})


def _run(conn: psycopg.Connection[tuple[Any, ...]], migration: Migration) -> None:
    import psycopg  # noqa: PLC0415

    def warned(diagnostic: psycopg.errors.Diagnostic) -> None:
        # What a migration raises as a warning is meant for the operator (rows it
        # could not hold to a check, say); psycopg would drop it unread.
        if diagnostic.severity_nonlocalized == "WARNING":
            logger.warning(
                "migration warning",
                extra={
                    "migration": migration.filename,
                    "warning": diagnostic.message_primary,
                    "hint": diagnostic.message_hint,
                },
            )

    conn.add_notice_handler(warned)
    try:
        conn.execute(migration.sql.encode())
    except psycopg.errors.LockNotAvailable:
        raise  # the run is tried again (tether.locks), not failed
    except psycopg.Error as exc:
        said = (
            f"{migration.filename} failed; nothing of this run was kept: {error_from_psycopg(exc)}"
        )
        if isinstance(exc, psycopg.errors.InsufficientPrivilege):
            if "create role" in str(exc):
                said += ROLES_TO_MAKE_FIRST
            else:
                raise _NotAllowed(said) from None
        raise MigrationError(said) from None
    finally:
        conn.remove_notice_handler(warned)


ROLES_TO_MAKE_FIRST = (
    ". On plain Postgres the roles tether's grants and policies name are made where"
    " they are missing, which takes CREATEROLE, and BYPASSRLS for service_role: have a"
    " superuser make those missing first (create role anon nologin noinherit; create"
    " role authenticated nologin noinherit; create role service_role nologin noinherit"
    " bypassrls), or migrate as a role that may"
)
"""What a role that may not create roles does (a self-hosted Postgres's application
owner): Postgres's refusal names no role and no way on."""


# The names `supabase db push` takes: a version of digits, an underscore, any name.
SUPABASE_FILE = re.compile(r"^(?P<version>\d+)_.*\.sql$")
LAST_MOMENT = datetime(9999, 12, 31, 23, 59, 59, tzinfo=UTC)


# The name export gives a file: <version>_tether_<migration's name>.sql.
EXPORTED_FILE = re.compile(r"^\d+_tether_(?P<name>.+)\.sql$")


@dataclass(frozen=True)
class _Folder:
    held: set[str]
    """The fingerprints of the migrations it holds."""
    latest: str | None
    exported: dict[str, Path]
    """A file by the name of the tether migration an export wrote it as (the first)."""


def _read_folder(to: Path) -> _Folder:
    """The migrations a project's folder holds, read as the Supabase CLI reads it: any
    ``<digits>_<name>.sql`` file, the versions compared as text (as db push compares
    them)."""
    held: set[str] = set()
    latest: str | None = None
    exported: dict[str, Path] = {}
    if not to.exists():
        return _Folder(held, latest, exported)
    if not to.is_dir():
        raise MigrationError(f"--to {to} is not a folder")
    try:
        for path in sorted(to.iterdir()):
            match = SUPABASE_FILE.match(path.name)
            if match is None or not path.is_file():
                continue
            # Undecodable bytes cannot equal one of tether's files; they still count.
            held.add(fingerprint(path.read_bytes().decode(errors="replace")))
            version = match["version"]
            latest = version if latest is None else max(latest, version)
            if named := EXPORTED_FILE.match(path.name):
                exported.setdefault(named["name"], path)
    except OSError as exc:
        raise MigrationError(f"cannot read {to}: {exc.strerror or exc}") from None
    return _Folder(held, latest, exported)


def _moment(version_prefix: str) -> datetime | None:
    """The moment a --version-prefix writes, or None when it writes none."""
    if not re.fullmatch(r"[0-9]{14}", version_prefix):
        return None
    try:
        moment = datetime.strptime(version_prefix, VERSION_FORMAT).replace(tzinfo=UTC)
    except ValueError:
        return None
    # Four digits of year: strftime writes year 999 as "999", and the version is short.
    return moment if moment.year >= 1000 else None


def _sorts_after(version: str, latest: str) -> bool:
    """Whether db push takes a file of ``version`` after one of ``latest``: it walks the
    files in name order and compares versions as text, and the two must agree (after
    9_users.sql, no 14-digit version does: 90000101000000_x.sql sorts first by name)."""
    return version > latest and f"{version}_" > f"{latest}_"


def _first_version(version_prefix: str | None, latest: str | None, now: datetime) -> datetime:
    """The moment of the first version written: after the folder's latest in db push's
    order."""
    if version_prefix is not None:
        start = _moment(version_prefix)
        if start is None:
            raise InvalidInputError(
                "--version-prefix must be a moment written YYYYMMDDHHMMSS (year 1000 or later)"
            )
        if latest is not None and not _sorts_after(version_prefix, latest):
            raise InvalidInputError(
                f"--version-prefix {version_prefix} is not after the folder's latest"
                f" migration ({latest}): supabase db push would refuse to insert before it"
            )
        return start
    start = now.replace(microsecond=0)
    if latest is None or _sorts_after(start.strftime(VERSION_FORMAT), latest):
        return start
    after_latest = _moment(latest) if len(latest) == len("YYYYMMDDHHMMSS") else None
    if after_latest is not None and after_latest < LAST_MOMENT:
        return after_latest + timedelta(seconds=1)
    raise MigrationError(
        f"no version of tether's form (YYYYMMDDHHMMSS) comes after the folder's latest"
        f" ({latest}) in the order supabase db push takes them (versions compared as text,"
        " files by name)"
    )


def export(
    to: Path, *, version_prefix: str | None = None, now: datetime | None = None
) -> list[Path]:
    """Write tether's migrations into a project's own ``supabase/migrations`` folder,
    with versions after its existing ones so ``supabase db push`` takes them in order.

    Files whose content the folder already holds (an earlier export) are skipped.
    The content is written unchanged, so ``tether migrate`` knows them as its own.
    Everything is checked before the first file is written.
    """
    folder = _read_folder(to)
    start = _first_version(version_prefix, folder.latest, now or datetime.now(UTC))
    missing = [m for m in discover() if m.fingerprint not in folder.held]
    for migration in missing:
        # A released migration never changes: a file of its name with other content is
        # a copy edited since an export, which db push may well have run already.
        edited = folder.exported.get(migration.name)
        if edited:
            raise MigrationError(
                f"{edited} is tether's {migration.name} migration, edited since it was"
                " exported: exporting again would write it a second time, and supabase db"
                " push would run it twice. Put back the content tether wrote (or, if it was"
                " never pushed, remove the file), then export again"
            )
    if missing and (LAST_MOMENT - start).total_seconds() < len(missing) - 1:
        raise MigrationError(f"no room for {len(missing)} versions after {start:%Y%m%d%H%M%S}")
    # Named before the first is written: the last may be the last moment there is.
    targets = [
        to / f"{(start + timedelta(seconds=n)).strftime(VERSION_FORMAT)}_tether_{m.name}.sql"
        for n, m in enumerate(missing)
    ]
    written: list[Path] = []
    try:
        to.mkdir(parents=True, exist_ok=True)
        for target, migration in zip(targets, missing, strict=True):
            _write_whole(target, migration.sql.encode())
            written.append(target)
        _sync_folder(to)
    except OSError as exc:
        done = f" ({len(written)} written before it)" if written else ""
        raise MigrationError(f"cannot write to {to}: {exc.strerror or exc}{done}") from None
    return written


def _write_whole(target: Path, data: bytes) -> None:
    """Write a file whole or not at all: supabase db push would run the part of a
    migration a full disk or a crash left. It is written aside, under a name the CLI
    passes over (a dot first, no .sql last), flushed to the disk, then renamed into
    place; what is aside goes whatever stops the write."""
    aside = target.with_name(f".{target.name}.{secrets.token_hex(4)}.part")
    # As open() makes a file: the umask decides who may read it.
    descriptor = os.open(aside, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    try:
        with os.fdopen(descriptor, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(aside, target)
    except BaseException:
        with contextlib.suppress(OSError):
            aside.unlink()
        raise


def _sync_folder(folder: Path) -> None:
    """Make the renames themselves durable, where the system lets a folder be synced."""
    try:
        descriptor = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(descriptor)
    except OSError:
        pass  # some file systems sync no folder; each file is whole anyway
    finally:
        os.close(descriptor)
