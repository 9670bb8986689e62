"""What the migrations build, checked from the catalog of a real Postgres."""

from __future__ import annotations

import json
import re
import time
import uuid
from typing import Any, cast

import psycopg
import pytest
from psycopg import errors, sql
from psycopg.rows import dict_row

from tests.conftest import SessionFactory
from tether.models import EndReason

Conn = psycopg.Connection[dict[str, object]]


def test_generated_columns(db: Conn) -> None:
    rows = db.execute(
        """
        select column_name, is_generated, generation_expression
        from information_schema.columns
        where table_schema = 'public' and table_name = 'conversation_sessions'
          and column_name in ('is_active', 'duration_seconds')
        order by column_name
        """
    ).fetchall()
    assert [(r["column_name"], r["is_generated"]) for r in rows] == [
        ("duration_seconds", "ALWAYS"),
        ("is_active", "ALWAYS"),
    ]
    expressions = {r["column_name"]: str(r["generation_expression"]) for r in rows}
    assert "session_end IS NULL" in expressions["is_active"]
    assert "session_end - session_start" in expressions["duration_seconds"]


@pytest.mark.parametrize(
    "statement",
    [
        "update public.conversation_sessions set is_active = false",
        "update public.conversation_sessions set duration_seconds = 5",
        "insert into public.conversation_sessions (connection_id, is_active) values ('x', true)",
    ],
)
def test_generated_columns_refuse_writes(
    db: Conn, make_session: SessionFactory, statement: str
) -> None:
    make_session(connection_id="keep=")
    with pytest.raises(errors.GeneratedAlways):
        db.execute(statement.encode())
    row = db.execute("select is_active from public.conversation_sessions").fetchone()
    assert row == {"is_active": True}


def test_partial_indexes_have_the_literal_predicate(db: Conn) -> None:
    rows = db.execute(
        """
        select indexname, indexdef from pg_indexes
        where schemaname = 'public' and tablename = 'conversation_sessions'
        """
    ).fetchall()
    defs = {str(r["indexname"]): str(r["indexdef"]) for r in rows}
    for name in (
        "conversation_sessions_last_seen_at_active_idx",
        "conversation_sessions_session_start_active_idx",
        "conversation_sessions_user_id_active_idx",
    ):
        assert defs[name].endswith("WHERE is_active"), defs[name]


def test_constraints_are_named_and_enforced(db: Conn, make_session: SessionFactory) -> None:
    session = make_session(started_seconds_ago=60)
    with pytest.raises(errors.CheckViolation, match="conversation_sessions_end_after_start_check"):
        db.execute(
            "update public.conversation_sessions set session_end = session_start - interval '1s',"
            " end_reason = 'gone' where session_id = %s",
            (session["session_id"],),
        )
    with pytest.raises(errors.CheckViolation, match="tether_end_reason"):
        db.execute(
            "update public.conversation_sessions set session_end = now(), end_reason = 'oops'"
            " where session_id = %s",
            (session["session_id"],),
        )
    with pytest.raises(errors.UniqueViolation, match="conversation_sessions_connection_id_key"):
        make_session(connection_id=str(session["connection_id"]))


@pytest.mark.parametrize("start", ["-infinity", "4713-01-01 BC", "0001-01-01 00:00:00+00"])
def test_a_start_no_client_can_read_is_refused_and_writes_nothing(db: Conn, start: str) -> None:
    """Postgres takes these; Python cannot read them, and the sweep cannot subtract
    them from now: one such live session stopped every sweep."""
    with pytest.raises(errors.CheckViolation, match="conversation_sessions_start_readable_check"):
        db.execute("select * from public.tether_open_session_v1('unreadable=', null, %s)", (start,))
    assert db.execute("select count(*) as n from public.conversation_sessions").fetchone() == {
        "n": 0
    }


@pytest.mark.parametrize(
    ("column", "moment"),
    [
        ("session_end", "infinity"),
        ("session_end", "10000-01-01 00:00:00+00"),
        ("last_seen_at", "infinity"),
        ("last_seen_at", "10000-01-01 00:00:00+00"),
        ("last_seen_at", "0001-01-01 00:00:00+00"),
        ("announced_at", "infinity"),
        ("finalized_at", "infinity"),
        ("session_start", "10000-01-01 00:00:00+00"),
    ],
)
def test_a_moment_no_client_can_read_is_refused_and_writes_nothing(
    db: Conn, make_session: SessionFactory, column: str, moment: str
) -> None:
    """A hand-written UPDATE, or a team's old server after adoption: one such row made
    every page of /sessions that held it, and the live page, answer 500."""
    # Live, for the start: an end before a start is refused by a check of its own.
    session = make_session(
        started_seconds_ago=600, ended_seconds_ago=None if column == "session_start" else 60
    )
    before = db.execute(
        "select * from public.conversation_sessions where session_id = %s",
        (session["session_id"],),
    ).fetchone()
    with pytest.raises(errors.CheckViolation, match="conversation_sessions_moments_readable"):
        db.execute(
            sql.SQL("update public.conversation_sessions set {} = %s where session_id = %s").format(
                sql.Identifier(column)
            ),
            (moment, session["session_id"]),
        )
    after = db.execute(
        "select * from public.conversation_sessions where session_id = %s",
        (session["session_id"],),
    ).fetchone()
    assert after == before


def test_end_reason_domain_matches_the_python_enum(db: Conn) -> None:
    row = db.execute(
        """
        select pg_get_constraintdef(c.oid) as def
        from pg_constraint c join pg_type t on t.oid = c.contypid
        where t.typname = 'tether_end_reason'
        """
    ).fetchone()
    assert row is not None
    definition = str(row["def"])
    for reason in EndReason:
        assert f"'{reason.value}'" in definition
    assert definition.count("'::text") == len(EndReason)


def test_tables_and_columns_are_commented(db: Conn) -> None:
    row = db.execute(
        "select obj_description('public.conversation_sessions'::regclass, 'pg_class') as c"
    ).fetchone()
    assert row is not None and row["c"]
    commented = db.execute(
        """
        select a.attname from pg_attribute a
        where a.attrelid = 'public.conversation_sessions'::regclass
          and col_description(a.attrelid, a.attnum) is not null
        """
    ).fetchall()
    names = {r["attname"] for r in commented}
    assert {"is_active", "duration_seconds", "connection_id", "last_seen_at", "end_reason"} <= names


def test_every_function_of_the_sql_api_says_what_it_does(db: Conn) -> None:
    """`\\df+` and Supabase's dashboard show a function's comment: each versioned one has
    one, a superseded one naming its successor."""
    rows = db.execute(
        r"""
        select p.proname, obj_description(p.oid, 'pg_proc') as comment from pg_proc p
        join pg_namespace n on n.oid = p.pronamespace
        where n.nspname = 'public' and p.proname ~ '^tether_.*_v[0-9]+$'
          and p.proname <> 'tether_uuid_v7'
        """
    ).fetchall()
    assert len(rows) >= 30
    assert [r["proname"] for r in rows if not r["comment"]] == []
    comments = {str(r["proname"]): str(r["comment"]) for r in rows}
    for name in ("settle_suspects", "release_announcements", "orphan_summary", "sweep_preview"):
        assert f"Superseded by tether_{name}_v2" in comments[f"tether_{name}_v1"]


# --- the hot queries use the partial indexes -------------------------------------


def _plan(db: Conn, query: str, params: tuple[object, ...] = ()) -> str:
    rows = db.execute(("explain " + query).encode(), params).fetchall()
    return "\n".join(str(next(iter(r.values()))) for r in rows)


@pytest.fixture
def history(db: Conn) -> None:
    """Mostly ended history and a few live sessions, analysed."""
    db.execute(
        """
        insert into public.conversation_sessions
          (connection_id, user_id, session_start, last_seen_at, session_end, end_reason)
        select 'h' || g, gen_random_uuid(), now() - interval '3 days', now() - interval '3 days',
               now() - interval '2 days', 'client_disconnect'
        from generate_series(1, 5000) g
        """
    )
    db.execute(
        """
        insert into public.conversation_sessions (connection_id, user_id)
        select 'live' || g, gen_random_uuid() from generate_series(1, 20) g
        """
    )
    db.execute("analyze public.conversation_sessions")


@pytest.mark.usefixtures("history")
@pytest.mark.parametrize(
    ("query", "index"),
    [
        (
            "select session_id from public.conversation_sessions"
            " where is_active and last_seen_at < now() - interval '10 minutes'",
            "_active_idx",
        ),
        (
            "select session_id from public.conversation_sessions"
            " where is_active and session_start < now() - interval '2 hours'",
            "_active_idx",
        ),
        (
            "select session_id from public.conversation_sessions"
            " where is_active and user_id = '00000000-0000-0000-0000-000000000001'",
            "conversation_sessions_user_id_active_idx",
        ),
        (
            "select count(*) from public.conversation_sessions where is_active",
            "_active_idx",
        ),
    ],
)
def test_hot_queries_use_partial_indexes(db: Conn, query: str, index: str) -> None:
    # 5,000 ended rows and 20 live ones: the plan must read a partial index of the
    # live rows, never the whole history.
    plan = _plan(db, query)
    assert index in plan, plan
    assert "Seq Scan" not in plan, plan


@pytest.mark.usefixtures("history")
def test_a_parameterised_predicate_misses_the_partial_indexes(db: Conn) -> None:
    # Why every query spells `where is_active`: the planner cannot prove that a
    # generic parameter is true, so a prepared `is_active = $1` scans the history.
    db.execute("set plan_cache_mode = force_generic_plan")
    db.execute(
        "prepare by_param(boolean) as select session_id from public.conversation_sessions"
        " where is_active = $1 and last_seen_at < now()"
    )
    plan = _plan(db, "execute by_param(true)")
    assert "_active_idx" not in plan, plan


@pytest.mark.parametrize(
    "query",
    [
        # The origin's daily statistics.
        "select date(session_start) as date, count(*) as total_sessions,"
        " avg(duration_seconds) as avg_duration, count(*) filter (where is_active) as still_active"
        " from public.conversation_sessions where session_start > now() - interval '7 days'"
        " group by date(session_start) order by date desc",
        # tether_daily_stats_v1's, by UTC day.
        "select (s.session_start at time zone 'UTC')::date as day, count(*),"
        " round(avg(s.duration_seconds), 3), max(s.duration_seconds)"
        " from public.conversation_sessions s"
        " where s.session_start >= now() - interval '7 days' group by 1",
    ],
)
def test_daily_statistics_are_counted_by_day_not_sorted_row_by_row(db: Conn, query: str) -> None:
    # A month of history, a session every two minutes: a week of it is 5,000 rows
    # on 8 days.
    db.execute(
        """
        insert into public.conversation_sessions
          (connection_id, session_start, last_seen_at, session_end, end_reason)
        select 'd' || g, now() - g * interval '2 minutes', now() - g * interval '2 minutes',
               now() - g * interval '2 minutes' + interval '1 minute', 'client_disconnect'
        from generate_series(1, 21600) g
        """
    )
    db.execute("analyze public.conversation_sessions")
    row = db.execute(("explain (format json) " + query).encode()).fetchone()
    assert row is not None
    explained = cast("list[dict[str, Any]]", next(iter(row.values())))
    plan = explained[0]["Plan"]
    aggregate = next(
        node for node in (plan, *plan.get("Plans", [])) if node["Node Type"] == "Aggregate"
    )
    # Without statistics on the day's expression the planner takes every start for a
    # day of its own (about 5,000 groups) and sorts the week's rows to count them.
    assert aggregate["Plan Rows"] <= 60, aggregate["Plan Rows"]
    assert aggregate["Strategy"] == "Hashed", plan


@pytest.mark.usefixtures("history")
def test_the_orphan_view_reads_only_live_rows(db: Conn) -> None:
    plan = _plan(db, "select * from public.conversation_session_orphans")
    assert "_active_idx" in plan, plan


def test_session_ids_are_time_ordered(db: Conn) -> None:
    ids = [
        db.execute("select public.tether_uuid_v7() as id").fetchone()["id"]  # type: ignore[index]
        for _ in range(50)
    ]
    assert all(isinstance(i, uuid.UUID) and i.version == 7 for i in ids)
    assert all(i.variant == uuid.RFC_4122 for i in ids)  # type: ignore[union-attr]
    # Their first 48 bits are the time in milliseconds: never decreasing.
    stamps = [int(str(i).replace("-", "")[:12], 16) for i in ids]
    assert stamps == sorted(stamps)
    assert abs(stamps[-1] / 1000 - time.time()) < 60


def test_the_outbox_holds_only_what_is_unannounced(db: Conn, make_session: SessionFactory) -> None:
    make_session(started_seconds_ago=60)
    make_session(started_seconds_ago=60, ended_seconds_ago=30, announced=True)
    queued = make_session(started_seconds_ago=60, ended_seconds_ago=30)
    rows = db.execute("select session_id from public.conversation_session_announcements").fetchall()
    assert [r["session_id"] for r in rows] == [queued["session_id"]]


# --- Row Level Security ----------------------------------------------------------


def _as(db: Conn, role: str, user: uuid.UUID | None = None) -> None:
    db.execute(psycopg.sql.SQL("set role {}").format(psycopg.sql.Identifier(role)))
    claims = "{}" if user is None else json.dumps({"sub": str(user), "role": role})
    db.execute("select set_config('request.jwt.claims', %s, false)", (claims,))


def test_rls_user_reads_only_their_own_rows(
    database_url: str, make_session: SessionFactory
) -> None:
    alice, bob = uuid.uuid4(), uuid.uuid4()
    make_session(user_id=alice)
    make_session(user_id=alice, started_seconds_ago=100, ended_seconds_ago=10)
    make_session(user_id=bob)
    with psycopg.connect(database_url, autocommit=True, row_factory=dict_row) as conn:
        _as(conn, "authenticated", alice)
        rows = conn.execute("select user_id from public.conversation_sessions").fetchall()
        assert [r["user_id"] for r in rows] == [alice, alice]
        _as(conn, "authenticated", bob)
        rows = conn.execute("select user_id from public.conversation_sessions").fetchall()
        assert [r["user_id"] for r in rows] == [bob]


def test_rls_anon_reads_nothing(database_url: str, make_session: SessionFactory) -> None:
    make_session(user_id=uuid.uuid4())
    with psycopg.connect(database_url, autocommit=True) as conn:
        _as(conn, "anon")  # type: ignore[arg-type]
        with pytest.raises(errors.InsufficientPrivilege):
            conn.execute("select * from public.conversation_sessions")


@pytest.mark.parametrize("role", ["anon", "authenticated"])
@pytest.mark.parametrize(
    "statement",
    [
        "insert into public.conversation_sessions (connection_id) values ('evil')",
        "update public.conversation_sessions set session_end = now(), end_reason = 'gone'",
        "delete from public.conversation_sessions",
        "select * from public.tether_open_session_v1('evil')",
        "select * from public.tether_end_session_v1('victim=', 'gone')",
        "select * from public.conversation_session_orphans",
    ],
)
def test_public_roles_cannot_write_or_call_the_lifecycle(
    database_url: str, make_session: SessionFactory, db: Conn, role: str, statement: str
) -> None:
    make_session(connection_id="victim=", user_id=uuid.uuid4())
    with psycopg.connect(database_url, autocommit=True) as conn:
        _as(conn, role, uuid.uuid4())  # type: ignore[arg-type]
        with pytest.raises(errors.InsufficientPrivilege):
            conn.execute(statement.encode())
    row = db.execute(
        "select count(*) as n, bool_and(is_active) as live from public.conversation_sessions"
    ).fetchone()
    assert row == {"n": 1, "live": True}


def test_service_role_runs_the_lifecycle(database_url: str, db: Conn) -> None:
    with psycopg.connect(database_url, autocommit=True) as conn:
        _as(conn, "service_role")  # type: ignore[arg-type]
        conn.execute("select * from public.tether_open_session_v1('svc=')")
        conn.execute("select * from public.tether_end_session_v1('svc=', 'client_disconnect')")
    row = db.execute("select is_active, end_reason from public.conversation_sessions").fetchone()
    assert row == {"is_active": False, "end_reason": "client_disconnect"}


def test_policies_use_a_select_wrapped_uid(db: Conn) -> None:
    rows = db.execute(
        "select policyname, roles, cmd, qual from pg_policies"
        " where tablename = 'conversation_sessions'"
    ).fetchall()
    assert len(rows) == 1
    policy = rows[0]
    assert policy["cmd"] == "SELECT"
    assert policy["roles"] == ["authenticated"]
    assert "SELECT auth.uid()" in str(policy["qual"])


def test_security_definer_functions_pin_search_path(db: Conn) -> None:
    rows = db.execute(
        """
        select p.proname, p.prosecdef, p.proconfig from pg_proc p
        join pg_namespace n on n.oid = p.pronamespace
        where n.nspname = 'public' and p.proname like 'tether\\_%%'
        """
    ).fetchall()
    assert len(rows) >= 6
    helpers = {"tether_uuid_v7", "tether_require_range"}
    api = [
        row
        for row in rows
        if re.search(r"_v\d+$", str(row["proname"])) and row["proname"] not in helpers
    ]
    assert len(api) >= 12
    # Their every statement finds its row by a unique key: the plan at any table size.
    unique_key_only = {
        "tether_open_session_v1",
        "tether_touch_session_v1",
        "tether_end_session_v1",
        "tether_end_session_v2",
        "tether_end_session_v3",
    }
    for row in api:
        # The versioned API writes as its owner: callers need no table rights; no
        # call waits long for a lock (API Gateway gives up after 29 s); and a warm
        # container's connection plans each call for the table as it is now.
        assert row["prosecdef"] is True, row["proname"]
        # The search_path names pg_temp last: never read first for a type.
        expected = ["search_path=pg_catalog, pg_temp", "lock_timeout=3s"]
        if row["proname"] not in unique_key_only:
            expected.append("plan_cache_mode=force_custom_plan")
        assert row["proconfig"] == expected, row["proname"]
    for row in rows:
        # The helpers too: they run with the rights of the functions calling them.
        assert "search_path=pg_catalog, pg_temp" in str(row["proconfig"]), row["proname"]


def test_deleting_a_session_takes_its_queue_entry_with_it(
    db: Conn, make_session: SessionFactory
) -> None:
    queued = make_session(started_seconds_ago=60, ended_seconds_ago=30)
    db.execute(
        "delete from public.conversation_sessions where session_id = %s", (queued["session_id"],)
    )
    row = db.execute("select count(*) as n from public.conversation_session_announcements")
    assert row.fetchone() == {"n": 0}
