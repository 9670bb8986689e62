"""$disconnect: ends exactly once, with its reason, and announces SessionEnded."""

from __future__ import annotations

import functools
import json
import os
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest
from psycopg.rows import dict_row

from functions import connect, disconnect, sweep
from tests import connections_standin
from tests.admin_support import OPERATOR_KEY
from tests.conftest import (
    ROOT,
    EventBus,
    allow_connections,
    set_for_database,
    with_database,
)
from tests.integration.test_infra import load_template
from tests.support import (
    HS256_SECRET,
    FakeLambdaContext,
    claims,
    load_event,
    metrics,
    sign,
    with_query,
    ws_event,
)
from tether import migrate, runtime
from tether.drivers.postgres import PostgresStore
from tether.errors import DatabaseUnavailableError
from tether.models import SessionEnded

Conn = psycopg.Connection[dict[str, object]]


def _open(connection_id: str, user: str | None = None) -> None:
    token = sign(claims(sub=user), HS256_SECRET, "HS256")
    response = connect.lambda_handler(
        with_query(ws_event("connect", connection_id), token=token), FakeLambdaContext()
    )
    assert response["statusCode"] == 200


def _disconnect(connection_id: str, name: str = "disconnect", **context: Any) -> dict[str, Any]:
    return disconnect.lambda_handler(ws_event(name, connection_id, **context), FakeLambdaContext())


def _row(db: Conn, connection_id: str) -> dict[str, object]:
    row = db.execute(
        "select * from public.conversation_sessions where connection_id = %s", (connection_id,)
    ).fetchone()
    assert row is not None
    return row


@pytest.mark.usefixtures("lambda_env")
def test_disconnect_ends_the_session_and_announces_it(
    db: Conn, event_bus: EventBus, capsys: pytest.CaptureFixture[str]
) -> None:
    user = str(uuid.uuid4())
    _open("bye=", user)
    assert _disconnect("bye=")["statusCode"] == 200
    row = _row(db, "bye=")
    assert row["is_active"] is False
    assert row["end_reason"] == "client_disconnect"
    assert row["disconnect_status_code"] == 1000
    assert row["announced_at"] is not None
    [event] = event_bus.received()
    assert event["source"] == "tether"
    assert event["detail-type"] == "SessionEnded"
    detail = event["detail"]
    assert detail["session_id"] == str(row["session_id"])
    assert detail["connection_id"] == "bye="
    assert detail["user_id"] == user
    assert detail["end_reason"] == "client_disconnect"
    assert detail["disconnect_status_code"] == 1000
    assert detail["duration_seconds"] == pytest.approx(float(str(row["duration_seconds"])))
    for key in ("session_start", "session_end"):
        assert detail[key]
    out = capsys.readouterr().out
    assert ("SessionsEnded", 1.0, "client_disconnect") in [
        (n, v, d.get("Reason")) for n, v, d in metrics(out)
    ]


@pytest.mark.usefixtures("lambda_env")
@pytest.mark.parametrize(
    ("status", "said", "reason"),
    [
        (1000, "Client-side close frame status code", "client_disconnect"),
        (1001, "Going away", "server_disconnect"),
        (1006, "Connection closed abnormally", "connection_lost"),
        (1009, "Message too big", "message_too_big"),
        # The client's own close frame, whatever code it chose (a browser tab: 1001).
        (1001, "Client-side close frame status code", "client_disconnect"),
        (1009, "Client-side close frame status code", "client_disconnect"),
        # 1006 is never in a close frame: whatever the text, the connection was lost.
        (1006, "Client-side close frame status code", "connection_lost"),
    ],
)
def test_close_code_sets_the_reason(db: Conn, status: int, said: str, reason: str) -> None:
    _open("code=")
    _disconnect("code=", disconnectStatusCode=status, disconnectReason=said)
    row = _row(db, "code=")
    assert (row["end_reason"], row["disconnect_status_code"]) == (reason, status)


@pytest.mark.usefixtures("lambda_env")
def test_emulator_event_without_status_is_accepted(db: Conn, event_bus: EventBus) -> None:
    _open("CeWqPdNWIAMCJUw=")
    assert _disconnect("CeWqPdNWIAMCJUw=", "disconnect_emulator")["statusCode"] == 200
    row = _row(db, "CeWqPdNWIAMCJUw=")
    assert (row["end_reason"], row["disconnect_status_code"]) == ("client_disconnect", None)
    assert len(event_bus.received()) == 1


@pytest.mark.usefixtures("lambda_env")
def test_second_disconnect_is_a_no_op_and_announces_nothing(db: Conn, event_bus: EventBus) -> None:
    _open("twice=")
    _disconnect("twice=", disconnectStatusCode=1000)
    first = _row(db, "twice=")
    assert _disconnect("twice=", disconnectStatusCode=1006)["statusCode"] == 200
    second = _row(db, "twice=")
    assert second["session_end"] == first["session_end"]
    assert (second["end_reason"], second["disconnect_status_code"]) == ("client_disconnect", 1000)
    assert len(event_bus.received()) == 1


@pytest.mark.usefixtures("lambda_env")
def test_disconnect_before_connect_is_a_logged_no_op(
    db: Conn, event_bus: EventBus, capsys: pytest.CaptureFixture[str]
) -> None:
    assert _disconnect("never=")["statusCode"] == 200
    assert db.execute("select count(*) as n from public.conversation_sessions").fetchone() == {
        "n": 0
    }
    assert event_bus.received(wait_seconds=0) == []
    assert '"outcome":"unknown"' in capsys.readouterr().out.replace(" ", "")


def test_database_down_fails_the_invocation_and_leaves_the_row_for_the_sweep(
    lambda_env: pytest.MonkeyPatch,
    server_url: str,
    database_url: str,
    event_bus: EventBus,
    capsys: pytest.CaptureFixture[str],
) -> None:
    _open("dbdown=")  # the container's connection is warm: it is lost, not refused
    allow_connections(server_url, database_url, False)
    try:
        with pytest.raises(DatabaseUnavailableError):
            _disconnect("dbdown=")
    finally:
        allow_connections(server_url, database_url, True)
    assert ("DisconnectFailed", 1.0) in [(n, v) for n, v, _ in metrics(capsys.readouterr().out)]
    with psycopg.connect(database_url, row_factory=dict_row) as db:
        assert _row(db, "dbdown=")["is_active"] is True
        assert db.execute(
            "select count(*) as n from public.conversation_session_announcements"
        ).fetchone() == {"n": 0}
    assert event_bus.received(wait_seconds=0) == []

    # The next sweep finds the connection gone, ends the session and announces it.
    with connections_standin.serve() as gone_gateway:
        lambda_env.setenv("TETHER_CONNECTIONS_ENDPOINT", gone_gateway.url)
        lambda_env.setenv("TETHER_GONE_SETTLE_SECONDS", "0")
        lambda_env.setenv("TETHER_SUSPECT_AFTER_SECONDS", "0")
        lambda_env.setenv("TETHER_SWEEP_CHECK_EVERY_SECONDS", "60")  # one check
        runtime.reset()
        sweep.lambda_handler(load_event("scheduled"), FakeLambdaContext())
    with psycopg.connect(database_url, row_factory=dict_row) as db:
        row = _row(db, "dbdown=")
    assert row["is_active"] is False
    assert row["end_reason"] == "gone"
    [announced] = event_bus.received()
    assert announced["detail"]["connection_id"] == "dbdown="


def _assert_ended_and_queued(db: Conn, database_url: str, connection_id: str) -> None:
    """The session ended, its SessionEnded not announced, and waiting in the outbox."""
    row = _row(db, connection_id)
    assert row["is_active"] is False
    assert row["announced_at"] is None
    store = PostgresStore(database_url)
    try:
        queued = store.claim_unannounced(limit=10)
    finally:
        store.close()
    assert [s.connection_id for s in queued] == [connection_id]


def test_put_events_failing_keeps_the_end_and_queues_the_announcement(
    lambda_env: pytest.MonkeyPatch, db: Conn, database_url: str, event_bus: EventBus
) -> None:
    _open("noevents=")
    # A bus that does not exist: EventBridge refuses every PutEvents.
    lambda_env.setenv("TETHER_EVENT_BUS_NAME", "no-such-bus")
    lambda_env.setenv("TETHER_ANNOUNCE_LEASE_SECONDS", "0")
    runtime.reset()
    assert _disconnect("noevents=")["statusCode"] == 200
    _assert_ended_and_queued(db, database_url, "noevents=")
    assert event_bus.received(wait_seconds=0) == []


def test_a_refused_announcement_is_retried_at_once_and_counted_as_a_redelivery(
    lambda_env: pytest.MonkeyPatch, event_bus: EventBus, capsys: pytest.CaptureFixture[str]
) -> None:
    _open("refused=")
    lambda_env.setenv("TETHER_EVENT_BUS_NAME", "no-such-bus")
    runtime.reset()
    assert _disconnect("refused=")["statusCode"] == 200
    emitted = {name: value for name, value, _ in metrics(capsys.readouterr().out)}
    assert emitted.get("AnnouncementsDeferred") == 1

    # The bus is back. The end's lease (60 s by default) was released when EventBridge
    # refused, so the next sweep announces it now, and says it was a second try.
    lambda_env.setenv("TETHER_EVENT_BUS_NAME", event_bus.name)
    runtime.reset()
    # One check: the run has a second past its margin, less than its cadence.
    report = sweep.lambda_handler(load_event("scheduled"), FakeLambdaContext(time_limit_seconds=11))
    assert report["announced"] == 1
    assert report["redelivered"] == 1
    emitted = {name: value for name, value, _ in metrics(capsys.readouterr().out)}
    assert emitted.get("AnnouncementsRedelivered") == 1
    [event] = event_bus.received()
    assert event["detail"]["connection_id"] == "refused="
    # The event a consumer gets the second time is the one it would have got the first:
    # the outbox's own bookkeeping (how often it was claimed, when queued) is not in it.
    assert set(event["detail"]) == set(SessionEnded.model_fields)


@pytest.mark.parametrize("datestyle", ["SQL, DMY", "German", "Postgres, MDY"])
def test_a_server_that_writes_dates_its_own_way_serves_the_whole_lifecycle(
    lambda_env: pytest.MonkeyPatch,
    database_url: str,
    db: Conn,
    event_bus: EventBus,
    datestyle: str,
) -> None:
    """psycopg reads a timestamp sent as text only in the ISO DateStyle: on a database
    set to another, every call failed after it had run (a session opened, its $connect
    answered 502)."""
    set_for_database(database_url, "datestyle", datestyle)
    runtime.reset()
    _open("datestyle=")
    assert _disconnect("datestyle=")["statusCode"] == 200
    assert _row(db, "datestyle=")["end_reason"] == "client_disconnect"
    [announced] = event_bus.received()
    assert announced["detail"]["connection_id"] == "datestyle="


def test_a_database_that_keeps_text_as_bytes_serves_the_whole_lifecycle(
    lambda_env: pytest.MonkeyPatch, server_url: str, event_bus: EventBus
) -> None:
    """A SQL_ASCII database (an old self-hosted one) hands text over as bytes unless the
    client asks for UTF-8: every end failed after it had run ("b'ended' is not a valid
    EndOutcome"), and no session was announced."""
    name = f"tether_ascii_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(server_url, autocommit=True) as admin:
        admin.execute(
            psycopg.sql.SQL(
                "create database {} encoding 'SQL_ASCII' lc_collate 'C' lc_ctype 'C'"
                " template template0"
            ).format(psycopg.sql.Identifier(name))
        )
    url = with_database(server_url, name)
    try:
        migrate.migrate(url)
        lambda_env.setenv("TETHER_DATABASE_URL", url)
        runtime.reset()
        _open("ascii=")
        assert _disconnect("ascii=")["statusCode"] == 200
        [announced] = event_bus.received()
        assert announced["detail"]["end_reason"] == "client_disconnect"
    finally:
        runtime.reset()
        with psycopg.connect(server_url, autocommit=True) as admin:
            admin.execute(
                psycopg.sql.SQL("drop database {} with (force)").format(
                    psycopg.sql.Identifier(name)
                )
            )


@pytest.fixture
def hanging_up_endpoint() -> Iterator[str]:
    """An endpoint that takes each connection and drops it unanswered, as a load
    balancer does in a brownout: botocore's ConnectionClosedError, with no response."""
    listener = socket.create_server(("127.0.0.1", 0))
    stop = threading.Event()

    def serve() -> None:
        listener.settimeout(0.2)
        while not stop.is_set():
            try:
                conn, _ = listener.accept()
            except TimeoutError:
                continue
            conn.recv(65536)
            conn.close()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{listener.getsockname()[1]}"
    stop.set()
    thread.join()
    listener.close()


def test_an_eventbridge_that_hangs_up_keeps_the_end_and_queues_the_announcement(
    lambda_env: pytest.MonkeyPatch, db: Conn, database_url: str, hanging_up_endpoint: str
) -> None:
    _open("hangup=")
    lambda_env.setenv("TETHER_AWS_ENDPOINT_URL", hanging_up_endpoint)
    lambda_env.setenv("TETHER_ANNOUNCE_LEASE_SECONDS", "0")
    runtime.reset()
    assert _disconnect("hangup=")["statusCode"] == 200
    _assert_ended_and_queued(db, database_url, "hangup=")


def test_an_eventbridge_that_never_answers_leaves_disconnect_well_inside_its_timeout(
    lambda_env: pytest.MonkeyPatch, db: Conn, database_url: str
) -> None:
    """A brownout: connections are taken and never answered. $disconnect gives up on
    the announcement in time for its 10 s Lambda timeout; the end is kept and queued."""
    _open("silent-bus=")
    with socket.create_server(("127.0.0.1", 0)) as silent:  # never accepts, never answers
        lambda_env.setenv("TETHER_AWS_ENDPOINT_URL", f"http://127.0.0.1:{silent.getsockname()[1]}")
        lambda_env.setenv("TETHER_ANNOUNCE_LEASE_SECONDS", "0")
        runtime.reset()
        started = time.monotonic()
        assert _disconnect("silent-bus=")["statusCode"] == 200
        took = time.monotonic() - started
    assert took < 8, took
    _assert_ended_and_queued(db, database_url, "silent-bus=")


# One $disconnect in a process of its own, with 3 s to live.
_DISCONNECT_WITH_3S = (
    "from functions import disconnect; from tests.support import FakeLambdaContext, ws_event;"
    " disconnect.lambda_handler(ws_event('disconnect', 'killed='),"
    " FakeLambdaContext(time_limit_seconds=3))"
)


def test_a_disconnect_killed_after_its_end_leaves_the_announcement_to_the_next_check(
    lambda_env: pytest.MonkeyPatch, db: Conn, event_bus: EventBus
) -> None:
    """Killed between its end and its announcement (its Lambda timeout while PutEvents
    hangs, its container lost), a $disconnect held the end's announcement for the
    rest of a minute's lease. It holds it no longer than its own time."""
    _open("killed=")
    with socket.create_server(("127.0.0.1", 0)) as silent:  # never accepts, never answers
        bus = f"http://127.0.0.1:{silent.getsockname()[1]}"
        started = time.monotonic()
        child = subprocess.Popen(  # noqa: S603 - this interpreter, our own code
            [sys.executable, "-c", _DISCONNECT_WITH_3S],
            cwd=ROOT,
            env={**os.environ, "TETHER_AWS_ENDPOINT_URL": bus},
            stdout=subprocess.DEVNULL,
        )
        try:
            while _row(db, "killed=")["is_active"]:
                assert time.monotonic() - started < 20, "the end was never written"
                time.sleep(0.05)
        finally:
            child.kill()
            child.wait()
    # Its 3 s began before its end: they are over by then, a minute's lease is not.
    time.sleep(3.2)
    report = sweep.lambda_handler(load_event("scheduled"), FakeLambdaContext(time_limit_seconds=11))
    assert report["announced"] == 1
    assert [e["detail"]["connection_id"] for e in event_bus.received()] == ["killed="]


# One forced close through the admin function, in a process of its own with 3 s to live.
_FORCED_CLOSE_WITH_3S = (
    "import json, sys; from functions import admin; from tests.support import"
    " FakeLambdaContext; admin.lambda_handler(json.loads(sys.argv[1]),"
    " FakeLambdaContext(time_limit_seconds=3))"
)


def test_a_forced_close_killed_after_its_end_leaves_the_announcement_to_the_next_check(
    lambda_env: pytest.MonkeyPatch, db: Conn, event_bus: EventBus
) -> None:
    """The operators' forced close, killed between its end and its announcement (the
    admin function's timeout while PutEvents hangs), held the end's announcement for
    the rest of a minute's lease. It holds it no longer than its own time."""
    _open("forced=")
    close = load_event("admin_http_v2")
    close["rawPath"] = close["requestContext"]["http"]["path"] = (
        f"/sessions/{_row(db, 'forced=')['session_id']}/close"
    )
    close["requestContext"]["http"]["method"] = "POST"
    close.pop("queryStringParameters", None)
    close["rawQueryString"] = ""
    close["headers"]["authorization"] = f"Bearer {OPERATOR_KEY}"
    with socket.create_server(("127.0.0.1", 0)) as silent:  # never accepts, never answers
        nowhere = f"http://127.0.0.1:{silent.getsockname()[1]}"
        started = time.monotonic()
        child = subprocess.Popen(  # noqa: S603 - this interpreter, our own code
            [sys.executable, "-c", _FORCED_CLOSE_WITH_3S, json.dumps(close)],
            cwd=ROOT,
            env={
                **os.environ,
                "TETHER_AWS_ENDPOINT_URL": nowhere,
                "TETHER_CONNECTIONS_ENDPOINT": nowhere,
                "TETHER_OPERATOR_KEY": OPERATOR_KEY,
            },
            stdout=subprocess.DEVNULL,
        )
        try:
            while _row(db, "forced=")["is_active"]:
                assert time.monotonic() - started < 20, "the forced close never ended it"
                assert child.poll() is None, "the admin function gave up before the end"
                time.sleep(0.05)
        finally:
            child.kill()
            child.wait()
    assert _row(db, "forced=")["end_reason"] == "forced_close"
    # Its 3 s began before its end: they are over by then, a minute's lease is not.
    time.sleep(3.2)
    report = sweep.lambda_handler(load_event("scheduled"), FakeLambdaContext(time_limit_seconds=11))
    assert report["announced"] == 1
    assert [e["detail"]["connection_id"] for e in event_bus.received()] == ["forced="]


def test_announced_but_not_recorded_is_counted_as_such_and_announced_again(
    lambda_env: pytest.MonkeyPatch,
    server_url: str,
    database_url: str,
    event_bus: EventBus,
    capsys: pytest.CaptureFixture[str],
) -> None:
    _open("unrecorded=")
    dbname = psycopg.conninfo.conninfo_to_dict(database_url)["dbname"]
    real = runtime.announcer()

    class DatabaseFailsAfterPutEvents:
        """EventBridge accepts; then the database goes away before it is recorded."""

        def announce(self, sessions: Any) -> Any:
            result = real.announce(sessions)
            with psycopg.connect(server_url, autocommit=True) as admin:
                admin.execute(
                    psycopg.sql.SQL("alter database {} allow_connections false").format(
                        psycopg.sql.Identifier(str(dbname))
                    )
                )
                admin.execute(
                    "select pg_terminate_backend(pid) from pg_stat_activity"
                    " where datname = %s and pid <> pg_backend_pid()",
                    (dbname,),
                )
            return result

    # Cached, as the runtime's own singletons are (runtime.reset clears it).
    lambda_env.setattr(runtime, "announcer", functools.cache(DatabaseFailsAfterPutEvents))
    try:
        assert _disconnect("unrecorded=")["statusCode"] == 200
    finally:
        with psycopg.connect(server_url, autocommit=True) as admin:
            admin.execute(
                psycopg.sql.SQL("alter database {} allow_connections true").format(
                    psycopg.sql.Identifier(str(dbname))
                )
            )
    emitted = {name: value for name, value, _ in metrics(capsys.readouterr().out)}
    assert emitted.get("AnnouncementsUnrecorded") == 1
    assert "AnnouncementsDeferred" not in emitted
    assert len(event_bus.received()) == 1
    # Still in the outbox (leased for the announcer): announced again once the lease ends.
    with psycopg.connect(database_url) as conn:
        assert conn.execute(
            "select count(*) from public.conversation_session_announcements"
        ).fetchone() == (1,)


# A team's trigger (or a privilege taken away) refusing the record of an announcement:
# an error of the database's, not its absence.
REFUSE_RECORDING = """
create function public.refuse_recording() returns trigger language plpgsql as $$
begin
  if new.announced_at is distinct from old.announced_at then
    raise exception 'announced_at is not to be written here';
  end if;
  return new;
end $$;
create trigger refuse_recording before update on public.conversation_sessions
  for each row execute function public.refuse_recording();
"""


def test_an_end_whose_announcement_cannot_be_recorded_still_answers_that_it_ended(
    lambda_env: pytest.MonkeyPatch,
    db: Conn,
    event_bus: EventBus,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """The end is committed and SessionEnded went out: answering 500, "could not end the
    session", was untrue, and API Gateway does not retry a $disconnect anyway."""
    _open("refused-record=")
    db.execute(REFUSE_RECORDING)
    assert _disconnect("refused-record=")["statusCode"] == 200
    row = _row(db, "refused-record=")
    assert (row["is_active"], row["end_reason"], row["announced_at"]) == (
        False,
        "client_disconnect",
        None,
    )
    assert len(event_bus.received()) == 1
    # Still queued: announced again once its lease ends.
    assert db.execute(
        "select count(*) as n from public.conversation_session_announcements"
    ).fetchone() == {"n": 1}
    out = capsys.readouterr().out
    emitted = {name: value for name, value, _ in metrics(out)}
    assert emitted.get("AnnouncementsUnrecorded") == 1
    assert "could not end the session" not in out
    assert "announced_at is not to be written here" in out


# The $disconnect function's timeout, as deployed.
DISCONNECT_TIMEOUT_SECONDS = float(
    load_template()["Resources"]["DisconnectFunction"]["Properties"]["Timeout"]
)


def _disconnect_within(connection_id: str, seconds: float) -> dict[str, Any]:
    return disconnect.lambda_handler(
        ws_event("disconnect", connection_id), FakeLambdaContext(time_limit_seconds=seconds)
    )


@pytest.mark.usefixtures("lambda_env")
def test_a_locked_row_is_waited_for_seconds_not_until_api_gateway_gives_up(
    db: Conn, database_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    _open("locked=")
    with psycopg.connect(database_url) as holder:
        # Something else (a long transaction) holds the session's row.
        holder.execute(
            "select 1 from public.conversation_sessions where connection_id = 'locked=' for update"
        )
        started = time.monotonic()
        with pytest.raises(DatabaseUnavailableError):
            _disconnect_within("locked=", DISCONNECT_TIMEOUT_SECONDS)
        waited = time.monotonic() - started
        holder.rollback()
    # Two 3 s lock waits (the functions' lock timeout): a third would not leave the
    # invocation time to say how it ended.
    assert 5.5 < waited < DISCONNECT_TIMEOUT_SECONDS - 1
    assert "trying the end again" in capsys.readouterr().out
    assert _row(db, "locked=")["is_active"] is True
    # Released, the next end goes through.
    assert _disconnect("locked=")["statusCode"] == 200
    assert _row(db, "locked=")["is_active"] is False


@pytest.mark.usefixtures("lambda_env")
def test_a_row_held_for_a_few_seconds_still_ends_with_the_clients_close(
    db: Conn, database_url: str, event_bus: EventBus
) -> None:
    """API Gateway calls $disconnect once: had it given up, the sweep would end the
    session later as idle, without the client's close code."""
    _open("held=")
    holder = psycopg.connect(database_url)
    holder.execute(
        "select 1 from public.conversation_sessions where connection_id = 'held=' for update"
    )
    release = threading.Timer(4.0, holder.rollback)
    release.start()
    try:
        response = disconnect.lambda_handler(
            ws_event("disconnect", "held=", disconnectStatusCode=4001),
            FakeLambdaContext(time_limit_seconds=DISCONNECT_TIMEOUT_SECONDS),
        )
    finally:
        release.join()
        holder.close()
    assert response["statusCode"] == 200
    row = _row(db, "held=")
    assert (row["is_active"], row["end_reason"], row["disconnect_status_code"]) == (
        False,
        "client_disconnect",
        4001,
    )
    assert [event["detail"]["connection_id"] for event in event_bus.received()] == ["held="]
