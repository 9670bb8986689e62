"""SupabaseStore: supabase-py's rpc() to the same SQL functions.

The HTTP server here is a stand-in for PostgREST (see tests/postgrest_standin.py),
forwarding each rpc call to the test's real database as the role in the token.
It proves the driver's wire format and error mapping, not PostgREST itself."""

from __future__ import annotations

import socket
import threading
import time
import traceback
import uuid
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import jwt
import psycopg
import pytest

from tests import postgrest_standin
from tests.conftest import SessionFactory, allow_connections, set_for_database
from tether.drivers import supabase as supabase_driver
from tether.drivers.postgres import PostgresStore
from tether.drivers.supabase import SupabaseStore
from tether.errors import (
    ConfigurationError,
    DatabaseError,
    DatabaseUnavailableError,
    InvalidInputError,
)
from tether.models import EndOutcome, EndReason, OpenSessionRequest, TouchOutcome
from tether.store import SessionStore
from tether.sweep_and_admin_models import SessionFilter

JWT_SECRET = "super-secret-jwt-token-with-at-least-32-characters-long"
# Supabase's new secret keys are no JWT: no pattern for tokens in logs finds them.
SECRET_KEY = "sb_secret_N7UND0UgjKTVK-Uodkm0Hg_xSvEMPvz"


def _key(role: str) -> str:
    now = int(time.time())
    return jwt.encode(
        {"role": role, "iss": "supabase-demo", "iat": now, "exp": now + 3600},
        JWT_SECRET,
        algorithm="HS256",
    )


@pytest.fixture
def supabase_url(database_url: str) -> Iterator[str]:
    with postgrest_standin.serve(database_url, JWT_SECRET) as url:
        yield url


@pytest.fixture
def supabase_store(supabase_url: str) -> SupabaseStore:
    return SupabaseStore(supabase_url, _key("service_role"))


@pytest.fixture(params=["postgres", "supabase"])
def either_store(
    request: pytest.FixtureRequest, supabase_url: str, database_url: str
) -> Iterator[SessionStore]:
    """Each driver in turn on the test's database; neither connects before its first call,
    so a test may set the database up first."""
    store: SessionStore = (
        SupabaseStore(supabase_url, _key("service_role"))
        if request.param == "supabase"
        else PostgresStore(database_url)
    )
    yield store
    store.close()


def test_full_lifecycle_matches_the_postgres_driver(
    supabase_store: SupabaseStore, db: psycopg.Connection[dict[str, object]]
) -> None:
    user = uuid.uuid4()
    started = datetime.now(UTC) - timedelta(seconds=90)
    opened = supabase_store.open_session(
        OpenSessionRequest(
            connection_id="sb=", user_id=user, connected_at=started, source_ip="203.0.113.9"
        )
    )
    assert opened.opened and opened.user_id == user
    assert opened.session_start == started
    assert supabase_store.open_session(OpenSessionRequest(connection_id="sb=")).opened is False

    assert supabase_store.touch_session("sb=", 0).outcome is TouchOutcome.TOUCHED
    assert supabase_store.touch_session("sb=", 300).outcome is TouchOutcome.THROTTLED

    ended = supabase_store.end_session("sb=", "client_disconnect", status_code=1001)
    assert ended.outcome is EndOutcome.ENDED
    assert ended.session is not None
    assert ended.session.duration_seconds == pytest.approx(90, abs=5)
    assert supabase_store.end_session("sb=", "gone").outcome is EndOutcome.ALREADY_ENDED
    assert supabase_store.end_session("unknown=", "gone").outcome is EndOutcome.UNKNOWN

    row = db.execute(
        "select is_active, end_reason, disconnect_status_code, source_ip"
        " from public.conversation_sessions where connection_id = 'sb='"
    ).fetchone()
    assert row == {
        "is_active": False,
        "end_reason": "client_disconnect",
        "disconnect_status_code": 1001,
        "source_ip": "203.0.113.9",
    }


def test_queue_and_stale_sweep_through_rpc(
    supabase_store: SupabaseStore, database_url: str, make_session: SessionFactory
) -> None:
    for _ in range(3):
        make_session(started_seconds_ago=3 * 3600, seen_seconds_ago=60)
    closed = supabase_store.close_stale(idle_seconds=600, max_age_seconds=7200, limit=10)
    assert closed == {EndReason.MAX_DURATION: 3}
    make_session(started_seconds_ago=100, ended_seconds_ago=10)
    claimed = supabase_store.claim_unannounced(limit=10, lease_seconds=60)
    assert len(claimed) == 4
    assert supabase_store.mark_announced([s.session_id for s in claimed]) == 4
    # Both drivers see the same rows.
    postgres_store = PostgresStore(database_url)
    try:
        assert postgres_store.claim_unannounced(limit=10) == []
    finally:
        postgres_store.close()


def test_the_sweep_s_intents_come_back_keyed_by_session_id(
    supabase_store: SupabaseStore, make_session: SessionFactory
) -> None:
    """The sweep closes at the gateway what intend_end returns, looked up by session id.
    PostgREST answers ids as text; read as text, no intent matched its session, and
    every silent client looked alive after all."""
    silent = make_session(started_seconds_ago=600, seen_seconds_ago=300)
    session_id = uuid.UUID(str(silent["session_id"]))
    intended = supabase_store.intend_end(
        EndReason.HEARTBEAT_TIMEOUT, {session_id: datetime.now(UTC)}
    )
    assert intended == {session_id: silent["connection_id"]}


def test_the_sweep_s_ends_of_a_batch_are_one_call_through_either_driver(
    either_store: SessionStore,
    db: psycopg.Connection[dict[str, object]],
    make_session: SessionFactory,
) -> None:
    """Ids and end times reach the function as arrays through PostgREST as through
    psycopg; an end a $disconnect recorded first is kept, and not counted."""
    closed = {
        uuid.UUID(str(make_session(started_seconds_ago=600, seen_seconds_ago=300)["session_id"]))
        for _ in range(3)
    }
    last_sign = datetime.now(UTC) - timedelta(seconds=300)
    intended = either_store.intend_end(
        EndReason.HEARTBEAT_TIMEOUT, dict.fromkeys(closed, last_sign)
    )
    assert intended.keys() == closed
    first_disconnected = sorted(closed)[0]
    assert (
        either_store.end_session(
            intended[first_disconnected], EndReason.CLIENT_DISCONNECT, status_code=1001
        ).outcome
        is EndOutcome.ENDED
    )

    ended = either_store.end_sessions(EndReason.HEARTBEAT_TIMEOUT, dict.fromkeys(closed, last_sign))

    assert ended == {EndReason.HEARTBEAT_TIMEOUT: 2}
    assert (
        either_store.end_sessions(EndReason.HEARTBEAT_TIMEOUT, dict.fromkeys(closed, last_sign))
        == {}
    )
    rows = db.execute(
        "select s.end_reason, s.session_end = s.last_seen_at as at_last_sign,"
        " s.disconnect_status_code, a.session_id is not null as queued"
        " from public.conversation_sessions s"
        " left join public.conversation_session_announcements a using (session_id)"
        " where s.session_id = any(%s)",
        (list(closed),),
    ).fetchall()
    assert sorted(rows, key=str) == sorted(
        [
            {
                "end_reason": "heartbeat_timeout",
                "at_last_sign": True,
                "disconnect_status_code": 1001,
                "queued": True,
            },
        ]
        + [
            {
                "end_reason": "heartbeat_timeout",
                "at_last_sign": True,
                "disconnect_status_code": None,
                "queued": True,
            },
        ]
        * 2,
        key=str,
    )


def test_the_sweep_s_and_the_commands_calls_through_rpc(
    supabase_store: SupabaseStore, make_session: SessionFactory
) -> None:
    """Arrays of ids, times and counts, JSON reports and ranges reach the SQL functions
    through PostgREST as they do through psycopg."""
    silent, alive, orphan = (
        uuid.UUID(str(make_session(started_seconds_ago=age, seen_seconds_ago=seen)["session_id"]))
        for age, seen in ((600, 300), (600, 300), (3 * 86400, 86400))
    )
    preview = supabase_store.sweep_preview(
        idle_seconds=3600, max_age_seconds=7200, silent_seconds=20
    )
    assert (preview.past_max_age, preview.suspects) == (1, 2)

    seen = datetime.now(UTC) - timedelta(seconds=5)
    assert supabase_store.settle_suspects({alive: seen, silent: None}) == 2

    assert supabase_store.orphan_summary(older_than_seconds=86400).orphans == 1
    assert supabase_store.close_orphans(older_than_seconds=86400, limit=10) == {
        orphan: EndReason.ORPHAN_CLEANUP
    }
    claimed = supabase_store.claim_unannounced(limit=10, lease_seconds=600)
    assert [s.session_id for s in claimed] == [orphan]
    assert supabase_store.release_announcements({orphan: 0}) == 0  # not the claim in force
    assert supabase_store.release_announcements({orphan: 1}) == 1

    started = supabase_store.record_sweep(idle_limit_seconds=600, max_age_seconds=7200)
    finished = supabase_store.record_sweep(
        idle_limit_seconds=600, max_age_seconds=7200, report={"ended": 1}, started_at=started
    )
    assert finished >= started
    with pytest.raises(InvalidInputError, match="at most 31622400 seconds"):
        supabase_store.orphan_summary(older_than_seconds=10**9)


def _without_the_readable_moments_check(db: psycopg.Connection[dict[str, object]]) -> None:
    """The table as it was before migration 20261130002000, which now refuses such
    moments: the rows it left, until the next one repaired them, are read so."""
    db.execute(
        "alter table public.conversation_sessions"
        " drop constraint conversation_sessions_moments_readable_check"
    )


def test_a_row_tether_cannot_read_is_a_database_error_through_either_driver(
    either_store: SessionStore,
    db: psycopg.Connection[dict[str, object]],
    make_session: SessionFactory,
) -> None:
    """A moment outside Python's years, written around the SQL functions: psycopg
    refuses it as it reads it; through PostgREST it arrives as text, and the models'
    refusal escaped every `except TetherError` (an application route's sign of life,
    the message handler's answer, the sweep's clean-up)."""
    make_session(connection_id="far=", started_seconds_ago=100)
    _without_the_readable_moments_check(db)
    db.execute(
        "update public.conversation_sessions set last_seen_at = 'infinity'"
        " where connection_id = 'far='"
    )
    with pytest.raises(DatabaseError):
        either_store.touch_session("far=", 0)
    with pytest.raises(DatabaseError):
        either_store.list_sessions(SessionFilter())


def test_moments_are_read_in_utc_whatever_the_server_s_time_zone(
    either_store: SessionStore, database_url: str, db: psycopg.Connection[dict[str, object]]
) -> None:
    """A server in New York, a session whose last sign of life came 20 s after its start,
    across the night the clocks went forward. psycopg gave both moments in the server's
    zone, where they subtract by their wall-clock readings: an hour and 20 s, enough for
    the sweep to take a live client for a silent one. Both drivers now read UTC."""
    set_for_database(database_url, "timezone", "America/New_York")
    db.execute(
        "insert into public.conversation_sessions (connection_id, session_start, last_seen_at)"
        " values ('dst=', '2026-03-08 06:59:50+00', '2026-03-08 07:00:10+00')"
    )
    [record] = either_store.list_sessions(SessionFilter())
    suspects = either_store.claim_suspects(silent_seconds=0, limit=10, lease_seconds=1)
    assert record.last_seen_at - record.session_start == timedelta(seconds=20)
    assert record.session_start == datetime(2026, 3, 8, 6, 59, 50, tzinfo=UTC)
    assert record.session_start.tzinfo is UTC
    assert [s.last_seen_at.tzinfo for s in suspects] == [UTC]


def test_a_moment_past_python_s_years_in_utc_is_a_database_error(
    either_store: SessionStore, database_url: str, db: psycopg.Connection[dict[str, object]]
) -> None:
    """A "never" typed on a New York server, '9999-12-31 23:59:59', is in year 10000 in
    UTC: read in the server's zone it converted to UTC with an OverflowError, which
    escaped every `except TetherError`."""
    set_for_database(database_url, "timezone", "America/New_York")
    _without_the_readable_moments_check(db)
    db.execute(
        "insert into public.conversation_sessions (connection_id, session_start, last_seen_at)"
        " values ('never=', now(), '9999-12-31 23:59:59-05')"
    )
    with pytest.raises(DatabaseError):
        either_store.list_sessions(SessionFilter())
    with pytest.raises(DatabaseError):
        either_store.touch_session("never=", 0)


def test_an_answer_cut_by_max_rows_is_said_not_taken_for_all(
    database_url: str, db: psycopg.Connection[dict[str, object]], make_session: SessionFactory
) -> None:
    """PostgREST's max-rows (Supabase's 'Max rows') cuts an rpc's rows after the
    function ran whole. A sweep batch over it read the cut answer as all there was: 3
    orphans ended and reported as 2, the third's connection never closed; 3 ends
    claimed and 2 announced, the third waiting out its lease. A call whose rows fit
    is answered as before."""
    for _ in range(3):
        make_session(started_seconds_ago=3 * 86400, seen_seconds_ago=86400)
    with postgrest_standin.serve(database_url, JWT_SECRET, max_rows=2) as url:
        store = SupabaseStore(url, _key("service_role"))
        with pytest.raises(DatabaseError, match="returned 3 rows and PostgREST answered 2"):
            store.close_orphans(older_than_seconds=86400, limit=10)
        with pytest.raises(DatabaseError, match="Max rows"):
            store.claim_unannounced(limit=10, lease_seconds=600)
        assert len(store.claim_unannounced(limit=10, lease_seconds=600)) == 0
        assert store.open_session(OpenSessionRequest(connection_id="fits=")).opened
    row = db.execute(
        "select count(*) filter (where end_reason = 'orphan_cleanup') as ended,"
        " (select count(*) from public.conversation_session_announcements"
        "  where announce_after > now() + interval '300 seconds') as leased"
        " from public.conversation_sessions"
    ).fetchone()
    assert row == {"ended": 3, "leased": 3}


@pytest.mark.parametrize("span", ["0-0/abc", "0-0/"])
def test_a_count_that_is_no_number_is_a_database_error(span: str) -> None:
    """The count is asked for, so postgrest-py reads Content-Range: a proxy's that holds
    no number raised its ValueError out of the store."""
    with (
        _answering(200, "application/json", b"[{}]", {"Content-Range": span}) as store,
        pytest.raises(DatabaseError, match="an answer tether cannot read"),
    ):
        store.mark_announced([uuid.uuid4()])


def test_bad_input_maps_to_the_same_typed_errors(
    supabase_store: SupabaseStore, db: psycopg.Connection[dict[str, object]]
) -> None:
    supabase_store.open_session(OpenSessionRequest(connection_id="bad="))
    with pytest.raises(InvalidInputError, match="throttle must be between"):
        supabase_store.touch_session("bad=", 10_000)
    with pytest.raises(InvalidInputError, match="idle limit"):
        supabase_store.close_stale(idle_seconds=-5, max_age_seconds=7200)
    row = db.execute("select is_active from public.conversation_sessions").fetchone()
    assert row == {"is_active": True}


@pytest.mark.parametrize("connection_id", ["a\x00b=", "a\ud800=", "\ud83d\ude42="])
def test_text_no_column_can_hold_is_bad_input_through_either_driver(
    either_store: SessionStore, connection_id: str, make_session: SessionFactory
) -> None:
    """A connection id with a NUL or a lone surrogate, through the library's own calls:
    psycopg's DataError was read as the database refusing, a UnicodeEncodeError escaped
    both drivers untyped, and PostgREST answers 22P05: one id, three answers."""
    make_session(connection_id="a=")
    for call in (
        lambda: either_store.touch_session(connection_id, 0),
        lambda: either_store.end_session(connection_id, "gone"),
    ):
        with pytest.raises(InvalidInputError, match="a NUL or a lone surrogate"):
            call()
    # A sound id with unicode still passes, as before.
    assert either_store.touch_session("é🙂=", 0).outcome is TouchOutcome.UNKNOWN


def test_anon_key_cannot_call_the_lifecycle(supabase_url: str) -> None:
    anon_store = SupabaseStore(supabase_url, _key("anon"))
    with pytest.raises(DatabaseError, match="42501"):
        anon_store.open_session(OpenSessionRequest(connection_id="evil="))


def test_a_service_key_refused_is_the_database_unavailable(
    supabase_url: str, db: psycopg.Connection[dict[str, object]]
) -> None:
    """A revoked or mistyped key reaches no database, as a refused password does through
    psycopg: the same error, so $disconnect says DisconnectFailed (it was a DatabaseError,
    a 500 and no alarm of its own), and nothing is written."""
    store = SupabaseStore(supabase_url, "not-the-project-s-key")
    with pytest.raises(DatabaseUnavailableError, match="TETHER_SUPABASE_SERVICE_KEY"):
        store.open_session(OpenSessionRequest(connection_id="refused-key="))
    found = db.execute(
        "select count(*) as n from public.conversation_sessions where connection_id = %s",
        ("refused-key=",),
    ).fetchone()
    assert found is not None and found["n"] == 0


def test_unreachable_supabase_is_database_unavailable() -> None:
    # A port nobody listens on: bind one, then close it.
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    store = SupabaseStore(f"http://127.0.0.1:{port}", _key("service_role"))
    with pytest.raises(DatabaseUnavailableError):
        store.end_session("x=", "gone")


def test_a_database_outage_behind_postgrest_is_database_unavailable(
    supabase_store: SupabaseStore, server_url: str, database_url: str
) -> None:
    """PostgREST answers 503 PGRST001 while its database is gone: the handlers and the
    sweep must read it as an outage (retry, DisconnectFailed), as psycopg's is read."""
    allow_connections(server_url, database_url, False)
    try:
        with pytest.raises(DatabaseUnavailableError, match="PGRST001"):
            supabase_store.end_session("x=", "gone")
    finally:
        allow_connections(server_url, database_url, True)
    assert supabase_store.end_session("x=", "gone").outcome is EndOutcome.UNKNOWN


@pytest.mark.parametrize(
    ("status", "kind", "page"),
    [
        (502, "text/html", b"<html><body>502 Bad Gateway</body></html>"),
        # Kong's own JSON, with no code: only the status says what happened.
        (502, "application/json", b'{"message":"An invalid response was received from'
         b' the upstream server"}'),
        (504, "application/json", b'{"message":"The upstream server is timing out"}'),
        (522, "text/html", b"<html><body>Connection timed out</body></html>"),  # Cloudflare
    ],
)  # fmt: skip
def test_a_proxy_error_page_in_front_of_postgrest_is_database_unavailable(
    status: int, kind: str, page: bytes
) -> None:
    with (
        _answering(status, kind, page) as store,
        pytest.raises(DatabaseUnavailableError, match=str(status)),
    ):
        store.end_session("x=", "gone")


@pytest.mark.parametrize(
    ("kind", "page"),
    [
        # Kong's rate limiting, in JSON with no code; a CDN's page.
        ("application/json", b'{"message":"API rate limit exceeded"}'),
        ("text/html", b"<html><body>429 Too Many Requests</body></html>"),
    ],
)
def test_a_rate_limit_is_database_unavailable_with_its_wait(kind: str, page: bytes) -> None:
    """429 read as the database refusing the call (DatabaseError): $disconnect answered
    500 with no DisconnectFailed, as for a bug, though nothing was written and the sweep
    must end the session; the handshake was refused as an internal error, not 503."""
    with (
        _answering(429, kind, page, {"Retry-After": "7"}) as store,
        pytest.raises(DatabaseUnavailableError, match=r"429: rate limited .*7s before"),
    ):
        store.end_session("x=", "gone")


@pytest.mark.parametrize("slow", ["head", "body"])
def test_an_answer_coming_a_byte_at_a_time_is_given_the_longest_call_in_all(
    slow: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """httpx's read timeout bounds each socket read alone: a proxy sending its answer's
    head or body a byte every 0.2 s held the call as long as it kept sending, past the
    handshake's Lambda timeout and API Gateway's 29 s. The call now gives up at the
    longest call the driver states (shortened here to 1 s), as the database unavailable."""
    monkeypatch.setattr(supabase_driver, "LONGEST_CALL_SECONDS", 1.0)
    head = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 60\r\n\r\n"
    sending = threading.Event()
    sending.set()

    class Dribbling(BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: object) -> None:
            """Quiet."""

        def do_POST(self) -> None:
            self.rfile.read(int(self.headers.get("Content-Length") or 0))
            quickly, slowly = (head, b" " * 60) if slow == "body" else (b"", head)
            self.wfile.write(quickly)
            for byte in slowly:
                if not sending.is_set():
                    return
                self.wfile.write(bytes([byte]))
                self.wfile.flush()
                time.sleep(0.2)

    server = ThreadingHTTPServer(("127.0.0.1", 0), Dribbling)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    store = SupabaseStore(f"http://127.0.0.1:{server.server_address[1]}", _key("service_role"))
    started = time.monotonic()
    try:
        with pytest.raises(DatabaseUnavailableError, match="within 1s in all"):
            store.touch_session("x=", 60)
    finally:
        sending.clear()
        server.shutdown()
        server.server_close()
    assert time.monotonic() - started < 2


@pytest.mark.parametrize(
    ("kind", "body"),
    [
        ("application/json", b""),
        ("application/json", b"null"),
        # A captive portal's or a proxy's page with 200, and a body cut short: no JSON.
        ("text/html", b"<html><body>Sign in to the network</body></html>"),
        ("application/json", b'[{"touched": tr'),
    ],
)
def test_a_success_with_no_rows_array_is_no_answer_not_no_rows(kind: str, body: bytes) -> None:
    """A proxy answering 200 with an empty body (or null) is not PostgREST: read as no
    rows, a heartbeat's session would be gone and its live connection closed. Nor is a
    body that is no JSON, which was read as the database refusing the call: $disconnect
    then answered 500 with no DisconnectFailed, as for a bug."""
    with (
        _answering(200, kind, body) as store,
        pytest.raises(DatabaseUnavailableError, match="no rows array"),
    ):
        store.touch_session("x=", 60)


_CALLS: dict[str, Callable[[SupabaseStore], object]] = {
    "open": lambda store: store.open_session(OpenSessionRequest(connection_id="x=")),
    "touch": lambda store: store.touch_session("x=", 60),
    "end": lambda store: store.end_session("x=", "gone"),
    "close_stale": lambda store: store.close_stale(idle_seconds=600, max_age_seconds=7200),
    "end_sessions": lambda store: store.end_sessions("gone", {uuid.uuid4(): datetime.now(UTC)}),
    "settle_gone": lambda store: store.settle_gone([uuid.uuid4()], settle_seconds=5),
    "recent_ends": lambda store: store.recent_ends(seconds=60),
}


@pytest.mark.parametrize(
    "body",
    [
        b"[1]",
        b"[null]",
        b'["ab"]',
        b"[{}]",
        b'[{"outcome": null, "touched": null, "end_reason": null, "ended": null}]',
        b'[{"outcome": "ended", "touched": true, "end_reason": "nonsense", "ended": 1}]',
    ],
)
def test_rows_of_another_shape_are_a_database_error(body: bytes) -> None:
    """Something in front of PostgREST answering 200 with rows that are not the
    function's: a TypeError, KeyError or ValueError escaped every `except TetherError`
    (the handshake, the heartbeat's answer, the sweep's clean-up)."""
    with _answering(200, "application/json", body) as store:
        for name, call in _CALLS.items():
            with pytest.raises(DatabaseError):
                call(store)
                pytest.fail(f"{name} read {body!r} as an answer")


def test_no_row_where_one_is_due_is_a_database_error() -> None:
    with _answering(200, "application/json", b"[]") as store:
        for name in ("open", "end"):
            with pytest.raises(DatabaseError, match="no row where one is due"):
                _CALLS[name](store)


@pytest.mark.parametrize("status", [200, 400, 502])
def test_an_answer_that_cannot_be_decoded_is_database_unavailable(status: int) -> None:
    """A proxy's page said to be gzip and not gzip: httpx's DecodingError is no
    TransportError, and escaped every `except TetherError`."""
    page = b"<html>Bad Gateway</html>"
    with (
        _answering(status, "text/html", page, {"Content-Encoding": "gzip"}) as store,
        pytest.raises(DatabaseUnavailableError, match="could not be read"),
    ):
        store.touch_session("x=", 60)


def test_a_service_key_kept_with_its_newline_is_used_not_quoted(supabase_url: str) -> None:
    """A key put in a secret with the newline of the file it came from: httpx refused
    the header, and its error, logged and shown by the commands, quoted the key whole."""
    store = SupabaseStore(supabase_url, _key("service_role") + "\n")
    assert store.end_session("x=", "gone").outcome is EndOutcome.UNKNOWN


def test_a_service_key_of_white_space_alone_is_no_key() -> None:
    """A secret holding a newline alone: no key once its white space is dropped, said
    as the setting it is, not as a caller's bad request (400 to the handshake)."""
    with pytest.raises(ConfigurationError, match="TETHER_SUPABASE_SERVICE_KEY"):
        SupabaseStore("https://project.supabase.co", "\n")


@pytest.mark.parametrize("key", [SECRET_KEY[:20] + "\x00" + SECRET_KEY[20:], SECRET_KEY + "é"])
def test_a_service_key_no_header_can_carry_is_refused_unquoted(key: str) -> None:
    with pytest.raises(ConfigurationError, match="TETHER_SUPABASE_SERVICE_KEY") as refused:
        SupabaseStore("https://project.supabase.co", key)
    assert SECRET_KEY not in _everything_said(refused.value)


@pytest.mark.parametrize(
    ("status", "kind", "page"),
    [
        (401, "application/json", b'{"message":"no project has the apikey %s"}'),
        (502, "text/html", b"<html><pre>apikey: %s</pre>Bad Gateway</html>"),
    ],
)
def test_an_answer_echoing_the_service_key_never_shows_it(
    status: int, kind: str, page: bytes
) -> None:
    """A proxy's error page echoing the request's headers: the key was in the error's
    message, or in its cause, which a logged traceback prints."""
    body = page.replace(b"%s", SECRET_KEY.encode())
    with (
        _answering(status, kind, body, key=SECRET_KEY) as store,
        pytest.raises((DatabaseError, DatabaseUnavailableError)) as failed,
    ):
        store.end_session("x=", "gone")
    assert SECRET_KEY not in _everything_said(failed.value)


def _everything_said(error: BaseException) -> str:
    """The error as a logged traceback shows it: its chain of causes included."""
    return "".join(traceback.format_exception(error)) + repr(error)


@contextmanager
def _answering(
    status: int,
    kind: str,
    body: bytes,
    headers: Mapping[str, str] | None = None,
    *,
    key: str | None = None,
) -> Iterator[SupabaseStore]:
    """A store whose every call a proxy in front of PostgREST answers with this."""

    class Proxy(BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: object) -> None:
            """Quiet."""

        def do_POST(self) -> None:
            self.send_response(status)
            self.send_header("Content-Type", kind)
            for name, value in (headers or {}).items():
                self.send_header(name, value)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

    server = ThreadingHTTPServer(("127.0.0.1", 0), Proxy)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield SupabaseStore(
            f"http://127.0.0.1:{server.server_address[1]}", key or _key("service_role")
        )
    finally:
        server.shutdown()
        server.server_close()


def test_concurrent_rpc_ends_exactly_one_wins(
    supabase_url: str, make_session: SessionFactory
) -> None:
    make_session(connection_id="race=")
    outcomes: list[EndOutcome] = []
    barrier = threading.Barrier(4)

    def end() -> None:
        own = SupabaseStore(supabase_url, _key("service_role"))
        barrier.wait()
        outcomes.append(own.end_session("race=", "gone").outcome)

    threads = [threading.Thread(target=end) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(outcomes) == sorted([EndOutcome.ENDED] + [EndOutcome.ALREADY_ENDED] * 3)
