"""`tether adopt`: the origin's table, taken over in place, on Postgres 18 (embedded)
and on Postgres 15 (Supabase's production version) where it can be installed."""

from __future__ import annotations

import io
import json
import re
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg import errors, sql
from psycopg.conninfo import conninfo_to_dict, make_conninfo
from psycopg.rows import dict_row

from tests.conftest import EventBus, set_for_database, with_database
from tests.origin_fixture import (
    DAILY_STATS,
    OLD_END,
    OLD_INSERT,
    OLD_SHUTDOWN,
    ORPHAN_ALERT,
    TEAM_OBJECTS,
    Origin,
    OriginRow,
    build_origin,
    fill_history,
)
from tests.support import (
    ORIGIN_TABLE,
    TETHER,
    FakeLambdaContext,
    functions_reading_temporary_types,
    load_event,
    run_tether,
    ws_event,
)
from tether import migrate, runtime
from tether import store as store_module
from tether.adopt import catalog
from tether.adopt.apply import _release_adopt_lock, apply, unbuilt_indexes
from tether.adopt.finish import finish, plan_finish
from tether.adopt.inspect import inspect
from tether.adopt.lock import ADOPT_LOCK_KEY
from tether.errors import AdoptionError, MigrationError
from tether.locks import LockPolicy

Conn = psycopg.Connection[dict[str, Any]]
README = Path(__file__).resolve().parents[2] / "README.md"
FAST = LockPolicy(timeout_seconds=0.5, attempts=40, first_pause_seconds=0.1)


# --- a server per Postgres version, and databases on it ---------------------------


@dataclass
class Server:
    label: str
    admin_url: str
    created: list[str] = field(default_factory=list)

    def database(self, *, migrated: bool = False, encoding: str | None = None) -> str:
        name = f"tether_adopt_{uuid.uuid4().hex[:12]}"
        create = sql.SQL("create database {}").format(sql.Identifier(name))
        if encoding:
            create = sql.SQL(
                "{} encoding {} lc_collate 'C' lc_ctype 'C' template template0"
            ).format(create, sql.Literal(encoding))
        with psycopg.connect(self.admin_url, autocommit=True) as admin:
            admin.execute(create)
        self.created.append(name)
        url = with_database(self.admin_url, name)
        if migrated:
            migrate.migrate(url)
        return url

    def drop_all(self) -> None:
        with psycopg.connect(self.admin_url, autocommit=True) as admin:
            for name in self.created:
                admin.execute(
                    sql.SQL("drop database if exists {} with (force)").format(sql.Identifier(name))
                )


@pytest.fixture(params=["postgres18", "postgres15"])
def server(request: pytest.FixtureRequest) -> Iterator[Server]:
    """The embedded Postgres 18, and Postgres 15 from the system's packages (the
    tests skip on it, saying why, where it cannot be installed)."""
    if request.param == "postgres18":
        admin = str(request.getfixturevalue("server_url"))
    else:
        admin = request.getfixturevalue("pg15").url()
    found = Server(str(request.param), admin)
    yield found
    found.drop_all()


# The command line's own behaviour: one Postgres is enough.
ON_ONE_SERVER = pytest.mark.parametrize("server", ["postgres18"], indirect=True)


@dataclass
class Adoptable:
    url: str
    origin: Origin


@pytest.fixture
def adoptable(server: Server) -> Adoptable:
    url = server.database()
    return Adoptable(url, build_origin(url))


def _connect(url: str) -> psycopg.Connection[dict[str, Any]]:
    return psycopg.connect(url, autocommit=True, row_factory=dict_row)


def _drop_owned(
    conn: psycopg.Connection[Any], role: sql.Composable, *, cascade: bool = False
) -> None:
    """A test's clean-up of the roles it made. Now and then Postgres reports a deadlock
    between this statement and a background process at work on the table meanwhile
    (autovacuum, by the look of it: nothing of the test's was left running), and fails
    this one; tried again, it goes through."""
    statement = sql.SQL("drop owned by {}{}").format(role, sql.SQL(" cascade" if cascade else ""))
    for attempt in (1, 2, 3):
        try:
            conn.execute(statement)
        except errors.DeadlockDetected:
            if attempt == 3:
                raise
            time.sleep(0.2)
        else:
            return


def _rows(url: str) -> dict[uuid.UUID, dict[str, Any]]:
    with _connect(url) as conn:
        return {
            r["session_id"]: r
            for r in conn.execute("select * from public.conversation_sessions").fetchall()
        }


def _expected_end(row: OriginRow, start: datetime) -> datetime | None:
    if row.expect_end == "start":
        return start
    assert not isinstance(row.expect_end, str)
    return row.expect_end


def _snapshot(url: str) -> dict[str, Any]:
    """Everything --check must leave as it was: the rows, and the catalog's objects."""
    with _connect(url) as conn:
        rows = conn.execute(
            "select to_jsonb(s) as r from public.conversation_sessions s order by session_id"
        ).fetchall()
        objects = conn.execute(
            "select (select count(*) from pg_class) as relations,"
            " (select count(*) from pg_proc) as functions,"
            " (select count(*) from pg_namespace) as schemas,"
            " (select count(*) from pg_type) as types,"
            " (select count(*) from pg_constraint) as constraints,"
            " (select count(*) from pg_trigger) as triggers"
        ).fetchone()
    return {"rows": [r["r"] for r in rows], "objects": objects}


# --- --check -------------------------------------------------------------------------


def test_check_reports_what_it_finds_and_changes_nothing(adoptable: Adoptable) -> None:
    origin = adoptable.origin
    before = _snapshot(adoptable.url)

    result = run_tether("adopt", "--check", "--json", "--database-url", adoptable.url)
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)

    assert report["state"] == "not adopted"
    assert report["refusals"] == []
    assert report["rows"] == 85
    assert report["marked_active"] == 24  # what the table says: 18 orphans, 2 live, 4 ended
    assert report["active"] == 20
    assert report["live"] == 2
    assert sum(report["orphans"].values()) == 18
    oldest = datetime.fromisoformat(report["oldest_active_start"])
    assert oldest == origin.now - timedelta(hours=444)
    assert report["ended_unrecorded"] == sum(r.expect_reason == "unrecorded" for r in origin.rows)
    assert report["ended_unknown"] == sum(r.expect_reason == "end_unknown" for r in origin.rows)
    assert report["corrected"] == sum(r.corrected for r in origin.rows) == 28

    expected_kinds: dict[str, set[str]] = {}
    for row in origin.rows:
        for kind in row.kinds:
            expected_kinds.setdefault(kind, set()).add(str(row.session_id))
    found = {k["kind"]: k for k in report["kinds"]}
    assert set(found) == set(expected_kinds)
    for kind, ids in expected_kinds.items():
        assert found[kind]["rows"] == len(ids), kind
        assert set(found[kind]["examples"]) <= ids
        assert len(found[kind]["examples"]) == min(5, len(ids))
        assert found[kind]["rule"]

    assert report["columns_kept"] == ["agent_id text", "metadata jsonb"]
    assert "connection_id text" in report["columns_added"]
    assert any(
        c.startswith("duration_seconds: double precision -> numeric")
        for c in report["columns_converted"]
    )
    dependents = {(d["kind"], d["name"]) for d in report["dependents"]}
    assert {
        ("view", "public.team_session_stats"),
        ("index", "conversation_sessions_is_active_idx"),
        ("policy", "Agents read active sessions"),
        ("function source", "close_all_sessions()"),
    } <= dependents
    assert any("anon" in w and "row level security" in w for w in report["warnings"])

    steps = [(s["name"], s["lock"], s["blocks_writes"]) for s in report["steps"]]
    assert [name for name, _, _ in steps] == [
        "ledger",
        "prepare",
        "columns",
        "backfill",
        "vacuum",
        "validate",
        "duration",
        "indexes",
        "security",
        "migrations",
    ]
    assert dict((n, lock) for n, lock, _ in steps)["columns"] == "ACCESS EXCLUSIVE"
    # The origin's session_id has its own default, which the old writers rely on: it
    # changes at --finish, and the plan of --apply does not say otherwise.
    columns_step = next(s for s in report["steps"] if s["name"] == "columns")
    assert "tether_uuid_v7" not in columns_step["does"]
    assert any(
        c.startswith("session_id: default gen_random_uuid()") and c.endswith("at --finish")
        for c in report["columns_converted"]
    )
    assert not dict((n, b) for n, _, b in steps)["backfill"]
    assert all(s["estimate_seconds"] > 0 and s["holds"] for s in report["steps"])
    assert report["finish"]["lock"] == "ACCESS EXCLUSIVE"
    assert "rewrite" in report["finish"]["holds"]

    text = run_tether("adopt", "--check", "--database-url", adoptable.url)
    assert text.returncode == 0, text.stderr
    assert "public.conversation_sessions: not adopted" in text.stdout
    assert "inactive_without_end: 11" in text.stdout
    assert "kept as they are: agent_id text, metadata jsonb" in text.stdout
    assert "this was a check: nothing was changed" in text.stdout

    assert _snapshot(adoptable.url) == before
    with _connect(adoptable.url) as conn:
        assert conn.execute("select to_regnamespace('tether') as n").fetchone() == {"n": None}


def _apply_is_refused_and_changes_nothing(url: str, says: str) -> None:
    """--apply refuses (its message matching ``says``) before its first step: the
    table, its data and the catalog are as they were."""
    before = _snapshot(url)
    with pytest.raises(AdoptionError, match=says):
        apply(url)
    assert _snapshot(url) == before


def test_check_and_apply_refuse_a_table_they_cannot_take_over(server: Server) -> None:
    url = server.database()
    with _connect(url) as conn:
        conn.execute(
            "create table public.conversation_sessions (session_id text primary key,"
            " is_active boolean, session_start timestamp, session_end timestamptz,"
            " connection_id text, duration_seconds text)"
        )
        conn.execute(
            "insert into public.conversation_sessions (session_id, is_active, session_start)"
            " values ('a', true, now()), ('b', true, now())"
        )
    report = inspect(url)
    # The rules cannot read a table they refuse: no counts, rather than zeros.
    assert not report.counted
    payload = report.as_dict()
    assert payload["marked_active"] is None and payload["active"] is None
    assert payload["rows"] is None
    checked = run_tether("adopt", "--check", "--database-url", url)
    assert "its rows are not read by the rules while something is refused" in checked.stdout
    assert " 0 rows" not in checked.stdout
    assert "0 with is_active = true" not in checked.stdout
    reasons = " | ".join(report.refusals)
    assert "session_id must exist and be a uuid" in reasons
    assert "session_start is timestamp without time zone" in reasons
    assert "duration_seconds is text" in reasons
    assert "already has column(s) tether adds: connection_id" in reasons
    _apply_is_refused_and_changes_nothing(url, "cannot be adopted as it is")


def test_a_column_of_tether_s_already_taken_is_refused_with_the_rename(server: Server) -> None:
    """A WebSocket team's table had its own connection_id (a socket's id, the same one
    written twice after a reconnect): --check said only "alter table ... rename column",
    leaving the name and the old server to be guessed. It gives the statement, with a
    free name, and says the old server must write that name from then on; renamed so,
    the table is adopted and the team's ids are kept."""
    url = server.database()
    build_origin(url, team_objects=False)
    with _connect(url) as conn:
        conn.execute("alter table public.conversation_sessions add column connection_id text")
        conn.execute("alter table public.conversation_sessions add column app_connection_id int")
        conn.execute("update public.conversation_sessions set connection_id = 'sock-1'")
    (refusal,) = [r for r in inspect(url).refusals if "tether adds" in r]
    assert "old server" in refusal, refusal
    statement = re.search(r"alter table \S+ rename column \S+ to [a-z0-9_]+", refusal)
    assert statement is not None, refusal
    assert statement.group(0).endswith(" to app2_connection_id"), statement.group(0)
    with _connect(url) as conn:
        conn.execute(statement.group(0))
    assert inspect(url).refusals == []
    apply(url, lock=FAST)
    with _connect(url) as conn:
        kept = conn.execute(
            "select count(*) filter (where app2_connection_id = 'sock-1') as kept,"
            " count(*) filter (where connection_id like 'legacy:%%') as legacy, count(*)"
            " from public.conversation_sessions"
        ).fetchone()
    assert kept is not None and kept["kept"] == kept["legacy"] == kept["count"] == 85


@ON_ONE_SERVER
def test_apply_on_no_table_or_tether_s_own_says_only_that(server: Server) -> None:
    for url, why in (
        (server.database(), "`tether migrate` creates tether's own"),
        (server.database(migrated=True), "is tether's own"),
    ):
        refused = run_tether("adopt", "--apply", "--yes", "--database-url", url)
        assert refused.returncode == 1
        assert why in refused.stderr
        # No summary of steps to run before the refusal.
        assert refused.stdout == ""


@ON_ONE_SERVER
def test_a_team_s_table_of_the_ledger_s_name_is_refused_by_name(adoptable: Adoptable) -> None:
    """Adoption reads tether's ledger to tell where the table stands: a team's own
    tether.schema_migrations is named, as ``tether migrate`` names it, and nothing is
    changed."""
    with _connect(adoptable.url) as conn:
        conn.execute(
            "create schema tether; create table tether.schema_migrations"
            " (id serial primary key, filename text not null)"
        )
    before = _snapshot(adoptable.url)
    for command in (("--check",), ("--apply", "--yes")):
        said = run_tether("adopt", *command, "--database-url", adoptable.url)
        assert said.returncode == 1, said.stdout + said.stderr
        assert "tether.schema_migrations is not tether's ledger" in said.stderr, said.stderr
    assert _snapshot(adoptable.url) == before


@ON_ONE_SERVER
def test_a_conversation_sessions_in_another_schema_is_named_with_how_to_adopt_it(
    server: Server,
) -> None:
    url = server.database()
    with _connect(url) as conn:
        conn.execute("create schema app")
        conn.execute(
            "create table app.conversation_sessions (session_id uuid primary key default"
            " gen_random_uuid(), user_id uuid, is_active boolean default true, session_start"
            " timestamptz default now(), session_end timestamptz, duration_seconds double"
            " precision)"
        )
        conn.execute(
            sql.SQL("alter database {} set search_path = app, public").format(
                sql.Identifier(str(conninfo_to_dict(url)["dbname"]))
            )
        )
    move = "alter table app.conversation_sessions set schema public"
    checked = run_tether("adopt", "--check", "--database-url", url)
    assert checked.returncode == 0, checked.stderr
    assert "public.conversation_sessions: absent" in checked.stdout
    assert "found app.conversation_sessions" in checked.stdout
    assert "tether adopts public.conversation_sessions only" in checked.stdout
    assert move in checked.stdout
    assert "`tether migrate` creates a new, empty public.conversation_sessions" in checked.stdout
    assert inspect(url).as_dict()["elsewhere"] == ["app.conversation_sessions"]
    refused = run_tether("adopt", "--apply", "--yes", "--database-url", url)
    assert refused.returncode == 1
    assert move in refused.stderr

    # Moved as told, it is the table to adopt; another one left in app is said aside.
    with _connect(url) as conn:
        conn.execute(move)
        conn.execute("create table app.conversation_sessions (session_id uuid primary key)")
    report = inspect(url)
    assert report.state == "not adopted"
    assert report.refusals == []
    assert any(
        w.startswith("app.conversation_sessions: another table of that name")
        for w in report.warnings
    ), report.warnings


@ON_ONE_SERVER
def test_a_table_named_like_conversation_sessions_is_named_with_the_rename(
    server: Server,
) -> None:
    """A team's table spelled otherwise (conversation_session, an ORM's
    "ConversationSessions"): --check said only "there is no table to adopt: `tether
    migrate` creates tether's own", which would have left the team's history beside a new,
    empty table. It names each with the rename that makes it the table to adopt."""
    url = server.database()
    with _connect(url) as conn:
        conn.execute(ORIGIN_TABLE.replace("conversation_sessions", "conversation_session"))
        conn.execute("create schema app")
        conn.execute('create table app."ConversationSessions" (id int)')
    rename = "alter table public.conversation_session rename to conversation_sessions"
    checked = run_tether("adopt", "--check", "--database-url", url)
    assert checked.returncode == 0, checked.stderr
    assert "public.conversation_sessions: absent" in checked.stdout
    assert "there is no table to adopt" not in checked.stdout
    assert rename in checked.stdout
    assert (
        'alter table app."ConversationSessions" rename to conversation_sessions;'
        " alter table app.conversation_sessions set schema public"
    ) in checked.stdout
    assert [s["table"] for s in inspect(url).as_dict()["similar"]] == [
        'app."ConversationSessions"',
        "public.conversation_session",
    ]
    # --check --json lists them under the keys the README names.
    readme = " ".join(README.read_text().split())
    named = readme[readme.index("`--check --json` lists those under") :]
    named = named[: named.index(".")]
    (similar, table, how, elsewhere) = re.findall(r"`([a-z_]+)`", named)
    as_json = json.loads(run_tether("adopt", "--check", "--json", "--database-url", url).stdout)
    assert [set(s) for s in as_json[similar]] == [{table, how}] * 2
    assert rename in {s[how] for s in as_json[similar]}
    assert as_json[elsewhere] == []
    refused = run_tether("adopt", "--apply", "--yes", "--database-url", url)
    assert refused.returncode == 1
    assert rename in refused.stderr
    with _connect(url) as conn:
        conn.execute(rename)
    report = inspect(url)
    assert (report.state, report.refusals, report.similar) == ("not adopted", [], [])


@ON_ONE_SERVER
def test_a_table_of_another_schema_and_one_named_like_it_are_both_named(
    server: Server,
) -> None:
    """With both, --check and --apply named only the one of another schema (--json
    listed both): the team's history may be the other."""
    url = server.database()
    with _connect(url) as conn:
        conn.execute(ORIGIN_TABLE.replace("conversation_sessions", "conversation_session"))
        conn.execute("create schema app; create table app.conversation_sessions (id int)")
    move = "alter table app.conversation_sessions set schema public"
    rename = "alter table public.conversation_session rename to conversation_sessions"
    checked = run_tether("adopt", "--check", "--database-url", url)
    assert checked.returncode == 0, checked.stderr
    assert move in checked.stdout and rename in checked.stdout, checked.stdout
    refused = run_tether("adopt", "--apply", "--yes", "--database-url", url)
    assert refused.returncode == 1
    assert move in refused.stderr and rename in refused.stderr, refused.stderr


@ON_ONE_SERVER
def test_a_django_model_s_table_is_named_with_the_rename(server: Server) -> None:
    """Django names a model's table <app>_<model> (chat_conversationsession): --check
    said only that there was no table to adopt, `tether migrate` creating a new one
    beside the team's history. It names it with the rename, and no table whose name
    only holds the words among others (an archive, a log)."""
    url = server.database()
    with _connect(url) as conn:
        conn.execute(ORIGIN_TABLE.replace("conversation_sessions", "chat_conversationsession"))
        for other in (
            "archived_conversation_sessions",
            "conversation_sessions_archive",
            "conversationsession_log",
            "chat_conversationsession_tags",
        ):
            conn.execute(sql.SQL("create table {} (id int)").format(sql.Identifier(other)))
    report = inspect(url)
    assert report.similar == [
        {
            "table": "public.chat_conversationsession",
            "rename": "alter table public.chat_conversationsession rename to conversation_sessions",
        }
    ]
    with _connect(url) as conn:
        conn.execute(report.similar[0]["rename"])
    report = inspect(url)
    assert (report.state, report.refusals, report.similar) == ("not adopted", [], [])


def _as_role(url: str, role: str, password: str) -> str:
    return make_conninfo(url, user=role, password=password)


def test_a_role_that_cannot_adopt_is_told_before_anything_changes(server: Server) -> None:
    url = server.database()
    build_origin(url, team_objects=False)
    suffix = uuid.uuid4().hex[:8]
    stranger, reader, owner = f"stranger_{suffix}", f"reader_{suffix}", f"owner_{suffix}"
    password = f"pw-{suffix}"
    with _connect(url) as conn:
        for role in (stranger, reader, owner):
            conn.execute(
                sql.SQL("create role {} login password {}").format(
                    sql.Identifier(role), sql.Literal(password)
                )
            )
        conn.execute(
            sql.SQL("grant select on public.conversation_sessions to {}").format(
                sql.Identifier(reader)
            )
        )
    try:
        before = _snapshot(url)
        # A role that cannot read the table: one line, for --check as for --apply.
        for action in (("--check",), ("--apply", "--yes")):
            refused = run_tether(
                "adopt", *action, "--database-url", _as_role(url, stranger, password)
            )
            assert refused.returncode == 1
            assert "Traceback" not in refused.stderr
            assert f"the role {stranger} cannot read public.conversation_sessions" in refused.stderr
            assert "connect as the table's owner" in refused.stderr
            assert password not in refused.stdout + refused.stderr
        # A role that can read it but not alter it: --check says so, with the table's
        # numbers as its owner reads them, and --apply refuses before its first step.
        checked = run_tether("adopt", "--check", "--database-url", _as_role(url, reader, password))
        assert checked.returncode == 0, checked.stderr
        assert f"the role {reader} does not own public.conversation_sessions" in checked.stdout
        assert "cannot create tether's schema" in checked.stdout
        assert "nothing can be applied until what is refused above is dealt with" in checked.stdout
        as_reader = json.loads(
            run_tether(
                "adopt", "--check", "--json", "--database-url", _as_role(url, reader, password)
            ).stdout
        )
        as_owner = inspect(url).as_dict()
        for number in ("rows", "marked_active", "active", "orphans", "ended_unrecorded"):
            assert as_reader[number] == as_owner[number], number
        assert as_owner["active"] > 0
        refused = run_tether(
            "adopt", "--apply", "--yes", "--database-url", _as_role(url, reader, password)
        )
        assert refused.returncode == 1
        assert "cannot adopt" in refused.stderr and "does not own" in refused.stderr
        assert refused.stdout == ""
        assert _snapshot(url) == before
        # The table's owner, allowed to create a schema but not in public, where
        # tether's functions and outbox go.
        with _connect(url) as conn:
            conn.execute(
                sql.SQL("alter table public.conversation_sessions owner to {}").format(
                    sql.Identifier(owner)
                )
            )
            conn.execute(
                sql.SQL("grant create on database {} to {}").format(
                    sql.Identifier(str(conninfo_to_dict(url)["dbname"])), sql.Identifier(owner)
                )
            )
            conn.execute(sql.SQL("revoke create on schema public from public"))
        before = _snapshot(url)
        refused = run_tether(
            "adopt", "--apply", "--yes", "--database-url", _as_role(url, owner, password)
        )
        assert refused.returncode == 1
        assert f"the role {owner} cannot create in schema public" in refused.stderr
        assert "does not own" not in refused.stderr
        assert _snapshot(url) == before
    finally:
        with _connect(url) as conn:
            conn.execute("alter table public.conversation_sessions owner to current_user")
            for role in (stranger, reader, owner):
                _drop_owned(conn, sql.Identifier(role))
                conn.execute(sql.SQL("drop role {}").format(sql.Identifier(role)))


def test_a_view_whose_owner_the_role_cannot_act_as_is_refused_before_anything_changes(
    server: Server,
) -> None:
    """A reporting role's view on duration_seconds, on Supabase where postgres is no
    superuser: --check said nothing, and --apply ran its ledger, columns, backfill and
    validate steps, then failed at the duration step ("must be able to SET ROLE"), again
    each time it was run, the table left mid-adoption. --check and --apply now refuse it
    by name before the first step, saying how to let the role act as the view's owner;
    once it may, the table is adopted and finished, the view its owner's still."""
    url = server.database()
    build_origin(url, team_objects=False)
    suffix = uuid.uuid4().hex[:8]
    owner, reporter = f"owner_{suffix}", f"reporter_{suffix}"
    password = f"pw-{suffix}"
    view = f"public.durations_{suffix}"
    with _connect(url) as conn:
        # The roles tether grants to, as Supabase has them (making them takes CREATEROLE).
        conn.execute(TEAM_OBJECTS.split("grant all", 1)[0])
        conn.execute(
            sql.SQL("create role {} login password {}").format(
                sql.Identifier(owner), sql.Literal(password)
            )
        )
        conn.execute(sql.SQL("create role {} nologin").format(sql.Identifier(reporter)))
        conn.execute(
            sql.SQL("alter table public.conversation_sessions owner to {}").format(
                sql.Identifier(owner)
            )
        )
        conn.execute(
            sql.SQL("grant create on database {} to {}").format(
                sql.Identifier(str(conninfo_to_dict(url)["dbname"])), sql.Identifier(owner)
            )
        )
        conn.execute(
            sql.SQL("grant create on schema public to {}, {}").format(
                sql.Identifier(owner), sql.Identifier(reporter)
            )
        )
        conn.execute(
            sql.SQL("grant select on public.conversation_sessions to {}").format(
                sql.Identifier(reporter)
            )
        )
        conn.execute(sql.SQL("set role {}").format(sql.Identifier(reporter)))
        conn.execute(
            f"create view {view} as select count(*) as n, sum(duration_seconds) as total"
            " from public.conversation_sessions"
        )
        conn.execute("reset role")
        # As --check says of a role that reads the table: a policy keeps it reading.
        conn.execute(
            sql.SQL(
                "create policy reporting on public.conversation_sessions"
                " for select to {} using (true)"
            ).format(sql.Identifier(reporter))
        )
    as_owner = _as_role(url, owner, password)
    try:
        report = inspect(as_owner)
        (refused,) = [r for r in report.refusals if view in r]
        assert f"owned by {reporter}" in refused and f"grant {reporter} to {owner}" in refused
        assert any(view in r for r in report.finish_refusals), report.finish_refusals
        before = _snapshot(url)
        applied = run_tether("adopt", "--apply", "--yes", "--database-url", as_owner)
        assert applied.returncode == 1, applied.stdout
        assert "cannot adopt" in applied.stderr and f"owned by {reporter}" in applied.stderr
        assert password not in applied.stdout + applied.stderr
        assert _snapshot(url) == before

        with _connect(url) as conn:
            conn.execute(
                sql.SQL("grant {} to {}").format(sql.Identifier(reporter), sql.Identifier(owner))
            )
        assert inspect(as_owner).refusals == []
        apply(as_owner, lock=FAST)
        finish(as_owner, lock=FAST)
        with _connect(url) as conn:
            row = conn.execute(
                f"select n, pg_get_userbyid(c.relowner) as owner from {view},"
                f" pg_class c where c.oid = '{view}'::regclass"
            ).fetchone()
        assert row == {"n": 85, "owner": reporter}
    finally:
        with _connect(url) as conn:
            conn.execute("alter table public.conversation_sessions owner to current_user")
            for role in (reporter, owner):
                _drop_owned(conn, sql.Identifier(role), cascade=True)
                conn.execute(sql.SQL("drop role {}").format(sql.Identifier(role)))


def test_a_role_without_inherit_is_told_how_to_drop_the_view_it_recreates(
    server: Server,
) -> None:
    """The table's owner was a role without INHERIT: granted the view's owner as --check
    said, it could give the view back but not drop it (that takes the owner's privileges,
    which such a role does not use), so --check passed it and --apply failed at the
    duration step with "must be owner of view". --check keeps refusing it until the role
    may do both, and says how; so done, the table is adopted."""
    url = server.database()
    build_origin(url, team_objects=False)
    suffix = uuid.uuid4().hex[:8]
    owner, reporter, password = f"owner_{suffix}", f"reporter_{suffix}", f"pw-{suffix}"
    view = f"public.durations_{suffix}"
    with _connect(url) as conn:
        conn.execute(
            sql.SQL("create role {} login noinherit password {}").format(
                sql.Identifier(owner), sql.Literal(password)
            )
        )
        conn.execute(sql.SQL("create role {} nologin").format(sql.Identifier(reporter)))
        for statement in (
            "alter table public.conversation_sessions owner to {owner}",
            "grant create on database {db} to {owner}",
            "grant create on schema public to {owner}, {reporter}",
            "grant select on public.conversation_sessions to {reporter}",
            "create policy reporting on public.conversation_sessions for select"
            " to {reporter} using (true)",
        ):
            conn.execute(
                sql.SQL(statement).format(
                    owner=sql.Identifier(owner),
                    reporter=sql.Identifier(reporter),
                    db=sql.Identifier(str(conninfo_to_dict(url)["dbname"])),
                )
            )
        conn.execute(sql.SQL("set role {}").format(sql.Identifier(reporter)))
        conn.execute(
            f"create view {view} as select sum(duration_seconds) as total"
            " from public.conversation_sessions"
        )
        conn.execute("reset role")
    as_owner = _as_role(url, owner, password)
    try:
        # The plain grant alone (as the refusal said before) leaves it refused.
        with _connect(url) as conn:
            conn.execute(
                sql.SQL("grant {} to {}").format(sql.Identifier(reporter), sql.Identifier(owner))
            )
        (refused,) = [r for r in inspect(as_owner).refusals if view in r]
        said = refused.split("first let it, with ", 1)[1].split(" (run as", 1)[0]
        with _connect(url) as conn:
            for statement in said.split("; "):
                conn.execute(statement)
        assert inspect(as_owner).refusals == []
        apply(as_owner, lock=FAST)
        with _connect(url) as conn:
            row = conn.execute(
                f"select pg_get_userbyid(relowner) as owner from pg_class where oid = '{view}'"
                "::regclass"
            ).fetchone()
        assert row == {"owner": reporter}
    finally:
        with _connect(url) as conn:
            conn.execute("alter table public.conversation_sessions owner to current_user")
            for role in (reporter, owner):
                _drop_owned(conn, sql.Identifier(role), cascade=True)
                conn.execute(sql.SQL("drop role {}").format(sql.Identifier(role)))


def test_a_read_only_connection_is_refused_before_the_first_step(server: Server) -> None:
    """A database (or role, or URL) whose transactions are read-only by default, as a
    standby's are: --check said nothing, and --apply failed in its first step ("cannot
    execute CREATE SCHEMA in a read-only transaction") saying to run it again to resume,
    which failed the same. Both now refuse it up front, saying how to turn it off for
    the run; with PGOPTIONS as said, the table is adopted."""
    url = server.database()
    build_origin(url, team_objects=False)
    with _connect(url) as conn:
        conn.execute(
            sql.SQL("alter database {} set default_transaction_read_only = on").format(
                sql.Identifier(str(conninfo_to_dict(url)["dbname"]))
            )
        )
    (refusal,) = [r for r in inspect(url).refusals if "read-only" in r]
    assert "PGOPTIONS='-c default_transaction_read_only=off'" in refusal, refusal
    applied = run_tether("adopt", "--apply", "--yes", "--database-url", url)
    assert applied.returncode == 1, applied.stdout
    assert "cannot adopt" in applied.stderr and "read-only" in applied.stderr
    assert "run `tether adopt --apply` again" not in applied.stderr
    with _connect(url) as conn:
        schema = conn.execute("select to_regnamespace('tether') as s").fetchone()
    assert schema == {"s": None}
    env = {"PGOPTIONS": "-c default_transaction_read_only=off"}
    applied = run_tether("adopt", "--apply", "--yes", "--database-url", url, env=env)
    assert applied.returncode == 0, applied.stderr
    assert "adopted: 85 row(s) read by the rules" in applied.stdout


def test_an_index_on_a_converted_duration_is_refused_by_name(server: Server) -> None:
    url = server.database()
    build_origin(url, team_objects=False)
    with _connect(url) as conn:
        conn.execute("create index team_duration_idx on conversation_sessions (duration_seconds)")
    before = _snapshot(url)
    report = inspect(url)
    assert any("team_duration_idx" in r and "drop it" in r for r in report.refusals)
    # Refused before the first step: nothing written, and no question asked.
    with pytest.raises(AdoptionError, match="team_duration_idx"):
        apply(url)
    assert _snapshot(url) == before
    refused = run_tether("adopt", "--apply", "--database-url", url)
    assert refused.returncode != 0
    assert "cannot adopt" in refused.stderr and "team_duration_idx" in refused.stderr
    assert "?" not in refused.stderr
    assert _snapshot(url) == before


def test_a_table_that_inherits_or_is_a_partition_is_refused_with_how_to_detach_it(
    server: Server,
) -> None:
    url = server.database()
    with _connect(url) as conn:
        conn.execute(
            "create table public.base_sessions (session_id uuid not null default"
            " gen_random_uuid(), user_id uuid, is_active boolean default true, session_start"
            " timestamptz default now(), session_end timestamptz, ended_at timestamptz,"
            " duration_seconds double precision)"
        )
        conn.execute(
            "create table public.conversation_sessions (agent_id text, primary key"
            " (session_id)) inherits (public.base_sessions)"
        )
        conn.execute("insert into public.conversation_sessions (user_id) values (null)")
    fix = "alter table public.conversation_sessions no inherit public.base_sessions"
    assert any(fix in r for r in inspect(url).refusals)
    # Refused before the first step, rather than stuck at the duration step for good.
    _apply_is_refused_and_changes_nothing(url, r"no inherit public\.base_sessions")
    with _connect(url) as conn:
        conn.execute(fix)
    assert inspect(url).refusals == []
    apply(url, lock=FAST)
    finish(url, lock=FAST)

    url = server.database()
    with _connect(url) as conn:
        conn.execute(
            "create table public.all_sessions (session_id uuid not null, user_id uuid,"
            " is_active boolean, session_start timestamptz not null, session_end timestamptz,"
            " duration_seconds double precision) partition by range (session_start)"
        )
        conn.execute(
            "create table public.conversation_sessions partition of public.all_sessions"
            " (primary key (session_id)) for values from (minvalue) to (maxvalue)"
        )
    refusals = inspect(url).refusals
    assert any(
        "alter table public.all_sessions detach partition public.conversation_sessions" in r
        for r in refusals
    ), refusals
    _apply_is_refused_and_changes_nothing(url, "detach partition")


def test_rules_dropped_as_check_says_no_longer_stop_apply(server: Server) -> None:
    url = server.database()
    build_origin(url, team_objects=False)
    with _connect(url) as conn:
        conn.execute(
            "create rule keep_history as on delete to public.conversation_sessions do instead"
            " nothing"
        )
    drop = "drop rule keep_history on public.conversation_sessions"
    assert any(drop in r for r in inspect(url).refusals)
    with _connect(url) as conn:
        conn.execute(drop)
    # Postgres clears pg_class.relhasrules only at the table's next vacuum.
    assert inspect(url).refusals == []


TEAM_LOG_TRIGGER = """
create table public.session_log (sid uuid, active boolean);
create function public.log_session() returns trigger language plpgsql as $$
begin
  insert into session_log (sid, active) values (new.session_id, new.is_active);
  return new;
end
$$;
create trigger log_session after insert or update on conversation_sessions
  for each row execute function log_session();
"""


def test_a_trigger_that_would_fail_under_tether_s_search_path_is_refused_with_the_fix(
    server: Server,
) -> None:
    url = server.database()
    build_origin(url, team_objects=False)
    with _connect(url) as conn:
        conn.execute(TEAM_LOG_TRIGGER)
    fix = "alter function public.log_session() set search_path = public"
    report = inspect(url)
    assert any("trigger log_session" in r and fix in r for r in report.refusals), report.refusals
    _apply_is_refused_and_changes_nothing(url, r"alter function public\.log_session\(\)")

    # The fix the refusal gives is enough: tether's own writes then fire the trigger.
    with _connect(url) as conn:
        conn.execute(fix)
    assert inspect(url).refusals == []
    apply(url, lock=FAST)
    with _connect(url) as conn:
        opened = conn.execute(
            "select session_id from public.tether_open_session_v1('logged1=')"
        ).fetchone()
        assert opened is not None
        conn.execute("select * from public.tether_end_session_v3('logged1=', 'client_disconnect')")
        logged = conn.execute(
            "select active from public.session_log where sid = %s order by active desc",
            (opened["session_id"],),
        ).fetchall()
    assert [r["active"] for r in logged] == [True, False]


TEAM_DURATION_TRIGGER = """
create function public.update_duration() returns trigger language plpgsql
set search_path = public as $$
begin
  new.duration_seconds := extract(epoch from (now() - new.session_start));
  return new;
end
$$;
create trigger zz_update_duration before insert or update on conversation_sessions
  for each row execute function update_duration();
"""


def test_a_before_trigger_that_would_fire_after_tether_s_is_refused_with_the_rename(
    server: Server,
) -> None:
    url = server.database()
    build_origin(url, team_objects=False)
    with _connect(url) as conn:
        conn.execute(TEAM_DURATION_TRIGGER)
    rename = (
        "alter trigger zz_update_duration on public.conversation_sessions"
        " rename to team_zz_update_duration"
    )
    report = inspect(url)
    assert any(rename in r for r in report.refusals), report.refusals
    checked = run_tether("adopt", "--check", "--database-url", url)
    assert "triggers of yours: zz_update_duration" in checked.stdout
    assert f"tether's {catalog.SYNC_TRIGGER} must come last" in checked.stdout
    _apply_is_refused_and_changes_nothing(url, "rename to team_zz_update_duration")

    # Renamed as told, it fires before tether's, which has the last word: an active
    # session has no duration.
    with _connect(url) as conn:
        conn.execute(rename)
    apply(url, lock=FAST)
    with _connect(url) as conn:
        inserted = conn.execute(OLD_INSERT.replace("%s", "null")).fetchone()
        assert inserted is not None
        row = conn.execute(
            "select is_active, duration_seconds from conversation_sessions where session_id = %s",
            (inserted["session_id"],),
        ).fetchone()
    assert row == {"is_active": True, "duration_seconds": None}


def test_the_command_line_s_copies_of_adoption_s_names_are_the_same() -> None:
    from tether.adopt import inspect as inspection  # noqa: PLC0415
    from tether.cli import adopt as adopt_cli  # noqa: PLC0415

    assert adopt_cli.SYNC_TRIGGER == catalog.SYNC_TRIGGER
    assert adopt_cli.FINISHED == inspection.FINISHED
    assert adopt_cli.FUNCTION_SOURCE == catalog.FUNCTION_SOURCE
    assert adopt_cli.COLUMN_PRIVILEGE == catalog.COLUMN_PRIVILEGE


# --- --apply ----------------------------------------------------------------------------


def _assert_adopted_by_the_rules(url: str, origin: Origin) -> None:
    rows = _rows(url)
    assert len(rows) == 85
    with _connect(url) as conn:
        corrections = {
            r["session_id"]: r
            for r in conn.execute("select * from tether.adoption_corrections").fetchall()
        }
        applied_at = conn.execute(
            "select started_at from tether.adoption_steps where step = 'backfill'"
        ).fetchone()
    assert applied_at is not None
    for expected in origin.rows:
        row = rows[expected.session_id]
        label = expected.label
        # What the application owns survives untouched.
        assert row["user_id"] == expected.user_id, label
        assert row["agent_id"] == expected.agent_id, label
        assert row["metadata"] == expected.metadata, label
        # The start: kept, unless it was missing or in the future.
        start = row["session_start"]
        if "no_start" in expected.kinds:
            assert start == expected.session_end, label
        elif "start_in_future" in expected.kinds:
            assert origin.now <= start <= datetime.now(UTC), label
        else:
            assert start == expected.session_start, label
        end = _expected_end(expected, start)
        assert row["session_end"] == end, label
        assert row["end_reason"] == expected.expect_reason, label
        assert row["is_active"] is (end is None), label
        assert row["ended_at"] == end, label
        if end is None:
            assert row["duration_seconds"] is None, label
        else:
            assert row["duration_seconds"] == Decimal(str((end - start).total_seconds())), label
        assert row["connection_id"] == f"legacy:{expected.session_id}", label
        assert row["last_seen_at"] == (end or start), label
        assert row["announced_at"] is None, label
        # Every value changed is kept as it was.
        if expected.corrected:
            kept = corrections[expected.session_id]
            assert set(kept["kinds"]) == set(expected.kinds), label
            original = kept["original"]
            assert original["is_active"] == expected.is_active, label
            assert original["duration_seconds"] == expected.duration_seconds, label
            for column in ("session_start", "session_end", "ended_at"):
                value = original[column]
                assert (None if value is None else datetime.fromisoformat(value)) == getattr(
                    expected, column
                ), (label, column)
        else:
            assert expected.session_id not in corrections, label
    assert set(corrections) == {r.session_id for r in origin.rows if r.corrected}


def test_apply_takes_the_table_over_by_the_written_rules(adoptable: Adoptable) -> None:
    predicted = inspect(adoptable.url)
    result = run_tether("adopt", "--apply", "--yes", "--database-url", adoptable.url)
    assert result.returncode == 0, result.stderr
    assert "adopted: 85 row(s) read by the rules" in result.stdout
    assert "tether adopt --finish" in result.stdout

    _assert_adopted_by_the_rules(adoptable.url, adoptable.origin)
    with _connect(adoptable.url) as conn:
        by_reason = {
            r["end_reason"]: r["n"]
            for r in conn.execute(
                "select end_reason, count(*) as n from conversation_sessions group by 1"
            ).fetchall()
        }
        invalid = conn.execute(
            "select count(*) as n from pg_constraint where not convalidated"
            " and conrelid = 'public.conversation_sessions'::regclass"
        ).fetchone()
    # What --check predicted is what --apply did.
    assert by_reason == {
        None: predicted.active,
        "unrecorded": predicted.ended_unrecorded,
        "end_unknown": predicted.ended_unknown,
    }
    assert invalid == {"n": 0}

    # The team's objects are there, the view on duration_seconds now numeric.
    with _connect(adoptable.url) as conn:
        stats = conn.execute(
            "select pg_typeof(avg_duration)::text as t from public.team_session_stats limit 1"
        ).fetchone()
        assert stats == {"t": "numeric"}
        busy = conn.execute("select count(*) as n from public.team_busy_days").fetchone()
        assert busy is not None and int(busy["n"]) > 0
        comment = conn.execute(
            "select obj_description('public.team_session_stats'::regclass) as c,"
            " has_table_privilege('authenticated', 'public.team_session_stats', 'select') as g"
        ).fetchone()
        assert comment == {"c": "The team's dashboard.", "g": True}

    # tether migrate finds nothing to do, and says where the table came from.
    assert migrate.status(adoptable.url).pending == []
    status = run_tether("migrate", "--status", "--database-url", adoptable.url)
    assert "conversation_sessions.sql  " in status.stdout
    assert "(an existing table taken over by tether adopt)" in status.stdout
    again = run_tether("migrate", "--database-url", adoptable.url)
    assert again.returncode == 0, again.stderr
    assert "database is up to date" in again.stdout


def test_apply_again_changes_nothing(adoptable: Adoptable) -> None:
    apply(adoptable.url, lock=FAST)
    before = _snapshot(adoptable.url)
    result = apply(adoptable.url, lock=FAST)
    assert result.ran == []
    assert _snapshot(adoptable.url) == before
    cli = run_tether("adopt", "--apply", "--yes", "--database-url", adoptable.url)
    assert cli.returncode == 0, cli.stderr
    assert "nothing left to do" in cli.stdout
    assert _snapshot(adoptable.url) == before


@ON_ONE_SERVER
def test_check_after_apply_lists_none_of_tether_s_own_objects_as_the_team_s(
    adoptable: Adoptable,
) -> None:
    """What --check lists as built on the table is the team's: tether's own checks and
    statistics, added by its migrations, were listed with the team's view and index."""
    apply(adoptable.url, lock=FAST)
    names = {dependent["name"] for dependent in inspect(adoptable.url).dependents}
    assert "public.team_session_stats" in names  # the team's own, still listed
    ours = {name for name in names if "readable" in name or name.endswith("_stats")}
    assert ours <= {"public.team_session_stats"}, ours


@ON_ONE_SERVER
def test_a_database_that_writes_dates_its_own_way_is_adopted(adoptable: Adoptable) -> None:
    """psycopg reads a moment sent as text only in the ISO DateStyle: on a database set
    to another, --apply stopped part way with a NotImplementedError, and
    `tether migrate --status` failed likewise."""
    set_for_database(adoptable.url, "datestyle", "SQL, DMY")
    for command in (
        ("adopt", "--apply", "--yes"),
        ("migrate", "--status"),
        ("adopt", "--finish", "--yes"),
    ):
        result = run_tether(*command, "--database-url", adoptable.url)
        assert result.returncode == 0, result.stderr
        assert "Error" not in result.stderr
    assert "0 pending" in run_tether("migrate", "--status", "--database-url", adoptable.url).stdout
    _assert_adopted_by_the_rules_loosely(adoptable.url)


@ON_ONE_SERVER
def test_a_database_that_keeps_text_as_bytes_is_adopted(server: Server) -> None:
    """A SQL_ASCII database hands text over as bytes unless the client asks for UTF-8:
    --check and --apply stopped at once with a TypeError."""
    url = server.database(encoding="SQL_ASCII")
    build_origin(url)
    for command in (
        ("adopt", "--check"),
        ("adopt", "--apply", "--yes"),
        ("adopt", "--finish", "--yes"),
    ):
        result = run_tether(*command, "--database-url", url)
        assert result.returncode == 0, result.stderr
    _assert_adopted_by_the_rules_loosely(url)


@ON_ONE_SERVER
def test_finish_before_apply_refuses_with_1_and_changes_nothing(adoptable: Adoptable) -> None:
    # As the README's exit codes say: a step the database is not ready for is refused
    # with 1 (what the command found), not 2 (a command line it could not take).
    before = _snapshot(adoptable.url)
    refused = run_tether("adopt", "--finish", "--yes", "--json", "--database-url", adoptable.url)
    assert refused.returncode == 1, refused.stderr
    assert "cannot finish" in refused.stderr and "--apply" in refused.stderr
    assert refused.stdout == ""
    assert _snapshot(adoptable.url) == before


def test_apply_and_finish_print_json_alone_with_json(adoptable: Adoptable) -> None:
    applied = run_tether("adopt", "--apply", "--yes", "--json", "--database-url", adoptable.url)
    assert applied.returncode == 0, applied.stderr
    outcome = json.loads(applied.stdout)
    assert outcome["rows_read"] == 85 and "backfill" in outcome["ran"]
    # The steps under way are told beside it.
    assert "backfill ..." in applied.stderr
    again = run_tether("adopt", "--apply", "--yes", "--json", "--database-url", adoptable.url)
    assert again.returncode == 0, again.stderr
    assert json.loads(again.stdout)["ran"] == []
    assert "nothing left to do" in again.stderr

    finished = run_tether("adopt", "--finish", "--yes", "--json", "--database-url", adoptable.url)
    assert finished.returncode == 0, finished.stderr
    assert json.loads(finished.stdout)["lock_held_seconds"] > 0
    assert "ACCESS EXCLUSIVE" in finished.stderr
    done = run_tether("adopt", "--finish", "--yes", "--json", "--database-url", adoptable.url)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == {"lock_held_seconds": 0.0, "recreated": []}


def _ctrl_c_as_at_a_terminal() -> None:
    signal.signal(signal.SIGINT, signal.SIG_DFL)


@ON_ONE_SERVER
def test_ctrl_c_during_apply_says_how_to_resume(adoptable: Adoptable) -> None:
    fill_history(adoptable.url, 20_000)
    started = subprocess.Popen(  # noqa: S603 - our own console script
        [
            TETHER,
            "adopt",
            "--apply",
            "--yes",
            "--batch-size",
            "100",
            "--database-url",
            adoptable.url,
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        # As at a terminal: a job started in the background (CI's, often) inherits
        # SIGINT ignored, and Python then installs no Ctrl-C handler at all.
        preexec_fn=_ctrl_c_as_at_a_terminal,  # noqa: PLW1509 - one thread starts it
    )
    assert started.stdout is not None
    for line in started.stdout:
        if line.startswith("backfill ..."):
            break
    time.sleep(0.3)
    started.send_signal(signal.SIGINT)
    _, said = started.communicate(timeout=60)
    assert started.returncode == 130, said
    assert "tether adopt: interrupted" in said
    assert "a backfill keeps the batches it recorded" in said
    assert "run `tether adopt --apply` again to resume" in said
    assert "Traceback" not in said
    resumed = run_tether("adopt", "--apply", "--yes", "--database-url", adoptable.url)
    assert resumed.returncode == 0, resumed.stderr
    assert "adopted:" in resumed.stdout


@ON_ONE_SERVER
@pytest.mark.parametrize("command", ["--check", "--apply", "--finish"])
def test_ctrl_c_before_anything_changes_says_so(adoptable: Adoptable, command: str) -> None:
    """Ctrl-C while --check, or --finish before its question, read a busy table (or
    at --apply's and --finish's question) ended with 130 and not a word: the README's
    rule is that an interrupted command says so, and what became of its work."""
    if command == "--finish":
        apply(adoptable.url, lock=FAST)
    before = _snapshot(adoptable.url)
    with _connect(adoptable.url) as holder, holder.transaction():
        holder.execute("lock table public.conversation_sessions in access exclusive mode")
        started = subprocess.Popen(  # noqa: S603 - our own console script
            [TETHER, "adopt", command, "--database-url", adoptable.url],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            preexec_fn=_ctrl_c_as_at_a_terminal,  # noqa: PLW1509 - one thread starts it
        )
        with _connect(adoptable.url) as watcher:
            _until(
                lambda: bool(
                    watcher.execute(
                        "select 1 from pg_stat_activity where application_name = 'tether adopt'"
                        " and wait_event_type = 'Lock'"
                    ).fetchall()
                ),
                f"{command} never waited for the table",
            )
        started.send_signal(signal.SIGINT)
        _, said = started.communicate(timeout=60)
    assert started.returncode == 130, said
    assert "tether adopt: interrupted while reading the table: nothing was changed" in said
    assert "Traceback" not in said
    assert _snapshot(adoptable.url) == before


@ON_ONE_SERVER
def test_ctrl_c_at_the_question_says_nothing_was_changed(
    adoptable: Adoptable, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Ctrl-C at --apply's or --finish's question ended with 130 and not a word (then,
    a blank line before the word, the prompt's line ended twice)."""
    from tether.cli import main  # noqa: PLC0415

    class CtrlCAtTheTerminal(io.StringIO):
        def isatty(self) -> bool:
            return True

        def readline(self, size: int | None = -1) -> str:  # type: ignore[override]
            raise KeyboardInterrupt

    monkeypatch.setattr(sys, "stdin", CtrlCAtTheTerminal())
    before = _snapshot(adoptable.url)
    assert main(["adopt", "--apply", "--database-url", adoptable.url]) == 130
    said = capsys.readouterr().err
    question = "adopt public.conversation_sessions in place? [y/N] "
    expected = "tether adopt: interrupted at the question, taken as no: nothing was changed\n"
    assert said.endswith(f"{question}\n{expected}"), said
    assert _snapshot(adoptable.url) == before
    apply(adoptable.url, lock=FAST)
    capsys.readouterr()
    assert main(["adopt", "--finish", "--database-url", adoptable.url]) == 130
    said = capsys.readouterr().err
    assert said.endswith(f"rewrite the table now? [y/N] \n{expected}"), said
    assert plan_finish(adoptable.url).state != "adopted and finished"


@ON_ONE_SERVER
def test_ctrl_c_during_finish_says_it_was_rolled_back(adoptable: Adoptable) -> None:
    """Ctrl-C during --finish was told in --apply's words: "what the step under way had
    done is kept or rolled back whole (a backfill keeps the batches it recorded); run
    `tether adopt --finish` again to resume from there", of a step that is one
    transaction, with no backfill and nothing to resume."""
    apply(adoptable.url, lock=FAST)
    before = _snapshot(adoptable.url)
    with _connect(adoptable.url) as holder, holder.transaction():
        holder.execute("lock table public.conversation_sessions in access share mode")
        started = subprocess.Popen(  # noqa: S603 - our own console script
            [
                *(TETHER, "adopt", "--finish", "--yes", "--lock-timeout", "30s"),
                *("--database-url", adoptable.url),
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            preexec_fn=_ctrl_c_as_at_a_terminal,  # noqa: PLW1509 - one thread starts it
        )
        with _connect(adoptable.url) as watcher:
            _until(
                lambda: bool(
                    watcher.execute(
                        "select 1 from pg_stat_activity where application_name = 'tether adopt'"
                        " and wait_event_type = 'Lock'"
                    ).fetchall()
                ),
                "--finish never waited for the table",
            )
        started.send_signal(signal.SIGINT)
        _, said = started.communicate(timeout=60)
    assert started.returncode == 130, said
    assert "--finish is one transaction, kept or rolled back whole" in said
    assert "backfill" not in said
    assert "resume" not in said
    assert _snapshot(adoptable.url) == before


@ON_ONE_SERVER
def test_a_step_whose_server_went_away_says_so_in_one_sentence(
    adoptable: Adoptable, monkeypatch: pytest.MonkeyPatch
) -> None:
    """libpq's words for a server gone mid-statement run over three lines and end with a
    period: --apply said "indexes failed: ... server closed the connection
    unexpectedly\n\tThis probably means ...\n\tbefore or while processing the request..
    What it had done is kept ...", its sentence broken over lines and a period doubled."""
    from tether.adopt import apply as applying  # noqa: PLC0415

    def server_gone(_run: object) -> None:
        raise psycopg.OperationalError(
            "consuming input failed: server closed the connection unexpectedly\n"
            "\tThis probably means the server terminated abnormally\n"
            "\tbefore or while processing the request."
        )

    monkeypatch.setitem(applying.STEPS, "vacuum", server_gone)
    with pytest.raises(AdoptionError) as failed:
        apply(adoptable.url, lock=FAST)
    said = str(failed.value)
    assert said == (
        "vacuum failed: consuming input failed: server closed the connection unexpectedly"
        " This probably means the server terminated abnormally before or while processing"
        " the request. What it had done is kept or rolled back whole; run `tether adopt"
        " --apply` again to resume"
    )


class Interrupted(Exception):
    """Stands for a run that stopped: a crash, a lost connection, Ctrl-C."""


@pytest.mark.parametrize(
    "where",
    [
        "ledger",
        "columns",
        "backfill batch",
        "backfill",
        "validate",
        "duration",
        "index conversation_sessions_last_seen_at_active_idx",
        "security",
    ],
)
def test_an_interrupted_apply_finishes_when_run_again(adoptable: Adoptable, where: str) -> None:
    def stop(name: str) -> None:
        if name == where:
            raise Interrupted(name)

    with pytest.raises(Interrupted):
        apply(adoptable.url, batch_size=20, lock=FAST, checkpoint=stop)
    # The table keeps working for the old server in between.
    with _connect(adoptable.url) as conn:
        sid = conn.execute(OLD_INSERT, (uuid.uuid4(),)).fetchone()["session_id"]  # type: ignore[index]
        conn.execute(OLD_END, (sid,))
    # Stopped mid-way, `tether migrate` still refuses rather than guess, and says how
    # to go on.
    with pytest.raises(MigrationError, match="run `tether adopt --apply` to resume it"):
        migrate.migrate(adoptable.url)

    result = apply(adoptable.url, batch_size=20, lock=FAST)
    assert result.ran, "the second run had work left"
    with _connect(adoptable.url) as conn:
        conn.execute("delete from public.conversation_sessions where session_id = %s", (sid,))
        conn.execute("delete from tether.adoption_corrections where session_id = %s", (sid,))
    _assert_adopted_by_the_rules(adoptable.url, adoptable.origin)
    assert migrate.status(adoptable.url).pending == []


@ON_ONE_SERVER
def test_check_amid_an_interrupted_backfill_says_which_rows_its_counts_cover(
    adoptable: Adoptable,
) -> None:
    """Stopped after the backfill's first batch, --check printed the table's row total
    beside counts of ends, corrections and inconsistencies that cover only the rows not
    yet read, as if they were the whole table's."""

    def stop(name: str) -> None:
        if name == "backfill batch":
            raise Interrupted(name)

    with pytest.raises(Interrupted):
        apply(adoptable.url, batch_size=20, lock=FAST, checkpoint=stop)
    with _connect(adoptable.url) as conn:
        counted = conn.execute(
            "select count(*) as total, count(*) filter (where connection_id is null) as unread"
            " from public.conversation_sessions"
        ).fetchone()
    assert counted is not None
    total, unread = counted["total"], counted["unread"]
    assert 0 < unread < total

    checked = run_tether("adopt", "--check", "--database-url", adoptable.url)
    assert checked.returncode == 0, checked.stderr
    lines = checked.stdout.splitlines()
    assert lines[0] == "public.conversation_sessions: adoption in progress"
    assert lines[1].startswith(f"  {total} rows ")
    at = lines.index(
        f"  the backfill has read {total - unread} of the {total} rows, written as tether reads"
        f" them; of the {unread} it has still to read:"
    )
    ended = re.fullmatch(
        r"    ended: (\d+) at the time recorded \(reason unrecorded\), (\d+) at an unknown"
        r" time \(end_unknown, recorded at their start\)",
        lines[at + 1],
    )
    assert ended is not None, lines[at + 1]
    # Counts of those rows alone: no more ends than they hold.
    assert int(ended[1]) + int(ended[2]) <= unread
    changed = re.fullmatch(
        r"    (\d+) rows? ha(?:s|ve) recorded values that change; .*", lines[at + 2]
    )
    assert changed is not None and int(changed[1]) <= unread
    assert f"inconsistencies of the {unread} rows still to read (rows; a few session_ids;" in (
        checked.stdout
    )
    as_json = json.loads(
        run_tether("adopt", "--check", "--json", "--database-url", adoptable.url).stdout
    )
    assert (as_json["rows"], as_json["unread"]) == (total, unread)


@ON_ONE_SERVER
def test_check_s_counts_agree_with_their_words(server: Server) -> None:
    """--check said "of which 1 started within 2 hours and 1 are orphans", "1 row(s)
    have recorded values that change", "1 session(s) look live" and "1 rows"."""
    url = server.database()
    with _connect(url) as conn:
        conn.execute(ORIGIN_TABLE)
        conn.execute(
            "insert into public.conversation_sessions"
            " (is_active, session_start, session_end, ended_at, duration_seconds) values"
            " (true, now() - interval '10 minutes', null, null, null),"
            " (true, now() - interval '9 hours', null, null, null),"
            " (false, now() - interval '3 hours', now() - interval '2 hours',"
            "  now() - interval '2 hours', 5)"
        )
    checked = run_tether("adopt", "--check", "--database-url", url)
    assert checked.returncode == 0, checked.stderr
    assert "  3 rows (" in checked.stdout
    assert "  as tether reads them: 2 active, of which 1 started within 2 hours and 1 is an" in (
        checked.stdout
    )
    assert "  1 row has recorded values that change;" in checked.stdout
    assert "  - 1 session looks live (active, started within 2 hours)" in checked.stdout

    with _connect(url) as conn:
        conn.execute("delete from public.conversation_sessions where is_active")
    checked = run_tether("adopt", "--check", "--database-url", url)
    assert checked.returncode == 0, checked.stderr
    assert "  1 row (" in checked.stdout
    assert "of which 0 started within 2 hours and 0 are orphans" in checked.stdout


@ON_ONE_SERVER
def test_a_run_resumed_amid_its_migrations_says_it_adopted(adoptable: Adoptable) -> None:
    """Stopped after the first of tether's migrations: the table already reads as
    adopted, but the run that applies the rest is the one that finishes the adoption,
    and says so (it used to say it had nothing left to do)."""

    def stop(name: str) -> None:
        if name.startswith("migration "):
            raise Interrupted(name)

    with pytest.raises(Interrupted):
        apply(adoptable.url, lock=FAST, checkpoint=stop)
    # `tether migrate` in between would run the files as they are, and stop on the
    # indexes the adoption built: it points at --apply instead, changing nothing.
    pending = migrate.status(adoptable.url).pending
    migrated = run_tether("migrate", "--database-url", adoptable.url)
    assert migrated.returncode == 1
    assert "run `tether adopt --apply` to resume it" in migrated.stderr
    assert "already exists" not in migrated.stderr
    assert migrate.status(adoptable.url).pending == pending
    finished = run_tether("adopt", "--finish", "--yes", "--database-url", adoptable.url)
    assert finished.returncode == 1
    assert "stopped part way through --apply: run `tether adopt --apply` to resume it" in (
        finished.stderr
    )
    resumed = run_tether("adopt", "--apply", "--yes", "--database-url", adoptable.url)
    assert resumed.returncode == 0, resumed.stderr
    assert "migrations ..." in resumed.stdout
    assert "adopted:" in resumed.stdout and "next: move every writer" in resumed.stdout
    assert "(this run, which resumed an earlier one)" in resumed.stdout
    assert "nothing left to do" not in resumed.stdout
    assert migrate.status(adoptable.url).pending == []
    again = run_tether("adopt", "--apply", "--yes", "--database-url", adoptable.url)
    assert "adopted, transitional; --apply has nothing left to do" in again.stdout


def test_an_interrupted_concurrent_index_build_is_built_again(adoptable: Adoptable) -> None:
    def stop(name: str) -> None:
        if name == "validate":
            raise Interrupted(name)

    with pytest.raises(Interrupted):
        apply(adoptable.url, lock=FAST, checkpoint=stop)
    a, b = (row.session_id for row in adoptable.origin.by_label("clean")[:2])
    with _connect(adoptable.url) as conn:
        conn.execute(
            "update conversation_sessions set connection_id = 'same=' where session_id in (%s, %s)",
            (a, b),
        )
    with pytest.raises(AdoptionError, match="indexes failed"):
        apply(adoptable.url, lock=FAST)
    with _connect(adoptable.url) as conn:
        left = conn.execute(
            "select indisvalid as valid from pg_index"
            " where indexrelid = 'public.conversation_sessions_connection_id_key'::regclass"
        ).fetchone()
        assert left == {"valid": False}
        conn.execute(
            "update conversation_sessions set connection_id = 'legacy:' || session_id"
            " where session_id in (%s, %s)",
            (a, b),
        )
    apply(adoptable.url, lock=FAST)
    with _connect(adoptable.url) as conn:
        rebuilt = conn.execute(
            "select i.indisvalid as valid, c.contype as kind from pg_index i"
            " join pg_constraint c on c.conindid = i.indexrelid"
            " where i.indexrelid = 'public.conversation_sessions_connection_id_key'::regclass"
        ).fetchone()
    assert rebuilt == {"valid": True, "kind": "u"}
    _assert_adopted_by_the_rules(adoptable.url, adoptable.origin)


def test_no_migration_builds_an_index_or_rewrites_the_adopted_table(
    adoptable: Adoptable,
) -> None:
    # A migration runs in one transaction under a lock that stops the table's writes:
    # an index built there, or a column whose adding rewrites the table, holds them for
    # seconds on a long history. The earlier steps make both beforehand (the indexes
    # concurrently); the migrations step keeps what they made.
    assert unbuilt_indexes(migrate.discover()) == []

    def stop(name: str) -> None:
        if name == "indexes":
            raise Interrupted(name)

    with pytest.raises(Interrupted):
        apply(adoptable.url, lock=FAST, checkpoint=stop)
    names = ["conversation_sessions_session_start_idx", "conversation_sessions_session_end_idx"]
    query = (
        "select c.relname as name, c.oid as oid, i.indisvalid as valid from pg_index i"
        " join pg_class c on c.oid = i.indexrelid where c.relname = any(%s) order by 1"
    )
    storage = (
        "select relfilenode from pg_class where oid = 'public.conversation_sessions'::regclass"
    )
    with _connect(adoptable.url) as conn:
        before = conn.execute(query, (names,)).fetchall()
        stored = conn.execute(storage).fetchone()
    assert [(r["name"], r["valid"]) for r in before] == [(n, True) for n in sorted(names)]

    apply(adoptable.url, lock=FAST)
    with _connect(adoptable.url) as conn:
        assert conn.execute(query, (names,)).fetchall() == before
        assert conn.execute(storage).fetchone() == stored, "the table was rewritten"
    _assert_adopted_by_the_rules(adoptable.url, adoptable.origin)
    assert migrate.status(adoptable.url).pending == []


# --- the cut-over: the old server still writes --------------------------------------


def test_the_old_server_s_writes_stay_consistent_during_the_transition(
    adoptable: Adoptable,
) -> None:
    apply(adoptable.url, lock=FAST)
    with _connect(adoptable.url) as conn:
        user = uuid.uuid4()
        sid = conn.execute(OLD_INSERT, (user,)).fetchone()["session_id"]  # type: ignore[index]
        opened = conn.execute(
            "select * from conversation_sessions where session_id = %s", (sid,)
        ).fetchone()
        assert opened is not None
        assert opened["connection_id"] == f"legacy:{sid}"
        assert opened["is_active"] is True
        assert opened["session_end"] is opened["end_reason"] is opened["duration_seconds"] is None
        assert opened["last_seen_at"] is not None

        conn.execute(OLD_END, (sid,))
        ended = conn.execute(
            "select * from conversation_sessions where session_id = %s", (sid,)
        ).fetchone()
        assert ended is not None
        assert ended["is_active"] is False
        assert ended["ended_at"] == ended["session_end"] is not None
        assert ended["duration_seconds"] == Decimal(
            str((ended["session_end"] - ended["session_start"]).total_seconds())
        )
        assert ended["end_reason"] == "unrecorded"

        # Ended again (a retry, the shutdown handler): the first end stays.
        time.sleep(0.01)
        conn.execute(OLD_END, (sid,))
        again = conn.execute(
            "select session_end, end_reason from conversation_sessions where session_id = %s",
            (sid,),
        ).fetchone()
        assert again == {"session_end": ended["session_end"], "end_reason": "unrecorded"}

        # is_active = false alone: ended when written.
        other = conn.execute(OLD_INSERT, (user,)).fetchone()["session_id"]  # type: ignore[index]
        before = conn.execute("select now() as t").fetchone()["t"]  # type: ignore[index]
        conn.execute(
            "update conversation_sessions set is_active = false where session_id = %s", (other,)
        )
        closed = conn.execute(
            "select session_end, ended_at, is_active from conversation_sessions"
            " where session_id = %s",
            (other,),
        ).fetchone()
        assert closed is not None
        assert closed["is_active"] is False and closed["session_end"] >= before
        assert closed["ended_at"] == closed["session_end"]

        # The old shutdown handler ends every active row, orphans included, as it
        # always did; nothing is left disagreeing.
        conn.execute(OLD_SHUTDOWN)
        disagreeing = conn.execute(
            "select count(*) as n from conversation_sessions"
            " where is_active is distinct from (session_end is null)"
            "    or ended_at is distinct from session_end"
            "    or duration_seconds"
            "       is distinct from extract(epoch from session_end - session_start)"
            "    or (session_end is null) <> (end_reason is null)"
        ).fetchone()
        assert disagreeing == {"n": 0}


@ON_ONE_SERVER
def test_check_warns_that_the_old_server_s_prepared_select_star_fails_until_it_reconnects(
    adoptable: Adoptable,
) -> None:
    """An old server whose driver prepares its statements read `select *` of the table
    fine before --apply and got "cached plan must not change result type" on every read
    after it, until it reconnected, while the README said the old server keeps working
    and --check warned of nothing: it now says so, and how to go on."""
    checked = run_tether("adopt", "--check", "--database-url", adoptable.url)
    assert checked.returncode == 0, checked.stderr
    said = " ".join(checked.stdout.split())
    assert "`cached plan must not change result type`" in said
    assert "Restart the old server (or recycle its connection pool) once --apply is done" in said
    # Its columns named, one reading duration_seconds, which --apply converts, fails too.
    assert "one that names duration_seconds when --apply converts it" in said
    read = "select * from conversation_sessions where session_id = %s"
    named = "select session_id, duration_seconds from conversation_sessions where session_id = %s"
    session = adoptable.origin.rows[0].session_id
    with psycopg.connect(adoptable.url, autocommit=True, prepare_threshold=0) as old_server:
        old_server.execute(read, (session,)).fetchall()
        old_server.execute(named, (session,)).fetchall()
        apply(adoptable.url, lock=FAST)
        for statement in (read, named):
            with pytest.raises(errors.FeatureNotSupported, match="cached plan must not change"):
                old_server.execute(statement, (session,)).fetchall()
    with psycopg.connect(adoptable.url, autocommit=True, prepare_threshold=0) as reconnected:
        assert len(reconnected.execute(read, (session,)).fetchall()) == 1
    checked = run_tether("adopt", "--check", "--database-url", adoptable.url)
    assert "cached plan" not in checked.stdout


def test_a_start_the_old_server_writes_after_now_is_now(adoptable: Adoptable) -> None:
    """A naive local clock read as UTC, as the origin's rows show: the trigger reads it
    as the backfill does, so the session's end is never after now either. A transition
    begun by an earlier version gets this reading from `--apply` run again."""
    apply(adoptable.url, lock=FAST)
    with _connect(adoptable.url) as conn:
        conn.execute(
            "create or replace function tether.adoption_sync_row() returns trigger"
            " language plpgsql as $$ begin return new; end $$"
        )
    again = run_tether("adopt", "--apply", "--yes", "--database-url", adoptable.url)
    assert again.returncode == 0, again.stderr
    assert "nothing left to do" in again.stdout
    with _connect(adoptable.url) as conn:
        ahead = conn.execute("select now() + interval '3 hours' as t").fetchone()["t"]  # type: ignore[index]
        sid = conn.execute(
            "insert into conversation_sessions (user_id, is_active, session_start)"
            " values (%s, true, %s) returning session_id",
            (uuid.uuid4(), ahead),
        ).fetchone()["session_id"]  # type: ignore[index]
        opened = conn.execute(
            "select session_start, last_seen_at, now() as now from conversation_sessions"
            " where session_id = %s",
            (sid,),
        ).fetchone()
        assert opened is not None
        assert opened["session_start"] <= opened["now"]
        assert opened["last_seen_at"] >= opened["session_start"]
        kept = conn.execute(
            "select kinds, original from tether.adoption_corrections where session_id = %s",
            (sid,),
        ).fetchone()
        assert kept is not None
        assert kept["kinds"] == ["start_in_future"]
        assert datetime.fromisoformat(kept["original"]["session_start"]) == ahead

        conn.execute(OLD_END, (sid,))
        ended = conn.execute(
            "select session_end, duration_seconds, now() as now from conversation_sessions"
            " where session_id = %s",
            (sid,),
        ).fetchone()
        assert ended is not None
        assert ended["session_end"] <= ended["now"]
        assert ended["duration_seconds"] >= 0


def test_the_old_server_may_write_as_the_service_role_mid_adoption(adoptable: Adoptable) -> None:
    """Stopped after the trigger went in, before the backfill: the old server, writing
    as Supabase's service role, ends rows the backfill has not read yet."""

    def stop(name: str) -> None:
        if name == "columns":
            raise Interrupted(name)

    with pytest.raises(Interrupted):
        apply(adoptable.url, lock=FAST, checkpoint=stop)
    unknown = adoptable.origin.by_label("inactive_nothing")[0]
    orphan = adoptable.origin.orphans[0]
    with psycopg.connect(adoptable.url, autocommit=True, row_factory=dict_row) as conn:
        conn.execute("set role service_role")
        before = conn.execute("select now() as t").fetchone()["t"]  # type: ignore[index]
        for row in (unknown, orphan):
            conn.execute(OLD_END, (row.session_id,))
        sid = conn.execute(OLD_INSERT, (uuid.uuid4(),)).fetchone()["session_id"]  # type: ignore[index]
    rows = _rows(adoptable.url)
    # Already ended (at an unknown time): that end stays, read by the rules.
    assert rows[unknown.session_id]["end_reason"] == "end_unknown"
    assert rows[unknown.session_id]["session_end"] == unknown.session_start
    # Still active: this write ends it, now.
    assert rows[orphan.session_id]["end_reason"] == "unrecorded"
    assert rows[orphan.session_id]["session_end"] >= before
    assert rows[sid]["connection_id"] == f"legacy:{sid}"
    with _connect(adoptable.url) as conn:
        # The trigger the old server's writes ran reads none of the writer's own types.
        definers, loose = functions_reading_temporary_types(conn)
        assert "tether.adoption_sync_row()" in definers
        assert loose == []
        kept = conn.execute(
            "select kinds from tether.adoption_corrections where session_id = %s",
            (unknown.session_id,),
        ).fetchone()
    assert kept is not None and "inactive_without_end" in kept["kinds"]

    apply(adoptable.url, lock=FAST)
    assert _rows(adoptable.url)[orphan.session_id]["end_reason"] == "unrecorded"
    _assert_adopted_by_the_rules_loosely(adoptable.url)


def test_check_warns_of_a_writer_that_row_level_security_would_stop(server: Server) -> None:
    url = server.database()
    build_origin(url, team_objects=False)
    role = f"tether_app_{uuid.uuid4().hex[:8]}"
    with _connect(url) as conn:
        conn.execute(sql.SQL("create role {} nologin").format(sql.Identifier(role)))
        conn.execute(
            sql.SQL("grant select, insert, update on public.conversation_sessions to {}").format(
                sql.Identifier(role)
            )
        )
    try:
        report = inspect(url)
        assert any(role in w and "BYPASSRLS" in w for w in report.warnings), report.warnings
    finally:
        with _connect(url) as conn:
            _drop_owned(conn, sql.Identifier(role))
            conn.execute(sql.SQL("drop role {}").format(sql.Identifier(role)))


def test_check_names_every_writer_that_row_level_security_would_stop_and_only_those(
    server: Server,
) -> None:
    """--check named only the roles granted INSERT or UPDATE on the table itself: a
    login granted pg_write_all_data, or writing through a group role it inherits from
    (BYPASSRLS, which the group had, is not inherited), or granted some columns, had its
    writes refused after --apply unwarned; and a role whose policies already let it write
    was named all the same. Each is now judged as row level security will judge it."""
    url = server.database()
    build_origin(url, team_objects=False)
    s = uuid.uuid4().hex[:8]
    everything, group, member, columns, covered, half = (
        f"{name}_{s}" for name in ("everything", "group", "member", "columns", "covered", "half")
    )
    roles = (everything, member, group, columns, covered, half)
    table = sql.SQL("public.conversation_sessions")
    with _connect(url) as conn:
        for role in roles:
            conn.execute(sql.SQL("create role {}").format(sql.Identifier(role)))
        conn.execute(sql.SQL("grant pg_write_all_data to {}").format(sql.Identifier(everything)))
        conn.execute(sql.SQL("alter role {} bypassrls").format(sql.Identifier(group)))
        conn.execute(
            sql.SQL("grant {} to {}").format(sql.Identifier(group), sql.Identifier(member))
        )
        for role in (group, covered, half):
            conn.execute(
                sql.SQL("grant select, insert, update on {} to {}").format(
                    table, sql.Identifier(role)
                )
            )
        conn.execute(
            sql.SQL("grant select, update (session_end, is_active) on {} to {}").format(
                table, sql.Identifier(columns)
            )
        )
        conn.execute(
            sql.SQL(
                "create policy covered_writes on {} for all to {} using (true) with check (true)"
            ).format(table, sql.Identifier(covered))
        )
        # A policy for inserts alone: its updates would still find no row.
        conn.execute(
            sql.SQL("create policy half_inserts on {} for insert to {} with check (true)").format(
                table, sql.Identifier(half)
            )
        )
    try:
        report = inspect(url)
        (warning,) = [w for w in report.warnings if "may write the table" in w]
        named = set(re.findall(r"\w+_" + s, warning.split(" may write")[0]))
        assert named == {everything, member, columns, half}, warning
        assert not any(covered in w or group in w for w in report.warnings), report.warnings

        apply(url, lock=FAST)
        with _connect(url) as conn:
            conn.execute("set search_path = public")
            conn.execute(sql.SQL("set role {}").format(sql.Identifier(covered)))
            sid = conn.execute(OLD_INSERT, (uuid.uuid4(),)).fetchone()["session_id"]  # type: ignore[index]
            assert conn.execute(OLD_END, (sid,)).rowcount == 1
            conn.execute("reset role")
            conn.execute(sql.SQL("set role {}").format(sql.Identifier(member)))
            with pytest.raises(errors.InsufficientPrivilege):
                conn.execute(OLD_INSERT, (uuid.uuid4(),))
            conn.execute("reset role")
            conn.execute(sql.SQL("set role {}").format(sql.Identifier(half)))
            assert conn.execute(OLD_END, (sid,)).rowcount == 0
            conn.execute("reset role")
            conn.execute(sql.SQL("set role {}").format(sql.Identifier(columns)))
            assert (
                conn.execute(
                    "update conversation_sessions set session_end = now(), is_active = false"
                    " where session_id = %s",
                    (sid,),
                ).rowcount
                == 0
            )
            conn.execute("reset role")
    finally:
        with _connect(url) as conn:
            for role in roles:
                _drop_owned(conn, sql.Identifier(role))
                conn.execute(sql.SQL("drop role {}").format(sql.Identifier(role)))


def test_check_names_a_role_that_only_deletes_that_row_level_security_would_stop(
    server: Server,
) -> None:
    """A clean-up job's role, granted SELECT and DELETE (it deletes old ended sessions),
    was not named by --check, which looked at inserts and updates only: after --apply
    its deletes deleted nothing, and the history grew unwarned. It is named now, as is
    one with a policy for deletes but none to read by (a delete's where clause reads the
    rows); one given both is not, and deletes what it did."""
    url = server.database()
    build_origin(url, team_objects=False)
    s = uuid.uuid4().hex[:8]
    cleanup, half, covered = (f"{name}_{s}" for name in ("cleanup", "half", "covered"))
    roles = (cleanup, half, covered)
    table = sql.SQL("public.conversation_sessions")
    with _connect(url) as conn:
        for role in roles:
            conn.execute(sql.SQL("create role {}").format(sql.Identifier(role)))
            conn.execute(
                sql.SQL("grant select, delete on {} to {}").format(table, sql.Identifier(role))
            )
        for role in (half, covered):
            conn.execute(
                sql.SQL("create policy {} on {} for delete to {} using (true)").format(
                    sql.Identifier(f"{role} deletes"), table, sql.Identifier(role)
                )
            )
        conn.execute(
            sql.SQL("create policy {} on {} for select to {} using (true)").format(
                sql.Identifier(f"{covered} reads"), table, sql.Identifier(covered)
            )
        )
    ended = "public.conversation_sessions where session_end is not null"
    try:
        (warning,) = [w for w in inspect(url).warnings if "may write the table" in w]
        named = set(re.findall(r"\w+_" + s, warning.split(" may write")[0]))
        assert named == {cleanup, half}, warning
        assert "deletes change no row" in warning, warning

        apply(url, lock=FAST)
        with _connect(url) as conn:
            row = conn.execute(f"select count(*) from {ended}").fetchone()
            assert row is not None and row["count"] > 0
            deleted = {}
            for role in roles:
                conn.execute(sql.SQL("set role {}").format(sql.Identifier(role)))
                deleted[role] = conn.execute(f"delete from {ended}").rowcount
                conn.execute("reset role")
        assert deleted == {cleanup: 0, half: 0, covered: row["count"]}
    finally:
        with _connect(url) as conn:
            for role in roles:
                _drop_owned(conn, sql.Identifier(role))
                conn.execute(sql.SQL("drop role {}").format(sql.Identifier(role)))


def test_check_warns_of_a_reader_that_row_level_security_would_blind(server: Server) -> None:
    """A role that only reads the table (the monitoring that runs the origin's orphan
    alert, an analytics login) counted every row before --apply and none after it, since
    --apply enables row level security: the alert went quiet with 18 orphans in the table,
    and --check had not named the role. It names each such role (granted the table or
    some of its columns) with the policy that keeps it reading."""
    url = server.database()
    origin = build_origin(url, team_objects=False)
    suffix = uuid.uuid4().hex[:8]
    reader, column_reader, with_policy = (
        f"monitoring_{suffix}",
        f"analytics_{suffix}",
        f"readers_{suffix}",
    )
    roles = (reader, column_reader, with_policy)
    with _connect(url) as conn:
        for role in roles:
            conn.execute(sql.SQL("create role {} nologin").format(sql.Identifier(role)))
        conn.execute(
            sql.SQL("grant select on public.conversation_sessions to {}, {}").format(
                sql.Identifier(reader), sql.Identifier(with_policy)
            )
        )
        conn.execute(
            sql.SQL(
                "grant select (session_id, is_active, session_start)"
                " on public.conversation_sessions to {}"
            ).format(sql.Identifier(column_reader))
        )
        conn.execute(
            sql.SQL(
                "create policy team_reads on public.conversation_sessions"
                " for select to {} using (true)"
            ).format(sql.Identifier(with_policy))
        )
    try:
        report = inspect(url)
        named = [w for w in report.warnings if "may read the table" in w]
        assert len(named) == 1, report.warnings
        assert reader in named[0] and column_reader in named[0], named
        assert with_policy not in named[0], named
        statement = re.search(r"create policy .* using \(true\)", named[0])
        assert statement is not None, named
        # The statement names the first of them (sorted); the other takes the same.
        assert column_reader in statement.group(0), statement.group(0)
        with _connect(url) as conn:
            conn.execute(statement.group(0))
            conn.execute(statement.group(0).replace(column_reader, reader))
        assert not [w for w in inspect(url).warnings if "may read the table" in w]

        apply(url, lock=FAST)
        with _connect(url) as conn:
            for role in roles:
                conn.execute(sql.SQL("set role {}").format(sql.Identifier(role)))
                counted = conn.execute(ORPHAN_ALERT).fetchone()
                assert counted is not None
                assert counted["orphaned_count"] == len(origin.orphans), role
                conn.execute("reset role")
    finally:
        with _connect(url) as conn:
            for role in roles:
                _drop_owned(conn, sql.Identifier(role))
                conn.execute(sql.SQL("drop role {}").format(sql.Identifier(role)))


def test_check_warns_of_a_reader_of_every_table_that_row_level_security_would_blind(
    server: Server,
) -> None:
    """A monitoring login granted pg_read_all_data (Postgres's role for reading every
    table, no grant on the table itself) ran the origin's orphan alert and counted 0 after
    --apply, and --check had not named it. It is named with the others, with the policy
    that keeps it reading; given that policy, it counts every orphan."""
    url = server.database()
    origin = build_origin(url, team_objects=False)
    monitor = f"monitor_{uuid.uuid4().hex[:8]}"
    with _connect(url) as conn:
        conn.execute(sql.SQL("create role {} nologin").format(sql.Identifier(monitor)))
        conn.execute(sql.SQL("grant pg_read_all_data to {}").format(sql.Identifier(monitor)))
    try:
        named = [w for w in inspect(url).warnings if "may read the table" in w]
        assert len(named) == 1 and monitor in named[0], named
        statement = re.search(r"create policy .* using \(true\)", named[0])
        assert statement is not None, named
        with _connect(url) as conn:
            conn.execute(statement.group(0))
        apply(url, lock=FAST)
        with _connect(url) as conn:
            conn.execute(sql.SQL("set role {}").format(sql.Identifier(monitor)))
            counted = conn.execute(ORPHAN_ALERT).fetchone()
            conn.execute("reset role")
        assert counted == {"orphaned_count": len(origin.orphans)}
    finally:
        with _connect(url) as conn:
            _drop_owned(conn, sql.Identifier(monitor))
            conn.execute(sql.SQL("drop role {}").format(sql.Identifier(monitor)))


def test_check_names_every_reader_that_row_level_security_would_blind_and_only_those(
    server: Server,
) -> None:
    """--check named the group role granted SELECT, not the login reading through it;
    and a login reading through a group with BYPASSRLS (which is not inherited) was not
    named at all: after --apply both counted no orphan, unwarned. Each role that reads
    is now judged as row level security will judge it, and one that does not inherit
    the group's rights (it reads nothing now) is not named."""
    url = server.database()
    origin = build_origin(url, team_objects=False)
    s = uuid.uuid4().hex[:8]
    bypassing, through_bypassing, group, member, apart = (
        f"{name}_{s}" for name in ("bypassing", "viabypass", "group", "member", "apart")
    )
    roles = (through_bypassing, member, apart, bypassing, group)
    with _connect(url) as conn:
        for role in roles:
            conn.execute(sql.SQL("create role {}").format(sql.Identifier(role)))
        conn.execute(sql.SQL("alter role {} bypassrls").format(sql.Identifier(bypassing)))
        conn.execute(sql.SQL("alter role {} noinherit").format(sql.Identifier(apart)))
        for role, inherited in ((through_bypassing, bypassing), (member, group), (apart, group)):
            conn.execute(
                sql.SQL("grant {} to {}").format(sql.Identifier(inherited), sql.Identifier(role))
            )
        conn.execute(
            sql.SQL("grant select on public.conversation_sessions to {}, {}").format(
                sql.Identifier(bypassing), sql.Identifier(group)
            )
        )
    try:
        (warning,) = [w for w in inspect(url).warnings if "may read the table" in w]
        named = set(re.findall(r"\w+_" + s, warning.split(" may read")[0]))
        assert named == {through_bypassing, group, member}, warning

        apply(url, lock=FAST)
        with _connect(url) as conn:
            for role in roles:
                conn.execute(sql.SQL("set role {}").format(sql.Identifier(role)))
                if role == apart:
                    with pytest.raises(errors.InsufficientPrivilege):
                        conn.execute(ORPHAN_ALERT)
                else:
                    counted = conn.execute(ORPHAN_ALERT).fetchone()
                    assert counted is not None
                    expected = len(origin.orphans) if role == bypassing else 0
                    assert counted["orphaned_count"] == expected, role
                conn.execute("reset role")
    finally:
        with _connect(url) as conn:
            for role in roles:
                _drop_owned(conn, sql.Identifier(role))
                conn.execute(sql.SQL("drop role {}").format(sql.Identifier(role)))


def test_check_says_what_the_team_s_restrictive_policies_do_once_in_force(
    server: Server,
) -> None:
    """A team's restrictive policy (rows of agent-0 kept from every role), written but
    not in force while row level security was off: --check listed it among the policies
    that "add to tether's", and said nothing of it. After --apply, a reporting role with
    a permissive policy of its own counted fewer rows than before, and a signed-in user
    no longer read their own agent-0 session. --check now says which policies are
    restrictive, for which command and roles, and what they do once in force, without
    naming the reporting role among those that would read no rows (it reads some); a
    role with no permissive policy is named, a restrictive one letting no row in alone."""
    url = server.database()
    origin = build_origin(url, team_objects=False)
    s = uuid.uuid4().hex[:8]
    # unpoliced: no permissive policy of its own, the restrictive one lets nothing in.
    reporting, unpoliced = f"reporting_{s}", f"unpoliced_{s}"
    table = sql.SQL("public.conversation_sessions")
    with _connect(url) as conn:
        for role in (reporting, unpoliced):
            conn.execute(sql.SQL("create role {}").format(sql.Identifier(role)))
            conn.execute(sql.SQL("grant select on {} to {}").format(table, sql.Identifier(role)))
        conn.execute(
            sql.SQL("create policy reporting_reads on {} for select to {} using (true)").format(
                table, sql.Identifier(reporting)
            )
        )
        conn.execute(
            sql.SQL(
                "create policy not_agent_0 on {} as restrictive for select to public"
                " using (agent_id <> 'agent-0')"
            ).format(table)
        )
        kept = conn.execute(
            "select count(*) filter (where agent_id <> 'agent-0') as kept, count(*) as every"
            " from public.conversation_sessions"
        ).fetchone()
    assert kept is not None and 0 < kept["kept"] < kept["every"]
    agent_0 = next(row for row in origin.rows if row.agent_id == "agent-0")
    try:
        warnings = inspect(url).warnings
        (warning,) = [w for w in warnings if "restrictive policies" in w]
        assert "not_agent_0 (for select, to PUBLIC)" in warning, warning
        assert "once --apply enables row level security" in warning, warning
        assert not [w for w in warnings if "not_agent_0" in w and w != warning], warnings
        assert not [w for w in warnings if reporting in w], warnings
        (readers,) = [w for w in warnings if "may read the table" in w]
        assert readers.startswith(f"role(s) {unpoliced} may read"), readers

        apply(url, lock=FAST)
        with _connect(url) as conn:
            for role, expected in ((reporting, kept["kept"]), (unpoliced, 0)):
                conn.execute(sql.SQL("set role {}").format(sql.Identifier(role)))
                counted = conn.execute(
                    "select count(*) from public.conversation_sessions"
                ).fetchone()
                conn.execute("reset role")
                assert counted == {"count": expected}, role
            conn.execute("set role authenticated")
            conn.execute(
                "select set_config('request.jwt.claims', %s, false)",
                (json.dumps({"role": "authenticated", "sub": str(agent_0.user_id)}),),
            )
            own = conn.execute("select count(*) from public.conversation_sessions").fetchone()
            conn.execute("reset role")
            assert own == {"count": 0}
    finally:
        with _connect(url) as conn:
            for role in (reporting, unpoliced):
                _drop_owned(conn, sql.Identifier(role))
                conn.execute(sql.SQL("drop role {}").format(sql.Identifier(role)))


def test_check_says_how_to_keep_a_role_reading_that_reads_through_public(server: Server) -> None:
    """SELECT granted to PUBLIC: a reporting login with no grant of its own read the table
    through it, and was refused after --apply, which revokes it. --check had listed
    "PUBLIC: SELECT" among what --apply revokes, and nothing of who reads through it. It
    says so now, with the grant and the policy that keep such a role reading: given them,
    it counts every orphan; one not given them is refused."""
    url = server.database()
    origin = build_origin(url, team_objects=False)
    s = uuid.uuid4().hex[:8]
    reporting, forgotten = f"reporting_{s}", f"forgotten_{s}"
    with _connect(url) as conn:
        for role in (reporting, forgotten):
            conn.execute(sql.SQL("create role {}").format(sql.Identifier(role)))
        conn.execute("grant select on public.conversation_sessions to public")
    try:
        (warning,) = [w for w in inspect(url).warnings if "PUBLIC: SELECT" in w]
        assert "reads the table only through PUBLIC" in warning, warning
        statements = re.findall(
            r"grant select on \S+ to <role>|create policy .*? using \(true\)", warning
        )
        assert len(statements) == 2, warning
        with _connect(url) as conn:
            for statement in statements:
                conn.execute(statement.replace("<role>", reporting))
        apply(url, lock=FAST)
        with _connect(url) as conn:
            conn.execute(sql.SQL("set role {}").format(sql.Identifier(reporting)))
            counted = conn.execute(ORPHAN_ALERT).fetchone()
            conn.execute("reset role")
            assert counted == {"orphaned_count": len(origin.orphans)}
            conn.execute(sql.SQL("set role {}").format(sql.Identifier(forgotten)))
            with pytest.raises(errors.InsufficientPrivilege):
                conn.execute(ORPHAN_ALERT)
    finally:
        with _connect(url) as conn:
            for role in (reporting, forgotten):
                _drop_owned(conn, sql.Identifier(role))
                conn.execute(sql.SQL("drop role {}").format(sql.Identifier(role)))


def test_check_says_how_to_spare_the_history_the_team_s_update_triggers(server: Server) -> None:
    """The team's updated_at trigger stamped every row of the history with the moment of
    the backfill: --check warned that it would, but not what to do. It now gives the
    statements that hold the triggers off for --apply; followed, every updated_at stays."""
    url = server.database()
    build_origin(url, team_objects=False)
    with _connect(url) as conn:
        conn.execute(
            "alter table public.conversation_sessions"
            " add column updated_at timestamptz not null default '2026-01-01 00:00+00'"
        )
        conn.execute(
            "create function public.stamp() returns trigger language plpgsql"
            " set search_path = public as $$ begin new.updated_at := now(); return new; end $$"
        )
        conn.execute(
            'create trigger "Stamp" before update on public.conversation_sessions'
            " for each row execute function public.stamp()"
        )
    (warning,) = [w for w in inspect(url).warnings if "the backfill updates" in w]
    statements = re.findall(r"alter table \S+ disable trigger \S+?(?=;| \()", warning)
    assert statements == ['alter table public.conversation_sessions disable trigger "Stamp"'], (
        warning
    )
    with _connect(url) as conn:
        for statement in statements:
            conn.execute(statement)
        # One on a column the backfill leaves alone does not fire for it: not named.
        conn.execute(
            "create trigger on_agent after update of agent_id on public.conversation_sessions"
            " for each row execute function public.stamp()"
        )
    # Disabled as said, they are no longer said to fire.
    assert not [w for w in inspect(url).warnings if "the backfill updates" in w]
    apply(url, lock=FAST)
    with _connect(url) as conn:
        for statement in statements:
            conn.execute(statement.replace(" disable ", " enable "))
        stamped = conn.execute(
            "select count(*) filter (where updated_at = '2026-01-01 00:00+00') as kept,"
            " count(*) from public.conversation_sessions"
        ).fetchone()
        assert stamped is not None and stamped["kept"] == stamped["count"] == 85
        # Enabled again, it stamps the old server's writes as before.
        conn.execute(
            "update public.conversation_sessions set agent_id = 'x'"
            " where session_id = (select session_id from public.conversation_sessions limit 1)"
        )
        row = conn.execute(
            "select count(*) from public.conversation_sessions"
            " where updated_at > now() - '1 minute'::interval"
        ).fetchone()
    assert row is not None and row["count"] == 1


def test_check_reads_the_events_a_trigger_fires_on_from_the_catalog(server: Server) -> None:
    """--check took a trigger to fire on UPDATE when its definition's text said UPDATE
    anywhere: an insert trigger named "audit update", or one whose WHEN clause compares
    with 'manual update', was said to fire for each row the backfill updates, and the
    team was told to disable it. It reads the events from the catalog now; a trigger on
    insert or update is still named."""
    url = server.database()
    build_origin(url, team_objects=False)
    with _connect(url) as conn:
        conn.execute(
            "create function public.audit() returns trigger language plpgsql"
            " set search_path = public as $$ begin return new; end $$"
        )
        conn.execute(
            'create trigger "audit update" after insert on public.conversation_sessions'
            " for each row execute function public.audit()"
        )
        conn.execute(
            "create trigger audit_insert after insert on public.conversation_sessions"
            " for each row when (new.user_id::text <> 'manual update')"
            " execute function public.audit()"
        )
        conn.execute(
            "create trigger audit_write after insert or update on public.conversation_sessions"
            " for each row execute function public.audit()"
        )
    (warning,) = [w for w in inspect(url).warnings if "the backfill updates" in w]
    assert warning.startswith("trigger(s) audit_write fire"), warning


def test_check_gives_back_a_trigger_enabled_always_as_it_was(server: Server) -> None:
    """A team's audit trigger ENABLE ALWAYS (so that it fires on a logical replica too):
    --check said to disable it for --apply and "enable trigger each the same way after",
    which makes it an ordinary trigger, silent from then on on the replica. --check now
    gives each statement that enables it again as it was."""
    url = server.database()
    build_origin(url, team_objects=False)
    with _connect(url) as conn:
        conn.execute(
            "create function public.audit() returns trigger language plpgsql"
            " set search_path = public as $$ begin return new; end $$"
        )
        for name in ("audit", "stamp"):
            conn.execute(
                f"create trigger {name} after update on public.conversation_sessions"
                " for each row execute function public.audit()"
            )
        conn.execute("alter table public.conversation_sessions enable always trigger audit")
    (warning,) = [w for w in inspect(url).warnings if "the backfill updates" in w]
    disable = re.findall(r"alter table \S+ disable trigger \w+", warning)
    enable = re.findall(r"alter table \S+ enable (?:always )?trigger \w+", warning)
    assert enable == [
        "alter table public.conversation_sessions enable always trigger audit",
        "alter table public.conversation_sessions enable trigger stamp",
    ], warning
    with _connect(url) as conn:
        for statement in disable:
            conn.execute(statement)
    apply(url, lock=FAST)
    with _connect(url) as conn:
        for statement in enable:
            conn.execute(statement)
        modes = conn.execute(
            "select tgname, tgenabled from pg_trigger where tgname in ('audit', 'stamp') order by 1"
        ).fetchall()
    assert modes == [{"tgname": "audit", "tgenabled": "A"}, {"tgname": "stamp", "tgenabled": "O"}]


def test_check_says_a_statement_trigger_fires_once_per_backfill_batch(server: Server) -> None:
    """A team's FOR EACH STATEMENT update trigger (a summary refreshed after each update)
    was said to fire for each row the backfill updates, and to be disabled to spare the
    history. The backfill updates the rows batch by batch, one statement each (and one of
    tether's migrations runs one more): --check now says it fires once per statement, and
    how many times, which is what it does."""
    url = server.database()
    build_origin(url, team_objects=False)
    with _connect(url) as conn:
        conn.execute("create table public.summary_refreshes (rows bigint not null)")
        conn.execute(
            "create function public.refresh_summary() returns trigger language plpgsql"
            " set search_path = public as $$ begin"
            " insert into public.summary_refreshes select count(*) from changed;"
            " return null; end $$"
        )
        conn.execute(
            "create trigger refresh_summary after update on public.conversation_sessions"
            " referencing new table as changed"
            " for each statement execute function public.refresh_summary()"
        )
    warnings = inspect(url, batch_size=20).warnings
    assert not [w for w in warnings if "for each row the backfill updates" in w], warnings
    (warning,) = [w for w in warnings if "once per UPDATE statement" in w]
    said = re.search(r"about (\d+) for this table's (\d+) rows", warning)
    assert said is not None and "refresh_summary" in warning, warning
    assert (int(said.group(1)), int(said.group(2))) == (5, 85), warning
    apply(url, lock=FAST, batch_size=20)
    with _connect(url) as conn:
        fired = [r["rows"] for r in conn.execute("select rows from public.summary_refreshes")]
    # The batches' 20, 20, 20, 20 and 5 rows, and the migration's update of none.
    assert sorted(fired, reverse=True) == [20, 20, 20, 20, 5, 0], fired


def test_names_are_written_as_postgres_quotes_them(server: Server) -> None:
    """A team's update triggers named user and order: --check told the team to run
    `alter table public.conversation_sessions disable trigger user`, a syntax error, since
    every lower-case name was written bare, keyword or not. Names are now quoted as
    quote_ident() quotes them, and the statements run as written. Every keyword this
    Postgres quotes is in tether's list (a newer Postgres's new ones are caught here)."""
    url = server.database()
    build_origin(url, team_objects=False)
    with _connect(url) as conn:
        keywords = conn.execute(
            "select word, catcode <> 'U' as quotes from pg_get_keywords()"
        ).fetchall()
        missing = sorted(
            k["word"] for k in keywords if k["quotes"] and k["word"] not in catalog.QUOTED_KEYWORDS
        )
        assert not missing, f"keywords missing from catalog.QUOTED_KEYWORDS: {missing}"
        names = [
            # An older Postgres may take bare a word a newer one reserves: quoted all the same.
            *(
                k["word"]
                for k in keywords
                if k["quotes"] or k["word"] not in catalog.QUOTED_KEYWORDS
            ),
            *("plain_name", "_x1", "a$b", "Stamp", "1x", "\u00e9t\u00e9", 'say "hi"', "two words"),
        ]
        for name in names:
            written = conn.execute("select quote_ident(%s) as q", (name,)).fetchone()
            assert written is not None and catalog.quoted(name) == written["q"], name
        conn.execute(
            "create function public.audit() returns trigger language plpgsql"
            " set search_path = public as $$ begin return new; end $$"
        )
        for name in ("user", "order"):
            conn.execute(
                sql.SQL(
                    "create trigger {} after update on public.conversation_sessions"
                    " for each row execute function public.audit()"
                ).format(sql.Identifier(name))
            )
    (warning,) = [w for w in inspect(url).warnings if "the backfill updates" in w]
    statements = re.findall(r'alter table \S+ (?:disable|enable) trigger (?:"[^"]*"|\w+)', warning)
    assert len(statements) == 4, warning
    with _connect(url) as conn:
        for statement in statements:
            conn.execute(statement)


def test_check_warns_of_the_table_s_own_uniqueness_that_would_refuse_connections(
    server: Server,
) -> None:
    """A team's unique index on user_id where is_active (one session per user) was kept
    by --apply and --finish without a word: each user's second connection was then
    refused. --check names it, and only it (not tether's own unique index, nor the key)."""
    url = server.database()
    build_origin(url, team_objects=False)
    with _connect(url) as conn:
        conn.execute(
            "create unique index one_live_session_per_user"
            " on public.conversation_sessions (user_id) where is_active"
        )
    said = [w for w in inspect(url).warnings if "uniqueness" in w]
    assert len(said) == 1, said
    assert "one_live_session_per_user ((user_id) WHERE is_active)" in said[0]
    assert "a user's second connection" in said[0]

    apply(url, lock=FAST)
    after = [w for w in inspect(url).warnings if "uniqueness" in w]
    assert len(after) == 1 and "connection_id_key" not in after[0], after


def _daily_stats(url: str) -> list[dict[str, Any]]:
    with _connect(url) as conn:
        conn.execute("set timezone = 'UTC'")
        return conn.execute(DAILY_STATS.encode()).fetchall()


def _expected_daily_stats(origin: Origin, url: str) -> list[dict[str, Any]]:
    rows = _rows(url)
    days: dict[Any, list[dict[str, Any]]] = {}
    for row in rows.values():
        if row["session_start"] > datetime.now(UTC) - timedelta(days=7):
            days.setdefault(row["session_start"].astimezone(UTC).date(), []).append(row)
    expected = []
    for day in sorted(days, reverse=True):
        durations = [
            Decimal(str((r["session_end"] - r["session_start"]).total_seconds()))
            for r in days[day]
            if r["session_end"] is not None
        ]
        expected.append(
            {
                "date": day,
                "total_sessions": len(days[day]),
                "avg_duration": sum(durations) / len(durations) if durations else None,
                "still_active": sum(1 for r in days[day] if r["session_end"] is None),
            }
        )
    return expected


def test_the_operators_queries_answer_correctly_before_and_after(adoptable: Adoptable) -> None:
    url = adoptable.url
    with _connect(url) as conn:
        before = conn.execute(ORPHAN_ALERT.encode()).fetchone()
    # As the old table says: the 18 orphans, and 4 ended rows still marked active.
    assert before == {"orphaned_count": 22}

    apply(url, lock=FAST)
    with _connect(url) as conn:
        assert conn.execute(ORPHAN_ALERT.encode()).fetchone() == {"orphaned_count": 18}
    stats = _daily_stats(url)
    expected = _expected_daily_stats(adoptable.origin, url)
    assert [(s["date"], s["total_sessions"], s["still_active"]) for s in stats] == [
        (e["date"], e["total_sessions"], e["still_active"]) for e in expected
    ]
    for got, want in zip(stats, expected, strict=True):
        assert (got["avg_duration"] is None) == (want["avg_duration"] is None)
        if want["avg_duration"] is not None:
            assert abs(got["avg_duration"] - want["avg_duration"]) < Decimal("0.000001")

    finish(url, lock=FAST)
    with _connect(url) as conn:
        assert conn.execute(ORPHAN_ALERT.encode()).fetchone() == {"orphaned_count": 18}
    assert _daily_stats(url) == stats


# --- the handlers, the sweep and close-orphans on the adopted table ------------------


@pytest.fixture
def adopted_env(
    adoptable: Adoptable, event_bus: EventBus, aws: str, monkeypatch: pytest.MonkeyPatch
) -> Iterator[dict[str, str]]:
    for name in ("DATABASE_URL", "SUPABASE_URL", "SUPABASE_JWT_SECRET", "TETHER_JWT_SECRET"):
        monkeypatch.delenv(name, raising=False)
    env = {
        "TETHER_DATABASE_URL": adoptable.url,
        "TETHER_AWS_ENDPOINT_URL": aws,
        "TETHER_EVENT_BUS_NAME": event_bus.name,
        "TETHER_ALLOW_ANONYMOUS": "true",
        "TETHER_HEARTBEAT_THROTTLE_SECONDS": "0",
    }
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    runtime.reset()
    yield env
    runtime.reset()


@pytest.mark.parametrize("stage", ["transitional", "finished"])
def test_handlers_sweep_and_close_orphans_work_on_the_adopted_table(
    adoptable: Adoptable, adopted_env: dict[str, str], event_bus: EventBus, stage: str
) -> None:
    from functions import connect, disconnect  # noqa: PLC0415

    apply(adoptable.url, lock=FAST)
    if stage == "finished":
        finish(adoptable.url, lock=FAST)
    url = adoptable.url

    assert (
        connect.lambda_handler(ws_event("connect", "adopted1="), FakeLambdaContext())["statusCode"]
        == 200
    )
    assert (
        disconnect.lambda_handler(ws_event("disconnect", "adopted1="), FakeLambdaContext())[
            "statusCode"
        ]
        == 200
    )
    with _connect(url) as conn:
        row = conn.execute(
            "select is_active, end_reason, duration_seconds is not null as timed, ended_at"
            " = session_end as in_step, announced_at is not null as announced"
            " from conversation_sessions where connection_id = 'adopted1='"
        ).fetchone()
    assert row == {
        "is_active": False,
        "end_reason": "client_disconnect",
        "timed": True,
        "in_step": True,
        "announced": True,
    }
    assert [e["detail"]["connection_id"] for e in event_bus.received()] == ["adopted1="]

    env = {**adopted_env, "TETHER_ANNOUNCE_TO": "log"}
    orphans = run_tether(
        "close-orphans", "--older-than", "2h", "--apply", "--yes", "--database-url", url, env=env
    )
    assert orphans.returncode == 0, orphans.stderr
    assert "18 active session(s) started more than 2 hours ago" in orphans.stdout
    assert "ended 18 session(s) with reason orphan_cleanup" in orphans.stdout
    rows = _rows(url)
    for orphan in adoptable.origin.orphans:
        row = rows[orphan.session_id]
        # Ended at its last sign of life known: its start, not the clean-up's moment.
        assert row["end_reason"] == "orphan_cleanup"
        assert row["session_end"] == row["session_start"] == orphan.session_start
        assert row["is_active"] is False

    sweep = run_tether("sweep", "--database-url", url, "--json", env=env)
    assert sweep.returncode == 0, sweep.stderr
    report = json.loads(sweep.stdout)
    # The old server's session silent for 30 minutes ends as idle at its last sign of
    # life; the one 5 minutes old stays.
    assert report["ended_by_reason"] == {"idle_timeout": 1}
    rows = _rows(url)
    states = sorted(
        (rows[r.session_id]["is_active"], rows[r.session_id]["end_reason"])
        for r in adoptable.origin.by_label("live")
    )
    assert states == [(False, "idle_timeout"), (True, None)]


@ON_ONE_SERVER
def test_the_old_server_s_shutdown_ending_tether_s_sessions_is_announced(
    adoptable: Adoptable, adopted_env: dict[str, str], event_bus: EventBus
) -> None:
    """The old shutdown handler ends every active row, tether's own sessions included:
    their SessionEnded is sent, as for any end of theirs; the old server's own sessions
    keep their old finalizing."""
    from functions import connect, sweep  # noqa: PLC0415

    apply(adoptable.url, lock=FAST)
    assert (
        connect.lambda_handler(ws_event("connect", "tethers="), FakeLambdaContext())["statusCode"]
        == 200
    )
    with _connect(adoptable.url) as conn:
        conn.execute(OLD_INSERT, (uuid.uuid4(),))
        conn.execute(OLD_SHUTDOWN)

    # One check: the run has a second past its margin, less than its cadence.
    report = sweep.lambda_handler(load_event("scheduled"), FakeLambdaContext(time_limit_seconds=11))
    assert report["announced"] == 1
    assert report["unannounced"] == 0
    assert [
        (e["detail"]["connection_id"], e["detail"]["end_reason"]) for e in event_bus.received()
    ] == [("tethers=", "unrecorded")]


@ON_ONE_SERVER
def test_the_old_server_ending_a_tether_session_by_is_active_alone_is_announced(
    adoptable: Adoptable, adopted_env: dict[str, str], event_bus: EventBus
) -> None:
    """`set is_active = false` names no end column: the adoption's sync trigger writes
    the end. It is announced as an end the old server wrote in full would be."""
    from functions import connect, sweep  # noqa: PLC0415

    apply(adoptable.url, lock=FAST)
    assert (
        connect.lambda_handler(ws_event("connect", "tethers="), FakeLambdaContext())["statusCode"]
        == 200
    )
    with _connect(adoptable.url) as conn:
        conn.execute(
            "update conversation_sessions set is_active = false where connection_id = 'tethers='"
        )

    # The run also ends the old server's orphans: only tether's session is looked at.
    report = sweep.lambda_handler(load_event("scheduled"), FakeLambdaContext(time_limit_seconds=11))
    assert report["unannounced"] == 0
    assert [
        e["detail"]["end_reason"]
        for e in event_bus.received()
        if e["detail"]["connection_id"] == "tethers="
    ] == ["unrecorded"]


def test_an_ended_session_keeps_its_status_code_during_the_transition(
    adoptable: Adoptable,
) -> None:
    """While the old server still writes, tether's ended session keeps its end, reason
    and status code: the old server's second end is turned back into the first, and a
    script's write changing the code is refused as it is once the adoption is over."""
    apply(adoptable.url, lock=FAST)
    with _connect(adoptable.url) as conn:
        conn.execute("select public.tether_open_session_v1('tethers=')")
        conn.execute("select public.tether_end_session_v3('tethers=', 'client_disconnect', 1000)")
        ended = conn.execute(
            "select session_id, session_end, end_reason, disconnect_status_code"
            " from conversation_sessions where connection_id = 'tethers='"
        ).fetchone()
        assert ended is not None
        conn.execute(OLD_END, (ended["session_id"],))
        conn.execute("set role service_role")
        with pytest.raises(errors.CheckViolation, match="its end is final"):
            conn.execute(
                "update conversation_sessions set disconnect_status_code = 4000"
                " where connection_id = 'tethers='"
            )
        conn.execute("reset role")
        after = conn.execute(
            "select session_id, session_end, end_reason, disconnect_status_code"
            " from conversation_sessions where connection_id = 'tethers='"
        ).fetchone()
    assert after == ended


# --- --finish ----------------------------------------------------------------------------


def _catalog(url: str) -> dict[str, Any]:
    """What tether's schema consists of, on the session table and around it; the
    application's columns and the team's own objects left out."""
    with _connect(url) as conn:
        columns = conn.execute(
            "select a.attname, format_type(a.atttypid, a.atttypmod) as type, a.attnotnull,"
            " a.attgenerated, pg_get_expr(d.adbin, d.adrelid) as expr,"
            " col_description(a.attrelid, a.attnum) as comment"
            " from pg_attribute a left join pg_attrdef d"
            "   on d.adrelid = a.attrelid and d.adnum = a.attnum"
            " where a.attrelid = 'public.conversation_sessions'::regclass and a.attnum > 0"
            "   and not a.attisdropped and a.attname <> all (%s)",
            (["agent_id", "metadata", "ended_at"],),
        ).fetchall()
        constraints = conn.execute(
            "select conname, contype, pg_get_constraintdef(oid) as def, convalidated"
            " from pg_constraint where conrelid = 'public.conversation_sessions'::regclass"
        ).fetchall()
        indexes = conn.execute(
            "select indexname, indexdef from pg_indexes"
            " where schemaname = 'public' and tablename = 'conversation_sessions'"
            "   and indexname <> 'conversation_sessions_is_active_idx'"
        ).fetchall()
        policies = conn.execute(
            "select policyname, permissive, roles, cmd, qual, with_check from pg_policies"
            " where tablename = 'conversation_sessions'"
            "   and policyname <> 'Agents read active sessions'"
        ).fetchall()
        triggers = conn.execute(
            "select tgname, pg_get_triggerdef(oid) as def from pg_trigger"
            " where tgrelid = 'public.conversation_sessions'::regclass and not tgisinternal"
        ).fetchall()
        table = conn.execute(
            "select relrowsecurity, relforcerowsecurity, reloptions,"
            " obj_description(oid, 'pg_class') as comment,"
            " array(select (a.grantee::regrole::text, a.privilege_type)::text"
            "       from aclexplode(relacl) a where a.grantee <> 0 order by 1) as grants"
            " from pg_class where oid = 'public.conversation_sessions'::regclass"
        ).fetchone()
        views = conn.execute(
            "select c.relname, pg_get_viewdef(c.oid) as def, c.reloptions"
            " from pg_class c join pg_namespace n on n.oid = c.relnamespace"
            " where n.nspname = 'public' and c.relkind = 'v' and c.relname like 'conversation%%'"
        ).fetchall()
        functions = conn.execute(
            "select p.oid::regprocedure::text as name, pg_get_functiondef(p.oid) as def,"
            " array(select a::text from aclexplode(p.proacl) a order by 1) as acl"
            " from pg_proc p join pg_namespace n on n.oid = p.pronamespace"
            " where n.nspname in ('public', 'tether') and p.proname like 'tether%%'"
        ).fetchall()
        domain = conn.execute(
            "select pg_get_constraintdef(c.oid) as def, c.convalidated from pg_constraint c"
            " where c.contypid = 'public.tether_end_reason'::regtype"
        ).fetchall()
        outbox = conn.execute(
            "select (select array_agg(attname::text order by attnum) from pg_attribute"
            "        where attrelid = 'public.conversation_session_announcements'::regclass"
            "          and attnum > 0) as columns,"
            " (select array_agg(indexdef order by indexname) from pg_indexes"
            "        where tablename = 'conversation_session_announcements') as indexes,"
            " (select array_agg(policyname::text) from pg_policies"
            "        where tablename = 'conversation_session_announcements') as policies"
        ).fetchone()
        tables = conn.execute(
            "select n.nspname || '.' || c.relname as name from pg_class c"
            " join pg_namespace n on n.oid = c.relnamespace"
            " where n.nspname in ('public', 'tether') and c.relkind = 'r'"
            "   and c.relname not like 'adoption%%'"
        ).fetchall()

    def by(rows: list[dict[str, Any]], name: str) -> list[dict[str, Any]]:
        return sorted(rows, key=lambda r: str(r[name]))

    return {
        "columns": by(columns, "attname"),
        "constraints": by(constraints, "conname"),
        "indexes": by(indexes, "indexname"),
        "policies": by(policies, "policyname"),
        "triggers": by(triggers, "tgname"),
        "table": table,
        "views": by(views, "relname"),
        "functions": by(functions, "name"),
        "domain": domain,
        "outbox": outbox,
        "tables": sorted(r["name"] for r in tables),
    }


def test_finish_says_what_it_locks_then_leaves_the_shape_of_a_fresh_install(
    server: Server, adoptable: Adoptable
) -> None:
    url = adoptable.url
    apply(url, lock=FAST)
    with _connect(url) as conn:
        views_before = {
            r["relname"]: r["def"]
            for r in conn.execute(
                "select relname, pg_get_viewdef(oid) as def from pg_class"
                " where relname in ('team_session_stats', 'team_busy_days')"
            ).fetchall()
        }

    asked = run_tether("adopt", "--finish", "--database-url", url)
    assert asked.returncode == 1
    assert "ACCESS EXCLUSIVE on public.conversation_sessions for the whole rewrite" in asked.stdout
    assert "estimated at" in asked.stdout
    assert "team_session_stats" in asked.stdout
    assert "20 sessions the old server opened are still active" in asked.stdout
    assert "nothing was changed" in asked.stderr
    assert plan_finish(url).state == "adopted, transitional"

    done = run_tether("adopt", "--finish", "--yes", "--database-url", url)
    assert done.returncode == 0, done.stderr
    assert "finished: the table has its final shape" in done.stdout
    assert plan_finish(url).state == "adopted and finished"

    fresh = _catalog(server.database(migrated=True))
    adopted = _catalog(url)
    for part in fresh:
        assert adopted[part] == fresh[part], part

    with _connect(url) as conn:
        generated = conn.execute(
            "select column_name, generation_expression from information_schema.columns"
            " where table_name = 'conversation_sessions' and is_generated = 'ALWAYS'"
            " order by 1"
        ).fetchall()
        assert [(g["column_name"], g["generation_expression"]) for g in generated] == [
            ("duration_seconds", "EXTRACT(epoch FROM (session_end - session_start))"),
            ("ended_at", "session_end"),
            ("is_active", "(session_end IS NULL)"),
        ]
        views_after = {
            r["relname"]: r["def"]
            for r in conn.execute(
                "select relname, pg_get_viewdef(oid) as def from pg_class"
                " where relname in ('team_session_stats', 'team_busy_days')"
            ).fetchall()
        }
        assert views_after == views_before
        assert conn.execute(
            "select has_table_privilege('authenticated', 'public.team_session_stats', 'select')"
            " as g, obj_description('public.team_session_stats'::regclass) as c"
        ).fetchone() == {"g": True, "c": "The team's dashboard."}
        assert conn.execute(
            "select indexdef from pg_indexes"
            " where indexname = 'conversation_sessions_is_active_idx'"
        ).fetchone()
        # The old server's writes have no place any more: is_active is generated.
        with pytest.raises(errors.GeneratedAlways):
            conn.execute(OLD_INSERT, (uuid.uuid4(),))
    _assert_adopted_by_the_rules(url, adoptable.origin)

    # And once more: nothing to do.
    again = run_tether("adopt", "--finish", "--yes", "--database-url", url)
    assert again.returncode == 0 and "nothing left to do" in again.stdout
    # --check of the finished table counts ended_at as tether's, generated from session_end.
    checked = run_tether("adopt", "--check", "--database-url", url)
    assert checked.returncode == 0, checked.stderr
    (kept,) = [line for line in checked.stdout.splitlines() if line.strip().startswith("kept as")]
    assert "ended_at" not in kept
    assert "keeps it as an application column" not in checked.stdout


def test_finish_refuses_what_it_cannot_recreate_and_changes_nothing(
    adoptable: Adoptable,
) -> None:
    apply(adoptable.url, lock=FAST)
    with _connect(adoptable.url) as conn:
        conn.execute(
            "create materialized view public.team_live as"
            " select count(*) as n from public.conversation_sessions where is_active"
        )
    planned = plan_finish(adoptable.url)
    assert any("materialized view public.team_live" in r for r in planned.refusals)
    before = _snapshot(adoptable.url)
    with pytest.raises(AdoptionError, match="team_live"):
        finish(adoptable.url, lock=FAST)
    assert _snapshot(adoptable.url) == before
    with _connect(adoptable.url) as conn:
        conn.execute("drop materialized view public.team_live")
    finish(adoptable.url, lock=FAST)
    assert plan_finish(adoptable.url).state == "adopted and finished"


@ON_ONE_SERVER
def test_finish_names_each_view_it_recreates_once_however_sql_quotes_it(
    adoptable: Adoptable,
) -> None:
    """A view whose name SQL quotes was listed twice among what --finish recreates:
    'view public."Team Live"' and 'view public.Team Live'."""
    apply(adoptable.url, lock=FAST)
    with _connect(adoptable.url) as conn:
        conn.execute(
            'create view public."Team Live" as'
            " select session_id, is_active from public.conversation_sessions"
        )
    done = run_tether("adopt", "--finish", "--yes", "--database-url", adoptable.url)
    assert done.returncode == 0, done.stderr
    (listed,) = [line for line in done.stdout.splitlines() if "created again" in line]
    names = listed.split(": ", 1)[1].split(", ")
    assert names.count('view public."Team Live"') == 1
    assert len(names) == len(set(names)), names
    assert "view public.Team Live" not in names


@ON_ONE_SERVER
def test_finish_creates_the_team_s_triggers_again_firing_as_they_did(
    adoptable: Adoptable,
) -> None:
    """--finish recreates a trigger built on is_active from its definition, which does
    not say whether it fires: one the team had disabled came back enabled."""
    apply(adoptable.url, lock=FAST)
    with _connect(adoptable.url) as conn:
        conn.execute(
            "create function public.team_noop() returns trigger language plpgsql"
            " set search_path = public as $$ begin return new; end $$"
        )
        for name, firing in (
            ("team_off", "disable"),
            ("team_on_replicas", "enable replica"),
            ("team_always", "enable always"),
            ("team_plain", None),
        ):
            conn.execute(
                f"create trigger {name} after update on public.conversation_sessions"
                " for each row when (old.is_active and not new.is_active)"
                " execute function public.team_noop()"
            )
            if firing:
                conn.execute(f"alter table public.conversation_sessions {firing} trigger {name}")
    finish(adoptable.url, lock=FAST)
    with _connect(adoptable.url) as conn:
        firing_now = {
            r["tgname"]: r["tgenabled"]
            for r in conn.execute(
                "select tgname, tgenabled::text from pg_trigger"
                " where tgrelid = 'public.conversation_sessions'::regclass"
                "   and tgname like 'team\\_%'"
            ).fetchall()
        }
    assert firing_now == {
        "team_off": "D",
        "team_on_replicas": "R",
        "team_always": "A",
        "team_plain": "O",
    }


@ON_ONE_SERVER
def test_finish_and_apply_give_back_a_recreated_view_s_rules(adoptable: Adoptable) -> None:
    """A view on the replaced columns made writable by a rule of the team's: dropping the
    view for --apply's duration conversion, or for --finish, dropped its rule, and
    creating the view again did not give it back: writes through the view no longer
    did what the rule said."""
    with _connect(adoptable.url) as conn:
        conn.execute(
            "create view public.team_writable as"
            " select session_id, user_id, agent_id, is_active, duration_seconds"
            " from public.conversation_sessions"
        )
        conn.execute(
            "create rule team_writable_agent as on update to public.team_writable"
            " do instead update public.conversation_sessions"
            " set agent_id = 'by the rule: ' || new.agent_id where session_id = old.session_id"
        )

    def rules() -> list[str]:
        with _connect(adoptable.url) as conn:
            return [
                r["rulename"]
                for r in conn.execute(
                    "select rulename from pg_rewrite"
                    " where ev_class = 'public.team_writable'::regclass"
                    "   and rulename <> '_RETURN'"
                ).fetchall()
            ]

    apply(adoptable.url, lock=FAST)
    assert rules() == ["team_writable_agent"]
    finish(adoptable.url, lock=FAST)
    assert rules() == ["team_writable_agent"]
    session = adoptable.origin.rows[0].session_id
    with _connect(adoptable.url) as conn:
        conn.execute(
            "update public.team_writable set agent_id = 'support' where session_id = %s",
            (session,),
        )
        row = conn.execute(
            "select agent_id from public.conversation_sessions where session_id = %s",
            (session,),
        ).fetchone()
    assert row == {"agent_id": "by the rule: support"}


_VIEW_CATALOG = """
select c.relname, c.reloptions, pg_get_userbyid(c.relowner) as owner, c.relacl::text as acl,
       obj_description(c.oid, 'pg_class') as comment,
       (select json_agg(json_build_array(a.attname, col_description(c.oid, a.attnum),
                                         pg_get_expr(d.adbin, d.adrelid), a.attacl::text)
                        order by a.attnum)
        from pg_attribute a
        left join pg_attrdef d on d.adrelid = a.attrelid and d.adnum = a.attnum
        where a.attrelid = c.oid and a.attnum > 0) as columns,
       (select json_agg(json_build_array(r.rulename, pg_get_ruledef(r.oid), r.ev_enabled,
                                         obj_description(r.oid, 'pg_rewrite'))
                        order by r.rulename)
        from pg_rewrite r where r.ev_class = c.oid and r.rulename <> '_RETURN') as rules,
       (select json_agg(json_build_array(t.tgname, pg_get_triggerdef(t.oid), t.tgenabled,
                                         obj_description(t.oid, 'pg_trigger'))
                        order by t.tgname)
        from pg_trigger t where t.tgrelid = c.oid) as triggers
from pg_class c
where c.relnamespace = 'public'::regnamespace and c.relname like 'team\\_%'
order by c.relname
"""


@ON_ONE_SERVER
def test_a_recreated_view_comes_back_with_all_it_had(adoptable: Adoptable) -> None:
    """A view adoption recreates (around --apply's conversion of duration_seconds, and
    --finish's columns) came back without its columns' defaults (alter view ... alter
    column ... set default, which an insert through it uses) and without the comments
    on its rules and triggers. Everything the catalog holds of it must come back as it
    was: options, owner, privileges (its columns' too), comments, defaults, rules and
    triggers. (Neither its rules nor its triggers can be disabled: Postgres allows that
    on tables only.)"""
    url = adoptable.url
    with _connect(url) as conn:
        conn.execute("create role team_view_reader")
    try:
        _adopt_a_view_with_all_a_view_has(url)
    finally:
        with _connect(url) as conn:
            conn.execute("drop view if exists public.team_agents")
            _drop_owned(conn, sql.Identifier("team_view_reader"))
            conn.execute("drop role team_view_reader")


def _adopt_a_view_with_all_a_view_has(url: str) -> None:
    with _connect(url) as conn:
        conn.execute(
            "create view public.team_agents"
            " with (security_barrier, security_invoker = true, check_option = local) as"
            " select session_id, user_id, agent_id, is_active, duration_seconds"
            " from public.conversation_sessions"
        )
        conn.execute("comment on view public.team_agents is 'the agents'' sessions'")
        conn.execute("comment on column public.team_agents.agent_id is 'who answered'")
        conn.execute("alter view public.team_agents alter column agent_id set default 'support'")
        conn.execute("grant select on public.team_agents to team_view_reader")
        conn.execute("grant update (agent_id) on public.team_agents to team_view_reader")
        conn.execute("create rule team_keep as on delete to public.team_agents do instead nothing")
        conn.execute("comment on rule team_keep on public.team_agents is 'history stays'")
        conn.execute(
            "create function public.team_add_agent() returns trigger language plpgsql"
            " set search_path = public as $$ begin return new; end $$"
        )
        conn.execute(
            "create trigger team_add instead of insert on public.team_agents"
            " for each row execute function public.team_add_agent()"
        )
        conn.execute("comment on trigger team_add on public.team_agents is 'adds one'")

    def catalog() -> list[dict[str, Any]]:
        with _connect(url) as conn:
            return conn.execute(_VIEW_CATALOG).fetchall()

    before = catalog()
    assert "team_agents" in [v["relname"] for v in before]
    apply(url, lock=FAST)
    assert catalog() == before
    finish(url, lock=FAST)
    assert catalog() == before


@ON_ONE_SERVER
def test_a_view_whose_rule_reads_a_view_built_on_it_is_recreated(adoptable: Adoptable) -> None:
    """A view's rule reading a view built on that view (team_live's update rule reads
    team_live_ids, a view of team_live) made the views depend on each other in a cycle,
    and every command that reads the views to recreate (--check included) ended in an
    AssertionError. Postgres creates a view before a rule reads it: the views are
    created again first, in the order their queries need, then their rules."""
    url = adoptable.url
    with _connect(url) as conn:
        conn.execute(
            "create view public.team_live as select session_id, agent_id, is_active,"
            " duration_seconds from public.conversation_sessions"
        )
        conn.execute(
            "create view public.team_live_ids as"
            " select session_id from public.team_live where is_active"
        )
        conn.execute(
            "create rule team_assign as on update to public.team_live do instead"
            " update public.conversation_sessions set agent_id = new.agent_id"
            " where session_id = old.session_id"
            "   and session_id in (select session_id from public.team_live_ids)"
        )
    checked = run_tether("adopt", "--check", "--database-url", url)
    assert checked.returncode == 0, checked.stderr
    assert "Traceback" not in checked.stderr

    def assign(agent: str) -> list[str]:
        with _connect(url) as conn:
            conn.execute("update public.team_live set agent_id = %s", (agent,))
            return [
                r["agent_id"]
                for r in conn.execute(
                    "select distinct agent_id from public.conversation_sessions where is_active"
                ).fetchall()
            ]

    with _connect(url) as conn:
        rule = conn.execute(
            "select pg_get_ruledef(oid) as d from pg_rewrite where rulename = 'team_assign'"
        ).fetchone()
    applied = run_tether("adopt", "--apply", "--yes", "--database-url", url)
    assert applied.returncode == 0, applied.stderr
    assert assign("after apply") == ["after apply"]
    finished = run_tether("adopt", "--finish", "--yes", "--database-url", url)
    assert finished.returncode == 0, finished.stderr
    assert assign("after finish") == ["after finish"]
    with _connect(url) as conn:
        assert (
            conn.execute(
                "select pg_get_ruledef(oid) as d from pg_rewrite where rulename = 'team_assign'"
            ).fetchone()
            == rule
        )


@ON_ONE_SERVER
def test_a_rule_of_another_table_on_the_replaced_columns_is_refused_by_name(
    adoptable: Adoptable,
) -> None:
    """A rule of another table that writes is_active was listed among the views --finish
    recreates ("view public.kick_requests"), and --finish then failed with Postgres's
    words alone: "cannot drop column is_active ... because other objects depend on it"."""
    apply(adoptable.url, lock=FAST)
    with _connect(adoptable.url) as conn:
        conn.execute("create table public.kick_requests (session_id uuid)")
        conn.execute(
            "create rule kick_ends as on insert to public.kick_requests do also"
            " update public.conversation_sessions set is_active = false, session_end = now()"
            " where session_id = new.session_id"
        )
    checked = run_tether("adopt", "--check", "--database-url", adoptable.url)
    assert checked.returncode == 0, checked.stderr
    (views,) = [line for line in checked.stdout.splitlines() if "views reading it:" in line]
    assert "kick_requests" not in views
    assert "rule kick_ends on public.kick_requests uses is_active, session_end" in checked.stdout
    stops = checked.stdout.split("what would stop --finish:")[1].split("\n\n")[0]
    assert "rule kick_ends on public.kick_requests depends on is_active" in stops
    before = _snapshot(adoptable.url)
    refused = run_tether("adopt", "--finish", "--yes", "--database-url", adoptable.url)
    assert refused.returncode == 1
    assert "rule kick_ends on public.kick_requests depends on is_active" in refused.stderr
    assert "2BP01" not in refused.stderr
    assert refused.stdout == ""
    assert _snapshot(adoptable.url) == before
    with _connect(adoptable.url) as conn:
        conn.execute("drop rule kick_ends on public.kick_requests")
    finish(adoptable.url, lock=FAST)
    assert plan_finish(adoptable.url).state == "adopted and finished"


@ON_ONE_SERVER
def test_finish_that_loses_its_connection_says_what_became_of_it(adoptable: Adoptable) -> None:
    """A --finish whose connection was lost mid-way (the database restarted, a proxy
    dropped it) said Postgres's words alone ("terminating connection due to
    administrator command"): not whether the table was changed, nor what to do."""
    apply(adoptable.url, lock=FAST)
    before = _snapshot(adoptable.url)
    with _connect(adoptable.url) as holder, holder.transaction():
        holder.execute("lock table public.conversation_sessions in access share mode")
        running = subprocess.Popen(  # noqa: S603 - our own console script
            [
                *(TETHER, "adopt", "--finish", "--yes", "--lock-timeout", "30s"),
                *("--database-url", adoptable.url),
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        with _connect(adoptable.url) as watcher:

            def waiting() -> bool:
                return bool(
                    watcher.execute(
                        "select pg_terminate_backend(pid) from pg_stat_activity"
                        " where application_name = 'tether adopt' and wait_event_type = 'Lock'"
                    ).fetchall()
                )

            _until(waiting, "--finish never waited for the table")
        out, err = running.communicate(timeout=60)
    assert running.returncode == 1, err
    assert out.strip().splitlines()[-1] == "finish ..."
    assert "terminating connection" in err
    assert "rolled back whole" in err
    assert "run `tether adopt --finish` again" in err
    assert "Traceback" not in err
    assert _snapshot(adoptable.url) == before
    again = run_tether("adopt", "--finish", "--yes", "--database-url", adoptable.url)
    assert again.returncode == 0, again.stderr
    assert plan_finish(adoptable.url).state == "adopted and finished"


@ON_ONE_SERVER
def test_what_reads_a_view_adoption_recreates_is_refused_before_anything_changes(
    adoptable: Adoptable,
) -> None:
    """Another table's row security policy reading a view of duration_seconds, a
    function whose SQL-standard body reads it, and a function taking an array of its
    rows went unsaid by --check: --apply stopped at its duration step on Postgres's
    "cannot drop view ... other objects depend on it", at every run."""
    url = adoptable.url
    with _connect(url) as conn:
        conn.execute(
            "create view public.team_durations as"
            " select session_id, is_active, duration_seconds from public.conversation_sessions"
        )
        conn.execute("create table public.kicks (session_id uuid)")
        conn.execute("alter table public.kicks enable row level security")
        conn.execute(
            "create policy long_only on public.kicks using (exists (select 1 from"
            " public.team_durations d where d.session_id = kicks.session_id))"
        )
        conn.execute(
            "create function public.long_count() returns bigint language sql stable"
            " begin atomic select count(*) from public.team_durations"
            " where duration_seconds > 3600; end"
        )
        conn.execute(
            "create function public.longest(rows public.team_durations[]) returns int"
            " language sql immutable as $$ select 1 $$"
        )
        conn.execute(
            "create policy own_reader on public.conversation_sessions for select"
            " using (exists (select 1 from public.team_durations))"
        )
    # The table's own policy is named as the table's, not another's.
    assert "policy of another table own_reader" not in " ".join(inspect(url).refusals)
    stands = (
        "policy own_reader on public.conversation_sessions is built on view public.team_durations",
        "policy of another table long_only on public.kicks is built on view public.team_durations",
        "function public.long_count() is built on view public.team_durations",
        "function public.longest(rows team_durations[]) uses the row type of view"
        " public.team_durations",
    )
    checked = run_tether("adopt", "--check", "--database-url", url)
    refused = " ".join(checked.stdout.split("refused (what stops --apply):")[1].split())
    for said in stands:
        assert said in refused, said
    before = _snapshot(url)
    applied = run_tether("adopt", "--apply", "--yes", "--database-url", url)
    assert applied.returncode == 1
    assert "other objects depend on it" not in applied.stderr
    assert _snapshot(url) == before


@ON_ONE_SERVER
def test_what_stands_on_a_view_adoption_recreates_is_refused_before_anything_changes(
    adoptable: Adoptable,
) -> None:
    """A materialized view on a view of duration_seconds, or a function returning setof
    such a view, went unsaid by --check; --apply then stopped at its duration step,
    halfway, on Postgres's "cannot drop view team_durations because other objects depend
    on it", and stopped there again each time it was run. --finish refused such a
    materialized view in words with a hole ("depends on : ...")."""
    url = adoptable.url
    with _connect(url) as conn:
        conn.execute(
            "create view public.team_durations as"
            " select session_id, is_active, duration_seconds from public.conversation_sessions"
        )
        conn.execute(
            "create materialized view public.team_long as"
            " select count(*) as n from public.team_durations where duration_seconds > 3600"
        )
        conn.execute(
            "create function public.team_long_sessions() returns setof public.team_durations"
            " language sql stable as $$ select * from public.team_durations $$"
        )
    stands = (
        "materialized view public.team_long is built on view public.team_durations, which"
        " --apply drops and creates again",
        "function public.team_long_sessions() uses the row type of view"
        " public.team_durations, which --apply drops and creates again",
    )
    checked = run_tether("adopt", "--check", "--database-url", url)
    assert checked.returncode == 0, checked.stderr
    refused = " ".join(checked.stdout.split("refused (what stops --apply):")[1].split())
    for said in stands:
        assert said in refused
    before = _snapshot(url)
    applied = run_tether("adopt", "--apply", "--yes", "--database-url", url)
    assert applied.returncode == 1
    for said in stands:
        assert said in " ".join(applied.stderr.split())
    assert "other objects depend on it" not in applied.stderr
    assert _snapshot(url) == before
    with _connect(url) as conn:
        conn.execute("drop materialized view public.team_long")
        conn.execute("drop function public.team_long_sessions()")
    apply(url, lock=FAST)
    with _connect(url) as conn:
        conn.execute(
            "create materialized view public.team_live as"
            " select count(*) as n from public.team_durations where is_active"
        )
    on_finish = (
        "materialized view public.team_live is built on view public.team_durations, which"
        " --finish drops and creates again"
    )
    checked = run_tether("adopt", "--check", "--database-url", url)
    stops = " ".join(checked.stdout.split("what would stop --finish:")[1].split())
    assert on_finish in stops
    refused_finish = run_tether("adopt", "--finish", "--yes", "--database-url", url)
    assert refused_finish.returncode == 1
    assert on_finish in " ".join(refused_finish.stderr.split())
    assert "depends on :" not in refused_finish.stderr


@ON_ONE_SERVER
def test_a_column_holding_the_table_s_rows_is_refused_with_how_to_keep_them(
    adoptable: Adoptable,
) -> None:
    """An audit table keeping whole rows (``row_before conversation_sessions``) went
    unsaid: --apply's conversion of duration_seconds left the rows it held without their
    duration (read as null), and --finish failed on Postgres's "cannot alter table
    conversation_sessions because column session_audit.row_before uses its row type"."""
    url = adoptable.url
    with _connect(url) as conn:
        conn.execute(
            "create table public.session_audit"
            " (id bigint generated always as identity, row_before public.conversation_sessions)"
        )
        conn.execute(
            "insert into public.session_audit (row_before) select s"
            " from public.conversation_sessions s where s.duration_seconds is not null"
        )
    keep = (
        "alter table public.session_audit alter column row_before type jsonb"
        " using to_jsonb(row_before)"
    )
    checked = run_tether("adopt", "--check", "--database-url", url)
    refused = " ".join(checked.stdout.split("refused (what stops --apply):")[1].split())
    assert "column row_before of public.session_audit holds rows" in refused
    assert keep in refused
    before = _snapshot(url)
    applied = run_tether("adopt", "--apply", "--yes", "--database-url", url)
    assert applied.returncode == 1
    assert keep in " ".join(applied.stderr.split())
    assert _snapshot(url) == before
    with _connect(url) as conn:
        conn.execute(keep)
        durations = conn.execute(
            "select count(*) as n from public.session_audit"
            " where row_before->>'duration_seconds' is not null"
        ).fetchone()
    assert durations is not None and durations["n"] > 0
    apply(url, lock=FAST)
    with _connect(url) as conn:
        conn.execute(
            "create table public.session_audit_since (row_before public.conversation_sessions)"
        )
    checked = run_tether("adopt", "--check", "--database-url", url)
    stops = " ".join(checked.stdout.split("what would stop --finish:")[1].split())
    assert "column row_before of public.session_audit_since holds rows" in stops
    refused_finish = run_tether("adopt", "--finish", "--yes", "--database-url", url)
    assert refused_finish.returncode == 1
    assert "public.session_audit_since alter column row_before type jsonb" in " ".join(
        refused_finish.stderr.split()
    )
    assert "finish failed" not in refused_finish.stderr


@ON_ONE_SERVER
def test_a_refusal_no_check_foresaw_is_not_said_to_pass_if_run_again(
    adoptable: Adoptable,
) -> None:
    """A step Postgres refused for a reason --check did not foresee (here, an event
    trigger refusing every change of a table's shape) was told to run again, as a lost
    connection is: it failed the same at every run. It now says to mend what Postgres
    names first, with Postgres's detail; a lost connection is still told to run again."""
    url = adoptable.url
    with _connect(url) as conn:
        conn.execute(
            "create function public.no_ddl() returns event_trigger language plpgsql as"
            " $$ begin raise exception 'schema changes are frozen'"
            " using detail = 'ask the platform team'; end $$"
        )
        conn.execute(
            "create event trigger no_ddl on ddl_command_start when tag in ('ALTER TABLE')"
            " execute function public.no_ddl()"
        )
    try:
        applied = run_tether("adopt", "--apply", "--yes", "--database-url", url)
        said = " ".join(applied.stderr.split())
        assert applied.returncode == 1, said
        assert "failed: schema changes are frozen (ask the platform team)" in said
        assert "mend what Postgres names, then run `tether adopt --apply` again" in said
        with _connect(url) as conn:
            conn.execute("alter event trigger no_ddl disable")
        apply(url, lock=FAST)
        with _connect(url) as conn:
            conn.execute("alter event trigger no_ddl enable")
        finished = run_tether("adopt", "--finish", "--yes", "--database-url", url)
        said = " ".join(finished.stderr.split())
        assert finished.returncode == 1, said
        assert "finish failed: schema changes are frozen (ask the platform team)" in said
        assert "nothing of it was kept" in said
        assert "it finishes the table" not in said
    finally:
        with _connect(url) as conn:
            conn.execute("drop event trigger if exists no_ddl")


@ON_ONE_SERVER
def test_a_policy_of_another_table_on_the_replaced_columns_is_refused_by_name(
    adoptable: Adoptable,
) -> None:
    """A policy of another table reading is_active (using (exists (select ... where
    s.is_active))) was counted as one of the table's policies, which adoption recreates,
    and --finish failed on Postgres's "cannot drop column ... other objects depend on
    it", told to run again. It is now named by --check and refused before anything."""
    url = adoptable.url
    apply(url, lock=FAST)
    with _connect(url) as conn:
        conn.execute("create table public.kick_requests (session_id uuid)")
        conn.execute("alter table public.kick_requests enable row level security")
        conn.execute(
            "create policy live_only on public.kick_requests using (exists (select 1"
            " from public.conversation_sessions s"
            " where s.session_id = kick_requests.session_id and s.is_active))"
        )
    named = "policy of another table live_only on public.kick_requests depends on is_active"
    checked = run_tether("adopt", "--check", "--database-url", url)
    stops = " ".join(checked.stdout.split("what would stop --finish:")[1].split())
    assert named in stops, stops
    finished = run_tether("adopt", "--finish", "--yes", "--database-url", url)
    assert finished.returncode == 1
    assert named in " ".join(finished.stderr.split())
    assert "finish failed" not in finished.stderr
    assert plan_finish(url).state != "adopted and finished"


@ON_ONE_SERVER
def test_rows_of_the_table_kept_inside_a_type_are_refused_too(adoptable: Adoptable) -> None:
    """Rows kept inside a composite type, a view's row type, a domain or an array of
    one went unsaid: --apply converted duration_seconds and the rows they held read
    null durations from then on, silently, and --finish failed on Postgres's "uses its
    row type". A materialized view of whole rows failed --finish the same way."""
    url = adoptable.url
    with _connect(url) as conn:
        conn.execute("create type public.audit_entry as (before public.conversation_sessions)")
        conn.execute("create table public.audit (e public.audit_entry)")
        conn.execute(
            "insert into public.audit (e) select row(s)::public.audit_entry"
            " from public.conversation_sessions s where s.duration_seconds is not null"
        )
        conn.execute("create view public.whole as select s from public.conversation_sessions s")
        conn.execute("create domain public.entries as public.audit_entry[]")
        conn.execute("create table public.keep (w public.whole, many public.entries)")
        conn.execute(
            "create materialized view public.snap as select s from public.conversation_sessions s"
        )
    checked = run_tether("adopt", "--check", "--database-url", url)
    refused = " ".join(checked.stdout.split("refused (what stops --apply):")[1].split())
    for held in (
        "column e of public.audit holds rows of public.conversation_sessions (inside its type)",
        "column w of public.keep holds rows",
        "column many of public.keep holds rows",
        "materialized view column s of public.snap holds rows",
    ):
        assert held in refused, held
    assert "alter table public.audit alter column e type jsonb using to_jsonb(e)" in refused
    before = _snapshot(url)
    applied = run_tether("adopt", "--apply", "--yes", "--database-url", url)
    assert applied.returncode == 1
    assert "column e of public.audit holds rows" in " ".join(applied.stderr.split())
    assert _snapshot(url) == before
    with _connect(url) as conn:
        kept = conn.execute(
            "select count(*) as n from public.audit where ((e).before).duration_seconds is null"
        ).fetchone()
    assert kept is not None and kept["n"] == 0


@ON_ONE_SERVER
def test_rows_of_the_table_kept_inside_a_range_are_refused_too(adoptable: Adoptable) -> None:
    """A range over the table's row type (its rows have an order: Postgres compares
    them column by column) and its multirange hold rows as a composite type does, and
    Postgres follows them before a rewrite as it does the others; adoption did not:
    --apply converted duration_seconds under them, and --finish failed on Postgres's
    "uses its row type"."""
    url = adoptable.url
    with _connect(url) as conn:
        conn.execute(
            "create type public.session_span as range (subtype = public.conversation_sessions)"
        )
        conn.execute(
            "create table public.spans"
            " (span public.session_span, spans public.session_span_multirange)"
        )
        conn.execute(
            "insert into public.spans select public.session_span(s, s, '[]'),"
            " public.session_span_multirange(public.session_span(s, s, '[]'))"
            " from public.conversation_sessions s where s.duration_seconds is not null"
        )
    refused = " ".join(" ".join(inspect(url).refusals).split())
    for held in ("column span of public.spans", "column spans of public.spans"):
        assert f"{held} holds rows of public.conversation_sessions (inside its type)" in refused
    before = _snapshot(url)
    applied = run_tether("adopt", "--apply", "--yes", "--database-url", url)
    assert applied.returncode == 1
    assert "column span of public.spans holds rows" in " ".join(applied.stderr.split())
    assert _snapshot(url) == before


@ON_ONE_SERVER
def test_a_before_trigger_whose_when_reads_new_is_active_is_refused_before_finish(
    adoptable: Adoptable,
) -> None:
    """A BEFORE row trigger WHEN (NEW.is_active IS DISTINCT FROM OLD.is_active) went
    unsaid by --check, and --finish failed on Postgres's "BEFORE trigger's WHEN condition
    cannot reference NEW generated columns", told to run it again, which failed the same.
    One reading OLD.is_active alone is created again as it was."""
    url = adoptable.url
    apply(url, lock=FAST)
    with _connect(url) as conn:
        conn.execute(
            "create function public.team_noop() returns trigger language plpgsql"
            " set search_path = public as $$ begin return new; end $$"
        )
        conn.execute(
            'create trigger "Team Watch" before update on public.conversation_sessions'
            " for each row when (new.is_active is distinct from old.is_active)"
            " execute function public.team_noop()"
        )
        conn.execute(
            "create trigger team_was_active before update on public.conversation_sessions"
            " for each row when (old.is_active) execute function public.team_noop()"
        )
    said = 'trigger "Team Watch" fires BEFORE each row WHEN on NEW.is_active'
    checked = run_tether("adopt", "--check", "--database-url", url)
    stops = " ".join(checked.stdout.split("what would stop --finish:")[1].split())
    assert said in stops
    assert "team_was_active" not in stops
    before = _snapshot(url)
    refused = run_tether("adopt", "--finish", "--yes", "--database-url", url)
    assert refused.returncode == 1
    assert said in " ".join(refused.stderr.split())
    assert "finish failed" not in refused.stderr
    assert _snapshot(url) == before
    with _connect(url) as conn:
        conn.execute('drop trigger "Team Watch" on public.conversation_sessions')
    finish(url, lock=FAST)
    with _connect(url) as conn:
        kept = conn.execute(
            "select count(*) as n from pg_trigger where tgname = 'team_was_active'"
        ).fetchone()
    assert kept == {"n": 1}


@ON_ONE_SERVER
def test_a_publication_s_row_filter_on_is_active_is_refused_in_its_own_words(
    adoptable: Adoptable,
) -> None:
    """A publication publishing the active rows alone (where (is_active)) was refused
    for "a publication's column list names the column": it has no column list."""
    apply(adoptable.url, lock=FAST)
    with _connect(adoptable.url) as conn:
        conn.execute(
            "create publication team_live_rows for table public.conversation_sessions"
            " where (is_active)"
        )
    try:
        refused = run_tether("adopt", "--finish", "--yes", "--database-url", adoptable.url)
        assert refused.returncode == 1
        said = " ".join(refused.stderr.split())
        assert "publication team_live_rows depends on is_active" in said
        assert "column list or row filter (where) names the column" in said
    finally:
        with _connect(adoptable.url) as conn:
            conn.execute("drop publication team_live_rows")


@ON_ONE_SERVER
def test_a_not_valid_check_the_history_breaks_is_refused_before_the_backfill(
    adoptable: Adoptable,
) -> None:
    """A team's NOT VALID check that old rows break (check (duration_seconds < 1000) not
    valid, added once the history was there) went unsaid by --check, and --apply stopped
    in its backfill on "new row ... violates check constraint", told to run again to
    resume, which stopped there again at every run."""
    url = adoptable.url
    with _connect(url) as conn:
        conn.execute(
            "alter table public.conversation_sessions"
            " add constraint team_short check (duration_seconds < 1000) not valid"
        )
        broken = conn.execute(
            "select count(*) as n from public.conversation_sessions"
            " where not coalesce(duration_seconds < 1000, true)"
        ).fetchone()
    assert broken is not None and broken["n"] > 0
    said = "constraint team_short (NOT VALID) is broken by "
    checked = run_tether("adopt", "--check", "--database-url", url)
    refused = " ".join(checked.stdout.split("refused (what stops --apply):")[1].split())
    assert said in refused
    assert "rows of the history as the backfill writes them" in refused
    before = _snapshot(url)
    applied = run_tether("adopt", "--apply", "--yes", "--database-url", url)
    assert applied.returncode == 1
    assert said in " ".join(applied.stderr.split())
    assert "backfill failed" not in applied.stderr
    assert _snapshot(url) == before
    with _connect(url) as conn:
        conn.execute("alter table public.conversation_sessions drop constraint team_short")
    apply(url, lock=FAST)
    _assert_adopted_by_the_rules(url, adoptable.origin)


def test_a_check_the_backfill_s_corrected_rows_break_is_refused_before_it(
    server: Server,
) -> None:
    """A check read on the rows as stored passed (a null duration, or one the writer got
    wrong), but the backfill writes each row's duration from its start and end, and
    Postgres checks the row it writes: --apply stopped in its backfill at every run, a
    validated check as well as one NOT VALID."""
    url = server.database()
    with _connect(url) as conn:
        conn.execute(
            "create table public.conversation_sessions (session_id uuid primary key,"
            " user_id uuid, is_active boolean, session_start timestamptz,"
            " session_end timestamptz, duration_seconds double precision)"
        )
        conn.execute(
            "insert into public.conversation_sessions values"
            " (gen_random_uuid(), null, false, '2026-11-01 10:00+00', '2026-11-01 11:30+00',"
            " null),"
            " (gen_random_uuid(), null, false, '2026-11-01 10:00+00', '2026-11-03 10:00+00',"
            " 10)"
        )
        conn.execute(
            "alter table public.conversation_sessions"
            " add constraint short check (duration_seconds < 1000) not valid"
        )
        conn.execute(
            "alter table public.conversation_sessions"
            " add constraint under_a_day check (duration_seconds < 86400)"
        )
    found = " ".join(" ".join(inspect(url).refusals).split())
    assert "constraint short (NOT VALID) is broken by 2 rows of the history" in found, found
    assert "constraint under_a_day is broken by 1 row of the history" in found, found
    before = _snapshot(url)
    applied = run_tether("adopt", "--apply", "--yes", "--database-url", url)
    assert applied.returncode == 1
    assert "backfill failed" not in applied.stderr
    assert _snapshot(url) == before
    with _connect(url) as conn:
        conn.execute("alter table public.conversation_sessions drop constraint short")
        conn.execute("alter table public.conversation_sessions drop constraint under_a_day")
    apply(url, lock=FAST)


@ON_ONE_SERVER
def test_the_team_s_checks_stay_validated_or_not_valid_as_the_team_left_them(
    adoptable: Adoptable,
) -> None:
    """--apply's conversion of duration_seconds drops the checks on it and adds them
    again NOT VALID, then validated each one: a check the team had left NOT VALID (to
    validate at a quiet hour, or never, on purpose) came back validated. --finish's
    must keep each as it was too, one added after --apply included."""
    url = adoptable.url
    table = "alter table public.conversation_sessions add constraint"
    with _connect(url) as conn:
        conn.execute(f"{table} team_not_negative check (duration_seconds >= 0) not valid")
        conn.execute(f"{table} team_under_a_year check (duration_seconds < 31557600)")

    def validated() -> dict[str, bool]:
        with _connect(url) as conn:
            return {
                r["conname"]: r["convalidated"]
                for r in conn.execute(
                    "select conname, convalidated from pg_constraint"
                    " where conrelid = 'public.conversation_sessions'::regclass"
                    "   and conname like 'team\\_%'"
                ).fetchall()
            }

    apply(url, lock=FAST)
    assert validated() == {"team_not_negative": False, "team_under_a_year": True}
    with _connect(url) as conn:
        conn.execute(f"{table} team_ended_when_inactive check (is_active or duration_seconds >= 0)")
        conn.execute(
            f"{table} team_ends_recorded check (is_active or session_end is not null) not valid"
        )
    finish(url, lock=FAST)
    assert validated() == {
        "team_not_negative": False,
        "team_under_a_year": True,
        "team_ended_when_inactive": True,
        "team_ends_recorded": False,
    }


@ON_ONE_SERVER
def test_what_adoption_recreates_on_the_table_keeps_its_comments(adoptable: Adoptable) -> None:
    """The team's checks, indexes, triggers and policies on the replaced columns are
    dropped and created again (around --apply's conversion of duration_seconds, and
    --finish's columns) from their definitions, which hold no comment: the team's
    comments on them were lost."""
    url = adoptable.url
    table = "public.conversation_sessions"
    with _connect(url) as conn:
        conn.execute(
            f"alter table {table}"
            " add constraint team_positive check (duration_seconds >= 0) not valid"
        )
        conn.execute(f"comment on constraint team_positive on {table} is 'no negative duration'")
    apply(url, lock=FAST)
    with _connect(url) as conn:
        conn.execute(f"create index team_live_users on {table} (user_id) where is_active")
        conn.execute("comment on index public.team_live_users is 'who is online'")
        conn.execute(
            "create function public.team_noop() returns trigger language plpgsql"
            " set search_path = public as $$ begin return new; end $$"
        )
        conn.execute(
            f"create trigger team_ended after update on {table} for each row"
            " when (old.is_active and not new.is_active) execute function public.team_noop()"
        )
        conn.execute(f"comment on trigger team_ended on {table} is 'a session ends'")
        conn.execute(
            f"create policy team_live_only on {table} for select to postgres using (is_active)"
        )
        conn.execute(f"comment on policy team_live_only on {table} is 'live sessions only'")
    finish(url, lock=FAST)
    with _connect(url) as conn:
        comments = conn.execute(
            "select obj_description(k.oid, 'pg_constraint') as check_,"
            " obj_description('public.team_live_users'::regclass, 'pg_class') as index,"
            " (select obj_description(t.oid, 'pg_trigger') from pg_trigger t"
            "  where t.tgname = 'team_ended') as trigger,"
            " (select obj_description(p.oid, 'pg_policy') from pg_policy p"
            "  where p.polname = 'team_live_only') as policy"
            " from pg_constraint k where k.conname = 'team_positive'"
        ).fetchone()
    assert comments == {
        "check_": "no negative duration",
        "index": "who is online",
        "trigger": "a session ends",
        "policy": "live sessions only",
    }


def test_finish_refuses_before_apply(adoptable: Adoptable) -> None:
    result = run_tether("adopt", "--finish", "--yes", "--database-url", adoptable.url)
    assert result.returncode == 1
    assert "run `tether adopt --apply` first" in result.stderr
    assert "Traceback" not in result.stderr


# --- no downtime --------------------------------------------------------------------------


@dataclass
class Traffic:
    """$connect and $disconnect while the adoption runs: the old server's SQL
    throughout, tether's handlers once their functions exist. Every call is timed."""

    url: str
    stop: threading.Event = field(default_factory=threading.Event)
    waits: list[float] = field(default_factory=list)
    tether_calls: int = 0
    failures: list[str] = field(default_factory=list)

    def old_server(self) -> None:
        with psycopg.connect(self.url, autocommit=True) as conn:
            while not self.stop.is_set():
                try:
                    started = time.perf_counter()
                    row = conn.execute(OLD_INSERT, (uuid.uuid4(),)).fetchone()
                    self.waits.append(time.perf_counter() - started)
                    started = time.perf_counter()
                    conn.execute(OLD_END, (row[0] if row else None,))
                    self.waits.append(time.perf_counter() - started)
                except psycopg.Error as exc:
                    self.failures.append(f"old server: {exc}")
                time.sleep(0.005)

    def handlers(self) -> None:
        from functions import connect, disconnect  # noqa: PLC0415

        # The handlers are deployed once every function they call exists.
        called = [
            f"public.{value}"
            for name, value in vars(store_module).items()
            if name.isupper() and isinstance(value, str) and value.startswith("tether_")
        ]
        with psycopg.connect(self.url, autocommit=True) as probe:
            while not self.stop.is_set():
                ready = probe.execute(
                    "select bool_and(to_regproc(f) is not null) from unnest(%s::text[]) f",
                    (called,),
                ).fetchone()
                if ready and ready[0]:
                    break
                time.sleep(0.02)
        while not self.stop.is_set():
            connection_id = f"live{uuid.uuid4().hex[:12]}="
            for handler, event in (
                (connect, ws_event("connect", connection_id)),
                (disconnect, ws_event("disconnect", connection_id)),
            ):
                started = time.perf_counter()
                status = handler.lambda_handler(event, FakeLambdaContext())["statusCode"]
                self.waits.append(time.perf_counter() - started)
                if status != 200:
                    self.failures.append(f"{handler.__name__}: {status}")
            self.tether_calls += 1
            time.sleep(0.005)

    def run(self, work: Callable[[], object]) -> None:
        threads = [
            threading.Thread(target=self.old_server, daemon=True),
            threading.Thread(target=self.handlers, daemon=True),
        ]
        for thread in threads:
            thread.start()
        try:
            time.sleep(0.3)
            work()
            time.sleep(0.5)
        finally:
            self.stop.set()
            for thread in threads:
                thread.join(timeout=30)


def test_connects_and_disconnects_keep_working_while_apply_runs(
    adoptable: Adoptable, adopted_env: dict[str, str], capsys: pytest.CaptureFixture[str]
) -> None:
    fill_history(adoptable.url, 50_000)
    traffic = Traffic(adoptable.url)
    traffic.run(lambda: apply(adoptable.url, batch_size=2_000, lock=FAST))
    capsys.readouterr()
    assert traffic.failures == []
    assert traffic.tether_calls > 0
    assert len(traffic.waits) > 100
    # Every lock that stops writes is waited for at most 0.5 s here (then retried):
    # with the time a write takes on a busy machine, none waits much over that.
    assert max(traffic.waits) < 2.0, sorted(traffic.waits)[-5:]
    with _connect(adoptable.url) as conn:
        wrong = conn.execute(
            "select count(*) as n from conversation_sessions"
            " where connection_id is null or is_active is distinct from (session_end is null)"
            "    or ended_at is distinct from session_end"
            "    or duration_seconds"
            "       is distinct from extract(epoch from session_end - session_start)"
        ).fetchone()
    assert wrong == {"n": 0}


@pytest.mark.usefixtures("adopted_env")
def test_a_busy_table_makes_apply_wait_without_holding_writers_back(
    adoptable: Adoptable, capsys: pytest.CaptureFixture[str]
) -> None:
    """A long transaction holds the table: each try of a locking step gives up after
    the lock timeout, so writers queued behind it go on; the step succeeds later."""
    holder_ready = threading.Event()
    release = threading.Event()
    lines: list[str] = []

    def hold() -> None:
        with psycopg.connect(adoptable.url) as conn:
            conn.execute("select count(*) from conversation_sessions")  # ACCESS SHARE, kept
            holder_ready.set()
            release.wait(10)

    holder = threading.Thread(target=hold, daemon=True)

    def start_holder(name: str) -> None:
        if name == "prepare":
            holder.start()
            holder_ready.wait(10)
            threading.Timer(3.0, release.set).start()

    traffic = Traffic(adoptable.url)
    traffic.run(
        lambda: apply(
            adoptable.url,
            lock=LockPolicy(timeout_seconds=0.3, attempts=60, first_pause_seconds=0.2),
            progress=lines.append,
            checkpoint=start_holder,
        )
    )
    holder.join(10)
    capsys.readouterr()
    assert any("the table is busy" in line and "trying again" in line for line in lines), lines
    assert traffic.failures == []
    assert max(traffic.waits) < 1.5, sorted(traffic.waits)[-5:]
    _assert_adopted_by_the_rules_loosely(adoptable.url)


def test_a_busy_table_in_the_migrations_step_makes_it_wait_not_fail(
    adoptable: Adoptable, capsys: pytest.CaptureFixture[str]
) -> None:
    """A long read holds the table as the migrations step begins: a migration that
    alters the table gives way after the lock timeout and is tried again, as every
    other locking step is; it used to stop the adoption as a failed migration."""
    release = threading.Event()
    holding = threading.Event()
    lines: list[str] = []

    def hold() -> None:
        with psycopg.connect(adoptable.url) as conn:
            conn.execute("select count(*) from conversation_sessions")  # ACCESS SHARE, kept
            holding.set()
            release.wait(20)

    def start_holder(name: str) -> None:
        if name == "security":  # the step before the migrations
            threading.Thread(target=hold, daemon=True).start()
            assert holding.wait(10)
            # However the test goes, the table is let go in the end.
            threading.Timer(20.0, release.set).start()

    def progress(line: str) -> None:
        lines.append(line)
        if "migration " in line and "the table is busy" in line:
            release.set()  # it gave way: the long read ends, and it must go on

    result = apply(
        adoptable.url,
        lock=LockPolicy(timeout_seconds=0.3, attempts=60, first_pause_seconds=0.2),
        progress=progress,
        checkpoint=start_holder,
    )
    capsys.readouterr()
    assert release.is_set()
    assert any(
        "migration " in line and "the table is busy" in line and "trying again" in line
        for line in lines
    ), lines
    assert "migrations" in result.ran
    _assert_adopted_by_the_rules_loosely(adoptable.url)


def _assert_adopted_by_the_rules_loosely(url: str) -> None:
    with _connect(url) as conn:
        state = conn.execute(
            "select count(*) filter (where connection_id is null) as unread,"
            " bool_and(is_active = (session_end is null)) as in_step"
            " from conversation_sessions"
        ).fetchone()
    assert state == {"unread": 0, "in_step": True}
    assert migrate.status(url).pending == []


def test_another_apply_at_once_is_refused(adoptable: Adoptable) -> None:
    started = threading.Event()
    release = threading.Event()

    def slow(name: str) -> None:
        if name == "ledger":
            started.set()
            release.wait(10)

    first = threading.Thread(
        target=lambda: apply(adoptable.url, lock=FAST, checkpoint=slow), daemon=True
    )
    first.start()
    started.wait(10)
    try:
        with pytest.raises(AdoptionError, match="another tether adopt is running"):
            apply(adoptable.url, lock=FAST)
    finally:
        release.set()
        first.join(30)
    _assert_adopted_by_the_rules(adoptable.url, adoptable.origin)


def _running(conn: psycopg.Connection[dict[str, Any]], query: str, *, active: bool = False) -> int:
    """Backends whose last statement is ``query`` (and, with ``active``, still running it)."""
    row = conn.execute(
        "select count(*) as n from pg_stat_activity"
        " where query = %s and (not %s or state = 'active')",
        (query, active),
    ).fetchone()
    return int(row["n"]) if row else 0


def _until(holds: Callable[[], bool], failure: str, seconds: float = 10.0) -> None:
    deadline = time.monotonic() + seconds
    while not holds():
        assert time.monotonic() < deadline, failure
        time.sleep(0.05)


@ON_ONE_SERVER
def test_a_ctrl_c_between_a_statement_and_its_answer_still_frees_the_adoption(
    adoptable: Adoptable,
) -> None:
    """What `--apply` does last, with the interruption under way: the statement left
    unanswered is cancelled and the lock freed, and no error takes the Ctrl-C's place
    (it used to: "another command is already in progress", exit 1)."""
    conn = catalog.connect(adoptable.url)
    assert conn.execute("select pg_try_advisory_lock(%s)", (ADOPT_LOCK_KEY,)).fetchone() == (True,)
    conn.pgconn.send_query(b"select pg_sleep(60)")
    _release_adopt_lock(conn)
    assert conn.closed
    with _connect(adoptable.url) as other:
        _until(
            lambda: _running(other, "select pg_sleep(60)") == 0,
            "the unanswered statement still runs",
        )
    assert apply(adoptable.url, lock=FAST).ran  # no adoption is left holding the lock


@ON_ONE_SERVER
def test_a_statement_whose_cancel_was_lost_stops_once_its_connection_is_closed(
    adoptable: Adoptable,
) -> None:
    """A Ctrl-C's cancel that reaches the server before its statement has started is
    lost: closing the connection must still stop the statement, or it runs on with
    the adoption's lock held (a minute here; a batch of the backfill in life)."""
    conn = catalog.connect(adoptable.url)
    assert conn.execute("select pg_try_advisory_lock(%s)", (ADOPT_LOCK_KEY,)).fetchone() == (True,)
    conn.pgconn.send_query(b"select pg_sleep(61)")
    with _connect(adoptable.url) as other:
        sleeping = "select pg_sleep(61)"
        _until(lambda: _running(other, sleeping, active=True) == 1, "the statement never started")
        conn.close()  # no cancel: as if it had been lost
        _until(lambda: _running(other, sleeping) == 0, "the statement runs on without its client")
    assert apply(adoptable.url, lock=FAST).ran  # no adoption is left holding the lock


def test_adopt_needs_a_database_url(tmp_path: Path) -> None:
    result = run_tether("adopt", "--check", cwd=tmp_path)
    assert result.returncode == 1
    assert "no database URL" in result.stderr


def _column_privileges(url: str, role: str) -> list[tuple[str, str, bool]]:
    with _connect(url) as conn:
        return [
            (r["attname"], r["privilege_type"], r["is_grantable"])
            for r in conn.execute(
                "select a.attname, x.privilege_type, x.is_grantable from pg_attribute a"
                " cross join lateral aclexplode(a.attacl) x"
                " where a.attrelid = 'public.conversation_sessions'::regclass"
                "   and pg_get_userbyid(x.grantee) = %s order by 1, 2",
                (role,),
            ).fetchall()
        ]


@ON_ONE_SERVER
def test_privileges_on_the_replaced_columns_are_granted_again(adoptable: Adoptable) -> None:
    # --apply replaces duration_seconds, --finish is_active and ended_at: a privilege
    # granted on such a column went with it, and the role lost its reads unannounced.
    url = adoptable.url
    reporting = f"Reporting {uuid.uuid4().hex[:8]}"  # a name that must be quoted
    role = sql.Identifier(reporting)
    with _connect(url) as conn:
        conn.execute(sql.SQL("create role {}").format(role))
        conn.execute(
            sql.SQL(
                "grant select (session_id, is_active, duration_seconds, ended_at)"
                " on public.conversation_sessions to {}"
            ).format(role)
        )
        conn.execute(
            sql.SQL(
                "grant update (is_active) on public.conversation_sessions to {} with grant option"
            ).format(role)
        )
        # The recreated view's grants (its columns' too) and policy name the same role.
        conn.execute(sql.SQL("grant select on public.team_session_stats to {}").format(role))
        conn.execute(sql.SQL("grant update (date) on public.team_session_stats to {}").format(role))
        conn.execute(
            sql.SQL(
                "create policy reporting_reads on public.conversation_sessions"
                " for select to {} using (is_active or duration_seconds > 0)"
            ).format(role)
        )
    granted = [
        ("duration_seconds", "SELECT", False),
        ("ended_at", "SELECT", False),
        ("is_active", "SELECT", False),
        ("is_active", "UPDATE", True),
        ("session_id", "SELECT", False),
    ]
    assert _column_privileges(url, reporting) == granted
    try:
        checked = run_tether("adopt", "--check", "--database-url", url)
        assert checked.returncode == 0, checked.stderr
        assert f"column privilege select to {reporting} uses is_active" in checked.stdout
        assert f"column privilege update to {reporting} with grant option" in checked.stdout

        apply(url, lock=FAST)
        assert _column_privileges(url, reporting) == granted
        planned = plan_finish(url)
        assert {"kind": "column privilege", "name": f"select to {reporting}",
                "columns": ["ended_at"]} in planned.recreated  # fmt: skip
        finish(url, lock=FAST)
        assert _column_privileges(url, reporting) == granted
        with _connect(url) as conn:
            conn.execute(sql.SQL("set role {}").format(role))
            conn.execute(
                "select count(is_active), sum(duration_seconds), max(ended_at)"
                " from public.conversation_sessions"
            )
            conn.execute("select * from public.team_session_stats limit 1")
            conn.execute("reset role")
            assert conn.execute(
                "select pg_get_userbyid(r) as role from pg_policy p, unnest(p.polroles) r"
                " where p.polname = 'reporting_reads'"
            ).fetchone() == {"role": reporting}
            assert conn.execute(
                "select has_column_privilege(%s, 'public.team_session_stats', 'date', 'update')"
                " as granted",
                (reporting,),
            ).fetchone() == {"granted": True}
    finally:
        with _connect(url) as conn:
            _drop_owned(conn, role)
            conn.execute(sql.SQL("drop role {}").format(role))


@ON_ONE_SERVER
def test_finish_names_each_column_privilege_it_grants_again_apart(adoptable: Adoptable) -> None:
    """A role granted select on is_active and on ended_at was listed twice alike among
    what --finish recreates: "column privilege select to reporting, column privilege
    select to reporting"."""
    apply(adoptable.url, lock=FAST)
    with _connect(adoptable.url) as conn:
        conn.execute("grant select (is_active, ended_at) on public.conversation_sessions to public")
    done = run_tether("adopt", "--finish", "--yes", "--database-url", adoptable.url)
    assert done.returncode == 0, done.stderr
    (listed,) = [line for line in done.stdout.splitlines() if "created again" in line]
    names = listed.split(": ", 1)[1].split(", ")
    assert "column privilege select to public on ended_at" in names
    assert "column privilege select to public on is_active" in names
    assert len(names) == len(set(names)), names


@ON_ONE_SERVER
def test_moments_no_client_can_read_are_no_moments(server: Server) -> None:
    # Postgres takes -infinity and dates back to 4713 BC; Python (and tether's commands)
    # cannot read them. History holding them, or an old writer sending one mid-transition,
    # left rows that made `tether sessions`, `stats` and `close-orphans` fail.
    url = server.database()
    build_origin(url)

    def without_start() -> int:
        return sum(k.rows for k in inspect(url).kinds if k.kind == "no_start")

    def inserted(conn: Conn, columns: str, values: str) -> Any:
        row = conn.execute(
            f"insert into conversation_sessions (user_id, {columns})"
            f" values (%s, {values}) returning session_id",
            (uuid.uuid4(),),
        ).fetchone()
        assert row is not None
        return row["session_id"]

    before = without_start()
    with _connect(url) as conn:
        ancient = inserted(
            conn,
            "is_active, session_start, session_end, ended_at, duration_seconds",
            "false, '4713-01-01 BC', '4713-01-02 BC', '4713-01-02 BC', 86400",
        )
        endless = inserted(conn, "is_active, session_start", "true, '-infinity'")
    assert without_start() == before + 2

    apply(url, lock=FAST)
    with _connect(url) as conn:
        written = inserted(conn, "is_active, session_start", "true, '-infinity'")
        opened = conn.execute(
            "select is_active, now() - session_start < interval '1 minute' as recent"
            " from conversation_sessions where session_id = %s",
            (written,),
        ).fetchone()
        assert opened == {"is_active": True, "recent": True}
        kept = conn.execute(
            "select kinds, original from tether.adoption_corrections where session_id = %s",
            (written,),
        ).fetchone()
        assert kept == {"kinds": ["no_start"], "original": {"session_start": "-infinity"}}
        # An update writing such a start, or one after now, keeps the start known: now
        # would fall after the session's end, which its check refuses.
        conn.execute(OLD_END, (written,))
        ended = conn.execute(
            "select session_start, session_end from conversation_sessions where session_id = %s",
            (written,),
        ).fetchone()
        for start in ("-infinity", "infinity", "4713-01-01 BC"):
            conn.execute(
                "update conversation_sessions set session_start = %s where session_id = %s",
                (start, written),
            )
        conn.execute(
            "update conversation_sessions set session_start = now() + interval '3 hours'"
            " where session_id = %s",
            (written,),
        )
        # No start at all, and one after the end kept (but not after now): the same.
        conn.execute(
            "update conversation_sessions set session_start = null where session_id = %s",
            (written,),
        )
        conn.execute(
            "update conversation_sessions set session_start = now() where session_id = %s",
            (written,),
        )
        # An upsert's insert runs first, and its row is what the update writes.
        conn.execute(
            "insert into conversation_sessions (session_id, user_id, is_active, session_start)"
            " values (%s, %s, true, now() + interval '3 hours')"
            " on conflict (session_id) do update set session_start = excluded.session_start,"
            " is_active = excluded.is_active",
            (written, uuid.uuid4()),
        )
        assert (
            conn.execute(
                "select session_start, session_end from conversation_sessions"
                " where session_id = %s",
                (written,),
            ).fetchone()
            == ended
        )
        # An insert with no readable start but an end starts at that end, as the backfill
        # reads such a row: the first readable one.
        row = conn.execute(
            "insert into conversation_sessions"
            " (user_id, is_active, session_start, session_end, ended_at)"
            " values (%s, false, null, 'infinity', now() - interval '2 hours')"
            " returning session_start, session_end, now() - interval '2 hours' as given",
            (uuid.uuid4(),),
        ).fetchone()
        assert row is not None
        assert row["session_start"] == row["session_end"] == row["given"]
        row = conn.execute(
            "insert into conversation_sessions (user_id, is_active, session_start, session_end)"
            " values (%s, false, '-infinity', now() - interval '1 hour')"
            " returning session_start, session_end, now() - interval '1 hour' as given",
            (uuid.uuid4(),),
        ).fetchone()
        assert row is not None
        assert row["session_start"] == row["session_end"] == row["given"]
    rows = _rows(url)  # every row readable
    for sid in (ancient, endless):
        assert (rows[sid]["is_active"], rows[sid]["end_reason"]) == (False, "end_unknown")
    for command in (
        ("sessions", "--ended"),
        ("sessions", "--active"),
        ("stats",),
        ("close-orphans", "--older-than", "2h"),
    ):
        result = run_tether(*command, "--database-url", url)
        assert result.returncode == 0, (command, result.stderr)
        assert "Traceback" not in result.stderr


@ON_ONE_SERVER
def test_a_start_on_the_first_day_of_year_1_is_no_start_and_check_says_why(
    server: Server,
) -> None:
    """West of UTC the first hours of year 1 are year 1 BC, which few clients can read,
    and tether's table holds no start before 0001-01-02 00:00 UTC (its readable-start
    check): Go's and .NET's zero time, 0001-01-01 00:00 UTC, is such a start. Adoption
    reads one as no start, as it reads an infinite one, and keeps the original; but
    --check's rule said "one before year 1", which a start in year 1 is not: a team could
    not tell why its rows were counted there."""
    url = server.database()
    build_origin(url)
    with _connect(url) as conn:
        zero, first_readable = (
            conn.execute(
                "insert into conversation_sessions"
                " (user_id, is_active, session_start, session_end, ended_at)"
                " values (%s, false, %s, now() - interval '1 hour', now() - interval '1 hour')"
                " returning session_id",
                (uuid.uuid4(), start),
            ).fetchone()["session_id"]  # type: ignore[index]
            for start in ("0001-01-01 00:00:00+00", "0001-01-02 00:00:00+00")
        )
    (no_start,) = (k for k in inspect(url).kinds if k.kind == "no_start")
    assert "before 0001-01-02 00:00 UTC" in no_start.rule
    assert "zero time" in no_start.rule
    checked = run_tether("adopt", "--check", "--database-url", url)
    assert "before 0001-01-02 00:00 UTC" in " ".join(checked.stdout.split())
    apply(url, lock=FAST)
    with _connect(url) as conn:
        rows = {
            r["session_id"]: r
            for r in conn.execute(
                "select s.session_id, s.session_start = s.session_end as at_its_end,"
                " s.session_start::text as start, c.original ->> 'session_start' as original"
                " from conversation_sessions s"
                " left join tether.adoption_corrections c using (session_id)"
                " where s.session_id in (%s, %s)",
                (zero, first_readable),
            ).fetchall()
        }
    assert rows[zero]["at_its_end"] and rows[zero]["original"] == "0001-01-01T00:00:00+00:00"
    assert rows[first_readable]["start"] == "0001-01-02 00:00:00+00"


@ON_ONE_SERVER
def test_check_says_which_of_the_team_s_comments_tether_replaces(adoptable: Adoptable) -> None:
    url = adoptable.url
    with _connect(url) as conn:
        conn.execute("comment on table public.conversation_sessions is 'Our sessions.'")
        conn.execute("comment on column public.conversation_sessions.is_active is 'Live?'")
        conn.execute("comment on column public.conversation_sessions.agent_id is 'Kept.'")
    checked = run_tether("adopt", "--check", "--database-url", url)
    assert checked.returncode == 0, checked.stderr
    assert "the comments on the table, is_active are replaced by tether's" in checked.stdout
    assert "agent_id" not in checked.stdout.split("the comments on", 1)[1].split("\n", 1)[0]
    apply(url, lock=FAST)
    with _connect(url) as conn:
        kept = conn.execute(
            "select obj_description('public.conversation_sessions'::regclass, 'pg_class') as t,"
            " col_description('public.conversation_sessions'::regclass,"
            "   (select attnum from pg_attribute where attname = 'agent_id'"
            "    and attrelid = 'public.conversation_sessions'::regclass)) as a"
        ).fetchone()
    assert kept == {"t": "One row per WebSocket connection. Written only through the tether_*"
                    " functions.", "a": "Kept."}  # fmt: skip
    # Adopted, the comments are tether's: nothing more to say.
    again = run_tether("adopt", "--check", "--database-url", url)
    assert "the comments on" not in again.stdout


@ON_ONE_SERVER
def test_a_session_end_without_time_zone_is_refused_with_the_statement_that_converts_it(
    server: Server,
) -> None:
    """The old server wrote datetime.utcnow() into it: --check said only "convert it
    first", where for session_start it gave the statement."""
    url = server.database()
    with _connect(url) as conn:
        conn.execute(
            "create table public.conversation_sessions (session_id uuid primary key,"
            " user_id uuid, is_active boolean, session_start timestamptz,"
            " session_end timestamp, duration_seconds double precision)"
        )
        conn.execute(
            "insert into public.conversation_sessions values"
            " (gen_random_uuid(), gen_random_uuid(), false, '2026-11-01 10:00+00',"
            " '2026-11-01 10:05', 300)"
        )
    (refusal,) = [r for r in inspect(url).refusals if "session_end" in r]
    statement = refusal.split("e.g. ", 1)[1].split(" (", 1)[0]
    with _connect(url) as conn:
        conn.execute(statement)
    assert inspect(url).refusals == []
    with _connect(url) as conn:
        row = conn.execute("select session_end from public.conversation_sessions").fetchone()
    assert row is not None and row["session_end"] == datetime(2026, 11, 1, 10, 5, tzinfo=UTC)


def test_an_ended_at_without_time_zone_is_refused_with_the_statement_that_converts_it(
    server: Server,
) -> None:
    """The old server's shutdown wrote datetime.utcnow() into an ended_at without time
    zone: --check listed it among the application's columns kept as they are, and --apply
    read none of its ends, so a row ended by ended_at alone was recorded as ended at its
    start (end_unknown, 0 seconds). It is refused as session_end is, with the statement
    that converts it; converted, that row ends at its ended_at."""
    url = server.database()
    with _connect(url) as conn:
        conn.execute(
            "create table public.conversation_sessions (session_id uuid primary key,"
            " user_id uuid, is_active boolean, session_start timestamptz,"
            " session_end timestamptz, ended_at timestamp, duration_seconds double precision)"
        )
        conn.execute(
            "insert into public.conversation_sessions values"
            " (gen_random_uuid(), gen_random_uuid(), false, '2026-11-01 10:00+00', null,"
            " '2026-11-01 10:05', null)"
        )
    (refusal,) = [r for r in inspect(url).refusals if "ended_at" in r]
    assert "ended_at is timestamp without time zone" in refusal, refusal
    statement = refusal.split("e.g. ", 1)[1].split(" (", 1)[0]
    with _connect(url) as conn:
        conn.execute(statement)
    assert inspect(url).refusals == []
    apply(url, lock=FAST)
    with _connect(url) as conn:
        row = conn.execute(
            "select session_end, ended_at, end_reason from public.conversation_sessions"
        ).fetchone()
    ended = datetime(2026, 11, 1, 10, 5, tzinfo=UTC)
    assert row == {"session_end": ended, "ended_at": ended, "end_reason": "unrecorded"}


def test_a_conversion_names_what_postgres_refuses_it_under(server: Server) -> None:
    """--check's statement converting a session_start without time zone failed as given
    on a table with the team's dashboard view ("cannot alter type of a column used by a
    view or rule"), and a user_id of text was refused with "convert it first" alone.
    Each refusal now gives its statement and names the views and policies built on the
    column; dropped, converted and created again, the table is adopted."""
    url = server.database()
    view = (
        "create view public.daily as select date(session_start) as d, count(*) as n,"
        " count(distinct user_id) as users from public.conversation_sessions group by 1"
    )
    policy = (
        'create policy "Own" on public.conversation_sessions for select'
        " using (user_id = current_setting('app.user', true))"
    )
    with _connect(url) as conn:
        conn.execute(
            "create table public.conversation_sessions (session_id uuid primary key,"
            " user_id varchar(64), is_active boolean, session_start timestamp,"
            " session_end timestamptz, duration_seconds double precision)"
        )
        conn.execute(
            "insert into public.conversation_sessions values (gen_random_uuid(),"
            " gen_random_uuid()::text, false, '2026-11-01 10:00', '2026-11-01 10:05+00', 300)"
        )
        conn.execute(view)
        conn.execute(policy)
    found = {r.split(" is ", 1)[0]: r for r in inspect(url).refusals}
    assert set(found) == {"session_start", "user_id"}, found
    assert "view public.daily" in found["session_start"], found
    assert "policy" not in found["session_start"], found
    assert "view public.daily" in found["user_id"] and 'policy "Own"' in found["user_id"], found
    with _connect(url) as conn:
        conn.execute("drop view public.daily")
        # As named, the mixed-case name quoted.
        conn.execute('drop policy "Own" on public.conversation_sessions')
        for refusal in found.values():
            conn.execute(refusal.split("e.g. ", 1)[1].split(" (", 1)[0])
        conn.execute(view)
        conn.execute(policy.replace("current_setting('app.user', true)", "gen_random_uuid()"))
    assert inspect(url).refusals == []
    apply(url, lock=FAST)
    with _connect(url) as conn:
        row = conn.execute("select n, users from public.daily").fetchone()
    assert row == {"n": 1, "users": 1}


def test_a_conversion_names_another_table_s_rule_and_policy_on_the_column(
    server: Server,
) -> None:
    """A rule or a policy of another table naming session_start pins its type as a view
    does ("cannot alter type of a column used by a view or rule"), but the statement
    converting it named neither: following it failed."""
    url = server.database()
    with _connect(url) as conn:
        conn.execute(
            "create table public.conversation_sessions (session_id uuid primary key,"
            " user_id uuid, is_active boolean, session_start timestamp,"
            " session_end timestamptz, duration_seconds double precision)"
        )
        conn.execute("create table public.kicks (session_id uuid, at timestamp)")
        conn.execute(
            "create rule stamp as on insert to public.kicks do also update"
            " public.conversation_sessions set session_start = new.at"
            " where session_id = new.session_id"
        )
        conn.execute("alter table public.kicks enable row level security")
        conn.execute(
            "create policy recent on public.kicks using (exists (select 1 from"
            " public.conversation_sessions s where s.session_start > now() - interval '1 day'))"
        )
    (refusal,) = [r for r in inspect(url).refusals if r.startswith("session_start is")]
    assert "rule stamp on public.kicks" in refusal, refusal
    assert "policy of another table recent on public.kicks" in refusal, refusal
    with _connect(url) as conn:
        conn.execute("drop rule stamp on public.kicks")
        conn.execute("drop policy recent on public.kicks")
        conn.execute(refusal.split("e.g. ", 1)[1].split(" (", 1)[0])
    assert [r for r in inspect(url).refusals if r.startswith("session_start is")] == []


def test_a_conversion_names_an_index_on_an_expression_of_the_column(server: Server) -> None:
    """A team with an index on date(session_start) for its daily statistics, its
    session_start without time zone: --check's statement converting it failed as given
    ("functions in index expression must be marked IMMUTABLE": date() of a timestamptz
    depends on the time zone). The refusal names the index with the others, and how to
    write its expression for timestamptz; a plain index on the column is rebuilt by the
    conversion and not named. So done, the table is adopted."""
    url = server.database()
    with _connect(url) as conn:
        conn.execute(
            "create table public.conversation_sessions (session_id uuid primary key,"
            " user_id uuid, is_active boolean, session_start timestamp,"
            " session_end timestamptz, duration_seconds double precision)"
        )
        conn.execute(
            "insert into public.conversation_sessions values (gen_random_uuid(),"
            " gen_random_uuid(), false, '2026-11-01 10:00', '2026-11-01 10:05+00', 300)"
        )
        conn.execute("create index by_day on public.conversation_sessions (date(session_start))")
        conn.execute("create index by_start on public.conversation_sessions (session_start)")
    (refusal,) = inspect(url).refusals
    assert "index public.by_day" in refusal, refusal
    assert "by_start" not in refusal, refusal
    assert "date(session_start at time zone 'UTC') where it read date(session_start)" in refusal
    with _connect(url) as conn:
        conn.execute("drop index public.by_day")
        conn.execute(refusal.split("e.g. ", 1)[1].split(" (", 1)[0])
        conn.execute(
            "create index by_day on public.conversation_sessions"
            " (date(session_start at time zone 'UTC'))"
        )
    assert inspect(url).refusals == []
    apply(url, lock=FAST)


def test_a_team_s_generated_is_active_is_refused_with_the_statement_that_keeps_it(
    server: Server,
) -> None:
    """A team that had already made is_active and duration_seconds generated from
    session_end was refused with "already a generated column: not the old writers'
    shape", and nothing to do about it. Each refusal now gives the alter table that makes
    it a plain column, values kept; so done, the table is adopted and finished."""
    url = server.database()
    with _connect(url) as conn:
        conn.execute(
            "create table public.conversation_sessions (session_id uuid primary key"
            " default gen_random_uuid(), user_id uuid, session_start timestamptz default now(),"
            " session_end timestamptz,"
            " is_active boolean generated always as (session_end is null) stored,"
            " duration_seconds double precision generated always as"
            " (extract(epoch from (session_end - session_start))) stored)"
        )
        conn.execute(
            "insert into public.conversation_sessions (session_start, session_end) values"
            " ('2026-11-01 10:00+00', '2026-11-01 10:05+00'), (now(), null)"
        )
    refusals = inspect(url).refusals
    assert len(refusals) == 2, refusals
    with _connect(url) as conn:
        for refusal in refusals:
            conn.execute(refusal.split(" with ", 1)[1])
    assert inspect(url).refusals == []
    apply(url, lock=FAST)
    finish(url, lock=FAST)
    with _connect(url) as conn:
        rows = conn.execute(
            "select is_active, duration_seconds from public.conversation_sessions"
            " order by session_start"
        ).fetchall()
    assert rows == [
        {"is_active": False, "duration_seconds": Decimal(300)},
        {"is_active": True, "duration_seconds": None},
    ]


FORCED = "public.conversation_sessions forces row level security on its owner"


def _forcing_row_level_security(url: str, *policies: str) -> None:
    """The origin's table, a session in it, forcing row level security on its owner
    (the role connected: no superuser, no BYPASSRLS) with these policies of its own."""
    with _connect(url) as conn:
        conn.execute(ORIGIN_TABLE)
        conn.execute(
            "insert into public.conversation_sessions (user_id, is_active)"
            " values (gen_random_uuid(), true)"
        )
        conn.execute("alter table public.conversation_sessions enable row level security")
        conn.execute("alter table public.conversation_sessions force row level security")
        for policy in policies:
            conn.execute(policy)


def test_a_table_forcing_row_level_security_on_its_owner_is_refused_with_the_statement(
    plain_owner_url: str,
) -> None:
    """tether's functions run with the adopting role's rights: on a table that forces
    row level security on that role, with no policy letting it write, every session they
    opened would be refused by the table's policies. A policy for reads alone is not
    enough: the functions insert and update there too."""
    url = plain_owner_url
    _forcing_row_level_security(
        url,
        "create policy team_reads on public.conversation_sessions for select to public"
        " using (true)",
    )
    (refusal,) = [r for r in inspect(url).refusals if "row level security" in r]
    assert refusal.startswith(
        f"{FORCED}, whose rights tether's functions run with, and no permissive policy of"
        " its own lets that role in for each command they run there"
    )
    assert refusal.endswith(
        "Stop forcing it first: alter table public.conversation_sessions no force row level"
        " security"
    )
    checked = run_tether("adopt", "--check", "--database-url", url)
    assert f"  - {refusal}" in checked.stdout.splitlines(), checked.stdout
    _apply_is_refused_and_changes_nothing(url, "cannot be adopted as it is")
    with _connect(url) as conn:
        conn.execute(refusal.split("Stop forcing it first: ", 1)[1])
    assert inspect(url).refusals == []


def test_a_table_forcing_row_level_security_whose_policies_let_its_owner_in_is_adopted(
    plain_owner_url: str,
) -> None:
    """A team that forces row level security and gives its owner, the adopting role,
    permissive policies for each command tether's functions run there: `tether migrate`
    and /health accept it, but --check refused it as if it had none, so it could not be
    adopted."""
    url = plain_owner_url
    _forcing_row_level_security(
        url,
        *(
            f"create policy team_owner_{command} on public.conversation_sessions"
            f" for {command} to current_user {clause}"
            for command, clause in (
                ("select", "using (true)"),
                ("insert", "with check (true)"),
                ("update", "using (true) with check (true)"),
            )
        ),
    )
    checked = run_tether("adopt", "--check", "--database-url", url)
    assert checked.returncode == 0, checked.stderr
    assert "forces row level security" not in checked.stdout, checked.stdout
    assert "next: tether adopt --apply" in checked.stdout
    applied = run_tether("adopt", "--apply", "--yes", "--database-url", url)
    assert applied.returncode == 0, applied.stderr
    # tether's functions, as the role that adopted: the table's policies let them in.
    with _connect(url) as conn:
        opened = conn.execute(
            "select session_id from public.tether_open_session_v1('forced-rls=')"
        ).fetchone()
        assert opened is not None
        ended = conn.execute(
            "select * from public.tether_end_session_v3('forced-rls=', 'client_disconnect')"
        ).fetchone()
        assert ended is not None
        row = conn.execute(
            "select is_active, session_end is not null as ended"
            " from public.conversation_sessions where session_id = %s",
            (opened["session_id"],),
        ).fetchone()
    assert row == {"is_active": False, "ended": True}
    # And migrate judges it as --check did: no problem.
    migrated = run_tether("migrate", "--database-url", url)
    assert (migrated.returncode, migrated.stderr) == (0, ""), migrated.stderr


def test_a_table_forcing_row_level_security_for_a_role_its_owner_does_not_inherit_is_refused(
    plain_owner_url: str, noinherit_policy_role: str
) -> None:
    """The table's policies are all for a role the adopting role is a member of without
    inheriting its privileges (NOINHERIT): Postgres applies none of them to it, so every
    session tether's functions opened would be refused, yet --check said it could be
    adopted."""
    url = plain_owner_url
    _forcing_row_level_security(
        url,
        "create policy team_role on public.conversation_sessions"
        f' for all to "{noinherit_policy_role}" using (true) with check (true)',
    )
    (refusal,) = [r for r in inspect(url).refusals if "row level security" in r]
    assert refusal.startswith(FORCED)
    checked = run_tether("adopt", "--check", "--database-url", url)
    assert f"  - {refusal}" in checked.stdout.splitlines(), checked.stdout
    _apply_is_refused_and_changes_nothing(url, "cannot be adopted as it is")
