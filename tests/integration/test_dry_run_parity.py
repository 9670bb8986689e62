"""What a dry run counts is what the real run then does, for any session table: the
sweep's dry run gives, per reason, the ends the run reports, the suspects it asks about
and the ends it announces; close-orphans' dry run, per reason, what --apply ends; kick lists
what it closes."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from dataclasses import dataclass

import psycopg
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from tests import connections_standin
from tests.conftest import SessionFactory
from tests.connections_standin import ConnectionsStandIn
from tests.support import run_tether
from tether import runtime
from tether.cli import main
from tether.drivers.postgres import PostgresStore
from tether.handlers.sweep import run_sweep
from tether.settings import load_settings
from tether.sweep import SweepPolicy

Conn = psycopg.Connection[dict[str, object]]

# The sweep's limits with the default settings, grace included (11 minutes, 2 hours 1
# minute), and its suspects' silence; every moment drawn stays a minute off each limit's
# edges and seconds off the silence's, so the few milliseconds between the dry run and
# the run never move a session across one.
IDLE = 660
MAX_AGE = 7260
MARGIN = 60
SPAN = 3 * MAX_AGE
SUSPECT_AFTER = 20
SUSPECT_MARGIN = 5
LEASE = 300


@dataclass(frozen=True)
class Row:
    started_ago: int
    seen_ago: int
    intent_ago: int | None
    """When its end intent was recorded (heartbeat_timeout); in force while no sign of
    life came after it (intent_ago <= seen_ago)."""
    ended_ago: int | None
    announced: bool
    asked: str = "never"
    """Its last question to the gateway: "never", "expired" (a lease ended), or "held"
    (a run under way is asking about it)."""
    held: bool = False
    """Its end waits in the outbox leased to a caller announcing it."""


def _off_the_edges(row: Row) -> bool:
    edges = [
        row.started_ago - MAX_AGE,  # past the age limit
        row.seen_ago - IDLE,  # past the idle limit
        (row.started_ago - row.seen_ago) - (MAX_AGE - IDLE),  # which limit came first
    ]
    if abs(row.seen_ago - SUSPECT_AFTER) < SUSPECT_MARGIN:  # silent enough to ask about
        return False
    if row.intent_ago is not None:
        edges.append(row.started_ago - row.intent_ago - MAX_AGE)  # intent before the age limit
    return all(abs(edge) >= MARGIN for edge in edges)


@st.composite
def rows(draw: st.DrawFn) -> Row:
    started_ago = draw(st.integers(0, SPAN))
    seen_ago = draw(st.integers(0, started_ago))
    intent = draw(st.sampled_from(["none", "in force", "void"]))
    intent_ago = None
    if intent == "in force":
        intent_ago = draw(st.integers(0, seen_ago))
    elif intent == "void" and seen_ago < started_ago:
        intent_ago = draw(st.integers(seen_ago + 1, started_ago))
    ended_ago = draw(st.none() | st.integers(0, seen_ago))
    row = Row(
        started_ago,
        seen_ago,
        intent_ago,
        ended_ago,
        announced=draw(st.booleans()),
        asked=draw(st.sampled_from(["never", "expired", "held"])),
        held=draw(st.booleans()),
    )
    # Redrawn, rarely, rather than nudged: a nudged moment would break the order above.
    return draw(st.just(row).filter(_off_the_edges))


def _place(db: Conn, table: list[Row]) -> list[str]:
    """The table, each row's moments counted from its statement's now(); the
    connections of its active sessions."""
    db.execute("delete from public.conversation_sessions")
    db.execute("delete from public.conversation_session_announcements")
    active = []
    for index, row in enumerate(table):
        placed = db.execute(
            """
            insert into public.conversation_sessions
              (connection_id, session_start, last_seen_at, end_intent_reason, end_intent_at,
               session_end, end_reason, announced_at, check_after)
            values (
              %(connection_id)s,
              now() - make_interval(secs => %(started)s),
              now() - make_interval(secs => %(seen)s),
              case when %(intent)s::int is not null then 'heartbeat_timeout' end,
              now() - make_interval(secs => %(intent)s),
              now() - make_interval(secs => %(ended)s),
              case when %(ended)s::int is not null then 'client_disconnect' end,
              case when %(ended)s::int is not null and %(announced)s then now() end,
              case %(asked)s when 'expired' then now() - make_interval(secs => %(lease)s)
                             when 'held' then now() + make_interval(secs => %(lease)s) end
            )
            returning session_id, connection_id, is_active,
                      session_end is not null and announced_at is null as queued
            """,
            {
                "connection_id": f"row{index:03d}=",
                "started": row.started_ago,
                "seen": row.seen_ago,
                "intent": row.intent_ago,
                "ended": row.ended_ago,
                "announced": row.announced,
                "asked": row.asked,
                "lease": LEASE,
            },
        ).fetchone()
        assert placed is not None
        if placed["is_active"]:
            active.append(str(placed["connection_id"]))
        if placed["queued"]:
            # Ended, not yet announced: waiting in the outbox.
            db.execute(
                "insert into public.conversation_session_announcements"
                " (session_id, announce_after) values (%s, now() + make_interval(secs => %s))",
                (placed["session_id"], LEASE if row.held else 0),
            )
    return active


@pytest.fixture
def local_store(database_url: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[PostgresStore]:
    """The settings the commands run with on this test's database, announcing to the
    log, with no @connections endpoint."""
    for name in ("DATABASE_URL", "SUPABASE_URL", "TETHER_CONNECTIONS_ENDPOINT"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("TETHER_DATABASE_URL", database_url)
    monkeypatch.setenv("TETHER_ANNOUNCE_TO", "log")
    runtime.reset()
    store = PostgresStore(database_url)
    yield store
    store.close()
    runtime.reset()


@pytest.fixture
def gateway(
    local_store: PostgresStore, monkeypatch: pytest.MonkeyPatch
) -> Iterator[ConnectionsStandIn]:
    """The suite's @connections stand-in as the sweep's gateway."""
    with connections_standin.serve() as state:
        monkeypatch.setenv("TETHER_CONNECTIONS_ENDPOINT", state.url)
        runtime.reset()
        yield state


@settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.filter_too_much],
)
@given(table=st.lists(rows(), max_size=12))
def test_the_sweep_s_dry_run_counts_what_the_run_does(
    table: list[Row], local_store: PostgresStore, gateway: ConnectionsStandIn, db: Conn
) -> None:
    """Per reason, the ends the run reports; the suspects it asks the gateway about
    (every connection alive, just heard from); the ends it announces."""
    gateway.alive.clear()
    for connection_id in _place(db, table):
        gateway.set_alive(connection_id, idle_seconds=0)
    policy = SweepPolicy.from_settings(load_settings())
    limits = (policy.idle_limit_seconds, policy.max_age_seconds, policy.suspect_after_seconds)
    assert limits == (IDLE, MAX_AGE, SUSPECT_AFTER)
    preview = local_store.sweep_preview(
        idle_seconds=policy.idle_limit_seconds,
        max_age_seconds=policy.max_age_seconds,
        silent_seconds=policy.suspect_after_seconds,
    )
    report = run_sweep(lambda: 60.0, metrics=False, keep_checking=False, store=local_store)
    said = {
        "max_duration": preview.past_max_age,
        "idle_timeout": preview.past_idle,
        "heartbeat_timeout": preview.intended,
    }
    assert {reason: n for reason, n in said.items() if n} == dict(report.ended_by_reason)
    assert report.checked == preview.suspects
    # Every end waiting is announced, and every end the run made; those a lease holds
    # are left to whoever holds them.
    assert report.announced == preview.unannounced + report.ended


def test_the_sweep_s_dry_run_says_which_ends_an_end_intent_gives(
    database_url: str, db: Conn, make_session: SessionFactory
) -> None:
    """A sweep killed after closing silent clients at the gateway left their end intents;
    the dry run said it would end them past the idle limit, the run ended them as
    heartbeat_timeout."""
    for name in ("closed-a=", "closed-b="):
        make_session(connection_id=name, started_seconds_ago=3600, seen_seconds_ago=1800)
    make_session(connection_id="idle=", started_seconds_ago=3600, seen_seconds_ago=1800)
    db.execute(
        "update public.conversation_sessions set end_intent_reason = 'heartbeat_timeout',"
        " end_intent_at = last_seen_at where connection_id like 'closed-%'"
    )
    env = {"TETHER_ANNOUNCE_TO": "log"}
    dry = run_tether("sweep", "--dry-run", "--database-url", database_url, env=env)
    assert dry.returncode == 0, dry.stderr
    assert "would end 0 past the age limit (max_duration)" in dry.stdout
    assert "would end 1 past the idle limit (idle_timeout)" in dry.stdout
    assert "would end 2 with the reason their end intent gave" in dry.stdout
    dry_json = run_tether("sweep", "--dry-run", "--json", "--database-url", database_url, env=env)
    assert json.loads(dry_json.stdout) == {
        "past_max_age": 0,
        "past_idle": 1,
        "intended": 2,
        "suspects": 0,
        "unannounced": 0,
        "unannounced_held": 0,
    }
    result = run_tether("sweep", "--database-url", database_url, env=env)
    assert result.returncode == 0, result.stderr
    assert "ended 3 session(s): 2 heartbeat_timeout, 1 idle_timeout" in result.stdout


def test_the_sweep_s_dry_run_leaves_out_what_a_lease_holds(
    database_url: str, db: Conn, make_session: SessionFactory
) -> None:
    """A $disconnect announcing its own end holds it by a lease; the dry run counted it
    as an end it would announce, and the run then announced none."""
    held = make_session(started_seconds_ago=600, ended_seconds_ago=10)
    make_session(started_seconds_ago=600, ended_seconds_ago=10)
    db.execute(
        "update public.conversation_session_announcements"
        " set announce_after = now() + interval '5 minutes' where session_id = %s",
        (held["session_id"],),
    )
    env = {"TETHER_ANNOUNCE_TO": "log"}
    dry = run_tether("sweep", "--dry-run", "--database-url", database_url, env=env)
    assert dry.returncode == 0, dry.stderr
    assert "would announce 1 unannounced end(s)" in dry.stdout
    assert "1 more end(s) held for whoever is announcing them" in dry.stdout
    result = run_tether("sweep", "--database-url", database_url, env=env)
    assert result.returncode == 0, result.stderr
    assert "announced 1, redelivered 0" in result.stdout


# --- tether close-orphans: the dry run's counts are what --apply ends -----------------

ORPHAN_AGE = 2 * 3600


@st.composite
def orphan_rows(draw: st.DrawFn) -> Row:
    """Sessions either side of the age asked for, some past the sweep's limits, some
    with an end intent in force or void, some ended; a minute off the age's edge."""
    started_ago = draw(
        st.integers(0, ORPHAN_AGE - MARGIN) | st.integers(ORPHAN_AGE + MARGIN, 20 * 86400)
    )
    seen_ago = draw(st.integers(0, started_ago))
    intent = draw(st.sampled_from(["none", "in force", "void"]))
    intent_ago = None
    if intent == "in force":
        intent_ago = draw(st.integers(0, seen_ago))
    elif intent == "void" and seen_ago < started_ago:
        intent_ago = draw(st.integers(seen_ago + 1, started_ago))
    ended_ago = draw(st.none() | st.integers(0, seen_ago))
    return Row(started_ago, seen_ago, intent_ago, ended_ago, draw(st.booleans()))


def _run(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str]:
    """A command run in this process, as the operator runs it; its status and stdout."""
    capsys.readouterr()
    try:
        status = main(list(args))
    finally:
        runtime.reset()
    return status, capsys.readouterr().out


@settings(
    max_examples=15,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(table=st.lists(orphan_rows(), max_size=12))
def test_close_orphans_ends_what_its_dry_run_counted(
    table: list[Row],
    local_store: PostgresStore,
    database_url: str,
    db: Conn,
    capsys: pytest.CaptureFixture[str],
) -> None:
    _place(db, table)
    command = ("close-orphans", "--older-than", "2h", "--json", "--database-url", database_url)
    status, out = _run(capsys, *command)
    assert status == 0
    dry = json.loads(out)
    status, out = _run(capsys, *command, "--apply", "--yes", "--announce-to", "log")
    assert status == 0
    applied = json.loads(out)
    assert applied["ended"] == dry["found"] == applied["found"]
    # Reason by reason: an end intent in force (heartbeat_timeout here) keeps its reason.
    said = {"orphan_cleanup": dry["found"] - dry["intended"], "heartbeat_timeout": dry["intended"]}
    assert {reason: n for reason, n in said.items() if n} == applied["ended_by_reason"]
    # The ends waiting before are announced too (when it found any to end), and said
    # apart from its own.
    waiting = sum(1 for row in table if row.ended_ago is not None and not row.announced)
    if not dry["found"]:
        waiting = 0  # nothing to end: nothing is announced either
    assert applied["announced_others"] == waiting
    assert applied["announced"] == applied["ended"] + waiting
    left = db.execute(
        "select count(*) as n from public.conversation_sessions"
        " where is_active and session_start < now() - interval '2 hours'"
    ).fetchone()
    assert left == {"n": 0}


# --- tether kick --user: the sessions it lists are those it closes --------------------

KICKED = uuid.UUID(int=7)


def _place_user(db: Conn, live: int, ended: int, others: int) -> None:
    """The user's live and ended sessions, and another user's live ones, any age."""
    db.execute("delete from public.conversation_sessions")
    db.execute(
        """
        insert into public.conversation_sessions
          (connection_id, user_id, session_start, last_seen_at, session_end, end_reason)
        select 'kick' || n || '=',
               case when n < %(live)s + %(ended)s then %(user)s else gen_random_uuid() end,
               now() - make_interval(secs => n * 37 %% 20000),
               now() - make_interval(secs => n * 37 %% 20000),
               case when n >= %(live)s and n < %(live)s + %(ended)s then now() end,
               case when n >= %(live)s and n < %(live)s + %(ended)s
                    then 'client_disconnect' end
        from generate_series(0, %(live)s + %(ended)s + %(others)s - 1) as n
        """,
        {"user": KICKED, "live": live, "ended": ended, "others": others},
    )


@settings(
    max_examples=4,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(live=st.integers(0, 4), ended=st.integers(0, 3), others=st.integers(0, 3))
# The operators' pages hold 500 sessions at most: both sides of a full one.
@example(live=500, ended=1, others=1)
@example(live=501, ended=0, others=2)
def test_kick_closes_the_sessions_it_listed(
    live: int,
    ended: int,
    others: int,
    local_store: PostgresStore,
    database_url: str,
    db: Conn,
    capsys: pytest.CaptureFixture[str],
) -> None:
    _place_user(db, live, ended, others)
    with connections_standin.serve() as gateway:
        status, out = _run(
            capsys,
            "kick", "--user", str(KICKED), "--yes", "--announce-to", "log",
            "--endpoint-url", gateway.url, "--database-url", database_url,
        )  # fmt: skip
    assert status == 0
    lines = out.splitlines()
    if not live:
        assert lines == [f"user {KICKED} has no live session"]
        return
    assert lines[0] == f"user {KICKED} has {live} live session(s):"
    listed = {line.split()[0] for line in lines[1:] if " since " in line}
    closed = {line.split(":")[0].strip() for line in lines if line.endswith(": already_gone")}
    assert lines[-1] == f"closed {live} session(s) of user {KICKED}"
    assert listed == closed
    assert len(listed) == live
