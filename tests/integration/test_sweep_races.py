"""The sweep against the $disconnect that races it: each end keeps its truth.

- A heartbeat timeout deletes the connection at the gateway, which (on AWS too)
  sends a $disconnect; whichever ends the row first, it says heartbeat_timeout,
  at the last sign of life, the same for identical clients.
- A clean close answers 410 before its $disconnect has run; that $disconnect keeps
  its reason, code and time, and only a connection gone for the settle time with
  no $disconnect is ended as gone.
- A run checks at its cadence for its whole period.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
import pytest

from functions import disconnect, message, sweep
from tests import connections_standin
from tests.conftest import SessionFactory
from tests.connections_standin import ConnectionsStandIn
from tests.support import FakeLambdaContext, load_event, ws_event
from tether import runtime

Conn = psycopg.Connection[dict[str, object]]


@pytest.fixture
def gateway(lambda_env: pytest.MonkeyPatch) -> Iterator[ConnectionsStandIn]:
    with connections_standin.serve() as state:
        lambda_env.setenv("TETHER_CONNECTIONS_ENDPOINT", state.url)
        lambda_env.setenv("TETHER_ANNOUNCE_LEASE_SECONDS", "0")
        lambda_env.setenv("TETHER_SWEEP_CHECK_EVERY_SECONDS", "60")  # one check per run
        runtime.reset()
        yield state


def _run() -> dict[str, Any]:
    return sweep.lambda_handler(load_event("scheduled"), FakeLambdaContext())


def _row(db: Conn, connection_id: str) -> dict[str, Any]:
    row = db.execute(
        "select * from public.conversation_sessions where connection_id = %s", (connection_id,)
    ).fetchone()
    assert row is not None
    return dict(row)


def _disconnect(connection_id: str, code: int, reason: str) -> dict[str, Any]:
    event = ws_event(
        "disconnect", connection_id, disconnectStatusCode=code, disconnectReason=reason
    )
    return disconnect.lambda_handler(event, FakeLambdaContext())


def test_a_heartbeat_timeout_says_so_whichever_end_comes_first(
    gateway: ConnectionsStandIn, db: Conn, make_session: SessionFactory
) -> None:
    # Two identical silent clients: connected, no sign of life for 5 minutes.
    for name in ("first=", "second="):
        make_session(connection_id=name, started_seconds_ago=3600, seen_seconds_ago=300)
        gateway.set_alive(name, idle_seconds=300)

    # For "first=", the $disconnect that the delete causes wins the race: it runs
    # while DeleteConnection is still answering, before the sweep ends the row.
    def disconnect_during_delete(method: str, connection_id: str) -> None:
        if (method, connection_id) == ("DELETE", "first="):
            _disconnect(connection_id, 1001, "Connection closed by the @connections API")

    gateway.on_request = disconnect_during_delete
    report = _run()
    # For "second=", it comes after the sweep has ended the row.
    assert _disconnect("second=", 1001, "Going away")["statusCode"] == 200

    first, second = _row(db, "first="), _row(db, "second=")
    for row in (first, second):
        assert row["end_reason"] == "heartbeat_timeout"
        assert row["session_end"] == row["last_seen_at"]  # its last sign of life
    assert first["disconnect_status_code"] == 1001
    assert report["ended_by_reason"] == {"heartbeat_timeout": 1}  # the other one, its $disconnect
    assert report["closed_silent"] == 2  # both closed by this run, whoever recorded the end
    assert ("DELETE", "first=") in gateway.calls and ("DELETE", "second=") in gateway.calls


def test_a_heartbeat_after_the_intent_voids_it(
    gateway: ConnectionsStandIn, db: Conn, make_session: SessionFactory
) -> None:
    make_session(connection_id="back=", started_seconds_ago=3600, seen_seconds_ago=300)
    gateway.set_alive("back=", idle_seconds=300)
    # The delete fails (throttled past the retries): the session stays, with its intent.
    original = gateway._answer

    def refuse_delete(method: str, connection_id: str) -> tuple[int, dict[str, str], Any]:
        if method == "DELETE":
            return 500, {"x-amzn-ErrorType": "InternalServerError"}, {"message": "down"}
        return original(method, connection_id)

    gateway._answer = refuse_delete  # type: ignore[method-assign]
    report = _run()
    assert report["gateway_errors"] == 1
    intended = _row(db, "back=")
    assert intended["is_active"] is True
    assert intended["end_intent_reason"] == "heartbeat_timeout"
    # The client was alive after all: a heartbeat (through the heartbeat route, as the
    # client sends it), then a clean close.
    beat = message.lambda_handler(ws_event("message_heartbeat", "back="), FakeLambdaContext())
    assert beat["statusCode"] == 200
    assert json.loads(beat["body"])["status"] == "touched"
    assert _disconnect("back=", 1000, "Client-side close frame status code")["statusCode"] == 200
    row = _row(db, "back=")
    assert row["end_reason"] == "client_disconnect"
    assert row["disconnect_status_code"] == 1000


def test_a_clean_close_racing_the_sweep_keeps_its_reason_code_and_time(
    lambda_env: pytest.MonkeyPatch,
    gateway: ConnectionsStandIn,
    db: Conn,
    make_session: SessionFactory,
) -> None:
    lambda_env.setenv("TETHER_GONE_SETTLE_SECONDS", "30")
    runtime.reset()
    # Silent long enough to be a suspect; the client has just closed: the gateway
    # already answers 410, its $disconnect is still on its way.
    make_session(connection_id="closing=", started_seconds_ago=600, seen_seconds_ago=60)
    report = _run()
    assert report["gone_waiting"] == 1
    assert report["ended"] == 0
    assert _row(db, "closing=")["is_active"] is True

    before = datetime.now(UTC)
    assert _disconnect("closing=", 1000, "Client-side close frame status code")["statusCode"] == 200
    row = _row(db, "closing=")
    assert row["end_reason"] == "client_disconnect"
    assert row["disconnect_status_code"] == 1000
    assert row["session_end"] >= before - timedelta(seconds=1)  # when it closed, not earlier
    assert _run()["ended"] == 0


def test_gone_with_no_disconnect_ends_as_gone_once_settled(
    lambda_env: pytest.MonkeyPatch,
    gateway: ConnectionsStandIn,
    db: Conn,
    make_session: SessionFactory,
) -> None:
    lambda_env.setenv("TETHER_GONE_SETTLE_SECONDS", "0.5")
    runtime.reset()
    make_session(connection_id="vanished=", started_seconds_ago=600, seen_seconds_ago=60)
    first = _run()
    assert first["gone_waiting"] == 1 and first["ended"] == 0
    deadline = time.monotonic() + 10
    while _row(db, "vanished=")["is_active"]:
        assert time.monotonic() < deadline, "never ended"
        _run()
    row = _row(db, "vanished=")
    assert row["end_reason"] == "gone"
    assert row["session_end"] == row["last_seen_at"]
    assert row["disconnect_status_code"] is None


def test_a_run_checks_at_its_cadence_for_its_whole_period(
    lambda_env: pytest.MonkeyPatch,
    gateway: ConnectionsStandIn,
    db: Conn,
    make_session: SessionFactory,
) -> None:
    lambda_env.setenv("TETHER_SWEEP_SCHEDULE_SECONDS", "3")
    lambda_env.setenv("TETHER_SWEEP_CHECK_EVERY_SECONDS", "1")
    lambda_env.setenv("TETHER_SWEEP_TIME_MARGIN_SECONDS", "1")
    lambda_env.setenv("TETHER_GONE_SETTLE_SECONDS", "0")
    lambda_env.setenv("TETHER_SUSPECT_AFTER_SECONDS", "1")
    runtime.reset()
    make_session(connection_id="steady=", started_seconds_ago=60, seen_seconds_ago=30)
    gateway.set_alive("steady=", idle_seconds=0)
    started = time.monotonic()
    report = _run()
    elapsed = time.monotonic() - started
    # Checks at 0, 1 and 2 s: the run after this one (3 s later) carries on.
    assert report["checks"] == 3
    assert 2.0 <= elapsed < 3.0
    asks = [c for m, c in gateway.calls if m == "GET"]
    assert asks == ["steady="] * 3  # asked once per check, never twice in one
    assert _row(db, "steady=")["is_active"] is True


def test_a_run_stops_checking_before_its_time_runs_out(
    lambda_env: pytest.MonkeyPatch, gateway: ConnectionsStandIn
) -> None:
    lambda_env.setenv("TETHER_SWEEP_SCHEDULE_SECONDS", "60")
    lambda_env.setenv("TETHER_SWEEP_CHECK_EVERY_SECONDS", "1")
    lambda_env.setenv("TETHER_SWEEP_TIME_MARGIN_SECONDS", "1")
    runtime.reset()
    # A Lambda with 2.5 s to live: checks at 0 and 1 (one at 2 would start within
    # the margin of the end).
    context = FakeLambdaContext(time_limit_seconds=2.5)
    report = sweep.lambda_handler(load_event("scheduled"), context)
    assert report["checks"] == 2
    assert context.get_remaining_time_in_millis() > 1000


def test_a_heartbeat_while_the_gateway_is_asked_keeps_the_client_connected(
    gateway: ConnectionsStandIn, db: Conn, make_session: SessionFactory
) -> None:
    make_session(connection_id="late=", started_seconds_ago=3600, seen_seconds_ago=300)
    gateway.set_alive("late=", idle_seconds=300)

    def heartbeat_during_get(method: str, connection_id: str) -> None:
        if (method, connection_id) == ("GET", "late="):
            # The client's heartbeat lands while the sweep waits for the gateway's answer.
            db.execute("select * from public.tether_touch_session_v1('late=', 0)")

    gateway.on_request = heartbeat_during_get
    report = _run()
    assert report["ended"] == 0
    assert ("DELETE", "late=") not in gateway.calls
    row = _row(db, "late=")
    assert row["is_active"] is True
    assert row["end_intent_reason"] is None
