"""``tether adopt --apply``: take the table over in place, without stopping its writers.

Each step is recorded in ``tether.adoption_steps`` when it finishes (in its own
transaction where it has one), so a run that stops anywhere resumes at the step it
was in; each step is safe to run again from its start. A step that takes a lock
conflicting with writes holds it for milliseconds and waits for it at most the
lock timeout (``locks.with_lock_timeout``); the long steps (backfill, validation,
index builds, vacuum) take locks that let writes through."""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

from psycopg import sql
from psycopg.pq import TransactionStatus
from psycopg.types.json import Jsonb

from tether import migrate
from tether.adopt import dependents, inspect, plan, rules
from tether.adopt import lock as adopt_lock
from tether.adopt.catalog import (
    ADDED_COLUMNS,
    CONVERTED_DURATION,
    SYNC_FUNCTION,
    SYNC_TRIGGER,
    TETHER_CHECKS,
    TRANSITIONAL_CONSTRAINTS,
    Shape,
    backend,
    connect,
    index_statements,
    may_pass_again,
    read_shape,
    said,
    said_in_full,
    sql_file,
    trusted,
)
from tether.adopt.plan import BATCH_SIZE
from tether.errors import AdoptionError
from tether.locks import LockPolicy, Progress, with_lock_timeout
from tether.models import EndReason

if TYPE_CHECKING:
    import psycopg

logger = logging.getLogger("tether.adopt")

PROGRESS_EVERY_SECONDS = 2.0
NIL_UUID = "00000000-0000-0000-0000-000000000000"

Checkpoint = Callable[[str], None]
"""Called after each step and each batch (with its name): a test's way to stop a run."""


@dataclass
class ApplyResult:
    ran: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    rows_read: int = 0
    seconds: dict[str, float] = field(default_factory=dict)
    supabase_ledger: bool = False
    """The database has ``supabase db push``'s ledger, which does not know what
    adoption applied."""

    def as_dict(self) -> dict[str, Any]:
        return {
            "ran": self.ran,
            "skipped": self.skipped,
            "rows_read": self.rows_read,
            "seconds": self.seconds,
            "supabase_ledger": self.supabase_ledger,
        }


@dataclass
class _Run:
    conn: psycopg.Connection[tuple[Any, ...]]
    lock: LockPolicy
    progress: Progress
    batch_size: int
    checkpoint: Checkpoint
    result: ApplyResult

    def shape(self) -> Shape:
        return read_shape(self.conn)

    def locked(
        self, step: str, work: Callable[[psycopg.Connection[tuple[Any, ...]]], None]
    ) -> None:
        with_lock_timeout(
            self.conn,
            step,
            work,
            policy=self.lock,
            progress=self.progress,
            gives_up_with=AdoptionError,
        )


def _mark(
    conn: psycopg.Connection[tuple[Any, ...]],
    step: str,
    *,
    finished: bool = True,
    detail: dict[str, Any] | None = None,
) -> None:
    conn.execute(
        "insert into tether.adoption_steps (step, finished_at, detail)"
        " values (%(step)s, case when %(finished)s then now() end, %(detail)s)"
        " on conflict (step) do update set"
        "   finished_at = case when %(finished)s then now() end,"
        "   detail = tether.adoption_steps.detail || excluded.detail",
        {"step": step, "finished": finished, "detail": Jsonb(detail or {})},
    )


def _lock_table(conn: psycopg.Connection[tuple[Any, ...]]) -> None:
    conn.execute("lock table public.conversation_sessions in access exclusive mode")


# --- the steps ---------------------------------------------------------------------


def _ledgers(
    conn: psycopg.Connection[tuple[Any, ...]], migrations: Sequence[migrate.Migration]
) -> migrate.MigrationStatus:
    """The ledgers' plan as ``tether migrate`` reads it (a file ``supabase db push``
    applied is recorded, not run again), with the table being taken over allowed."""
    return migrate.plan(conn, migrations, adopting=True)


def _say_done(run: _Run, migration: migrate.Migration, pushed_as: str | None) -> None:
    if pushed_as is None:
        run.progress(f"  applied {migration.filename}")
    else:
        run.progress(
            f"  recorded {migration.filename} (applied by supabase db push as {pushed_as})"
        )


def step_ledger(run: _Run) -> None:
    migrations = migrate.shipped()
    table = migrate.table_migration(migrations)
    with run.conn.transaction():
        run.conn.execute("select pg_advisory_xact_lock(%s)", (migrate.ADVISORY_LOCK_KEY,))
        migrate.ensure_ledger(run.conn)
        ledgers = _ledgers(run.conn, migrations)
        done = [
            (migration, migrate.run_or_record(run.conn, migration, ledgers))
            for migration in ledgers.pending
            if migration.version < table.version
        ]
        run.conn.execute(sql_file("state.sql").encode())
        _mark(run.conn, "ledger")
    for migration, pushed_as in done:
        _say_done(run, migration, pushed_as)


def step_prepare(run: _Run) -> None:
    with run.conn.transaction():
        run.conn.execute(sql_file("prepare.sql").encode())
        _mark(run.conn, "prepare")


def _transition_running(conn: psycopg.Connection[tuple[Any, ...]]) -> bool:
    row = conn.execute("select to_regprocedure(%s) is not null", (f"{SYNC_FUNCTION}()",)).fetchone()
    return bool(row and row[0])


def sync_function() -> sql.Composed:
    return sql.SQL(sql_file("sync.sql")).format(belief=rules.belief())


def _domain_check() -> sql.Composed:
    values = sql.SQL(", ").join(sql.Literal(reason.value) for reason in EndReason)
    return sql.SQL(
        "alter domain public.tether_end_reason add constraint tether_end_reason_check"
        " check (value in ({})) not valid"
    ).format(values)


def step_columns(run: _Run) -> None:
    def work(conn: psycopg.Connection[tuple[Any, ...]]) -> None:
        _lock_table(conn)
        shape = read_shape(conn)
        if shape.steps.get("columns"):
            return
        added: list[str] = []
        wanted = [
            ("user_id", "uuid"),
            ("session_end", "timestamptz"),
            ("is_active", "boolean"),
            *ADDED_COLUMNS,
        ]
        if "duration_seconds" not in shape.columns:
            wanted.append(("duration_seconds", "numeric"))
        elif plan.duration_conversion(shape):
            wanted.append((CONVERTED_DURATION, "numeric"))
        for name, type_ in wanted:
            if name in shape.columns:
                continue
            conn.execute(
                sql.SQL("alter table public.conversation_sessions add column {} {}").format(
                    sql.Identifier(name), trusted(type_)
                )
            )
            added.append(name)
        conn.execute(
            "alter table public.conversation_sessions"
            " alter column session_start set default now(),"
            " alter column last_seen_at set default now()"
        )
        if shape.columns["session_id"].default is None:
            # tether's functions insert without an id. (A default the old writers
            # rely on stays until --finish: their role may not call tether_uuid_v7.)
            conn.execute(
                "alter table public.conversation_sessions"
                " alter column session_id set default public.tether_uuid_v7()"
            )
        if shape.primary_key_name not in (None, "conversation_sessions_pkey"):
            conn.execute(
                sql.SQL(
                    "alter table public.conversation_sessions rename constraint {}"
                    " to conversation_sessions_pkey"
                ).format(sql.Identifier(str(shape.primary_key_name)))
            )
        domain = conn.execute(
            "select count(*) from pg_catalog.pg_constraint"
            " where contypid = 'public.tether_end_reason'::regtype"
        ).fetchone()
        if not (domain and domain[0]):
            conn.execute(_domain_check())
        conn.execute(sql_file("checks.sql").encode())
        conn.execute(sync_function())
        conn.execute(
            sql.SQL(
                "create or replace trigger {} before insert or update"
                " on public.conversation_sessions for each row"
                " when (current_setting('tether.adoption_backfill', true) is distinct from 'on')"
                " execute function tether.adoption_sync_row({}, {}, {})"
            ).format(
                sql.Identifier(SYNC_TRIGGER),
                sql.Literal("ended_at" if shape.ended_at_managed else ""),
                sql.Literal(str(shape.original("duration_seconds")).lower()),
                sql.Literal(str(shape.original("is_active")).lower()),
            )
        )
        conn.execute(sql_file("transitional_comments.sql").encode())
        _mark(conn, "columns", detail={"added": added})

    run.locked("columns", work)


_BACKFILL = """
with batch as (
  select s.*
  from public.conversation_sessions s
  where {selection} and s.connection_id is null
  order by s.session_id
  for update
), believed as (
  select s.session_id, o.*, {original_duration} as original_duration, b.*
  from batch s
  cross join lateral ({row}) o
  cross join lateral ({belief}) b
), kept as (
  insert into tether.adoption_corrections (session_id, kinds, original)
  select r.session_id, r.kinds,
         jsonb_build_object('is_active', r.is_active, 'session_start', r.session_start,
                            'session_end', r.session_end, 'ended_at', r.ended_at,
                            'duration_seconds', r.original_duration)
  from believed r
  where r.changed
  on conflict (session_id) do nothing
)
update public.conversation_sessions t
   set session_start = r.new_start,
       session_end = r.new_end,
       end_reason = r.new_reason,
       is_active = r.new_end is null,
       {durations}{ended_at}
       connection_id = 'legacy:' || t.session_id::text,
       last_seen_at = coalesce(r.new_end, r.new_start)
  from believed r
 where t.session_id = r.session_id
"""


def _backfill_statement(shape: Shape, selection: sql.Composable) -> sql.Composed:
    targets = [name for name in ("duration_seconds", CONVERTED_DURATION) if name in shape.columns]
    durations = sql.SQL("").join(
        sql.SQL("{} = r.new_duration,\n       ").format(sql.Identifier(name)) for name in targets
    )
    ended_at = sql.SQL("ended_at = r.new_end,\n       " if shape.ended_at_managed else "")
    return sql.SQL(_BACKFILL).format(
        selection=selection,
        original_duration=rules.original_duration(shape),
        row=rules.row_input(shape),
        belief=rules.belief(),
        durations=durations,
        ended_at=ended_at,
    )


def step_backfill(run: _Run) -> None:
    conn = run.conn
    shape = run.shape()
    row = conn.execute(
        "select detail ->> 'after', coalesce((detail ->> 'rows')::bigint, 0)"
        " from tether.adoption_steps where step = 'backfill'"
    ).fetchone()
    after = str(row[0]) if row and row[0] else NIL_UUID
    done = int(row[1]) if row else 0
    total_row = conn.execute("select reltuples::bigint from pg_class where oid = %s", (shape.oid,))
    # The planner's estimate; a table never analysed has none (-1), and then the
    # progress says no total rather than "of ~0".
    total = int((total_row.fetchone() or (-1,))[0])
    by_range = _backfill_statement(
        shape, sql.SQL("s.session_id > %(after)s and s.session_id <= %(upto)s")
    )
    by_ids = _backfill_statement(shape, sql.SQL("s.session_id = any (%(ids)s)"))
    last_report = time.monotonic()
    while True:
        bound = conn.execute(
            "select session_id from public.conversation_sessions where session_id > %s"
            " order by session_id offset %s limit 1",
            (after, run.batch_size - 1),
        ).fetchone()
        if bound is None:
            bound = conn.execute(
                "select session_id from public.conversation_sessions where session_id > %s"
                " order by session_id desc limit 1",
                (after,),
            ).fetchone()
        upto = bound[0] if bound else None
        if upto is None:
            break
        read = _batch(run, by_range, {"after": after, "upto": upto})
        after = str(upto)
        done += read
        with conn.transaction():
            _mark(conn, "backfill", finished=False, detail={"after": after, "rows": done})
        run.result.rows_read += read
        if time.monotonic() - last_report >= PROGRESS_EVERY_SECONDS:
            last_report = time.monotonic()
            of = f" (of ~{total})" if total > 0 else ""
            run.progress(f"  backfill: {done} rows read, up to session_id {after}{of}")
        run.checkpoint("backfill batch")
    # What the ranges did not cover (a nil session_id, rows another writer left
    # unread): few or none, found by one scan.
    while True:
        ids = [
            r[0]
            for r in conn.execute(
                "select session_id from public.conversation_sessions"
                " where connection_id is null limit %s",
                (run.batch_size,),
            ).fetchall()
        ]
        if not ids:
            break
        read = _batch(run, by_ids, {"ids": ids})
        done += read
        run.result.rows_read += read
    with conn.transaction():
        _mark(conn, "backfill", detail={"after": after, "rows": done})
    run.progress(f"  backfill: {done} rows read")


def _batch(run: _Run, statement: sql.Composed, params: dict[str, Any]) -> int:
    read = 0

    def work(conn: psycopg.Connection[tuple[Any, ...]]) -> None:
        nonlocal read
        conn.execute("select set_config('tether.adoption_backfill', 'on', true)")
        read = conn.execute(statement, params).rowcount

    run.locked("backfill", work)
    return read


def step_vacuum(run: _Run) -> None:
    run.conn.execute("vacuum (analyze) public.conversation_sessions")
    with run.conn.transaction():
        _mark(run.conn, "vacuum")


def step_validate(run: _Run) -> None:
    shape = run.shape()
    for name, (_, validated) in sorted(shape.constraints.items()):
        if validated or name not in (*TETHER_CHECKS, *TRANSITIONAL_CONSTRAINTS):
            continue
        run.progress(f"  validating {name}")
        with run.conn.transaction():
            run.conn.execute(
                sql.SQL("alter table public.conversation_sessions validate constraint {}").format(
                    sql.Identifier(name)
                )
            )

    def work(conn: psycopg.Connection[tuple[Any, ...]]) -> None:
        _lock_table(conn)
        conn.execute(
            "alter table public.conversation_sessions"
            " alter column connection_id set not null,"
            " alter column session_start set not null,"
            " alter column last_seen_at set not null"
        )
        for name in TRANSITIONAL_CONSTRAINTS:
            conn.execute(
                sql.SQL(
                    "alter table public.conversation_sessions drop constraint if exists {}"
                ).format(sql.Identifier(name))
            )
        _mark(conn, "validate")

    run.locked("validate", work)


def step_duration(run: _Run) -> None:
    to_validate: list[str] = []

    def work(conn: psycopg.Connection[tuple[Any, ...]]) -> None:
        nonlocal to_validate
        _lock_table(conn)
        shape = read_shape(conn)
        if CONVERTED_DURATION in shape.columns:
            saved = dependents.save(conn, shape.oid, ["duration_seconds"])
            blocked = [
                dependents.refusal(d)
                for d in saved.found
                if d.kind == "index" or d.kind not in dependents.RECREATED_KINDS
            ]
            blocked += [
                dependents.built_on_refusal(d, "--apply")
                for d in dependents.built_on_views(conn, saved.views)
            ]
            if blocked:
                raise AdoptionError("duration: " + "; ".join(blocked))
            dependents.drop(conn, saved)
            conn.execute("alter table public.conversation_sessions drop column duration_seconds")
            conn.execute(
                sql.SQL(
                    "alter table public.conversation_sessions rename column {} to duration_seconds"
                ).format(sql.Identifier(CONVERTED_DURATION))
            )
            to_validate = dependents.recreate(conn, saved, constraints_not_valid=True)
            conn.execute(sql_file("transitional_comments.sql").encode())
        _mark(conn, "duration")

    run.locked("duration", work)
    for name in to_validate:
        with run.conn.transaction():
            run.conn.execute(
                sql.SQL("alter table public.conversation_sessions validate constraint {}").format(
                    sql.Identifier(name)
                )
            )


def step_indexes(run: _Run) -> None:
    conn = run.conn
    for name, statement in index_statements():
        shape = run.shape()
        existing = shape.indexes.get(name)
        if existing is not None and existing[1]:
            continue
        if existing is not None:
            run.progress(f"  {name}: an interrupted build left it invalid; building it again")
            conn.execute(sql.SQL("drop index concurrently public.{}").format(sql.Identifier(name)))
        run.progress(f"  building {name} (concurrently)")
        conn.execute(trusted(statement))
        run.checkpoint(f"index {name}")

    def attach(conn: psycopg.Connection[tuple[Any, ...]]) -> None:
        shape = read_shape(conn)
        if "conversation_sessions_connection_id_key" not in shape.constraints:
            _lock_table(conn)
            conn.execute(
                "alter table public.conversation_sessions"
                " add constraint conversation_sessions_connection_id_key"
                " unique using index conversation_sessions_connection_id_key"
            )
        _mark(conn, "indexes")

    run.locked("indexes", attach)


def step_security(run: _Run) -> None:
    def work(conn: psycopg.Connection[tuple[Any, ...]]) -> None:
        _lock_table(conn)
        conn.execute(sql_file("security.sql").encode())
        _mark(conn, "security")

    run.locked("security", work)


_CREATES_INDEX = re.compile(
    r"\bcreate\s+index\s+(\w+)\s+on\s+public\.conversation_sessions\b", re.IGNORECASE
)
_ADDS_COLUMN = re.compile(r"\badd\s+column\s+(?!if\s+not\s+exists\b)(\w+)", re.IGNORECASE)


def _as_prepared(migration: migrate.Migration) -> migrate.Migration:
    """The migration, with each index and column on the table that the earlier steps
    made beforehand (the indexes concurrently, the columns before the end-reason
    domain had its check) made only if missing: made under the migration's lock, each
    would stop the table's writes for as long as a build or a rewrite of the table
    takes. Its checksum stays the file's."""
    built = set(inspect.TETHER_INDEXES)
    added = {name for name, _ in ADDED_COLUMNS}

    def index(match: re.Match[str]) -> str:
        name = match.group(1)
        if name not in built:
            return match.group(0)
        return f"create index if not exists {name} on public.conversation_sessions"

    def column(match: re.Match[str]) -> str:
        name = match.group(1)
        return f"add column if not exists {name}" if name in added else match.group(0)

    text = _ADDS_COLUMN.sub(column, _CREATES_INDEX.sub(index, migration.sql))
    return replace(migration, sql=text)


def unbuilt_indexes(migrations: list[migrate.Migration]) -> list[str]:
    """Indexes on the table that a migration creates and the indexes step does not
    build: each would stop the table's writes for as long as its build takes."""
    built = set(inspect.TETHER_INDEXES)
    return [
        f"{m.filename}: {name}"
        for m in migrations
        for name in _CREATES_INDEX.findall(m.sql)
        if name not in built
    ]


def step_migrations(run: _Run) -> None:
    migrations = migrate.shipped()
    table = migrate.table_migration(migrations)

    def record_table(conn: psycopg.Connection[tuple[Any, ...]]) -> None:
        conn.execute("select pg_advisory_xact_lock(%s)", (migrate.ADVISORY_LOCK_KEY,))
        if any(m.version == table.version for m in _ledgers(conn, migrations).pending):
            migrate.record(conn, table, recorded_from=migrate.ADOPTED, run=False)

    run.locked("migrations", record_table)
    while True:
        with run.conn.transaction():
            left = _ledgers(run.conn, migrations).pending
        if not left:
            break
        migration = left[0]

        done: list[str | None] = []

        def work(
            conn: psycopg.Connection[tuple[Any, ...]],
            m: migrate.Migration = migration,
            done: list[str | None] = done,
        ) -> None:
            done.clear()  # a try the lock timeout undid says nothing
            conn.execute("select pg_advisory_xact_lock(%s)", (migrate.ADVISORY_LOCK_KEY,))
            ledgers = _ledgers(conn, migrations)
            if any(p.version == m.version for p in ledgers.pending):
                done.append(migrate.run_or_record(conn, m, ledgers, prepared=_as_prepared(m)))

        run.locked(f"migration {migration.filename}", work)
        if done:
            _say_done(run, migration, done[0])
        run.checkpoint(f"migration {migration.filename}")
    with run.conn.transaction():
        _mark(run.conn, "migrations")
    run.conn.execute("analyze public.conversation_sessions")


STEPS: dict[str, Callable[[_Run], None]] = {
    "ledger": step_ledger,
    "prepare": step_prepare,
    "columns": step_columns,
    "backfill": step_backfill,
    "vacuum": step_vacuum,
    "validate": step_validate,
    "duration": step_duration,
    "indexes": step_indexes,
    "security": step_security,
    "migrations": step_migrations,
}


def _ignore(_: str) -> None:
    """No checkpoint."""


def _step_failed(name: str, exc: psycopg.Error) -> AdoptionError:
    if may_pass_again(exc):
        return AdoptionError(
            f"{name} failed: {said(exc)}. What it had done is kept or rolled back whole;"
            " run `tether adopt --apply` again to resume"
        )
    # A refusal --check did not foresee: run again, it fails the same.
    return AdoptionError(
        f"{name} failed: {said_in_full(exc)}. What it had done is kept or rolled back whole;"
        " mend what Postgres names, then run `tether adopt --apply` again to resume"
    )


def apply(
    url: str,
    *,
    batch_size: int = BATCH_SIZE,
    lock: LockPolicy | None = None,
    progress: Progress | None = None,
    checkpoint: Checkpoint | None = None,
) -> ApplyResult:
    """Adopt the table in place, or finish an adoption that stopped; does nothing on
    a table already adopted. Raises AdoptionError (naming what to do) when the table
    cannot be adopted as it is."""
    import psycopg  # noqa: PLC0415

    say = progress or (lambda _: None)
    result = ApplyResult()
    with connect(url) as conn:
        if not adopt_lock.take(conn):
            raise AdoptionError(adopt_lock.ANOTHER_ADOPT_RUNS)
        try:
            shape = read_shape(conn)
            nothing = inspect.nothing_to_adopt(
                inspect.state_of(shape), shape.elsewhere, inspect.similar_tables(shape)
            )
            if nothing:
                raise AdoptionError(nothing)
            problems = inspect.check_role(conn, shape).refusals
            problems += inspect.refusals(shape) + inspect.ledger_refusals(conn)
            if "duration_seconds" in shape.columns:
                on_duration = dependents.tracked(conn, shape.oid, ["duration_seconds"])
                problems += inspect.conversion_refusals(shape, on_duration)
            problems += inspect.duration_owner_refusals(conn, shape)
            problems += inspect.duration_view_refusals(conn, shape)
            problems += inspect.duration_row_type_refusals(conn, shape)
            problems += inspect.broken_check_refusals(conn, shape)
            if problems:
                raise AdoptionError(
                    "the table cannot be adopted as it is:\n  - " + "\n  - ".join(problems)
                )
            run = _Run(conn, lock or LockPolicy(), say, batch_size, checkpoint or _ignore, result)
            pid = backend(conn)
            for name in plan.STEP_NAMES:
                if backend(conn) != pid:
                    raise AdoptionError(
                        "the connection moved to another server process between two statements:"
                        " it goes through a transaction pooler, which cannot keep the session"
                        " lock and settings adoption needs. Connect directly (on Supabase: the"
                        " direct connection, or the session pooler on port 5432)"
                    )
                shape = read_shape(conn)
                if shape.steps.get(name):
                    result.skipped.append(name)
                    continue
                if name == "duration" and CONVERTED_DURATION not in shape.columns:
                    continue
                say(f"{name} ...")
                started = time.perf_counter()
                try:
                    STEPS[name](run)
                except psycopg.Error as exc:
                    raise _step_failed(name, exc) from None
                result.seconds[name] = round(time.perf_counter() - started, 3)
                result.ran.append(name)
                logger.info(
                    "adoption step done", extra={"step": name, "seconds": result.seconds[name]}
                )
                run.checkpoint(name)
            if _transition_running(conn):
                # A transition begun by an earlier tether keeps this one's reading of the
                # old server's writes from here on (the function only; no lock on the table).
                conn.execute(sync_function())
            result.supabase_ledger = migrate.has_supabase_ledger(conn)
        finally:
            _release_adopt_lock(conn)
    return result


def _release_adopt_lock(conn: psycopg.Connection[tuple[Any, ...]]) -> None:
    """Unlock, or end the session, which releases its lock as surely. A Ctrl-C that
    landed between sending a statement and reading its answer leaves the connection
    unable to run another: an unlock then would raise and hide the interruption, so
    the statement is cancelled and the connection closed instead."""
    if conn.closed or conn.broken:
        return
    if conn.info.transaction_status is TransactionStatus.IDLE:
        adopt_lock.release(conn)
        return
    conn.cancel_safe(timeout=5.0)
    conn.close()
