"""The migration runner and the `tether migrate` command, on a real Postgres."""

from __future__ import annotations

import re
import shutil
import threading
import uuid
from datetime import datetime
from pathlib import Path

import psycopg
import pytest

from tests.conftest import with_database
from tests.support import run_tether
from tether import migrate
from tether.drivers.postgres import PostgresStore
from tether.errors import DatabaseUnavailableError, MigrationError
from tether.models import OpenSessionRequest

MIGRATIONS = migrate.migrations_path()


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
    later = sorted(migrations_copy.glob("2026112900[6-9]*.sql"))
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


def test_cli_reports_an_unreachable_database(server_url: str) -> None:
    result = run_tether("migrate", "--database-url", with_database(server_url, "nope_db"))
    assert result.returncode == 1
    assert "tether migrate:" in result.stderr
    assert "nope_db" in result.stderr
    assert "Traceback" not in result.stderr
