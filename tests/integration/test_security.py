"""The boundary for everyone who does not belong, taken from the catalog: every table,
view, sequence and function tether's migrations create, as Supabase's public roles
(`anon`, `authenticated`) reach them through the public API. Nothing is listed by
hand, so an object added later is covered the day it is created. The catalog is read
twice: as plain Postgres builds it, and as Supabase does, whose default privileges
give anon and authenticated everything created in public.

(The token attacks on `$connect` are in test_connect.py, those on the operators' API
in test_admin_api.py, the template's IAM in test_infra.py, the local gateway's limits
in tests/e2e/test_gateway_abuse.py; the operators' API is fuzzed in
test_admin_schemathesis.py; a whole run's output is searched for secrets by
`tether chaos`.)"""

from __future__ import annotations

import contextlib
import json
import uuid
from collections.abc import Iterator

import psycopg
import pytest
from psycopg import errors, sql
from psycopg.rows import dict_row

from tests.conftest import SessionFactory
from tests.support import functions_reading_temporary_types
from tether import migrate

Conn = psycopg.Connection[dict[str, object]]
PUBLIC_ROLES = ["anon", "authenticated"]
OURS = ("public", "tether")


def _as(conn: Conn, role: str, user: uuid.UUID | None) -> None:
    conn.execute(sql.SQL("set role {}").format(sql.Identifier(role)))
    claims = {"role": role} | ({"sub": str(user)} if user else {})
    conn.execute("select set_config('request.jwt.claims', %s, false)", (json.dumps(claims),))


def _relations(db: Conn) -> list[tuple[str, str, str]]:
    rows = db.execute(
        "select n.nspname, c.relname, c.relkind::text from pg_class c"
        " join pg_namespace n on n.oid = c.relnamespace"
        " where n.nspname = any(%s) and c.relkind in ('r', 'v', 'm', 'S', 'p')"
        " order by 1, 2",
        (list(OURS),),
    ).fetchall()
    return [(str(r["nspname"]), str(r["relname"]), str(r["relkind"])) for r in rows]


def _functions(db: Conn) -> list[str]:
    rows = db.execute(
        "select p.oid::regprocedure::text as signature from pg_proc p"
        " join pg_namespace n on n.oid = p.pronamespace"
        " where n.nspname = any(%s) and p.prokind = 'f'",
        (list(OURS),),
    ).fetchall()
    return [str(r["signature"]) for r in rows]


# What a Supabase project grants on everything created in public, by the role that
# applies the migrations: a table, view, sequence or function tether's migrations
# create there is anon's and authenticated's unless a migration takes it back from them
# by name (taking it from public alone is not enough, as it is on plain Postgres).
SUPABASE_DEFAULT_PRIVILEGES = [
    "grant usage on schema public to anon, authenticated, service_role",
    *(
        f"alter default privileges in schema public grant all on {kind}"
        " to anon, authenticated, service_role"
        for kind in ("tables", "functions", "sequences")
    ),
]


@pytest.fixture(params=["plain Postgres", "Supabase's default privileges"])
def catalog(request: pytest.FixtureRequest, empty_database_url: str) -> Iterator[Conn]:
    """A database migrated from nothing, as on plain Postgres or as on Supabase."""
    with psycopg.connect(empty_database_url, autocommit=True, row_factory=dict_row) as conn:
        if request.param == "Supabase's default privileges":
            # Supabase's roles first, as the stand-in makes them (it changes nothing
            # that exists, and runs again as the first migration).
            shim = migrate.shipped()[0]
            assert shim.name == "auth_shim"
            conn.execute(shim.sql.encode())
            for statement in SUPABASE_DEFAULT_PRIVILEGES:
                conn.execute(statement)
        migrate.migrate(empty_database_url)
        yield conn


@pytest.mark.parametrize("role", PUBLIC_ROLES)
def test_no_public_role_may_write_anything_of_ours(catalog: Conn, role: str) -> None:
    db = catalog
    writable = db.execute(
        "select n.nspname || '.' || c.relname as name, p.privilege from pg_class c"
        " join pg_namespace n on n.oid = c.relnamespace"
        " cross join unnest(array['INSERT', 'UPDATE', 'DELETE', 'TRUNCATE']) p(privilege)"
        " where n.nspname = any(%s) and c.relkind in ('r', 'v', 'm', 'p')"
        "   and has_table_privilege(%s, c.oid, p.privilege)",
        (list(OURS), role),
    ).fetchall()
    assert writable == []


@pytest.mark.parametrize("role", PUBLIC_ROLES)
def test_the_session_table_is_the_only_thing_a_public_role_may_read(
    catalog: Conn, role: str
) -> None:
    db = catalog
    readable = {
        f"{schema}.{name}"
        for schema, name, _kind in _relations(db)
        if db.execute(
            "select has_table_privilege(%s, %s, 'select') as ok", (role, f"{schema}.{name}")
        ).fetchone()
        == {"ok": True}
    }
    expected = {"public.conversation_sessions"} if role == "authenticated" else set()
    assert readable == expected


@pytest.mark.parametrize("role", PUBLIC_ROLES)
def test_no_function_of_ours_can_be_called_by_a_public_role(catalog: Conn, role: str) -> None:
    db = catalog
    callable_ = [
        signature
        for signature in _functions(db)
        if db.execute(
            "select has_function_privilege(%s, %s, 'execute') as ok", (role, signature)
        ).fetchone()
        == {"ok": True}
    ]
    # auth.uid() is Supabase's (or its stand-in's), outside these schemas.
    assert callable_ == []


@pytest.mark.parametrize("role", PUBLIC_ROLES)
def test_every_relation_refuses_a_public_role_in_practice(
    database_url: str, db: Conn, make_session: SessionFactory, role: str
) -> None:
    """The privileges above, tried for real: each statement fails, nothing changes."""
    make_session(user_id=uuid.uuid4(), connection_id="someone=")
    relations = [r for r in _relations(db) if r[2] != "S"]
    attempts = 0
    with psycopg.connect(database_url, autocommit=True, row_factory=dict_row) as conn:
        _as(conn, role, uuid.uuid4())
        for schema, name, kind in relations:
            target = sql.Identifier(schema, name)
            # (A view that cannot be written at all refuses for that reason first.)
            statements = [sql.SQL("delete from {}").format(target)] if kind == "r" else []
            if (schema, name) != ("public", "conversation_sessions") or role == "anon":
                statements.append(sql.SQL("select * from {} limit 1").format(target))
            for statement in statements:
                attempts += 1
                with pytest.raises(errors.InsufficientPrivilege):
                    conn.execute(statement)
    assert attempts >= len(relations)
    still = db.execute("select count(*) as n from public.conversation_sessions").fetchone()
    assert still == {"n": 1}


def test_a_signed_in_user_sees_only_their_own_sessions_through_every_readable_path(
    database_url: str, make_session: SessionFactory
) -> None:
    me, someone = uuid.uuid4(), uuid.uuid4()
    mine = make_session(user_id=me)["session_id"]
    make_session(user_id=someone)
    make_session(user_id=None)  # anonymous connections belong to nobody
    with psycopg.connect(database_url, autocommit=True, row_factory=dict_row) as conn:
        _as(conn, "authenticated", me)
        seen = conn.execute("select session_id from public.conversation_sessions").fetchall()
        assert [r["session_id"] for r in seen] == [mine]
        # No claims at all (a misconfigured client): nothing, not everything.
        conn.execute("select set_config('request.jwt.claims', '{}', false)")
        assert conn.execute(
            "select count(*) as n from public.conversation_sessions"
        ).fetchone() == {"n": 0}


def test_a_connection_reused_after_a_request_reads_as_nobody_not_as_an_error(
    database_url: str, make_session: SessionFactory
) -> None:
    """PostgREST sets a request's claims for its transaction only; afterwards Postgres
    leaves the setting empty, not unset. The next read on that connection without claims
    of its own sees nothing, as on Supabase, rather than failing on the empty JSON."""
    me = uuid.uuid4()
    mine = make_session(user_id=me)["session_id"]
    with psycopg.connect(database_url, row_factory=dict_row) as conn:
        conn.execute("set role authenticated")
        claims = json.dumps({"role": "authenticated", "sub": str(me)})
        conn.execute("select set_config('request.jwt.claims', %s, true)", (claims,))
        seen = conn.execute("select session_id from public.conversation_sessions").fetchall()
        assert [r["session_id"] for r in seen] == [mine]
        conn.commit()
        assert conn.execute(
            "select current_setting('request.jwt.claims', true) as claims"
        ).fetchone() == {"claims": ""}
        assert conn.execute(
            "select count(*) as n from public.conversation_sessions"
        ).fetchone() == {"n": 0}


def test_every_function_of_tether_s_reads_the_system_s_types_first(db: Conn) -> None:
    # An empty search_path lets the caller's temporary schema be read first for types:
    # in a function running with its owner's rights, and in every helper it calls.
    functions, loose = functions_reading_temporary_types(db)
    assert len(functions) > 30
    assert loose == []


# Each call, as service_role, reaches a cast to the type named in a function running
# with its owner's rights, or in a helper such a function calls.
HIJACKED_CALLS = {
    "uuid": [
        # The filters cast their parameters by name (`$1::uuid is null`).
        "select count(*) from public.tether_list_sessions_v1()",
        "select count(*) from public.tether_list_sessions_v1(p_active => true)",
        # session_id's default, tether_uuid_v7(), ends in `::uuid`.
        "select * from public.tether_open_session_v1('hijack=')",
    ],
    "text": [
        # tether_require_range quotes a value out of range as `::text`.
        "select * from public.tether_touch_session_v1('hijack=', 1000)",
        "select * from public.tether_end_session_v2('hijack=', 'client_disconnect')",
        "select * from public.tether_end_session_v3('hijack=', 'client_disconnect')",
    ],
}


@pytest.mark.parametrize("type_name", sorted(HIJACKED_CALLS))
def test_a_caller_s_temporary_types_never_run_with_the_functions_owner_s_rights(
    database_url: str, db: Conn, type_name: str
) -> None:
    """A caller that may create temporary objects (every role may, by default) defines
    pg_temp.uuid or pg_temp.text as a domain whose check says who runs it. Inside
    tether's functions the system's types must be read, so it never runs at all; an
    error the call raises rolls back a write, but not what was said."""
    said: list[str] = []
    with psycopg.connect(database_url, autocommit=True, row_factory=dict_row) as conn:
        conn.add_notice_handler(lambda notice: said.append(str(notice.message_primary)))
        conn.execute("set role service_role")
        conn.execute(
            "create function pg_temp.hijack(value pg_catalog.text) returns boolean"
            " language plpgsql as $$ begin"
            "   raise notice 'hijacked, running as %', current_user;"
            "   return true; end $$"
        )
        conn.execute(
            sql.SQL(
                "create domain pg_temp.{name} as pg_catalog.{name}"
                " check (pg_temp.hijack(value::pg_catalog.text))"
            ).format(name=sql.Identifier(type_name))
        )
        for call in HIJACKED_CALLS[type_name]:
            # Some are refused (a throttle out of range), and without the system's types
            # some fail on them: what counts is what ran.
            with contextlib.suppress(psycopg.Error):
                conn.execute(call)
    assert [line for line in said if "hijacked" in line] == []
    db.execute("delete from public.conversation_sessions where connection_id = 'hijack='")


@pytest.mark.parametrize(
    "table", ["public.conversation_sessions", "public.conversation_session_announcements"]
)
def test_service_role_cannot_attach_a_trigger_that_runs_with_the_owner_s_rights(
    db: Conn, make_session: SessionFactory, table: str
) -> None:
    """A trigger runs inside tether's functions with their owner's rights: one that
    service_role attached, calling a function of its own in pg_temp, made a member of
    service_role the owner (superuser on plain Postgres) at the next $disconnect. Nor
    may it empty the outbox of queued announcements, or hold a foreign key on them."""
    session = make_session(started_seconds_ago=60)
    db.execute("set role service_role")
    try:
        db.execute(
            "create function pg_temp.spy() returns trigger language plpgsql as"
            " $$ begin perform set_config('tether.spied', current_user, true); return new; end $$"
        )
        with pytest.raises(errors.InsufficientPrivilege):
            db.execute(
                sql.SQL(
                    "create trigger zz_spy before update on {} for each row"
                    " execute function pg_temp.spy()"
                ).format(sql.SQL(table))
            )
        db.rollback()
        db.execute("set role service_role")
        with pytest.raises(errors.InsufficientPrivilege):
            db.execute(sql.SQL("truncate {}").format(sql.SQL(table)))
        db.rollback()
        # What it is for still works: calling tether's functions, reading the rows.
        db.execute("set role service_role")
        ended = db.execute(
            "select outcome from public.tether_end_session_v3(%s, 'client_disconnect')",
            (session["connection_id"],),
        ).fetchone()
        assert ended == {"outcome": "ended"}
        counted = db.execute(sql.SQL("select count(*) as n from {}").format(sql.SQL(table)))
        assert counted.fetchone() == {"n": 1}
    finally:
        db.rollback()
        db.execute("reset role")
