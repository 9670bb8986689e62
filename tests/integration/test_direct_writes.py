"""Ends written around tether's functions: announced at least once, as any other."""

from __future__ import annotations

from typing import Any

import psycopg
import pytest
from psycopg.rows import dict_row

from functions import connect, sweep
from tests.conftest import EventBus
from tests.support import (
    HS256_SECRET,
    FakeLambdaContext,
    claims,
    load_event,
    sign,
    with_query,
    ws_event,
)
from tether.drivers.postgres import PostgresStore
from tether.store import CLOSE_STALE


def _open(connection_id: str) -> None:
    token = sign(claims(), HS256_SECRET, "HS256")
    response = connect.lambda_handler(
        with_query(ws_event("connect", connection_id), token=token), FakeLambdaContext()
    )
    assert response["statusCode"] == 200


def _unannounced(database_url: str) -> int | None:
    store = PostgresStore(database_url)
    try:
        return store.session_health(idle_limit_seconds=660, max_age_seconds=7260).unannounced
    finally:
        store.close()


def _end_as_the_service_role(database_url: str, connection_id: str, *first: str) -> None:
    """An UPDATE that ends the session, written as the service key writes, after the
    statements ``first`` (a setting the writer makes)."""
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute("set role service_role")
        for statement in first:
            conn.execute(statement)
        conn.execute(
            "update public.conversation_sessions"
            " set session_end = now(), end_reason = 'forced_close'"
            " where connection_id = %s",
            (connection_id,),
        )


@pytest.mark.usefixtures("lambda_env")
def test_an_end_the_service_role_writes_itself_is_announced_by_the_next_sweep(
    database_url: str, event_bus: EventBus
) -> None:
    _open("direct=")
    _open("untouched=")
    # A team's script, or an operator in the dashboard, with the service key.
    _end_as_the_service_role(database_url, "direct=")
    assert _unannounced(database_url) == 1

    # One check: the run has a second past its margin, less than its cadence.
    report = sweep.lambda_handler(load_event("scheduled"), FakeLambdaContext(time_limit_seconds=11))
    assert report["announced"] == 1
    (event,) = event_bus.received()
    assert event["detail"]["connection_id"] == "direct="
    assert event["detail"]["end_reason"] == "forced_close"
    assert _unannounced(database_url) == 0


@pytest.mark.parametrize(
    "change",
    [
        "session_end = session_end + interval '1 second'",
        "end_reason = 'gone'",
        "disconnect_status_code = 1006",
        "session_end = null, end_reason = null",
    ],
    ids=["moved", "another_reason", "another_code", "opened_again"],
)
@pytest.mark.usefixtures("lambda_env")
def test_an_ended_session_keeps_its_end_whoever_writes(database_url: str, change: str) -> None:
    """The first end and its reason stay, as tether's functions keep them: a direct write
    that moves an end, changes its reason or opens the session again is refused, with
    nothing written, after its SessionEnded went out with the first."""
    _open("ended=")
    with psycopg.connect(database_url, autocommit=True, row_factory=dict_row) as conn:
        conn.execute("select public.tether_end_session_v3('ended=', 'client_disconnect', 1000)")
        before = conn.execute(
            "select * from public.conversation_sessions where connection_id = 'ended='"
        ).fetchone()
        conn.execute("set role service_role")
        with pytest.raises(psycopg.errors.CheckViolation, match="its end is final"):
            conn.execute(
                f"update public.conversation_sessions set {change} where connection_id = 'ended='"
            )
        # What an ended row may still take: its finalization, as the finalizer writes it.
        conn.execute(
            "update public.conversation_sessions set finalized_at = now()"
            " where connection_id = 'ended='"
        )
        after = conn.execute(
            "select * from public.conversation_sessions where connection_id = 'ended='"
        ).fetchone()
    assert before is not None and after is not None
    assert {k: after[k] for k in ("session_end", "end_reason", "disconnect_status_code")} == {
        k: before[k] for k in ("session_end", "end_reason", "disconnect_status_code")
    }
    assert after["finalized_at"] is not None


@pytest.mark.usefixtures("lambda_env")
def test_tether_s_own_end_keeps_the_lease_it_queued_with(database_url: str) -> None:
    """The trigger that queues an end written around tether's functions runs for the
    ends of a single session too (the sweep's batches alone tell it theirs are queued):
    it finds their row in the outbox, queued by the same statement with the caller's
    lease, and leaves it as it is, so the sweep does not announce an end its $disconnect
    is announcing."""
    _open("leased=")
    with psycopg.connect(database_url, autocommit=True, row_factory=dict_row) as conn:
        conn.execute(
            "select * from public.tether_end_session_v3('leased=', 'client_disconnect', 1000,"
            " null, 60)"
        )
        queued = conn.execute(
            "select a.announce_after - now() as lease"
            " from public.conversation_session_announcements a"
            " join public.conversation_sessions s using (session_id)"
            " where s.connection_id = 'leased='"
        ).fetchall()
    assert len(queued) == 1
    assert queued[0]["lease"].total_seconds() > 50


@pytest.mark.usefixtures("lambda_env")
def test_an_ended_session_keeps_its_end_under_the_adoption_s_setting(database_url: str) -> None:
    """The setting `tether adopt`'s backfill makes is every role's to make: a script
    that makes it too is still refused, with nothing written."""
    _open("ended=")
    with psycopg.connect(database_url, autocommit=True, row_factory=dict_row) as conn:
        conn.execute("select public.tether_end_session_v3('ended=', 'client_disconnect', 1000)")
        conn.execute("set role service_role")
        conn.execute("set tether.adoption_backfill = 'on'")
        with pytest.raises(psycopg.errors.CheckViolation, match="its end is final"):
            conn.execute(
                "update public.conversation_sessions set end_reason = 'gone'"
                " where connection_id = 'ended='"
            )
        row = conn.execute(
            "select end_reason from public.conversation_sessions where connection_id = 'ended='"
        ).fetchone()
    assert row == {"end_reason": "client_disconnect"}


@pytest.mark.usefixtures("lambda_env")
def test_an_end_written_under_the_adoption_s_setting_is_announced(
    database_url: str, event_bus: EventBus
) -> None:
    """A script that makes the setting `tether adopt`'s backfill makes (every role's to
    make) still has its end queued and announced by the next sweep."""
    _open("script=")
    _end_as_the_service_role(database_url, "script=", "set tether.adoption_backfill = 'on'")
    assert _unannounced(database_url) == 1

    report = sweep.lambda_handler(load_event("scheduled"), FakeLambdaContext(time_limit_seconds=11))
    assert report["announced"] == 1
    assert [e["detail"]["connection_id"] for e in event_bus.received()] == ["script="]


# A team's own trigger, as the table's owner may attach: an update that marks a row
# "closed" in a column of the team's ends the session, without naming session_end.
_TEAM_TRIGGER = """
create function public.team_closes_on_mark() returns trigger language plpgsql as $$
begin
  if new.user_agent = 'closed by the team' and old.user_agent is distinct from new.user_agent then
    new.session_end := coalesce(old.session_end, now()) + case
      when old.session_end is null then interval '0' else interval '1 minute' end;
    new.end_reason := coalesce(old.end_reason, 'forced_close');
  end if;
  return new;
end $$;
create trigger team_closes_on_mark before update on public.conversation_sessions
  for each row execute function public.team_closes_on_mark();
"""


def _mark_closed_by_the_team(database_url: str, connection_id: str) -> None:
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute(_TEAM_TRIGGER)
        conn.execute("set role service_role")
        conn.execute(
            "update public.conversation_sessions set user_agent = 'closed by the team'"
            " where connection_id = %s",
            (connection_id,),
        )


@pytest.mark.usefixtures("lambda_env")
def test_an_end_a_team_s_trigger_writes_is_announced(
    database_url: str, event_bus: EventBus
) -> None:
    """The update names none of the end's columns: the team's BEFORE trigger writes them.
    The end is queued all the same, as an end the update wrote itself."""
    _open("marked=")
    _mark_closed_by_the_team(database_url, "marked=")
    assert _unannounced(database_url) == 1

    report = sweep.lambda_handler(load_event("scheduled"), FakeLambdaContext(time_limit_seconds=11))
    assert report["announced"] == 1
    assert [e["detail"]["connection_id"] for e in event_bus.received()] == ["marked="]


@pytest.mark.usefixtures("lambda_env")
def test_an_end_a_team_s_trigger_moves_is_refused(database_url: str) -> None:
    _open("moved=")
    with psycopg.connect(database_url, autocommit=True, row_factory=dict_row) as conn:
        conn.execute("select public.tether_end_session_v3('moved=', 'client_disconnect', 1000)")
        before = conn.execute(
            "select session_end from public.conversation_sessions where connection_id = 'moved='"
        ).fetchone()
    with pytest.raises(psycopg.errors.CheckViolation, match="its end is final"):
        _mark_closed_by_the_team(database_url, "moved=")
    with psycopg.connect(database_url, autocommit=True, row_factory=dict_row) as conn:
        after = conn.execute(
            "select session_end from public.conversation_sessions where connection_id = 'moved='"
        ).fetchone()
    assert after == before


def _silent(conn: psycopg.Connection[Any], *connection_ids: str) -> None:
    conn.execute(
        "update public.conversation_sessions set last_seen_at = now() - interval '1 hour'"
        " where connection_id = any(%s)",
        (list(connection_ids),),
    )


def _queued(conn: psycopg.Connection[Any]) -> list[str]:
    rows = conn.execute(
        "select s.connection_id from public.conversation_session_announcements a"
        " join public.conversation_sessions s using (session_id) order by 1"
    ).fetchall()
    return [row["connection_id"] for row in rows]


@pytest.mark.usefixtures("lambda_env")
def test_the_sweep_s_batch_queues_its_ends_without_the_trigger_s_second_look(
    database_url: str,
) -> None:
    """Its statement queues every end it writes; the trigger calling its function for
    each of them as well, to find it queued, was a third of a large batch's time."""
    for name in ("a=", "b=", "c="):
        _open(name)
    with psycopg.connect(database_url, row_factory=dict_row) as conn:  # one transaction
        conn.execute("set local track_functions = 'all'")
        _silent(conn, "a=", "b=", "c=")
        ended = conn.execute(f"select * from public.{CLOSE_STALE}(600, 7200, 100)").fetchall()
        calls = conn.execute(
            "select coalesce(pg_stat_get_xact_function_calls("
            "'public.tether_queue_direct_end()'::regprocedure), 0) as calls"
        ).fetchone()
        assert ended == [{"end_reason": "idle_timeout", "ended": 3}]
        assert _queued(conn) == ["a=", "b=", "c="]
    assert calls == {"calls": 0}


@pytest.mark.usefixtures("lambda_env")
def test_an_end_written_after_the_sweep_s_batch_in_its_transaction_is_queued(
    database_url: str,
) -> None:
    """What the batch tells the trigger lasts its own update, not the transaction."""
    _open("swept=")
    _open("direct=")
    with psycopg.connect(database_url, row_factory=dict_row) as conn:  # one transaction
        _silent(conn, "swept=")
        conn.execute(f"select * from public.{CLOSE_STALE}(600, 7200, 100)")
        conn.execute("set local role service_role")
        conn.execute(
            "update public.conversation_sessions set session_end = now(),"
            " end_reason = 'forced_close' where connection_id = 'direct='"
        )
        assert _queued(conn) == ["direct=", "swept="]


# A team's own trigger that ends a companion session when its primary ends: an end
# written during tether's update, by a write of the team's.
_TEAM_CASCADE = """
create function public.team_ends_the_companion() returns trigger language plpgsql as $$
begin
  update public.conversation_sessions set session_end = now(), end_reason = 'forced_close'
   where connection_id = 'companion=' and session_end is null;
  return null;
end $$;
create trigger team_ends_the_companion after update on public.conversation_sessions
  for each row when (old.session_end is null and new.session_end is not null
                     and new.connection_id = 'primary=')
  execute function public.team_ends_the_companion();
"""


@pytest.mark.usefixtures("lambda_env")
def test_an_end_a_team_s_trigger_writes_during_the_sweep_s_batch_is_queued(
    database_url: str, event_bus: EventBus
) -> None:
    _open("primary=")
    _open("companion=")
    with psycopg.connect(database_url, autocommit=True, row_factory=dict_row) as conn:
        conn.execute(_TEAM_CASCADE)
        _silent(conn, "primary=")
        ended = conn.execute(f"select * from public.{CLOSE_STALE}(600, 7200, 100)").fetchall()
        assert ended == [{"end_reason": "idle_timeout", "ended": 1}]
        assert _queued(conn) == ["companion=", "primary="]

    report = sweep.lambda_handler(load_event("scheduled"), FakeLambdaContext(time_limit_seconds=11))
    assert report["announced"] == 2
    assert sorted(e["detail"]["connection_id"] for e in event_bus.received()) == [
        "companion=",
        "primary=",
    ]
