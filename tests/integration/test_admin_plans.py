"""The operators' reads stay cheap on a long history: the plans Postgres runs inside
the SQL functions (captured with auto_explain) read the partial indexes of live rows,
or the time indexes, never the whole table."""

from __future__ import annotations

from collections.abc import Callable

import psycopg
import pytest

Conn = psycopg.Connection[dict[str, object]]


@pytest.fixture
def history(db: Conn) -> None:
    """20,000 ended sessions over ten months, 20 live ones, analysed."""
    db.execute(
        """
        insert into public.conversation_sessions
          (connection_id, user_id, session_start, last_seen_at, session_end, end_reason)
        select 'h' || g, gen_random_uuid(),
               now() - make_interval(secs => g * 1300), now() - make_interval(secs => g * 1300),
               now() - make_interval(secs => g * 1300 - 60), 'client_disconnect'
        from generate_series(1, 20000) g
        """
    )
    db.execute(
        "insert into public.conversation_sessions (connection_id, user_id)"
        " select 'live' || g, gen_random_uuid() from generate_series(1, 20) g"
    )
    db.execute("analyze public.conversation_sessions")


@pytest.fixture
def plans(db: Conn) -> Callable[[str], str]:
    """Run a statement; the plans of the statements nested in it, as text."""
    db.execute("load 'auto_explain'")
    db.execute("set auto_explain.log_min_duration = 0")
    db.execute("set auto_explain.log_nested_statements = on")
    db.execute("set auto_explain.log_level = notice")
    captured: list[str] = []
    db.add_notice_handler(lambda notice: captured.append(notice.message_primary or ""))

    def run(statement: str) -> str:
        captured.clear()
        db.execute(statement.encode()).fetchall()
        return "\n".join(captured)

    return run


@pytest.mark.usefixtures("history")
@pytest.mark.parametrize(
    ("statement", "index"),
    [
        (
            "select * from public.tether_list_sessions_v1(p_active => true, p_limit => 10)",
            "conversation_sessions_session_start_active_idx",
        ),
        (
            "select * from public.tether_list_sessions_v1(p_limit => 50)",
            "conversation_sessions_session_start_idx",
        ),
        (
            "select * from public.tether_list_sessions_v1(p_user_id =>"
            " '00000000-0000-0000-0000-000000000001', p_limit => 50)",
            "conversation_sessions_user_id_idx",
        ),
        (
            "select * from public.tether_recent_ends_v2(3600)",
            "conversation_sessions_session_end_idx",
        ),
        (
            "select * from public.tether_daily_stats_v1(7)",
            "conversation_sessions_session_start_idx",
        ),
    ],
    ids=["live-page", "history-page", "one-user", "last-hour", "daily"],
)
def test_operator_reads_use_an_index(
    plans: Callable[[str], str], statement: str, index: str
) -> None:
    plan = plans(statement)
    assert index in plan, plan
    assert "Seq Scan on conversation_sessions" not in plan, plan
