"""The migration runner and the `tether migrate` command, on a real Postgres."""

from __future__ import annotations

import contextlib
import json
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path

import psycopg
import pytest
from psycopg.rows import dict_row

from tests.conftest import with_database
from tests.support import run_tether
from tether import migrate
from tether.drivers.postgres import PostgresStore
from tether.errors import DatabaseBusyError, DatabaseUnavailableError, MigrationError
from tether.locks import LockPolicy
from tether.models import EndOutcome, EndReason, OpenSessionRequest

MIGRATIONS = migrate.migrations_path()
README = Path(__file__).resolve().parents[2] / "README.md"


def _ledger(url: str) -> list[str]:
    with psycopg.connect(url) as conn:
        rows = conn.execute("select version from tether.schema_migrations order by 1").fetchall()
    return [str(r[0]) for r in rows]


@pytest.fixture
def migrations_copy(tmp_path: Path) -> Path:
    target = tmp_path / "migrations"
    shutil.copytree(MIGRATIONS, target)
    return target


def test_files_follow_supabase_naming() -> None:
    files = sorted(p.name for p in MIGRATIONS.glob("*.sql"))
    assert files, "no migrations found"
    assert all(migrate.MIGRATION_NAME.match(name) for name in files)
    assert [m.filename for m in migrate.discover()] == files


def test_migrate_from_nothing_then_again_is_a_no_op(empty_database_url: str) -> None:
    applied = migrate.migrate(empty_database_url)
    assert [m.filename for m in applied] == sorted(p.name for p in MIGRATIONS.glob("*.sql"))
    assert migrate.migrate(empty_database_url) == []
    assert _ledger(empty_database_url) == [m.version for m in applied]
    state = migrate.status(empty_database_url)
    assert state.pending == []
    assert len(state.applied) == len(applied)
    # And the schema works.
    store = PostgresStore(empty_database_url)
    try:
        assert store.open_session(OpenSessionRequest(connection_id="m=")).opened
    finally:
        store.close()


def test_two_runners_at_once_apply_each_migration_once(empty_database_url: str) -> None:
    results: list[int] = []
    errors: list[BaseException] = []

    def run() -> None:
        try:
            results.append(len(migrate.migrate(empty_database_url)))
        except BaseException as exc:  # recorded for the assertion below
            errors.append(exc)

    threads = [threading.Thread(target=run) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert sorted(results) == [0, len(list(MIGRATIONS.glob("*.sql")))]


def test_a_start_an_earlier_version_let_in_is_moved_to_a_readable_one(
    empty_database_url: str, migrations_copy: Path
) -> None:
    """Written before the check existed: the migration that validates it moves each such
    start to the first readable moment its row holds, says how many, and the check
    holds for every row from then on (an unreadable start also made its row
    impossible to end, announce or finalize)."""
    later = sorted(p for p in migrations_copy.glob("*.sql") if p.name >= "20261129006000")
    assert [p.name for p in later][:2] == [
        "20261129006000_readable_values.sql",
        "20261129006100_readable_values_validated.sql",
    ]
    for path in later:
        path.unlink()
    migrate.migrate(empty_database_url, migrations_copy)
    with psycopg.connect(empty_database_url, autocommit=True) as conn:
        conn.execute("select public.tether_open_session_v1('live=', null, '-infinity')")
        conn.execute("select public.tether_open_session_v1('bc=', null, '4713-01-01 BC')")
        conn.execute("select public.tether_open_session_v1('fine=', null, now() - interval '1h')")
        seen = conn.execute(
            "select connection_id, last_seen_at from public.conversation_sessions"
        ).fetchall()
    result = run_tether("migrate", "--database-url", empty_database_url)
    assert result.returncode == 0, result.stderr
    assert "applied  20261129006100_readable_values_validated.sql" in result.stdout
    # The operator is told.
    assert "2 session(s) had a start no client can read" in result.stderr
    with psycopg.connect(empty_database_url, autocommit=True) as conn:
        starts: dict[str, datetime] = dict(
            conn.execute(
                "select connection_id, session_start from public.conversation_sessions"
            ).fetchall()
        )
        assert conn.execute(
            "select convalidated from pg_constraint"
            " where conname = 'conversation_sessions_start_readable_check'"
        ).fetchone() == (True,)
        with pytest.raises(psycopg.errors.CheckViolation):
            conn.execute("select public.tether_open_session_v1('new=', null, '-infinity')")
    last_seen: dict[str, datetime] = dict(seen)
    assert starts["live="] == last_seen["live="]
    assert starts["bc="] == last_seen["bc="]
    assert starts["fine="] < last_seen["fine="]  # untouched: an hour before it was seen


def test_moments_an_earlier_version_let_in_are_moved_to_readable_ones(
    empty_database_url: str, migrations_copy: Path
) -> None:
    """Written before the check existed (by hand, or by an old server after adoption):
    the migration that validates it gives each unreadable moment a readable one from
    what its row holds, says how many rows it changed, and the check holds from then
    on. Rows that could be read are left as they were."""
    later = sorted(p for p in migrations_copy.glob("*.sql") if p.name >= "20261130002000")
    assert [p.name for p in later][:2] == [
        "20261130002000_readable_moments.sql",
        "20261130002100_readable_moments_validated.sql",
    ]
    for path in later:
        path.unlink()
    migrate.migrate(empty_database_url, migrations_copy)
    insert = (
        "insert into public.conversation_sessions"
        " (connection_id, session_start, session_end, end_reason, last_seen_at, announced_at,"
        " finalized_at) values (%s, %s, %s, %s, %s, %s, %s)"
    )
    with psycopg.connect(empty_database_url, autocommit=True) as conn:
        (now,) = conn.execute("select now()").fetchone() or (None,)
        assert now is not None
        hour = timedelta(hours=1)
        rows = [
            ("end-inf=", now - hour, "infinity", "client_disconnect", now - hour / 2, None, None),
            ("seen-far=", now - hour, None, None, "10000-01-01 00:00:00+00", None, None),
            ("start-far=", "10000-01-01 00:00:00+00", None, None, now - hour, None, None),
            (
                "announced-inf=",
                *(now - hour, now - hour / 4, "gone", now - hour / 4, "infinity", "infinity"),
            ),
            ("fine=", now - hour, now - hour / 3, "gone", now - hour / 3, now - hour / 3, None),
        ]
        for row in rows:
            conn.execute(insert, row)
    result = run_tether("migrate", "--database-url", empty_database_url)
    assert result.returncode == 0, result.stderr
    assert "applied  20261130002100_readable_moments_validated.sql" in result.stdout
    assert "4 session(s) held a moment no client can read" in result.stderr
    with psycopg.connect(empty_database_url, autocommit=True, row_factory=dict_row) as conn:
        found = {
            row["connection_id"]: row
            for row in conn.execute(
                "select connection_id, session_start, session_end, last_seen_at, announced_at,"
                " finalized_at from public.conversation_sessions"
            ).fetchall()
        }
        assert conn.execute(
            "select convalidated from pg_constraint"
            " where conname = 'conversation_sessions_moments_readable_check'"
        ).fetchone() == {"convalidated": True}
    # An end: its last readable sign of life.
    assert found["end-inf="]["session_end"] == now - hour / 2
    # A last sign of life: its start (it has no end).
    assert found["seen-far="]["last_seen_at"] == now - hour
    # A start: its first readable moment.
    assert found["start-far="]["session_start"] == now - hour
    # An announcement: when the migration ran.
    assert found["announced-inf="]["announced_at"] >= now
    assert found["announced-inf="]["finalized_at"] >= now
    assert found["announced-inf="]["session_end"] == now - hour / 4
    assert found["fine="] == {
        "connection_id": "fine=",
        "session_start": now - hour,
        "session_end": now - hour / 3,
        "last_seen_at": now - hour / 3,
        "announced_at": now - hour / 3,
        "finalized_at": None,
    }


def test_edited_migration_is_refused_by_name(
    empty_database_url: str, migrations_copy: Path
) -> None:
    migrate.migrate(empty_database_url, migrations_copy)
    edited = sorted(migrations_copy.glob("*.sql"))[1]
    edited.write_text(edited.read_text() + "\n-- a harmless looking edit\n")
    newer = migrations_copy / "29991231000000_would_run_next.sql"
    newer.write_text("create table public.must_not_exist (id int);\n")
    with pytest.raises(MigrationError, match=re.escape(edited.name)):
        migrate.migrate(empty_database_url, migrations_copy)
    # The status says it rather than refusing: what is applied, what is pending, and
    # what stops migrate.
    state = migrate.status(empty_database_url, migrations_copy)
    assert [m.filename for m in state.pending] == [newer.name]
    assert len(state.refused) == 1 and "edited after it was applied" in state.refused[0]
    with psycopg.connect(empty_database_url) as conn:
        row = conn.execute("select to_regclass('public.must_not_exist')").fetchone()
    assert row == (None,)


def test_a_failed_migration_leaves_nothing_of_its_run_behind(
    empty_database_url: str, migrations_copy: Path
) -> None:
    # Every file is pending; the last one fails after creating a role and a table.
    broken = migrations_copy / "29991231000000_broken.sql"
    role = f"tether_half_done_{uuid.uuid4().hex[:8]}"
    broken.write_text(
        f"create role {role} nologin;\n"
        "create table public.half_done (id int);\n"
        "insert into public.half_done values ('x');\n"
    )
    with pytest.raises(MigrationError, match=r"29991231000000_broken\.sql failed") as failure:
        migrate.migrate(empty_database_url, migrations_copy)
    assert "nothing of this run was kept" in str(failure.value)
    with psycopg.connect(empty_database_url) as conn:
        leftovers = conn.execute(
            "select to_regclass('public.half_done'), to_regclass('public.conversation_sessions'),"
            " to_regnamespace('tether'), (select count(*) from pg_roles where rolname = %s)",
            (role,),
        ).fetchone()
    assert leftovers == (None, None, None, 0)
    # Fixed, the same run applies everything.
    broken.write_text("create table public.half_done (id int);\n")
    applied = migrate.migrate(empty_database_url, migrations_copy)
    assert [m.filename for m in applied][-1] == broken.name
    assert len(_ledger(empty_database_url)) == len(list(migrations_copy.glob("*.sql")))


def test_badly_named_file_is_refused(migrations_copy: Path) -> None:
    (migrations_copy / "add_things.sql").write_text("select 1;")
    with pytest.raises(MigrationError, match=r"add_things\.sql"):
        migrate.discover(migrations_copy)


def test_existing_supabase_auth_is_left_alone(empty_database_url: str) -> None:
    # On Supabase, auth.uid() already exists; the shim must not replace it.
    with psycopg.connect(empty_database_url, autocommit=True) as conn:
        conn.execute(
            "create schema auth; create function auth.uid() returns uuid language sql stable"
            " as $$ select '11111111-1111-1111-1111-111111111111'::uuid $$"
        )
    migrate.migrate(empty_database_url)
    with psycopg.connect(empty_database_url) as conn:
        assert conn.execute("select auth.uid()::text").fetchone() == (
            "11111111-1111-1111-1111-111111111111",
        )


def test_missing_database_is_a_clear_error(server_url: str) -> None:
    url = with_database(server_url, "no_such_database_here")
    with pytest.raises(DatabaseUnavailableError, match="no_such_database_here"):
        migrate.migrate(url)
    store = PostgresStore(url)
    with pytest.raises(DatabaseUnavailableError, match="no_such_database_here"):
        store.open_session(OpenSessionRequest(connection_id="x="))


def test_cli_migrate_then_status(empty_database_url: str) -> None:
    count = len(list(MIGRATIONS.glob("*.sql")))
    before = run_tether("migrate", "--status", "--database-url", empty_database_url)
    assert before.returncode == 0, before.stderr
    assert f"0 applied, {count} pending" in before.stdout

    first = run_tether("migrate", "--database-url", empty_database_url)
    assert first.returncode == 0, first.stderr
    assert f"{count} migration(s) applied" in first.stdout
    for path in MIGRATIONS.glob("*.sql"):
        assert f"applied  {path.name}" in first.stdout

    again = run_tether("migrate", "--database-url", empty_database_url)
    assert again.returncode == 0, again.stderr
    assert "database is up to date" in again.stdout

    after = run_tether("migrate", "--status", "--database-url", empty_database_url)
    assert f"{count} applied, 0 pending" in after.stdout
    assert "pending  " not in after.stdout


def test_a_table_of_the_ledger_s_name_that_is_not_tether_s_is_refused_by_name(
    empty_database_url: str,
) -> None:
    """A team's own tether.schema_migrations, of other columns: migrate failed with
    "column "version" does not exist", naming neither the table nor what it expected."""
    team_table = (
        "create schema tether; create table tether.schema_migrations"
        " (id serial primary key, filename text not null, run_at timestamptz default now());"
        " insert into tether.schema_migrations (filename) values ('0001_init.sql')"
    )
    with psycopg.connect(empty_database_url, autocommit=True) as conn:
        conn.execute(team_table)
    expected = (
        "tether.schema_migrations is not tether's ledger of migrations (no column version;"
        " no column name; no column checksum; no column applied_at; filename is required,"
        " and tether never writes it): it has id integer,"
        " filename text, run_at timestamp with time zone, where tether's has version text,"
        " name text, checksum text, applied_at timestamp with time zone (and recorded_from"
        " text); nothing was changed."
    )
    for args in (("migrate",), ("migrate", "--status")):
        said = run_tether(*args, "--database-url", empty_database_url)
        assert said.returncode == 1, said.stdout + said.stderr
        assert expected in said.stderr, said.stderr
        assert "alter table tether.schema_migrations set schema" in said.stderr
    with psycopg.connect(empty_database_url) as conn:
        columns = conn.execute(
            "select column_name from information_schema.columns"
            " where table_schema = 'tether' and table_name = 'schema_migrations'"
            " order by ordinal_position"
        ).fetchall()
        assert [c for (c,) in columns] == ["id", "filename", "run_at"]
        rows = conn.execute("select filename from tether.schema_migrations").fetchall()
        assert rows == [("0001_init.sql",)]
        assert conn.execute("select to_regclass('public.conversation_sessions')").fetchone() == (
            None,
        )


def test_a_ledger_tether_cannot_write_to_is_refused_before_it_is_written(
    empty_database_url: str,
) -> None:
    """tether's columns, and one of the team's that every row must fill: each insert of
    the run would fail on it."""
    with psycopg.connect(empty_database_url, autocommit=True) as conn:
        conn.execute(
            "create schema tether; create table tether.schema_migrations (version text"
            " primary key, name text not null, checksum text not null, applied_at"
            " timestamptz not null default now(), author text not null)"
        )
    with pytest.raises(MigrationError, match="author is required, and tether never writes it"):
        migrate.migrate(empty_database_url)


def test_cli_reports_an_unreachable_database(server_url: str) -> None:
    result = run_tether("migrate", "--database-url", with_database(server_url, "nope_db"))
    assert result.returncode == 1
    assert "tether migrate:" in result.stderr
    assert "nope_db" in result.stderr
    assert "Traceback" not in result.stderr


# A migration of a later release that alters the session table, as an upgrade runs it.
ALTERS_THE_TABLE = "alter table public.conversation_sessions add column operator_note text;\n"


@contextlib.contextmanager
def _long_read(url: str) -> Iterator[int]:
    """A transaction that read the session table and stays open (a report, a client
    left idle in its transaction): it holds the table's ACCESS SHARE lock. Yields its pid."""
    with psycopg.connect(url) as conn:
        conn.execute("select count(*) from public.conversation_sessions")
        row = conn.execute("select pg_backend_pid()").fetchone()
        assert row is not None
        yield int(row[0])
        conn.rollback()


def _has_column(url: str) -> bool:
    with psycopg.connect(url) as conn:
        row = conn.execute(
            "select count(*) from information_schema.columns"
            " where table_name = 'conversation_sessions' and column_name = 'operator_note'"
        ).fetchone()
    return row == (1,)


def _waits_for_a_lock(url: str, besides: int) -> bool:
    with psycopg.connect(url) as conn:
        row = conn.execute(
            "select count(*) from pg_stat_activity"
            " where wait_event_type = 'Lock' and datname = current_database() and pid <> %s",
            (besides,),
        ).fetchone()
    return bool(row and row[0])


def test_a_long_transaction_makes_migrate_give_way_to_writers_then_apply(
    empty_database_url: str, migrations_copy: Path
) -> None:
    """Without a lock timeout, the ALTER waits for the long read and every $connect
    queues behind the ALTER until its own 3 s lock timeout fails it: an outage for as
    long as the read runs. With it, migrate gives way, the $connect is answered, and
    the migration applies once the read ends."""
    migrate.migrate(empty_database_url)
    (migrations_copy / "29991231000000_operator_note.sql").write_text(ALTERS_THE_TABLE)
    lines: list[str] = []
    outcome: list[object] = []
    policy = LockPolicy(
        timeout_seconds=0.3, attempts=200, first_pause_seconds=0.1, max_pause_seconds=0.3
    )

    def upgrade() -> None:
        try:
            outcome.append(
                migrate.migrate(
                    empty_database_url, migrations_copy, lock=policy, progress=lines.append
                )
            )
        except BaseException as exc:  # recorded for the assertions below
            outcome.append(exc)

    store = PostgresStore(empty_database_url)
    try:
        with _long_read(empty_database_url) as reader:
            runner = threading.Thread(target=upgrade, daemon=True)
            runner.start()
            deadline = time.monotonic() + 10
            while not _waits_for_a_lock(empty_database_url, besides=reader):
                assert time.monotonic() < deadline, "migrate never asked for the table's lock"
                time.sleep(0.02)
            # A $connect while migrate waits for the table.
            assert store.open_session(OpenSessionRequest(connection_id="during=")).opened
            deadline = time.monotonic() + 10
            while len(lines) < 2:  # gave way twice
                assert time.monotonic() < deadline, "migrate never gave way"
                time.sleep(0.02)
            assert not _has_column(empty_database_url)
        runner.join(30)
    finally:
        store.close()
    applied = outcome[0]
    assert isinstance(applied, list), outcome
    assert [m.filename for m in applied] == ["29991231000000_operator_note.sql"]
    assert _has_column(empty_database_url)
    assert "29991231000000" in _ledger(empty_database_url)
    assert all("the table is busy" in line and "trying again" in line for line in lines), lines
    assert f"pid {reader}" in lines[0]
    # Each try reads who holds the table afresh (not the first try's snapshot).
    ages = [float(age) for age in re.findall(r"in a transaction for ([0-9.]+)s", " ".join(lines))]
    assert len(lines) >= 2, lines
    assert ages[-1] > ages[0], lines


def test_a_runner_stalled_mid_run_does_not_hold_the_table_until_the_server_notices(
    empty_database_url: str, migrations_copy: Path
) -> None:
    """A runner stopped after the table's lock was taken (its machine suspended, its
    network gone, a CI job frozen) left its transaction idle and the lock held: every
    $connect and $disconnect failed after its 3 s until the server noticed, hours later
    for a lost network. The server now ends such a transaction after a few seconds;
    nothing of the run stays and the next run applies it. The runner, woken, said only
    libpq's "server closed the connection unexpectedly"; it now says why, and what to do."""
    migrate.migrate(empty_database_url)
    (migrations_copy / "29991231000000_operator_note.sql").write_text(
        ALTERS_THE_TABLE + "select pg_sleep(0.5);\n"
    )
    runner = subprocess.Popen(  # noqa: S603 - this interpreter, running tether's migrate
        [
            sys.executable,
            "-c",
            "import sys; from pathlib import Path; from tether import migrate;"
            " migrate.migrate(sys.argv[1], Path(sys.argv[2]))",
            empty_database_url,
            str(migrations_copy),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    store = PostgresStore(empty_database_url)
    try:
        deadline = time.monotonic() + 30
        while not _table_locked_for_altering(empty_database_url):
            assert runner.poll() is None, "the run ended before it was stopped"
            assert time.monotonic() < deadline, "the run never took the table's lock"
            time.sleep(0.01)
        runner.send_signal(signal.SIGSTOP)  # mid-statement: idle in its transaction next
        stopped = time.monotonic()
        opened = False
        while not opened and time.monotonic() - stopped < 15:
            with contextlib.suppress(DatabaseBusyError):  # its 3 s passed: try again
                opened = store.open_session(OpenSessionRequest(connection_id="after=")).opened
        assert opened, "the stalled run held the session table"
        assert time.monotonic() - stopped < 12
    finally:
        runner.send_signal(signal.SIGCONT)
        _, said = runner.communicate(timeout=30)
        store.close()
    assert runner.returncode != 0
    # Woken, it says what happened and what to do, not libpq's "server closed the
    # connection unexpectedly ... terminated abnormally".
    assert said.strip().splitlines()[-1] == (
        "tether.errors.MigrationError: the run stalled for more than 5s while holding the"
        " session table (its process stopped, its machine suspended or its network gone),"
        " so the server ended its transaction to let the table's writers on: nothing of"
        " it was applied; run it again"
    ), said
    assert not _has_column(empty_database_url)
    assert [m.filename for m in migrate.migrate(empty_database_url, migrations_copy)] == [
        "29991231000000_operator_note.sql"
    ]


def test_a_runner_killed_mid_statement_does_not_leave_it_holding_the_table(
    empty_database_url: str, migrations_copy: Path
) -> None:
    """A runner killed with no chance to cancel (kill -9, a CI job's timeout) while a
    statement ran (a check validated on a long history) left it running on the server,
    the table's lock held and every $connect and $disconnect failing, until it ended.
    The server now stops it within a second or so of its client going."""
    migrate.migrate(empty_database_url)
    (migrations_copy / "29991231000000_operator_note.sql").write_text(
        ALTERS_THE_TABLE + "select pg_sleep(30);\n"
    )
    runner = subprocess.Popen(  # noqa: S603 - this interpreter, running tether's migrate
        [
            sys.executable,
            "-c",
            "import sys; from pathlib import Path; from tether import migrate;"
            " migrate.migrate(sys.argv[1], Path(sys.argv[2]))",
            empty_database_url,
            str(migrations_copy),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    store = PostgresStore(empty_database_url)
    try:
        deadline = time.monotonic() + 30
        while not _table_locked_for_altering(empty_database_url):
            assert runner.poll() is None, "the run ended before it was killed"
            assert time.monotonic() < deadline, "the run never took the table's lock"
            time.sleep(0.01)
        runner.kill()
        runner.wait(10)
        killed = time.monotonic()
        opened = False
        while not opened and time.monotonic() - killed < 12:
            with contextlib.suppress(DatabaseBusyError):  # its 3 s passed: try again
                opened = store.open_session(OpenSessionRequest(connection_id="after=")).opened
        assert opened, "the killed run's statement held the session table"
    finally:
        store.close()
    assert not _has_column(empty_database_url)
    (migrations_copy / "29991231000000_operator_note.sql").write_text(ALTERS_THE_TABLE)
    assert [m.filename for m in migrate.migrate(empty_database_url, migrations_copy)] == [
        "29991231000000_operator_note.sql"
    ]


def _table_locked_for_altering(url: str) -> bool:
    with psycopg.connect(url, autocommit=True) as conn:
        row = conn.execute(
            "select count(*) from pg_locks"
            " where relation = 'public.conversation_sessions'::regclass"
            " and mode = 'AccessExclusiveLock' and granted"
        ).fetchone()
    return row == (1,)


def test_migrate_gives_up_on_a_table_busy_throughout_with_nothing_changed(
    empty_database_url: str, migrations_copy: Path
) -> None:
    migrate.migrate(empty_database_url)
    (migrations_copy / "29991231000000_operator_note.sql").write_text(ALTERS_THE_TABLE)
    before = _ledger(empty_database_url)
    policy = LockPolicy(timeout_seconds=0.2, attempts=2, first_pause_seconds=0.05)
    with _long_read(empty_database_url) as reader, pytest.raises(MigrationError) as refused:
        migrate.migrate(empty_database_url, migrations_copy, lock=policy, progress=print)
    message = str(refused.value)
    assert "stayed busy through 2 tries, each waiting at most 0.2s" in message
    assert f"pid {reader} (" in message
    assert "Nothing of this step was changed" in message
    assert "run the command again when the table is quieter" in message
    assert _ledger(empty_database_url) == before
    assert not _has_column(empty_database_url)


def test_cli_migrate_waits_for_a_busy_table_as_told_then_says_so(
    empty_database_url: str, tmp_path: Path
) -> None:
    # A database at an earlier release: the shipped migrations from the one that adds
    # a check to the session table on are pending.
    earlier = tmp_path / "earlier"
    earlier.mkdir()
    for path in MIGRATIONS.glob("*.sql"):
        if path.name < "20261129006000":
            shutil.copy(path, earlier / path.name)
    migrate.migrate(empty_database_url, earlier)
    pending = len(migrate.status(empty_database_url).pending)
    assert pending > 0
    with _long_read(empty_database_url) as reader:
        refused = run_tether(
            "migrate",
            "--lock-timeout",
            "0.2",
            "--attempts",
            "2",
            "--database-url",
            empty_database_url,
        )
    assert refused.returncode == 1, refused.stderr
    assert "tether migrate: the migrations: the table stayed busy through 2 tries" in refused.stderr
    assert f"pid {reader} (" in refused.stderr
    assert "or let it wait longer (--lock-timeout, --attempts)" in refused.stderr
    assert "the table is busy" in refused.stderr  # the try it gave way, said as it happened
    assert refused.stdout == ""
    assert len(migrate.status(empty_database_url).pending) == pending
    # Once the table is quiet, the same command applies them.
    applied = run_tether("migrate", "--database-url", empty_database_url)
    assert applied.returncode == 0, applied.stderr
    assert f"{pending} migration(s) applied" in applied.stdout


@pytest.mark.parametrize(
    ("flag", "value", "said"),
    [
        ("--lock-timeout", "0", "more than 0"),
        # 0 is refused too: the bound is said as it is.
        ("--lock-timeout", "2m", "more than 0 and at most 60 seconds, got '2m'"),
        ("--attempts", "0", "must be at least 1"),
        ("--attempts", "many", "not a whole number"),
    ],
)
def test_cli_migrate_refuses_a_bad_lock_option(flag: str, value: str, said: str) -> None:
    result = run_tether("migrate", flag, value, "--database-url", "postgresql://nowhere/x")
    assert result.returncode == 2
    assert flag in result.stderr
    assert said in result.stderr


def test_a_wait_on_another_schemas_table_names_its_holder_without_secrets(
    empty_database_url: str, migrations_copy: Path
) -> None:
    """A migration may wait on a table that is not tether's (a team's own, Supabase's):
    its holder is named all the same (it was "no transaction holds it now"), and an
    application name carrying a URL's password is shown without it."""
    migrate.migrate(empty_database_url)
    with psycopg.connect(empty_database_url, autocommit=True) as conn:
        conn.execute("create table public.team_notes (id int)")
    (migrations_copy / "29991231000000_team_notes.sql").write_text(
        "alter table public.team_notes add column note text;\n"
    )
    policy = LockPolicy(timeout_seconds=0.2, attempts=1)
    with psycopg.connect(
        empty_database_url, application_name="report postgresql://u:SECRETpw@h/db"
    ) as holder:
        holder.execute("select count(*) from public.team_notes")
        pid = holder.info.backend_pid
        with pytest.raises(MigrationError) as refused:
            migrate.migrate(empty_database_url, migrations_copy, lock=policy)
    message = str(refused.value)
    assert f"pid {pid} (report postgresql://u:***@h/db, idle in transaction" in message
    assert "SECRETpw" not in message
    assert "no transaction holds it now" not in message


def test_migrations_apply_as_an_owner_that_is_no_superuser(server_url: str) -> None:
    """Supabase's `postgres`, which runs `supabase db push`, is no superuser: it owns the
    database and may create roles, bypass row level security and replicate, no more.
    Every migration must apply as such an owner, and the schema then work: the suite's
    own runs, as the server's superuser, would not see a step only a superuser may take."""
    owner = f"tether_owner_{uuid.uuid4().hex[:10]}"
    database = f"tether_nosuper_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(server_url, autocommit=True) as admin:
        admin.execute(
            f'create role "{owner}" login nosuperuser createrole createdb replication bypassrls'
        )
        admin.execute(f'create database "{database}" owner "{owner}"')
    url = with_database(server_url, database)
    as_owner = psycopg.conninfo.make_conninfo(url, user=owner)
    try:
        applied = migrate.migrate(as_owner)
        assert [m.filename for m in applied] == sorted(p.name for p in MIGRATIONS.glob("*.sql"))
        store = PostgresStore(as_owner)
        try:
            opened = store.open_session(
                OpenSessionRequest(connection_id="owner=", user_id=uuid.uuid4())
            )
            assert opened.connection_id == "owner="
            ended = store.end_session("owner=", EndReason.CLIENT_DISCONNECT)
            assert ended.outcome is EndOutcome.ENDED
        finally:
            store.close()
    finally:
        with psycopg.connect(server_url, autocommit=True) as admin:
            admin.execute(f'drop database if exists "{database}" with (force)')
            admin.execute(f'drop role if exists "{owner}"')


def test_an_upgrade_run_as_a_role_that_does_not_own_tether_s_schema_names_the_one_that_does(
    empty_database_url: str, migrations_copy: Path
) -> None:
    """An upgrade run with another role's URL (the application's, a CI user's) was
    refused with Postgres's words alone, 'permission denied for schema tether' or 'for
    database ...', naming no role to run it as; it now names the owner to migrate as,
    and still changes nothing and prints no password."""
    for path in migrations_copy.glob("*.sql"):
        if path.name >= "20261130001000":
            path.unlink()
    migrate.migrate(empty_database_url, migrations_copy)
    before = _ledger(empty_database_url)
    other = f"tether_ci_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(empty_database_url, autocommit=True) as admin:
        owner = admin.execute("select current_user").fetchone()
        admin.execute(f'create role "{other}" login')
    assert owner is not None
    as_other = psycopg.conninfo.make_conninfo(
        empty_database_url, user=other, password="not-for-output"
    )
    way_on = (
        f"tether's migrations run as the owner of tether's schema, {owner[0]}; this"
        f" connection's role, {other}, neither is it nor has its rights: run the command"
        f" again with {owner[0]}'s database URL"
    )
    try:
        for readable in (False, True):
            if readable:  # a monitor's role, which may read the ledger
                with psycopg.connect(empty_database_url, autocommit=True) as admin:
                    admin.execute(f'grant usage on schema tether to "{other}"')
                    admin.execute(f'grant select on tether.schema_migrations to "{other}"')
            said = run_tether("migrate", "--database-url", as_other)
            assert said.returncode == 1
            assert said.stdout == ""
            assert "42501: permission denied" in said.stderr
            assert way_on in said.stderr, said.stderr
            assert "not-for-output" not in said.stderr
            status = run_tether("migrate", "--status", "--database-url", as_other)
            if readable:
                # It lists what is pending, and that this role may not apply it.
                assert status.returncode == 0, status.stderr
                assert "pending  20261130001000_limit_reached_first.sql" in status.stdout
                may_not = (
                    "this role may not apply what is pending. tether's migrations run as the"
                    f" owner of tether's schema, {owner[0]}; this connection's role, {other},"
                    f" neither is it nor has its rights: run `tether migrate` with {owner[0]}'s"
                    " database URL"
                )
                assert f"migrate would refuse: {may_not}" in status.stdout, status.stdout
                as_json = run_tether("migrate", "--status", "--json", "--database-url", as_other)
                assert json.loads(as_json.stdout)["refused"] == [may_not]
            else:
                assert status.returncode == 1
                assert "cannot read tether's ledger: 42501: permission denied" in status.stderr
                assert way_on in status.stderr, status.stderr
            assert "not-for-output" not in status.stdout + status.stderr
        assert _ledger(empty_database_url) == before
    finally:
        with psycopg.connect(empty_database_url, autocommit=True) as admin:
            admin.execute(f'drop owned by "{other}"')
            admin.execute(f'drop role "{other}"')


def test_status_as_a_role_that_may_not_judge_row_level_security_still_answers(
    database_url: str,
) -> None:
    """Only the functions' owner and service_role may ask which tables' row level
    security judges tether's functions: a role that reads the ledger alone (a
    monitor's) still gets its status, and is told what was not judged."""
    reader = f"tether_reader_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(database_url, autocommit=True) as admin:
        admin.execute(f'create role "{reader}" login')
        admin.execute(f'grant usage on schema tether to "{reader}"')
        admin.execute(f'grant select on all tables in schema tether to "{reader}"')
    try:
        as_reader = psycopg.conninfo.make_conninfo(database_url, user=reader)
        status = run_tether("migrate", "--status", "--database-url", as_reader)
        assert status.returncode == 0, status.stderr
        assert status.stdout.splitlines()[-1] == (
            "row level security not judged: this role may not ask; the role that applied"
            " the migrations may"
        )
        as_json = run_tether("migrate", "--status", "--json", "--database-url", as_reader)
        assert json.loads(as_json.stdout)["problems"] is None
        # Nothing pending: that this role may not migrate is nothing to say.
        assert json.loads(as_json.stdout)["refused"] == []
    finally:
        with psycopg.connect(database_url, autocommit=True) as admin:
            admin.execute(f'drop owned by "{reader}"')
            admin.execute(f'drop role "{reader}"')


def test_an_owner_that_may_not_create_the_roles_is_told_how_to_have_them_made(
    plain_owner_url: str, migrations_copy: Path
) -> None:
    """A self-hosted Postgres's application owner (no CREATEROLE, no BYPASSRLS) on a
    server without one of the roles tether's grants name: Postgres's refusal, 'permission
    denied to create role', named no role and no way on."""
    missing = f"service_role_{uuid.uuid4().hex[:8]}"  # a server that lacks it
    (shim,) = migrations_copy.glob("*_auth_shim.sql")
    shim.write_text(shim.read_text().replace("service_role", missing))
    with pytest.raises(MigrationError) as refused:
        migrate.migrate(plain_owner_url, migrations_copy)
    said = str(refused.value)
    assert said.startswith(
        f"{shim.name} failed; nothing of this run was kept: 42501: permission denied to"
        " create role. "
    )
    assert "create role service_role nologin noinherit bypassrls" in said


def test_migrate_refuses_to_call_tether_working_while_row_level_security_refuses_it(
    plain_owner_url: str,
) -> None:
    """A session table forcing row level security after migrating, its owner (tether's
    functions' role) no superuser and without BYPASSRLS: every session opened is refused,
    and the next `tether migrate` said only that the database was up to date."""
    first = run_tether("migrate", "--database-url", plain_owner_url)
    assert first.returncode == 0, first.stderr
    with psycopg.connect(plain_owner_url, autocommit=True) as owner:
        owner.execute("alter table public.conversation_sessions force row level security")

    again = run_tether("migrate", "--database-url", plain_owner_url)
    # A command that fails prints nothing on stdout: it said "database is up to date"
    # there, and exited 1. What was done and what fails are on stderr.
    assert (again.returncode, again.stdout) == (1, "")
    assert again.stderr.splitlines()[0] == "database is up to date"
    (said,) = [line for line in again.stderr.splitlines() if "row level security" in line]
    assert said.startswith(
        "tether migrate: public.conversation_sessions forces row level security on its owner"
    )
    assert said.endswith("alter table public.conversation_sessions no force row level security")
    as_json = run_tether("migrate", "--json", "--database-url", plain_owner_url)
    assert (as_json.returncode, as_json.stdout) == (1, "")
    assert said in as_json.stderr.splitlines()
    # --status says what would stop migrate: this too, in the same words, changing nothing.
    status = run_tether("migrate", "--status", "--database-url", plain_owner_url)
    assert status.returncode == 0, status.stderr
    assert status.stdout.splitlines()[-1] == said.replace(
        "tether migrate: ", "migrate would fail: "
    )
    status_json = run_tether("migrate", "--status", "--json", "--database-url", plain_owner_url)
    assert json.loads(status_json.stdout)["problems"] == [said.removeprefix("tether migrate: ")]

    with psycopg.connect(plain_owner_url, autocommit=True) as owner:
        owner.execute(said.split("Stop forcing it first: ", 1)[1])
    mended = run_tether("migrate", "--database-url", plain_owner_url)
    assert (mended.returncode, mended.stdout, mended.stderr) == (
        0,
        "database is up to date\n",
        "",
    )
    status = run_tether("migrate", "--status", "--json", "--database-url", plain_owner_url)
    assert json.loads(status.stdout)["problems"] == []
    # The keys the README names, migrate's and --status's.
    readme = " ".join(README.read_text().split())
    named = readme[readme.index("With `--json`, `tether migrate` prints one object") :]
    run_keys, status_keys = named.split("`tether migrate --status --json` prints", 1)
    status_keys = status_keys[: status_keys.index(". ")]

    def keys(text: str) -> set[str]:
        return set(re.findall(r"`([a-z_]+)`", re.sub(r"\([^)]*\)", "", text)))

    migrated = run_tether("migrate", "--json", "--database-url", plain_owner_url)
    assert set(json.loads(migrated.stdout)) == keys(run_keys)
    assert set(json.loads(status.stdout)) == keys(status_keys)


def test_a_table_forcing_row_level_security_with_policies_for_tether_s_role_is_no_problem(
    plain_owner_url: str,
) -> None:
    """A team that forces row level security and gives tether's functions' role (the
    owner) policies of its own: the functions open and end sessions, and `tether
    migrate` said they would be refused, exited 1 and so stopped the deploy."""
    first = run_tether("migrate", "--database-url", plain_owner_url)
    assert first.returncode == 0, first.stderr
    with psycopg.connect(plain_owner_url, autocommit=True) as owner:
        owner.execute("alter table public.conversation_sessions force row level security")
        owner.execute(
            "create policy team_lets_its_owner_in on public.conversation_sessions"
            " for all to current_user using (true) with check (true)"
        )
    store = PostgresStore(plain_owner_url)
    try:
        store.open_session(OpenSessionRequest(connection_id="let-in=", user_id=uuid.uuid4()))
        assert store.end_session("let-in=", EndReason.CLIENT_DISCONNECT).outcome is (
            EndOutcome.ENDED
        )
    finally:
        store.close()

    again = run_tether("migrate", "--database-url", plain_owner_url)
    assert (again.returncode, again.stderr) == (0, ""), again.stderr

    # A policy that covers reads alone lets no session be written: still said.
    with psycopg.connect(plain_owner_url, autocommit=True) as owner:
        owner.execute("drop policy team_lets_its_owner_in on public.conversation_sessions")
        owner.execute(
            "create policy team_lets_its_owner_read on public.conversation_sessions"
            " for select to public using (true)"
        )
    reads_only = run_tether("migrate", "--database-url", plain_owner_url)
    assert reads_only.returncode == 1
    assert "public.conversation_sessions forces row level security" in reads_only.stderr


def test_a_restrictive_policy_for_tether_s_role_is_reported_though_a_permissive_one_lets_it_in(
    plain_owner_url: str,
) -> None:
    """A table forcing row level security, a permissive policy letting the functions'
    owner in, and a restrictive one for that role that its rows never pass: every
    session opened was refused, while `tether migrate` said the database was up to
    date, /health found nothing wrong, and a deploy that migrates first went on."""
    first = run_tether("migrate", "--database-url", plain_owner_url)
    assert first.returncode == 0, first.stderr
    with psycopg.connect(plain_owner_url, autocommit=True) as owner:
        owner.execute("alter table public.conversation_sessions force row level security")
        owner.execute(
            "create policy team_lets_its_owner_in on public.conversation_sessions"
            " for all to current_user using (true) with check (true)"
        )
        owner.execute(
            "create policy team_holds_back_writes on public.conversation_sessions"
            " as restrictive for insert to public with check (false)"
        )
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            owner.execute("select * from public.tether_open_session_v1('held-back=')")

    again = run_tether("migrate", "--database-url", plain_owner_url)
    assert (again.returncode, again.stdout) == (1, ""), again.stderr
    assert (
        "tether migrate: public.conversation_sessions forces row level security on its owner"
        in again.stderr
    )
    assert "or a restrictive one applies to that role" in again.stderr

    # Gone, the permissive policy lets the functions in again: nothing to say.
    with psycopg.connect(plain_owner_url, autocommit=True) as owner:
        owner.execute("drop policy team_holds_back_writes on public.conversation_sessions")
        owner.execute("select * from public.tether_open_session_v1('let-in=')")
    mended = run_tether("migrate", "--database-url", plain_owner_url)
    assert (mended.returncode, mended.stderr) == (0, ""), mended.stderr


def test_a_policy_for_a_role_whose_privileges_tether_s_role_does_not_inherit_is_no_way_in(
    server_url: str, plain_owner_url: str, noinherit_policy_role: str
) -> None:
    """The functions' owner a member of the policies' role without inheriting its
    privileges (NOINHERIT): Postgres applies none of them to it, and every session
    opened was refused, while `tether migrate` said the database was up to date."""
    first = run_tether("migrate", "--database-url", plain_owner_url)
    assert first.returncode == 0, first.stderr
    with psycopg.connect(plain_owner_url, autocommit=True) as owner:
        owner.execute("alter table public.conversation_sessions force row level security")
        owner.execute(
            "create policy team_lets_its_role_in on public.conversation_sessions"
            f' for all to "{noinherit_policy_role}" using (true) with check (true)'
        )
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            owner.execute("select * from public.tether_open_session_v1('noinherit=')")

    again = run_tether("migrate", "--database-url", plain_owner_url)
    assert (again.returncode, again.stdout) == (1, ""), again.stderr
    assert (
        "tether migrate: public.conversation_sessions forces row level security on its owner"
        in again.stderr
    )

    # A member that inherits them is let in by the same policy: nothing to say.
    owner_role = psycopg.conninfo.conninfo_to_dict(plain_owner_url)["user"]
    with psycopg.connect(server_url, autocommit=True) as admin:
        admin.execute(f'revoke "{noinherit_policy_role}" from "{owner_role}"')
        admin.execute(f'alter role "{owner_role}" inherit')
        admin.execute(f'grant "{noinherit_policy_role}" to "{owner_role}"')
    with psycopg.connect(plain_owner_url, autocommit=True) as owner:
        owner.execute("select * from public.tether_open_session_v1('inherits=')")
    mended = run_tether("migrate", "--database-url", plain_owner_url)
    assert (mended.returncode, mended.stderr) == (0, ""), mended.stderr


def test_ctrl_c_after_the_run_says_what_stays_applied(
    empty_database_url: str, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Interrupted while the row security was read, once the run had committed: what
    it applied stays applied, and a run that applied nothing (up to date) says so, not
    "the migrations said above" of none."""
    from tether import row_security  # noqa: PLC0415
    from tether.cli import main  # noqa: PLC0415

    def interrupted(url: str) -> list[str]:
        raise KeyboardInterrupt

    monkeypatch.setattr(row_security, "problems_at", interrupted)
    assert main(["migrate", "--database-url", empty_database_url]) == 130
    said = capsys.readouterr().err
    assert f"{len(migrate.discover())} migration(s) applied" in said
    assert said.endswith("tether migrate: interrupted; the migrations said above stay applied\n")
    assert main(["migrate", "--database-url", empty_database_url]) == 130
    said = capsys.readouterr().err
    assert said == "database is up to date\ntether migrate: interrupted; nothing was applied\n"


def test_ctrl_c_mid_run_says_nothing_was_applied_and_nothing_was(
    empty_database_url: str, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every pending file runs in one transaction, so Ctrl-C mid-run leaves nothing; it
    was said as every command's interruption, "what it had done is kept", which sent
    the user looking for half a schema."""
    from tether.cli import main  # noqa: PLC0415

    ran: list[str] = []
    run_or_record = migrate.run_or_record

    def interrupted_at_the_fifth(
        conn: object, migration: migrate.Migration, planned: object
    ) -> object:
        if len(ran) == 4:
            raise KeyboardInterrupt
        ran.append(migration.filename)
        return run_or_record(conn, migration, planned)  # type: ignore[arg-type]

    monkeypatch.setattr(migrate, "run_or_record", interrupted_at_the_fifth)
    code = main(["migrate", "--database-url", empty_database_url])
    said = capsys.readouterr()
    assert code == 130, said.err
    assert len(ran) == 4
    assert "tether migrate: interrupted; nothing of this run was applied" in said.err
    assert "kept" not in said.err
    assert said.out == ""
    with psycopg.connect(empty_database_url) as conn:
        left = conn.execute(
            "select to_regnamespace('tether'), to_regclass('public.conversation_sessions')"
        ).fetchone()
    assert left == (None, None)
