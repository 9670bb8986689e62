"""The real Supabase CLI against Postgres 15: `supabase db push` of tether's files (the
repository's, or exported into a team's project), then `tether migrate`; and the
database linters, `supabase db lint` (plpgsql_check) and `supabase db advisors`."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import psycopg
import pytest

from tests import pg15 as pg15_support
from tests.conftest import ROOT
from tests.origin_fixture import build_origin
from tests.support import run_tether
from tether import migrate


def _supabase(cli: Path, project: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(  # noqa: S603 - the pinned CLI
        [str(cli), *args, "--yes"],
        cwd=project,
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
        env={"PATH": "/usr/bin:/bin", "HOME": str(project), "SUPABASE_TELEMETRY_DISABLED": "1"},
    )


def _project(tmp_path: Path, *, with_tether: bool = True) -> Path:
    folder = tmp_path / "supabase" / "migrations"
    if with_tether:
        shutil.copytree(ROOT / "supabase" / "migrations", folder)
    else:
        folder.mkdir(parents=True)
    return tmp_path


def _ledger(url: str) -> list[tuple[str, str | None]]:
    with psycopg.connect(url) as conn:
        rows = conn.execute(
            "select version, recorded_from from tether.schema_migrations order by version"
        ).fetchall()
    return [(str(v), r) for v, r in rows]


def test_db_push_then_tether_migrate_records_and_runs_nothing(
    supabase_cli: Path, pg15_database: str, tmp_path: Path
) -> None:
    project = _project(tmp_path)
    pushed = _supabase(supabase_cli, project, "db", "push", "--db-url", pg15_database)
    assert pushed.returncode == 0, pushed.stderr

    # The command says what it only recorded, not "applied".
    said = run_tether("migrate", "--database-url", pg15_database)
    assert said.returncode == 0, said.stderr
    files = migrate.discover()
    for m in files:
        assert f"recorded {m.filename}  (applied by supabase db push: {m.version})" in said.stdout
    assert "applied  " not in said.stdout
    # Recorded from Supabase's ledger (same versions here), not run a second time.
    assert _ledger(pg15_database) == [(m.version, m.version) for m in files]
    assert migrate.migrate(pg15_database) == []


def test_db_push_after_tether_migrate_stops_and_the_readme_s_repair_lets_it_go_on(
    supabase_cli: Path, pg15_database: str, tmp_path: Path
) -> None:
    """The two paths mixed, the other way round: db push runs tether's files again and
    stops on the first object they made; what the README says to do tells the CLI they
    are applied, and db push goes on with nothing to do."""
    project = _project(tmp_path)
    assert run_tether("migrate", "--database-url", pg15_database).returncode == 0
    stopped = _supabase(supabase_cli, project, "db", "push", "--db-url", pg15_database)
    assert stopped.returncode != 0
    said = stopped.stdout + stopped.stderr
    assert "Applying migration 20261126000200_conversation_sessions.sql..." in said
    assert 'ERROR: type "tether_end_reason" already exists (SQLSTATE 42710)' in said
    # The push changed nothing of tether's: every migration applied, none pending.
    assert migrate.status(pg15_database).pending == []

    versions = [m.version for m in migrate.discover()]
    repaired = _supabase(
        supabase_cli,
        project,
        "migration",
        "repair",
        "--status",
        "applied",
        *versions,
        "--db-url",
        pg15_database,
    )
    assert repaired.returncode == 0, repaired.stderr
    pushed = _supabase(supabase_cli, project, "db", "push", "--db-url", pg15_database)
    assert pushed.returncode == 0, pushed.stdout + pushed.stderr
    assert "Remote database is up to date" in pushed.stdout + pushed.stderr
    assert migrate.migrate(pg15_database) == []


def test_a_push_recorded_without_statements_is_refused_then_repaired_as_it_says(
    supabase_cli: Path, pg15_database: str, tmp_path: Path
) -> None:
    """Supabase's history holding tether's versions with no statements (an older CLI's
    push): tether migrate said "public.conversation_sessions already exists, and tether
    did not create it" and pointed at adopt. It now says what it found, and the repair
    it names, run with the real CLI, lets it record the push."""
    project = _project(tmp_path)
    pushed = _supabase(supabase_cli, project, "db", "push", "--db-url", pg15_database)
    assert pushed.returncode == 0, pushed.stderr
    with psycopg.connect(pg15_database, autocommit=True) as conn:
        conn.execute("update supabase_migrations.schema_migrations set statements = null")
    refused = run_tether("migrate", "--database-url", pg15_database)
    assert refused.returncode == 1
    assert "without the statements that would tell tether what they ran" in refused.stderr
    assert "tether adopt" not in refused.stderr
    (command,) = re.findall(r"`(supabase migration repair [^`]+)`", refused.stderr)
    repaired = _supabase(supabase_cli, project, *command.split()[1:], "--db-url", pg15_database)
    assert repaired.returncode == 0, repaired.stderr
    said = run_tether("migrate", "--database-url", pg15_database)
    assert said.returncode == 0, said.stderr
    files = migrate.discover()
    assert _ledger(pg15_database) == [(m.version, m.version) for m in files]


def test_db_push_to_a_postgres_without_tls_needs_sslmode_disable(
    supabase_cli: Path, pg15_database: str, tmp_path: Path
) -> None:
    """As the README says: the CLI asks for TLS unless the URL says otherwise."""
    without = pg15_database.replace("?sslmode=disable", "")
    assert without != pg15_database
    refused = _supabase(supabase_cli, _project(tmp_path), "db", "push", "--db-url", without)
    assert refused.returncode != 0
    assert "The server does not support SSL connections" in refused.stdout + refused.stderr


def test_adopt_check_knows_a_table_supabase_db_push_made_as_tether_s_own(
    supabase_cli: Path, pg15_database: str, tmp_path: Path
) -> None:
    """After `supabase db push` alone, --check took tether's own table for a team's and
    refused it for having tether's columns; once `tether migrate` had recorded the push,
    it said that tether migrate had created it."""
    pushed = _supabase(supabase_cli, _project(tmp_path), "db", "push", "--db-url", pg15_database)
    assert pushed.returncode == 0, pushed.stderr
    for recorded in (False, True):
        if recorded:
            said = run_tether("migrate", "--database-url", pg15_database)
            assert said.returncode == 0, said.stderr
        checked = run_tether("adopt", "--check", "--database-url", pg15_database)
        assert checked.returncode == 0, checked.stderr
        assert checked.stdout.splitlines()[:2] == [
            "public.conversation_sessions: tether's own",
            "tether's migrations created this table: there is nothing to adopt",
        ], (recorded, checked.stdout)
        refused = run_tether("adopt", "--apply", "--yes", "--database-url", pg15_database)
        assert refused.returncode == 1
        assert "tether's own (tether's migrations created it" in refused.stderr
        assert "tether migrate created" not in refused.stderr


def test_exported_files_push_after_a_team_s_newer_migrations(
    supabase_cli: Path, pg15_database: str, tmp_path: Path
) -> None:
    project = _project(tmp_path, with_tether=False)
    folder = project / "supabase" / "migrations"
    team = folder / "20991231000000_team_tables.sql"
    team.write_text("create table public.team_notes (id bigint primary key, body text);\n")
    first = _supabase(supabase_cli, project, "db", "push", "--db-url", pg15_database)
    assert first.returncode == 0, first.stderr

    # The repository's own files are older than the team's latest: db push refuses them.
    copied = [shutil.copy(p, folder) for p in sorted(migrate.migrations_path().glob("*.sql"))]
    refused = _supabase(supabase_cli, project, "db", "push", "--db-url", pg15_database)
    assert refused.returncode != 0
    assert "inserted before the last migration" in refused.stdout + refused.stderr
    for path in copied:
        Path(path).unlink()

    # Exported, they come after it, and db push takes them.
    written = migrate.export(folder)
    assert all(p.name > team.name for p in written)
    pushed = _supabase(supabase_cli, project, "db", "push", "--db-url", pg15_database)
    assert pushed.returncode == 0, pushed.stderr

    # tether migrate knows them as its own, by content.
    recorded = migrate.migrate(pg15_database)
    assert len(recorded) == len(written)
    exported_versions = [p.name.split("_", 1)[0] for p in written]
    assert [r for _, r in _ledger(pg15_database)] == exported_versions


def _supabase_versions(url: str) -> set[str]:
    with psycopg.connect(url) as conn:
        rows = conn.execute("select version from supabase_migrations.schema_migrations").fetchall()
    return {str(v) for (v,) in rows}


def test_an_adopted_table_s_exported_files_are_marked_applied_then_db_push_goes_on(
    supabase_cli: Path, pg15_database: str, tmp_path: Path
) -> None:
    """A team on the export + push path whose database already has the table: the push
    stops at the table's file, `tether adopt --apply` takes over, and `supabase migration
    repair` (as the adoption says) lets later pushes carry the team's own files."""
    build_origin(pg15_database, team_objects=False)
    project = _project(tmp_path, with_tether=False)
    folder = project / "supabase" / "migrations"
    written = migrate.export(folder)
    stopped = _supabase(supabase_cli, project, "db", "push", "--db-url", pg15_database)
    assert stopped.returncode != 0
    assert "already exists" in stopped.stdout + stopped.stderr

    adopted = run_tether("adopt", "--apply", "--yes", "--database-url", pg15_database)
    assert adopted.returncode == 0, adopted.stderr
    assert "supabase migration repair --status applied" in adopted.stdout

    unknown = [
        p.name.split("_", 1)[0]
        for p in written
        if p.name.split("_", 1)[0] not in _supabase_versions(pg15_database)
    ]
    assert unknown
    repaired = _supabase(
        supabase_cli,
        project,
        "migration",
        "repair",
        "--status",
        "applied",
        *unknown,
        "--db-url",
        pg15_database,
    )
    assert repaired.returncode == 0, repaired.stderr
    team = folder / "20991231000000_team_tables.sql"
    team.write_text("create table public.team_notes (id bigint primary key, body text);\n")
    pushed = _supabase(supabase_cli, project, "db", "push", "--db-url", pg15_database)
    assert pushed.returncode == 0, pushed.stdout + pushed.stderr
    assert "20991231000000" in _supabase_versions(pg15_database)
    # tether's own ledger is unmoved: every file applied, nothing pending.
    assert migrate.status(pg15_database).pending == []


def test_db_lint_finds_nothing(
    supabase_cli: Path, pg15: pg15_support.Cluster, pg15_database: str, tmp_path: Path
) -> None:
    if not pg15_support.has_extension(pg15, "plpgsql_check"):
        pytest.skip("plpgsql_check is not installed (Debian's postgresql-15-plpgsql-check)")
    migrate.migrate(pg15_database)
    result = _supabase(
        supabase_cli,
        tmp_path,
        "db",
        "lint",
        "--db-url",
        pg15_database,
        "--schema",
        "public",
        "--level",
        "warning",
        "--fail-on",
        "warning",
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "No schema errors found" in result.stderr


def test_db_advisors_security_finds_nothing(
    supabase_cli: Path, pg15_database: str, tmp_path: Path
) -> None:
    migrate.migrate(pg15_database)
    result = _supabase(
        supabase_cli,
        tmp_path,
        "db",
        "advisors",
        "--db-url",
        pg15_database,
        "--type",
        "security",
        "--level",
        "info",
    )
    assert result.returncode == 0, result.stderr
    # Findings come as a JSON array on stdout; none, as this line on stderr.
    assert result.stdout.strip() == "", result.stdout
    assert "No issues found" in result.stderr
