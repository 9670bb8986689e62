"""The boundary for everyone who does not belong, taken from the catalog: every table,
view, sequence and function tether's migrations create, as Supabase's public roles
(`anon`, `authenticated`) reach them through the public API. Nothing is listed by
hand, so an object added later is covered the day it is created.

(The token attacks on `$connect` are in test_connect.py, those on the operators' API
in test_admin_api.py, the template's IAM in test_infra.py, the local gateway's limits
in tests/e2e/test_gateway_abuse.py; the operators' API is fuzzed in
test_admin_schemathesis.py; a whole run's output is searched for secrets by
`tether chaos`.)"""

from __future__ import annotations

import json
import uuid

import psycopg
import pytest
from psycopg import errors, sql
from psycopg.rows import dict_row

from tests.conftest import SessionFactory
from tests.support import definer_functions_reading_temporary_types

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


@pytest.mark.parametrize("role", PUBLIC_ROLES)
def test_no_public_role_may_write_anything_of_ours(db: Conn, role: str) -> None:
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
def test_the_session_table_is_the_only_thing_a_public_role_may_read(db: Conn, role: str) -> None:
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
def test_no_function_of_ours_can_be_called_by_a_public_role(db: Conn, role: str) -> None:
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


def test_every_function_running_with_its_owner_s_rights_reads_the_system_s_types_first(
    db: Conn,
) -> None:
    # An empty search_path lets the caller's temporary schema be read first for types.
    definers, loose = definer_functions_reading_temporary_types(db)
    assert len(definers) > 30
    assert loose == []


def test_a_caller_s_temporary_types_never_run_with_the_functions_owner_s_rights(
    database_url: str, db: Conn
) -> None:
    """A caller that may create temporary objects (every role may, by default) defines
    pg_temp.uuid as a domain whose check writes where only the functions' owner may.
    The functions must read the system's uuid, so the check never runs as their owner."""
    with psycopg.connect(database_url, autocommit=True, row_factory=dict_row) as conn:
        conn.execute("set role service_role")
        with pytest.raises(errors.InsufficientPrivilege):
            conn.execute("insert into tether.sweep_runs (started_at, report) values (now(), '{}')")
        conn.execute(
            "create function pg_temp.hijack(value pg_catalog.text) returns boolean"
            " language plpgsql as $$ begin"
            "   insert into tether.sweep_runs (started_at, report)"
            '   values (pg_catalog.now(), \'{"via": "hijack"}\');'
            "   return true; end $$"
        )
        conn.execute(
            "create domain pg_temp.uuid as pg_catalog.uuid"
            " check (pg_temp.hijack(value::pg_catalog.text))"
        )
        # Its filters cast their parameters by name (`$1::uuid is null`) as the call runs.
        for filters in ("", "p_active => true"):
            listed = conn.execute(
                f"select count(*) as n from public.tether_list_sessions_v1({filters})"
            ).fetchone()
            assert listed == {"n": 0}
    hijacked = db.execute("select count(*) as n from tether.sweep_runs where report ? 'via'")
    assert hijacked.fetchone() == {"n": 0}
