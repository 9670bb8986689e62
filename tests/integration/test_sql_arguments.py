"""The sweep's and the outbox's SQL functions, called as any holder of service_role can
call them: a bad argument is refused (SQLSTATE 22023, a message that says what is
wrong) with nothing written, and an announcer's late release leaves alone a claim
another announcer holds now."""

from __future__ import annotations

import uuid
from datetime import datetime

import psycopg
import pytest
from psycopg import errors

from tests.conftest import SessionFactory
from tether.drivers.postgres import PostgresStore
from tether.models import EndReason, OpenSessionRequest

Conn = psycopg.Connection[dict[str, object]]

# (the call, with :id a live session and :ended an ended one, what its refusal says)
REFUSED: list[tuple[str, str]] = [
    (
        "tether_intend_end_v2(null, 'gone', null)",
        "session ids and end times are required (empty arrays for none)",
    ),
    (
        "tether_intend_end_v2(array[:id], 'gone', array[]::timestamptz[])",
        "one end time per session is required, got 0 for 1 session(s)",
    ),
    (
        "tether_intend_end_v2(array[null, :id]::uuid[], 'gone', array[now(), now()])",
        "a session id cannot be null",
    ),
    (
        "tether_intend_end_v2(array[:id], 'gone', array[null]::timestamptz[])",
        "a session's end time cannot be null",
    ),
    (
        "tether_intend_end_v2(array[:id, :id], 'gone', array[now() - interval '8 minutes',"
        " now() - interval '2 minutes'])",
        "a session is listed more than once",
    ),
    (
        "tether_intend_end_v2(array[:id], 'gone', array['infinity']::timestamptz[])",
        "an end time must be a finite moment",
    ),
    (
        "tether_end_sessions_v1(array[:id], null, array[now()])",
        "an end reason is required",
    ),
    (
        "tether_end_sessions_v1(array[:id, :ended], 'heartbeat_timeout', array[now()])",
        "one end time per session is required, got 1 for 2 session(s)",
    ),
    (
        "tether_end_sessions_v1(array[:id, :id], 'heartbeat_timeout', array[now(), now()])",
        "a session is listed more than once",
    ),
    (
        "tether_end_sessions_v1(array[:id], 'heartbeat_timeout', array[null]::timestamptz[])",
        "a session's end time cannot be null",
    ),
    (
        "tether_end_sessions_v1(array[:id], 'heartbeat_timeout',"
        " array['-infinity']::timestamptz[])",
        "an end time must be a moment a client can read (years 1 to 9999)",
    ),
    (
        "tether_end_sessions_v1(array[:id], 'heartbeat_timeout',"
        " array['0001-01-01 12:00+00']::timestamptz[])",
        "an end time must be a moment a client can read (years 1 to 9999)",
    ),
    (
        "tether_settle_suspects_v2(array[:id], array['infinity']::timestamptz[])",
        "a last active time must be a finite moment",
    ),
    (
        "tether_release_announcements_v2(array[:ended, :ended], array[0, 7])",
        "a session is listed more than once",
    ),
    (
        "tether_settle_suspects_v2(array[:id, :ended], array[now()])",
        "one last active time per session is required, got 1 for 2 session(s)",
    ),
    (
        "tether_settle_suspects_v2(array[:id], null)",
        "session ids and last active times are required",
    ),
    (
        "tether_release_announcements_v2(array[:ended], array[-1])",
        "a claim count cannot be negative",
    ),
    (
        "tether_release_announcements_v2(array[:ended], array[null]::integer[])",
        "a session's claim count cannot be null",
    ),
    (
        "tether_release_announcements_v2(array[:ended], null)",
        "session ids and claim counts are required",
    ),
    (
        "tether_close_orphans_v2('Infinity', 10)",
        "age must be more than 0 and at most 31622400 seconds, got Infinity",
    ),
    ("tether_close_orphans_v2(0, 10)", "age must be more than 0 and at most 31622400 seconds"),
    ("tether_orphan_summary_v2(null)", "age must be more than 0 and at most 31622400 seconds"),
    ("tether_orphan_summary_v2(-5)", "got -5"),
    (
        "tether_close_orphans_v3('Infinity', 10)",
        "age must be more than 0 and at most 31622400 seconds, got Infinity",
    ),
    ("tether_close_orphans_v3(0, 10)", "age must be more than 0 and at most 31622400 seconds"),
    ("tether_close_orphans_v3(7200, 0)", "batch size must be between 1 and 10000"),
    ("tether_orphan_summary_v3(null)", "age must be more than 0 and at most 31622400 seconds"),
    ("tether_orphan_summary_v3(-5)", "got -5"),
    ("tether_sweep_preview_v2(null, 7200, 20)", "idle limit must be more than 0"),
    ("tether_sweep_preview_v2(600, 'NaN', 20)", "age limit must be more than 0"),
    ("tether_sweep_preview_v2(600, 7200, -1)", "silence must be between 0 and 86400 seconds"),
    ("tether_sweep_preview_v3(null, 7200, 20)", "idle limit must be more than 0"),
    ("tether_sweep_preview_v3(600, 'NaN', 20)", "age limit must be more than 0"),
    ("tether_sweep_preview_v3(600, 7200, -1)", "silence must be between 0 and 86400 seconds"),
    ("tether_sweep_preview_v4(null, 7200, 20)", "idle limit must be more than 0"),
    ("tether_sweep_preview_v4(600, 'NaN', 20)", "age limit must be more than 0"),
    ("tether_sweep_preview_v4(600, 7200, -1)", "silence must be between 0 and 86400 seconds"),
    ("tether_close_stale_v2('Infinity', 7200, 10)", "idle limit must be more than 0"),
    ("tether_close_stale_v2(600, null, 10)", "age limit must be more than 0"),
    ("tether_close_stale_v2(600, 7200, 0)", "batch size must be between 1 and 10000"),
    ("tether_close_stale_v3('Infinity', 7200, 10)", "idle limit must be more than 0"),
    ("tether_close_stale_v3(600, null, 10)", "age limit must be more than 0"),
    ("tether_close_stale_v3(600, 7200, 0)", "batch size must be between 1 and 10000"),
    ("tether_close_stale_v4('Infinity', 7200, 10)", "idle limit must be more than 0"),
    ("tether_close_stale_v4(600, null, 10)", "age limit must be more than 0"),
    ("tether_close_stale_v4(600, 7200, 0)", "batch size must be between 1 and 10000"),
    (
        "tether_record_sweep_v2(600, 7200, '[1, 2]'::jsonb, null)",
        "a sweep report must be a JSON object, got array",
    ),
    (
        "tether_record_sweep_v2(600, 7200, '{}'::jsonb, '-infinity')",
        "a sweep's start must be a readable moment, got -infinity",
    ),
    ("tether_record_sweep_v2(600, 'Infinity', null, null)", "age limit must be more than 0"),
]


def _everything(db: Conn) -> list[object]:
    """Every row each of these functions could write."""
    return [
        db.execute(f"select * from {table} order by 1").fetchall()
        for table in (
            "public.conversation_sessions",
            "public.conversation_session_announcements",
            "tether.sweep_state",
            "tether.sweep_runs",
        )
    ]


@pytest.mark.parametrize(("call", "says"), REFUSED, ids=[call for call, _ in REFUSED])
def test_a_bad_argument_is_refused_with_nothing_written(
    database_url: str, db: Conn, make_session: SessionFactory, call: str, says: str
) -> None:
    live = make_session(started_seconds_ago=3 * 3600, seen_seconds_ago=600)
    ended = make_session(started_seconds_ago=900, ended_seconds_ago=600)
    before = _everything(db)
    statement = "select * from public." + call.replace(":id", "%(id)s").replace(
        ":ended", "%(ended)s"
    )
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute("set role service_role")
        with pytest.raises(errors.InvalidParameterValue) as refused:
            conn.execute(statement, {"id": live["session_id"], "ended": ended["session_id"]})
    assert says in str(refused.value)
    assert _everything(db) == before


def test_a_late_release_leaves_the_claim_another_announcer_holds_now(database_url: str) -> None:
    """The end's own try outlived its lease; the sweep claimed the end and is sending it.
    The end's release, arriving late, must not hand the sweep's claim back to the queue
    (another sweep would send it a second time); the sweep's own release still works."""
    store = PostgresStore(database_url)
    try:
        store.open_session(OpenSessionRequest(connection_id="late="))
        end = store.end_session("late=", EndReason.CLIENT_DISCONNECT, announce_lease_seconds=0)
        assert end.session is not None
        session_id = end.session.session_id
        claimed = store.claim_unannounced(limit=10, lease_seconds=600)
        assert [(s.session_id, s.claim_count) for s in claimed] == [(session_id, 1)]

        assert store.release_announcements({session_id: 0}) == 0  # the end's own try
        assert store.claim_unannounced(limit=10, lease_seconds=600) == []  # still the sweep's

        assert store.release_announcements({session_id: 1}) == 1  # the sweep's
        again = store.claim_unannounced(limit=10, lease_seconds=600)
        assert [(s.session_id, s.claim_count) for s in again] == [(session_id, 2)]
    finally:
        store.close()


def test_a_release_of_no_known_end_releases_nothing(database_url: str) -> None:
    store = PostgresStore(database_url)
    try:
        assert store.release_announcements({}) == 0
        assert store.release_announcements({uuid.uuid4(): 0}) == 0
    finally:
        store.close()


@pytest.mark.parametrize(
    ("arguments", "says"),
    [
        ("'gone', null, 'infinity'", "the end time must be a moment a client can read"),
        ("'gone', null, '-infinity'", "the end time must be a moment a client can read"),
        ("'gone', null, '0001-01-01 00:00:00+00'", "the end time must be a moment"),
        ("'gone', -99999, null", "status code must be between 1000 and 4999"),
        ("'gone', 5000, null", "status code must be between 1000 and 4999"),
    ],
)
def test_an_end_no_client_can_read_is_refused_with_nothing_written(
    database_url: str, db: Conn, make_session: SessionFactory, arguments: str, says: str
) -> None:
    """v2 took 'infinity' as now, and '-infinity' as the start: a session an hour old
    ended with a duration of 0; and it stored any status code."""
    live = make_session(started_seconds_ago=3600, seen_seconds_ago=60)
    before = _everything(db)
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute("set role service_role")
        with pytest.raises(errors.InvalidParameterValue) as refused:
            conn.execute(
                f"select * from public.tether_end_session_v3(%(connection)s, {arguments})",
                {"connection": live["connection_id"]},
            )
    assert says in str(refused.value)
    assert _everything(db) == before


def test_an_end_never_comes_before_the_last_sign_of_life(
    database_url: str, db: Conn, make_session: SessionFactory
) -> None:
    """The sweep found the session silent and intended its end at its last sign of
    life; a heartbeat came before the sweep's close; the sweep's end still carries the
    earlier moment. v2 recorded it: an end five minutes before the last heartbeat."""
    live = make_session(started_seconds_ago=600, seen_seconds_ago=300)
    store = PostgresStore(database_url)
    try:
        silent_since = db.execute(
            "select last_seen_at from public.conversation_sessions where session_id = %s",
            (live["session_id"],),
        ).fetchone()
        assert silent_since is not None
        silent_at = silent_since["last_seen_at"]
        assert isinstance(silent_at, datetime)
        session_id = uuid.UUID(str(live["session_id"]))
        store.intend_end(EndReason.HEARTBEAT_TIMEOUT, {session_id: silent_at})
        store.touch_session(str(live["connection_id"]), 0)  # the heartbeat
        ended = store.end_session(
            str(live["connection_id"]), EndReason.HEARTBEAT_TIMEOUT, ended_at=silent_at
        )
    finally:
        store.close()
    assert ended.session is not None
    row = db.execute(
        "select session_end, last_seen_at from public.conversation_sessions where session_id = %s",
        (live["session_id"],),
    ).fetchone()
    assert row is not None
    session_end, last_seen_at = row["session_end"], row["last_seen_at"]
    assert isinstance(session_end, datetime) and isinstance(last_seen_at, datetime)
    assert session_end >= last_seen_at > silent_at
