"""The three ways a database gets tether's schema, and how they know of each other:
`tether migrate`, `supabase db push` of the repository's files, and `supabase db push`
of files exported into a team's own supabase/migrations."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import psycopg
import pytest

from tests.origin_fixture import build_origin
from tests.support import ORIGIN_TABLE, run_tether
from tether import migrate
from tether.errors import InvalidInputError, MigrationError
from tether.local import embedded


def _split(sql_text: str) -> list[str]:
    """Statements roughly as `supabase db push` stores them: cut after each `;` that
    ends a line. (The real CLI is exercised in test_supabase_cli.py.)"""
    return [part.strip() for part in re.split(r";\s*\n", sql_text) if part.strip(" \n;")]


def _push_like_supabase(url: str, files: list[migrate.Migration], versions: list[str]) -> None:
    """What `supabase db push` leaves behind: the schema, and its own ledger."""
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(
            "create schema if not exists supabase_migrations;"
            " create table if not exists supabase_migrations.schema_migrations"
            " (version text primary key, statements text[], name text)"
        )
        for migration, version in zip(files, versions, strict=True):
            with conn.transaction():
                conn.execute(migration.sql.encode())
                conn.execute(
                    "insert into supabase_migrations.schema_migrations values (%s, %s, %s)",
                    (version, _split(migration.sql), f"tether_{migration.name}"),
                )


def _ledger(url: str) -> list[tuple[str, str | None]]:
    with psycopg.connect(url) as conn:
        rows = conn.execute(
            "select version, recorded_from from tether.schema_migrations order by version"
        ).fetchall()
    return [(str(v), r) for v, r in rows]


def test_migrate_records_what_db_push_applied_and_runs_only_the_rest(
    empty_database_url: str,
) -> None:
    files = migrate.discover()
    pushed, rest = files[:-1], files[-1:]
    # Pushed as exported files: other versions, same content.
    versions = [f"2027010100{index:04d}" for index in range(len(pushed))]
    _push_like_supabase(empty_database_url, pushed, versions)

    state = migrate.status(empty_database_url)
    assert [m.version for m in state.pending] == [m.version for m in files]
    assert state.applied_by_supabase == {
        m.version: v for m, v in zip(pushed, versions, strict=True)
    }

    done = migrate.migrate(empty_database_url)
    assert [m.filename for m in done] == [m.filename for m in files]
    assert _ledger(empty_database_url) == [
        *((m.version, v) for m, v in zip(pushed, versions, strict=True)),
        (rest[0].version, None),
    ]
    assert migrate.migrate(empty_database_url) == []


def test_a_pushed_copy_with_other_content_is_refused_with_what_to_do(
    empty_database_url: str,
) -> None:
    first = migrate.discover()[0]
    edited = migrate.Migration(
        first.version, first.name, first.sql + "\ncreate table public.extra (id int);\n", "x"
    )
    _push_like_supabase(empty_database_url, [edited], ["20270101000000"])
    with pytest.raises(MigrationError, match="content differs") as refused:
        migrate.migrate(empty_database_url)
    assert "tether migrations export" in str(refused.value)
    with psycopg.connect(empty_database_url) as conn:
        assert conn.execute("select to_regclass('tether.schema_migrations')").fetchone() == (None,)


def test_a_push_recorded_without_its_statements_is_said_so_not_run_again(
    empty_database_url: str,
) -> None:
    """Supabase's ledger holding tether's versions without their statements (an older
    CLI's push, or its `migration repair`): migrate ran the files again, and stopped on
    what they had made, or took tether's own table for a team's to adopt."""
    files = migrate.discover()
    _push_like_supabase(empty_database_url, files, [m.version for m in files])
    with psycopg.connect(empty_database_url, autocommit=True) as conn:
        conn.execute("update supabase_migrations.schema_migrations set statements = null")
    said = run_tether("migrate", "--database-url", empty_database_url)
    assert said.returncode == 1, said.stdout + said.stderr
    assert (
        "tether migrate: Supabase's migration history (supabase_migrations.schema_migrations)"
        f" records {len(files)} of tether's migrations as applied by supabase db push"
        f" ({files[0].filename} first), without the statements that would tell tether what"
        " they ran, and tether's ledger does not hold them: run again, they would fail on"
        " what they made; nothing was changed." in said.stderr
    ), said.stderr
    repair = "supabase migration repair --status applied " + " ".join(m.version for m in files)
    assert f"`{repair}`" in said.stderr
    assert "already exists" not in said.stderr and "tether adopt" not in said.stderr
    status = run_tether("migrate", "--status", "--database-url", empty_database_url)
    assert repair in status.stdout + status.stderr
    with psycopg.connect(empty_database_url) as conn:
        assert conn.execute("select to_regclass('tether.schema_migrations')").fetchone() == (None,)

    # What the CLI's repair writes, each file's statements: recorded, nothing run.
    with psycopg.connect(empty_database_url, autocommit=True) as conn:
        for m in files:
            conn.execute(
                "update supabase_migrations.schema_migrations set statements = %s"
                " where version = %s",
                (_split(m.sql), m.version),
            )
    said = run_tether("migrate", "--database-url", empty_database_url)
    assert said.returncode == 0, said.stderr
    assert _ledger(empty_database_url) == [(m.version, m.version) for m in files]


def test_migrate_refuses_a_table_it_did_not_create_and_points_at_adopt(
    empty_database_url: str,
) -> None:
    with psycopg.connect(empty_database_url, autocommit=True) as conn:
        conn.execute(ORIGIN_TABLE)
    with pytest.raises(MigrationError, match="tether adopt --check"):
        migrate.migrate(empty_database_url)
    # --status lists what is pending, and says what stops migrate: the status it was
    # asked for (it refused with the reason alone).
    status = run_tether("migrate", "--status", "--database-url", empty_database_url)
    assert status.returncode == 0, status.stderr
    assert f"pending  {migrate.discover()[0].filename}" in status.stdout
    assert "migrate would refuse: public.conversation_sessions already exists" in status.stdout
    assert "tether adopt --check" in status.stdout
    as_json = run_tether("migrate", "--status", "--json", "--database-url", empty_database_url)
    assert as_json.returncode == 0
    assert "tether adopt --check" in json.loads(as_json.stdout)["refused"][0]
    with psycopg.connect(empty_database_url) as conn:
        left = conn.execute(
            "select to_regnamespace('tether'), to_regtype('public.tether_end_reason'),"
            " (select count(*) from pg_proc where proname like 'tether%%')"
        ).fetchone()
    assert left == (None, None, 0)


def _stopped_push_on_a_team_table(url: str) -> tuple[list[migrate.Migration], list[str]]:
    """A team with its own table who first tried `supabase db push` of tether's exported
    files: the push applied the files before the table's, then stopped on the table."""
    build_origin(url)
    table = migrate.table_migration(migrate.discover())
    before = [m for m in migrate.discover() if m.version < table.version]
    versions = [f"2027010100{index:04d}" for index in range(len(before))]
    _push_like_supabase(url, before, versions)
    return before, versions


def test_adoption_records_what_db_push_applied_instead_of_running_it_again(
    empty_database_url: str, tmp_path: Path
) -> None:
    before, versions = _stopped_push_on_a_team_table(empty_database_url)
    adopted = run_tether(
        "adopt", "--apply", "--yes", "--database-url", empty_database_url, cwd=tmp_path
    )
    assert adopted.returncode == 0, adopted.stderr
    for migration, version in zip(before, versions, strict=True):
        assert (
            f"recorded {migration.filename} (applied by supabase db push as {version})"
            in adopted.stdout
        )

    files = migrate.discover()
    table = migrate.table_migration(files)
    assert _ledger(empty_database_url) == [
        *((m.version, v) for m, v in zip(before, versions, strict=True)),
        (table.version, migrate.ADOPTED),
        *((m.version, None) for m in files if m.version > table.version),
    ]
    assert migrate.migrate(empty_database_url) == []


def test_adoption_refuses_a_pushed_copy_it_cannot_tell_apart_and_writes_nothing(
    empty_database_url: str, tmp_path: Path
) -> None:
    build_origin(empty_database_url)
    first = migrate.discover()[0]
    edited = migrate.Migration(
        first.version, first.name, first.sql + "\ncreate table public.extra (id int);\n", "x"
    )
    _push_like_supabase(empty_database_url, [edited], ["20270101000000"])
    checked = run_tether("adopt", "--check", "--database-url", empty_database_url, cwd=tmp_path)
    assert "content differs" in checked.stdout
    adopted = run_tether(
        "adopt", "--apply", "--yes", "--database-url", empty_database_url, cwd=tmp_path
    )
    assert adopted.returncode != 0
    assert "content differs" in adopted.stderr
    with psycopg.connect(empty_database_url) as conn:
        assert conn.execute("select to_regclass('tether.schema_migrations')").fetchone() == (None,)


def test_a_team_s_own_migration_named_like_tether_s_is_not_taken_for_a_copy(
    empty_database_url: str, tmp_path: Path
) -> None:
    """`supabase migration new conversation_sessions` is how many teams made the table
    they now adopt: that file, at the team's own version, is theirs, not a pushed copy
    of tether's."""
    build_origin(empty_database_url)
    with psycopg.connect(empty_database_url, autocommit=True) as conn:
        conn.execute(
            "create schema supabase_migrations;"
            " create table supabase_migrations.schema_migrations"
            " (version text primary key, statements text[], name text)"
        )
        conn.execute(
            "insert into supabase_migrations.schema_migrations values (%s, %s, %s)",
            ("20250301120000", _split(ORIGIN_TABLE), "conversation_sessions"),
        )
    checked = run_tether("adopt", "--check", "--database-url", empty_database_url, cwd=tmp_path)
    assert "content differs" not in checked.stdout + checked.stderr
    adopted = run_tether(
        "adopt", "--apply", "--yes", "--database-url", empty_database_url, cwd=tmp_path
    )
    assert adopted.returncode == 0, adopted.stderr
    table = migrate.table_migration(migrate.discover())
    assert (table.version, migrate.ADOPTED) in _ledger(empty_database_url)


def test_migrate_json_is_json_alone(empty_database_url: str) -> None:
    first = run_tether("migrate", "--json", "--database-url", empty_database_url)
    assert first.returncode == 0, first.stderr
    assert json.loads(first.stdout)["applied_now"] == [m.filename for m in migrate.discover()]
    again = run_tether("migrate", "--json", "--database-url", empty_database_url)
    assert json.loads(again.stdout) == {
        "applied_now": [],
        "recorded_from_supabase": [],
        "problems": [],
    }
    status = run_tether("migrate", "--status", "--json", "--database-url", empty_database_url)
    applied_at = json.loads(status.stdout)["applied"][0]["applied_at"]
    assert "T" in applied_at and datetime.fromisoformat(applied_at).tzinfo is not None


def test_export_versions_files_after_the_team_s_own(tmp_path: Path) -> None:
    folder = tmp_path / "supabase" / "migrations"
    folder.mkdir(parents=True)
    (folder / "20991231235959_team_schema.sql").write_text("create table public.team (id int);\n")

    written = migrate.export(folder)
    files = migrate.discover()
    assert [p.name.split("_", 1)[1] for p in written] == [f"tether_{m.name}.sql" for m in files]
    versions = [p.name.split("_", 1)[0] for p in written]
    assert versions[0] == "21000101000000"  # one second after the team's latest
    assert versions == sorted(versions)
    assert len(set(versions)) == len(versions)
    for path, migration in zip(written, files, strict=True):
        assert path.read_bytes() == migration.sql.encode()

    # Run again (an upgrade with nothing new): nothing is written twice.
    assert migrate.export(folder) == []


def test_export_refuses_to_write_again_a_migration_whose_copy_was_edited(
    tmp_path: Path,
) -> None:
    # A comment added to an exported file: its content no longer matches, and an export
    # wrote the migration a second time, which db push would then run twice.
    written = migrate.export(tmp_path)
    edited = written[-1]
    edited.write_text(edited.read_text() + "-- reviewed by the team\n")
    before = sorted(p.name for p in tmp_path.iterdir())
    with pytest.raises(MigrationError, match="edited since it was exported") as refused:
        migrate.export(tmp_path)
    assert edited.name in str(refused.value)
    assert sorted(p.name for p in tmp_path.iterdir()) == before
    cli = run_tether("migrations", "export", "--to", str(tmp_path))
    assert cli.returncode == 1 and edited.name in cli.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == before


def test_export_refuses_a_prefix_before_the_team_s_latest(tmp_path: Path) -> None:
    (tmp_path / "20300101000000_team.sql").write_text("select 1;\n")
    with pytest.raises(InvalidInputError, match="not after the folder's latest"):
        migrate.export(tmp_path, version_prefix="20290101000000")
    with pytest.raises(InvalidInputError, match="YYYYMMDDHHMMSS"):
        migrate.export(tmp_path, version_prefix="2030")
    written = migrate.export(tmp_path, version_prefix="20300101000001")
    assert written[0].name.startswith("20300101000001_tether_")


def test_export_reads_a_folder_as_the_supabase_cli_does(tmp_path: Path) -> None:
    """Any <digits>_<name>.sql is a migration to the CLI: kebab case, capitals, short
    versions; other files, folders and undecodable bytes are no reason to stop."""
    (tmp_path / "0001_init.sql").write_text("select 1;\n")
    (tmp_path / "20240101000000_create-users.sql").write_text("select 2;\n")
    (tmp_path / "20240101000001_Init.sql").write_bytes(b"select '\xff';\n")
    (tmp_path / "README.md").write_text("notes\n")
    (tmp_path / "20240101000002_folder.sql").mkdir()
    written = migrate.export(tmp_path, now=datetime(2026, 1, 1, tzinfo=UTC))
    assert written[0].name.startswith("20260101000000_tether_")
    assert migrate.export(tmp_path) == []


@pytest.mark.parametrize("latest", ["9_users.sql", "2_users.sql", "99991231235959_future.sql"])
def test_export_refuses_a_folder_no_timestamp_can_follow_in_db_push_s_order(
    tmp_path: Path, latest: str
) -> None:
    """db push walks the files by name and compares versions as text: after 2_users.sql,
    20260101000000_x.sql sorts first by name, and would be refused as inserted before."""
    (tmp_path / "1_init.sql").write_text("select 1;\n")
    (tmp_path / latest).write_text("select 9;\n")
    with pytest.raises(MigrationError, match="comes after the folder's latest"):
        migrate.export(tmp_path, now=datetime(2026, 1, 1, tzinfo=UTC))
    with pytest.raises(InvalidInputError, match="not after the folder's latest"):
        migrate.export(tmp_path, version_prefix="20300101000000")
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(["1_init.sql", latest])


def test_export_after_9_users_takes_no_prefix_either(tmp_path: Path) -> None:
    (tmp_path / "9_users.sql").write_text("select 9;\n")
    # Greater as text, but 90000101000000_x.sql sorts before 9_users.sql by name.
    with pytest.raises(InvalidInputError, match="not after the folder's latest"):
        migrate.export(tmp_path, version_prefix="90000101000000")


def test_export_follows_a_short_version_it_sorts_after(tmp_path: Path) -> None:
    (tmp_path / "0001_init.sql").write_text("select 1;\n")
    (tmp_path / "1_users.sql").write_text("select 2;\n")
    written = migrate.export(tmp_path, now=datetime(2026, 1, 1, tzinfo=UTC))
    names = sorted(p.name for p in tmp_path.iterdir())
    assert names[-len(written) :] == sorted(p.name for p in written)


def test_export_may_end_at_the_last_moment_there_is(tmp_path: Path) -> None:
    written = migrate.export(tmp_path, now=datetime(2026, 1, 1, tzinfo=UTC))
    written[-1].unlink()
    (last,) = migrate.export(tmp_path, version_prefix="99991231235959")
    assert last.name.startswith("99991231235959_tether_")


@pytest.mark.parametrize(
    ("prefix", "says", "kind"),
    [
        # A prefix that is no moment is bad input (the command exits 2).
        ("99999999999999", "YYYYMMDDHHMMSS", InvalidInputError),
        ("20260230000000", "YYYYMMDDHHMMSS", InvalidInputError),
        ("00000000000000", "YYYYMMDDHHMMSS", InvalidInputError),
        ("00010101000000", "year 1000 or later", InvalidInputError),
        ("\uff12\uff10\uff12\uff16" + "0" * 10, "YYYYMMDDHHMMSS", InvalidInputError),
        ("99991231235959", "no room for", MigrationError),
    ],
)
def test_export_refuses_a_prefix_that_writes_no_version_before_writing(
    tmp_path: Path, prefix: str, says: str, kind: type[Exception]
) -> None:
    with pytest.raises(kind, match=says):
        migrate.export(tmp_path, version_prefix=prefix)
    assert list(tmp_path.iterdir()) == []


def test_export_refuses_a_folder_it_cannot_follow_or_write(tmp_path: Path) -> None:
    (tmp_path / "99991231235959_future.sql").write_text("select 1;\n")
    with pytest.raises(MigrationError, match="comes after the folder's latest"):
        migrate.export(tmp_path)
    a_file = tmp_path / "a-file"
    a_file.write_text("x")
    with pytest.raises(MigrationError, match="is not a folder"):
        migrate.export(a_file)
    with pytest.raises(MigrationError, match="cannot write to"):
        migrate.export(a_file / "sub")
    cli = run_tether("migrations", "export", "--to", str(a_file / "sub"))
    assert cli.returncode == 1
    assert cli.stderr.startswith("tether migrations export: cannot write to")
    assert "Traceback" not in cli.stderr


def test_export_cut_short_mid_file_leaves_only_whole_files(tmp_path: Path) -> None:
    """A full disk (here: a limit on the size of a file) while a migration is written
    must leave no part of it where supabase db push would find it and run it; the files
    written before it are whole, and an export run again writes the rest."""
    files = migrate.discover()
    first, second = (len(m.sql.encode()) for m in files[:2])
    assert second > first
    folder = tmp_path / "migrations"
    # The limit lets the first file be written whole, and cuts the second short.
    program = (
        "import resource, sys\n"
        f"resource.setrlimit(resource.RLIMIT_FSIZE, ({first}, {first}))\n"
        "from tether.cli import main\n"
        f"sys.exit(main(['migrations', 'export', '--to', {str(folder)!r}]))\n"
    )
    cut = subprocess.run(  # noqa: S603 - this interpreter, running tether
        [sys.executable, "-c", program], capture_output=True, text=True, timeout=120, check=False
    )
    assert cut.returncode == 1, cut.stderr
    assert cut.stderr.startswith("tether migrations export: cannot write to")
    assert "(1 written before it)" in cut.stderr
    (kept,) = folder.iterdir()
    assert kept.name.endswith(f"_tether_{files[0].name}.sql")
    assert kept.read_bytes() == files[0].sql.encode()

    written = migrate.export(folder)
    assert [p.name.split("_", 1)[1] for p in written] == [f"tether_{m.name}.sql" for m in files[1:]]
    assert sorted(p.name for p in folder.iterdir()) == sorted(
        [kept.name, *(p.name for p in written)]
    )
    for path, migration in zip(written, files[1:], strict=True):
        assert path.read_bytes() == migration.sql.encode()


@pytest.mark.parametrize(
    "command",
    [
        ["migrate"],
        ["migrate", "--status"],
        ["sweep"],
        ["close-orphans", "--older-than", "2h", "--apply", "--yes"],
    ],
)
def test_commands_on_real_data_need_a_url_and_never_start_a_database(
    command: list[str], tmp_path: Path
) -> None:
    result = run_tether(*command, cwd=tmp_path)
    assert result.returncode == 1
    assert "no database URL" in result.stderr
    assert "--embedded" in result.stderr
    assert "Traceback" not in result.stderr
    assert not (tmp_path / ".tether").exists()


def test_a_mistyped_url_is_refused_without_its_password(tmp_path: Path) -> None:
    url = "postgress://app:hunter2-secret@db.example.com/postgres"
    # A flag is refused as the command line is read (2, as argparse does); the
    # environment's URL is a setting (1).
    for result, status in (
        (run_tether("migrate", "--database-url", url, cwd=tmp_path), 2),
        (run_tether("sweep", cwd=tmp_path, env={"DATABASE_URL": f" {url}"}), 1),
    ):
        assert result.returncode == status, result.stderr
        assert "postgress://" in result.stderr
        assert "hunter2-secret" not in result.stderr + result.stdout


def test_migrations_path_names_the_shipped_files(tmp_path: Path) -> None:
    result = run_tether("migrations", "path", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    folder = Path(result.stdout.strip())
    assert sorted(p.name for p in folder.glob("*.sql")) == [m.filename for m in migrate.discover()]


def test_embedded_wins_over_the_environment_and_refuses_a_second_url(tmp_path: Path) -> None:
    production = "postgresql://app:never-used@production.example.com/postgres"
    both = run_tether(
        "migrate", "--status", "--embedded", "--database-url", production, cwd=tmp_path
    )
    assert both.returncode == 2
    assert "not both" in both.stderr
    data = tmp_path / ".tether" / "pgdata"
    # `tether dev` made (and migrated) its database here, and is not running now.
    made = embedded.start(data)
    migrate.migrate(made.url)
    made.stop()
    # DATABASE_URL points at production; --embedded must not act on it.
    chosen = run_tether(
        "migrate", "--status", "--embedded", cwd=tmp_path, env={"DATABASE_URL": production}
    )
    try:
        assert chosen.returncode == 0, chosen.stderr
        assert "production.example.com" not in chosen.stdout + chosen.stderr
        assert "migration(s)" in chosen.stdout or "pending" in chosen.stdout.lower()
        # Started for the command alone, and stopped with it.
        assert not embedded.is_running(data)
        # The same for a command that keeps tether's own connection open to the end.
        listed = run_tether("sessions", "--embedded", "--json", cwd=tmp_path)
        assert listed.returncode == 0, listed.stderr
        assert not embedded.is_running(data)
        # kick takes the running dev's @connections endpoint: none runs, and it says so.
        kicked = run_tether(
            "kick", "--user", "0193b5a4-0000-7000-8000-000000000000", "--embedded", "--yes",
            cwd=tmp_path,
        )  # fmt: skip
        assert kicked.returncode == 1
        assert "no tether dev is running in this folder" in kicked.stderr
        assert not embedded.is_running(data)
        # So does sweep, which runs all the same: its endpoint is that dev's too, and
        # naming the flag and setting alone left the developer to guess why.
        swept = run_tether("sweep", "--embedded", cwd=tmp_path)
        assert swept.returncode == 0, swept.stderr
        (said,) = [line for line in swept.stderr.splitlines() if "@connections" in line]
        assert said.startswith(
            "tether sweep: no @connections endpoint (no tether dev is running in this folder,"
        )
        assert not embedded.is_running(data)
    finally:
        embedded.stop_if_running(data)


def test_embedded_in_a_folder_without_tether_dev_s_database_makes_none(tmp_path: Path) -> None:
    """Run from the wrong folder, --embedded would have answered from a new, empty
    database (and left it running): it says where it looked instead."""
    for command in (["migrate", "--status"], ["sessions"], ["adopt", "--check"]):
        result = run_tether(*command, "--embedded", cwd=tmp_path)
        assert result.returncode == 1, command
        assert "no embedded database in" in result.stderr
        assert "tether dev" in result.stderr
    assert not (tmp_path / ".tether").exists()


def test_what_db_push_applied_is_said_recorded_not_applied(empty_database_url: str) -> None:
    """Recorded files were said each as "recorded", then summed up as "N migration(s)
    applied", every one of them; `tether deploy --migrate` said each "applied"."""
    files = migrate.discover()
    pushed = files[:-2]
    _push_like_supabase(empty_database_url, pushed, [m.version for m in pushed])
    said = run_tether("migrate", "--database-url", empty_database_url)
    assert said.returncode == 0, said.stderr
    assert said.stdout.splitlines()[-1] == (
        f"2 migration(s) applied, {len(pushed)} recorded as applied by supabase db push"
    )
    assert f"applied  {files[-1].filename}" in said.stdout
    assert f"applied  {files[0].filename}" not in said.stdout


def test_a_history_of_a_cli_that_recorded_versions_alone_is_said_so(
    empty_database_url: str,
) -> None:
    """A CLI of before it recorded names and statements made its table with a version
    alone (a later one adds the columns as it runs): migrate failed on its missing name
    column ("column "name" does not exist"), where a history without statements is said."""
    files = migrate.discover()
    _push_like_supabase(empty_database_url, files, [m.version for m in files])
    with psycopg.connect(empty_database_url, autocommit=True) as conn:
        conn.execute(
            "alter table supabase_migrations.schema_migrations"
            " drop column statements, drop column name"
        )
    said = run_tether("migrate", "--database-url", empty_database_url)
    assert said.returncode == 1, said.stdout + said.stderr
    assert f"records {len(files)} of tether's migrations as applied by supabase db push" in (
        said.stderr
    ), said.stderr
    repair = "supabase migration repair --status applied " + " ".join(m.version for m in files)
    assert f"`{repair}`" in said.stderr
    with psycopg.connect(empty_database_url) as conn:
        assert conn.execute("select to_regclass('tether.schema_migrations')").fetchone() == (None,)
