"""$default / heartbeat: a sign of life, or a clear error frame that writes nothing."""

from __future__ import annotations

import base64
import json
import time
from datetime import datetime
from typing import Any

import psycopg
import pytest

from functions import message
from tests import connections_standin
from tests.conftest import SessionFactory, with_database
from tests.support import FakeLambdaContext, json_lines, metrics, ws_event
from tether import runtime
from tether.handlers.message import CLOSE_MARGIN_SECONDS, CLOSE_WAIT_SECONDS
from tether.liveness import counts_as_sign_of_life

Conn = psycopg.Connection[dict[str, object]]


def _send(
    connection_id: str, body: str | None, route: str = "$default", **extra: Any
) -> dict[str, Any]:
    event = ws_event("message_default", connection_id, routeKey=route)
    event["body"] = body
    event.update(extra)
    return message.lambda_handler(event, FakeLambdaContext())


def _last_seen(db: Conn, connection_id: str) -> datetime:
    row = db.execute(
        "select last_seen_at from public.conversation_sessions where connection_id = %s",
        (connection_id,),
    ).fetchone()
    assert row is not None and isinstance(row["last_seen_at"], datetime)
    return row["last_seen_at"]


@pytest.mark.usefixtures("lambda_env")
def test_heartbeat_moves_last_seen(db: Conn, make_session: SessionFactory) -> None:
    make_session(connection_id="hb=", started_seconds_ago=300)
    before = _last_seen(db, "hb=")
    response = message.lambda_handler(ws_event("message_heartbeat", "hb="), FakeLambdaContext())
    assert response["statusCode"] == 200
    assert json.loads(response["body"]) == {
        "action": "heartbeat",
        "status": "touched",
        "heartbeat_seconds": 15,  # the interval the client is asked to keep
    }
    assert '"heartbeat_seconds":15}' in response["body"].replace(" ", "")
    assert _last_seen(db, "hb=") > before


def test_heartbeat_is_throttled(
    lambda_env: pytest.MonkeyPatch, db: Conn, make_session: SessionFactory
) -> None:
    lambda_env.setenv("TETHER_HEARTBEAT_THROTTLE_SECONDS", "60")
    lambda_env.setenv("TETHER_HEARTBEAT_INTERVAL_SECONDS", "90")
    lambda_env.setenv("TETHER_HEARTBEAT_GRACE_SECONDS", "off")
    runtime.reset()
    make_session(connection_id="hb=", started_seconds_ago=300)
    first = _send("hb=", '{"action":"heartbeat"}')
    after_first = _last_seen(db, "hb=")
    second = _send("hb=", '{"action":"heartbeat"}')
    assert json.loads(first["body"])["status"] == "touched"
    assert json.loads(second["body"])["status"] == "throttled"
    assert _last_seen(db, "hb=") == after_first


@pytest.mark.usefixtures("lambda_env")
def test_base64_heartbeat(db: Conn, make_session: SessionFactory) -> None:
    make_session(connection_id="b64=", started_seconds_ago=300)
    body = base64.b64encode(b'{"action":"heartbeat"}').decode()
    assert _send("b64=", body, isBase64Encoded=True)["statusCode"] == 200
    # A binary frame that is not text is the client's; a body API Gateway could not
    # have encoded is the event's. Neither writes anything.
    seen = _last_seen(db, "b64=")
    for sent, says in (
        (base64.b64encode(b"\x00\xff").decode(), "a binary message must hold UTF-8 text"),
        ("not base64!", "the event's body is not valid base64"),
    ):
        refused = _send("b64=", sent, isBase64Encoded=True)
        assert refused["statusCode"] == 400
        assert says in json.loads(refused["body"])["message"]
    assert _last_seen(db, "b64=") == seen


@pytest.mark.usefixtures("lambda_env")
@pytest.mark.parametrize(
    ("body", "fragment"),
    [
        ("{not json", "not valid JSON"),
        ('{"action": "heart\x01beat"}', "Invalid control character at position 17"),
        ("[1, 2, 3]", "must be a JSON object"),
        ('"heartbeat"', "must be a JSON object"),
        ("{}", 'no "action"'),
        ('{"action": 42}', 'no "action"'),
        ('{"action": "sendmessage"}', "unknown action; known actions: heartbeat"),
        ('{"action": "heartbeat", "x": NaN}', "NaN is not a JSON number"),
        ('{"action": "heartbeat", "x": -Infinity}', "-Infinity is not a JSON number"),
        # JSON by its grammar, but read as infinity, which Python writes back as Infinity.
        ('{"action": "heartbeat", "x": 1e999}', "a number is out of range"),
        ('{"action": "heartbeat", "x": [-1.5E+400]}', "a number is out of range"),
        # The same without a fraction: exact in Python, beyond any peer's double.
        ('{"action": "heartbeat", "x": 1' + "0" * 309 + "}", "a number is out of range"),
        ('{"action": "heartbeat", "x": [-2' + "0" * 308 + "]}", "a number is out of range"),
        ('{"action": "nope", "action": "heartbeat"}', "an object repeats a key"),
        ('{"action": "heartbeat", "x": "\ud800"}', "not valid UTF-8"),
        # An empty frame is text that is no JSON, as any other (it was "must be a JSON
        # object"); an event without a body, the same.
        ("", "message is not valid JSON: it is empty"),
        (None, "message is not valid JSON: it is empty"),
        # Hostile frames: 2 KB nested 1,000 deep, an integer of 5,000 digits.
        ("[" * 1000 + "]" * 1000, "nested too deeply"),
        ('{"action": "heartbeat", "n": ' + "9" * 5000 + "}", "a number is too long"),
    ],
)
def test_bad_messages_get_a_clear_error_and_write_nothing(
    db: Conn, make_session: SessionFactory, body: str | None, fragment: str
) -> None:
    make_session(connection_id="bad=", started_seconds_ago=300)
    before = _last_seen(db, "bad=")
    response = _send("bad=", body)
    assert response["statusCode"] == 400
    payload = json.loads(response["body"])
    assert payload["error"] == "bad_request"
    assert fragment in payload["message"]
    assert _last_seen(db, "bad=") == before


@pytest.mark.usefixtures("lambda_env")
def test_heartbeat_without_a_session_says_gone(db: Conn) -> None:
    response = _send("nobody=", '{"action":"heartbeat"}')
    assert response["statusCode"] == 410
    assert json.loads(response["body"])["error"] == "gone"
    assert db.execute("select count(*) as n from public.conversation_sessions").fetchone() == {
        "n": 0
    }


def test_a_heartbeat_from_a_connection_whose_session_ended_closes_it(
    db: Conn, make_session: SessionFactory, lambda_env: pytest.MonkeyPatch
) -> None:
    """An operator's forced close whose DeleteConnection failed, or a clean-up with
    close-orphans --force, ends a session whose client is still connected: the client's
    next heartbeat closes it, and the end it had stays as it was."""
    ended = make_session(connection_id="ended=", started_seconds_ago=300, ended_seconds_ago=60)
    with connections_standin.serve() as gateway:
        for connection_id in ("ended=", "never="):
            gateway.set_alive(connection_id)
        lambda_env.setenv("TETHER_CONNECTIONS_ENDPOINT", gateway.url)
        runtime.reset()
        for connection_id in ("ended=", "never="):
            response = _send(connection_id, '{"action":"heartbeat"}')
            assert response["statusCode"] == 410
        live = make_session(connection_id="live=", started_seconds_ago=300)
        assert _send("live=", '{"action":"heartbeat"}')["statusCode"] == 200
    assert gateway.calls == [("DELETE", "ended="), ("DELETE", "never=")]
    rows = {
        row["connection_id"]: row
        for row in db.execute("select * from public.conversation_sessions").fetchall()
    }
    assert rows["ended="]["session_end"] == ended["session_end"]
    assert rows["ended="]["end_reason"] == ended["end_reason"]
    assert rows["live="]["is_active"] is True and live["is_active"] is True
    assert set(rows) == {"ended=", "live="}


def test_a_heartbeat_without_a_session_waits_briefly_for_a_gateway_that_does_not_answer(
    lambda_env: pytest.MonkeyPatch,
) -> None:
    """The close is tried, and waited for CLOSE_WAIT_SECONDS at most, or less when the
    invocation has less time left: its answer must still go out in time."""
    with connections_standin.serve() as gateway:
        gateway.silent.update({"hung=", "late="})
        lambda_env.setenv("TETHER_CONNECTIONS_ENDPOINT", gateway.url)
        runtime.reset()
        runtime.connections()  # built before the clock: the wait, not the set-up, is timed
        _send("warm=", '{"action":"heartbeat"}')  # the database connection too
        started = time.monotonic()
        response = _send("hung=", '{"action":"heartbeat"}')
        waited = time.monotonic() - started
        assert response["statusCode"] == 410
        assert waited < CLOSE_WAIT_SECONDS + 1.5
        # An invocation with 2 s left keeps CLOSE_MARGIN_SECONDS of it for its answer.
        event = ws_event("message_default", "late=", routeKey="$default")
        event["body"] = '{"action":"heartbeat"}'
        started = time.monotonic()
        late = message.lambda_handler(event, FakeLambdaContext(time_limit_seconds=2.0))
        assert late["statusCode"] == 410
        assert time.monotonic() - started < 2.0 - CLOSE_MARGIN_SECONDS + 0.9
        assert ("DELETE", "hung=") in gateway.calls and ("DELETE", "late=") in gateway.calls


@pytest.mark.usefixtures("lambda_env")
def test_application_routes_count_as_a_sign_of_life(db: Conn, make_session: SessionFactory) -> None:
    calls: list[str] = []

    @counts_as_sign_of_life
    def send_message(event: dict[str, Any], context: Any) -> dict[str, Any]:
        calls.append(event["requestContext"]["routeKey"])
        return {"statusCode": 200}

    make_session(connection_id="app=", started_seconds_ago=300)
    before = _last_seen(db, "app=")
    event = ws_event("message_default", "app=", routeKey="sendmessage")
    assert send_message(event, FakeLambdaContext()) == {"statusCode": 200}
    assert calls == ["sendmessage"]
    assert _last_seen(db, "app=") > before


def test_a_failed_touch_never_breaks_the_application_route(
    lambda_env: pytest.MonkeyPatch, server_url: str
) -> None:
    lambda_env.setenv("TETHER_DATABASE_URL", with_database(server_url, "tether_is_down"))
    runtime.reset()

    @counts_as_sign_of_life
    def route(event: dict[str, Any], context: Any) -> str:
        return "handled"

    assert route(ws_event("message_default", "x="), FakeLambdaContext()) == "handled"


@pytest.mark.usefixtures("lambda_env")
@pytest.mark.parametrize("connection_id", ["\ud800", "a\x00b=", "x" * 129, "", 42])
def test_an_impossible_connection_id_never_breaks_the_application_route(
    db: Conn, connection_id: object
) -> None:
    @counts_as_sign_of_life
    def route(event: dict[str, Any], context: Any) -> str:
        return "handled"

    event = ws_event("message_default", "x=")
    event["requestContext"]["connectionId"] = connection_id
    assert route(event, FakeLambdaContext()) == "handled"


def test_a_misconfigured_sign_of_life_is_an_error_with_a_metric(
    lambda_env: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    lambda_env.delenv("TETHER_DATABASE_URL")
    runtime.reset()

    @counts_as_sign_of_life
    def route(event: dict[str, Any], context: Any) -> str:
        return "handled"

    assert route(ws_event("message_default", "x="), FakeLambdaContext()) == "handled"
    out = capsys.readouterr().out
    errors = [line for line in json_lines(out) if line.get("level") == "ERROR"]
    assert errors
    assert "misconfigured" in errors[0]["message"]
    assert ("SignOfLifeFailed", 1.0, {"Cause": "configuration"}) in metrics(out)
