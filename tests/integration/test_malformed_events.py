"""Property-based: whatever malformed event arrives, each WebSocket handler answers
400 with a JSON error and writes nothing; a malformed optional field alone is dropped
and the event does its work (a $disconnect still ends its session)."""

from __future__ import annotations

import copy
import json
import re
from collections.abc import Callable
from typing import Any

import psycopg
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from functions import connect, disconnect, message
from tests.support import HS256_SECRET, FakeLambdaContext, claims, sign, with_query, ws_event
from tether.events import CONNECTION_ID_PATTERN, MAX_MESSAGE_BYTES

Handler = Callable[[dict[str, Any], Any], dict[str, Any]]
HANDLERS: dict[str, tuple[Handler, str]] = {
    "connect": (connect.lambda_handler, "connect"),
    "disconnect": (disconnect.lambda_handler, "disconnect"),
    "message": (message.lambda_handler, "message_heartbeat"),
}

not_a_string = st.one_of(
    st.none(),
    st.integers(),
    st.floats(allow_nan=False),
    st.booleans(),
    st.lists(st.integers(), max_size=3),
)
not_an_int = st.one_of(
    st.text(max_size=10),
    st.floats(allow_nan=False).filter(lambda f: not f.is_integer()),
    st.lists(st.integers(), max_size=2),
)
bad_connection_ids = st.one_of(
    st.just(""),
    st.text(min_size=129, max_size=200, alphabet="abc="),
    st.text(min_size=1, max_size=40).filter(lambda s: not re.fullmatch(CONNECTION_ID_PATTERN, s)),
    st.just("abc'; drop table conversation_sessions; --"),
)


EVENT_FAULTS = [
    "not_a_dict",
    "no_context",
    "context_not_a_dict",
    "drop_required",
    "connection_id_type",
    "connection_id_shape",
    "event_type",
]
CONNECT_FAULTS = ["headers_type"]
"""Only $connect reads its headers (the token, the sub-protocol): elsewhere they are
ignored, bad or not."""
BODY_FAULTS = ["body_type", "huge_body", "base64_flag", "lone_surrogate"]
"""Only a message's body is read: on $connect and $disconnect these are ignored."""


OPEN = "prop="
"""The session every malformed event aims at (a $connect aims at a new connection)."""
NEW = "fresh="


def _well_formed(template: str) -> dict[str, Any]:
    """A $connect with a valid token for a connection not yet open, so a parser that let
    a fault through would open a session; any other event aims at the open session."""
    if template == "connect":
        return with_query(ws_event(template, NEW), token=sign(claims(), HS256_SECRET, "HS256"))
    return copy.deepcopy(ws_event(template, OPEN))


@st.composite
def corrupted(draw: st.DrawFn, template: str, kinds: list[str]) -> Any:
    event = _well_formed(template)
    context = event["requestContext"]
    kind = draw(st.sampled_from(kinds))
    if kind == "not_a_dict":
        return draw(
            st.one_of(
                st.none(), st.integers(), st.text(max_size=20), st.lists(st.integers(), max_size=3)
            )
        )
    if kind == "no_context":
        event.pop("requestContext")
    elif kind == "context_not_a_dict":
        event["requestContext"] = draw(not_a_string)
    elif kind == "drop_required":
        context.pop(draw(st.sampled_from(["connectionId", "eventType", "routeKey"])))
    elif kind == "connection_id_type":
        context["connectionId"] = draw(not_a_string)
    elif kind == "connection_id_shape":
        context["connectionId"] = draw(bad_connection_ids)
    elif kind == "event_type":
        expected = context["eventType"]
        context["eventType"] = draw(
            st.sampled_from(["CONNECT", "DISCONNECT", "MESSAGE", "connect", "UPGRADE"]).filter(
                lambda value: value != expected
            )
        )
    elif kind == "headers_type":
        event["headers"] = draw(
            st.one_of(
                st.lists(st.text(max_size=5), max_size=3),
                st.text(max_size=5),
                st.dictionaries(st.text(max_size=5), st.integers(), min_size=1, max_size=3),
            )
        )
    elif kind == "body_type":
        event["body"] = draw(
            st.one_of(
                st.integers(),
                st.lists(st.integers(), max_size=3),
                st.dictionaries(st.text(max_size=5), st.integers(), max_size=2),
            )
        )
    elif kind == "huge_body":
        event["body"] = json.dumps(
            {"action": "heartbeat", "pad": "x" * (MAX_MESSAGE_BYTES + draw(st.integers(1, 5000)))}
        )
    elif kind == "base64_flag":
        event["isBase64Encoded"] = draw(st.sampled_from(["yes", 1, None, [True], "false"]))
    elif kind == "lone_surrogate":
        event["body"] = '{"action": "heartbeat", "note": "\ud800"}'
    return event


def _everything(db: psycopg.Connection[dict[str, object]]) -> list[list[dict[str, object]]]:
    """Every session and every queued announcement, as they are now."""
    return [
        db.execute(f"select * from public.{table} order by 1").fetchall()
        for table in ("conversation_sessions", "conversation_session_announcements")
    ]


@pytest.mark.usefixtures("lambda_env")
@pytest.mark.parametrize("name", sorted(HANDLERS))
def test_malformed_events_get_400_and_write_nothing(
    name: str, db: psycopg.Connection[dict[str, object]]
) -> None:
    handler, template = HANDLERS[name]
    kinds = EVENT_FAULTS + {"connect": CONNECT_FAULTS, "message": BODY_FAULTS}.get(name, [])
    opened = connect.lambda_handler(
        with_query(ws_event("connect", OPEN), token=sign(claims(), HS256_SECRET, "HS256")),
        FakeLambdaContext(),
    )
    assert opened["statusCode"] == 200, opened
    # Heartbeats are not throttled here: a touch let through would move last_seen_at.
    before = _everything(db)
    assert len(before[0]) == 1

    @settings(
        max_examples=60,
        deadline=None,
        suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
    )
    @given(event=corrupted(template, kinds))
    def check(event: Any) -> None:
        response = handler(event, FakeLambdaContext())
        assert response["statusCode"] == 400, (
            event if not isinstance(event, dict) else event.get("requestContext"),
            response,
        )
        body = json.loads(response["body"])
        assert body["error"] == "bad_request"
        assert body["message"]
        assert _everything(db) == before, event

    check()
    # The session is still open, untouched: a well-formed event for it still works.
    assert handler(_well_formed(template), FakeLambdaContext())["statusCode"] == 200
    assert _everything(db) != before


bad_optional_values: dict[str, st.SearchStrategy[Any]] = {
    "disconnectStatusCode": st.one_of(
        not_an_int,
        # No WebSocket close code: dropped, and the session still ends (the end
        # function refuses one).
        st.integers(min_value=5_000),
        st.integers(max_value=999),
        st.just("1000"),
    ),
    "disconnectReason": st.one_of(not_a_string, st.text(min_size=1025, max_size=1100)),
    "connectedAt": st.one_of(
        not_an_int,
        st.integers(min_value=32_503_680_000_001, max_value=10**20),
        st.integers(max_value=1_420_070_399_999),
    ),
    "requestTimeEpoch": not_an_int,
    "requestId": st.one_of(not_a_string, st.text(min_size=257, max_size=300)),
    "apiId": not_a_string,
    "stage": not_a_string,
    "identity": st.one_of(
        st.text(max_size=5),
        st.fixed_dictionaries({"sourceIp": not_a_string}),
        st.fixed_dictionaries({"userAgent": not_a_string}),
    ),
}


@st.composite
def bad_optional_fields(draw: st.DrawFn) -> dict[str, Any]:
    names = draw(st.lists(st.sampled_from(sorted(bad_optional_values)), min_size=1, max_size=3))
    return {name: draw(bad_optional_values[name]) for name in names}


def _with_body_fault(event: dict[str, Any], kind: str) -> dict[str, Any]:
    """The event with a bad body of this kind, as a corrupted message has one."""
    faults: dict[str, dict[str, Any]] = {
        "body_type": {"body": [1, 2]},
        "huge_body": {"body": "x" * (MAX_MESSAGE_BYTES * 2)},
        "base64_flag": {"isBase64Encoded": "false"},
        "lone_surrogate": {"body": '{"note": "\ud800"}'},
    }
    return {**event, **faults[kind]}


@pytest.mark.usefixtures("lambda_env")
def test_a_malformed_optional_field_is_dropped_and_the_session_still_ends(
    db: psycopg.Connection[dict[str, object]],
) -> None:
    counter = iter(range(1_000_000))
    token = sign(claims(), HS256_SECRET, "HS256")

    @settings(
        max_examples=60,
        deadline=None,
        suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
    )
    @given(
        bad=bad_optional_fields(), bad_on_connect=st.booleans(), body=st.sampled_from(BODY_FAULTS)
    )
    def check(bad: dict[str, Any], bad_on_connect: bool, body: str) -> None:
        connection_id = f"opt{next(counter)}="
        opening = with_query(ws_event("connect", connection_id), token=token)
        if bad_on_connect:
            opening["requestContext"].update(bad)
            opening = _with_body_fault(opening, body)
        opened = connect.lambda_handler(opening, FakeLambdaContext())
        assert opened["statusCode"] == 200, opened
        closing = _with_body_fault(ws_event("disconnect", connection_id), body)
        closing["requestContext"].update(bad)
        ended = disconnect.lambda_handler(closing, FakeLambdaContext())
        assert ended["statusCode"] == 200, ended
        row = db.execute(
            "select is_active, end_reason, disconnect_status_code"
            " from public.conversation_sessions where connection_id = %s",
            (connection_id,),
        ).fetchone()
        assert row is not None
        assert row["is_active"] is False
        if "disconnectStatusCode" in bad:
            assert row["disconnect_status_code"] is None

    check()


@pytest.mark.usefixtures("lambda_env")
@pytest.mark.parametrize(
    "bad",
    [
        {"headers": {"X-Forwarded-For": None}},
        {"headers": ["Host"]},
        {"queryStringParameters": {"token": None}},
    ],
    ids=["null_header", "headers_list", "null_query"],
)
def test_a_disconnect_with_bad_headers_or_query_still_ends_its_session(
    bad: dict[str, Any], db: psycopg.Connection[dict[str, object]]
) -> None:
    """A $disconnect reads neither: a bad one must not leave the session to the sweep,
    which would lose the close code and the reason."""
    opening = with_query(
        ws_event("connect", "badhdr="), token=sign(claims(), HS256_SECRET, "HS256")
    )
    assert connect.lambda_handler(opening, FakeLambdaContext())["statusCode"] == 200
    closing = {**ws_event("disconnect", "badhdr="), **bad}
    assert disconnect.lambda_handler(closing, FakeLambdaContext())["statusCode"] == 200
    row = db.execute(
        "select is_active, end_reason, disconnect_status_code from public.conversation_sessions"
    ).fetchone()
    assert row == {
        "is_active": False,
        "end_reason": "client_disconnect",
        "disconnect_status_code": 1000,
    }


@pytest.mark.usefixtures("lambda_env")
def test_every_websocket_handler_says_which_optional_fields_it_left_out(
    db: psycopg.Connection[dict[str, object]], capsys: pytest.CaptureFixture[str]
) -> None:
    """$connect and $disconnect said so; a heartbeat went on without a word."""
    opening = with_query(ws_event("connect", "said="), token=sign(claims(), HS256_SECRET, "HS256"))
    for handler, event in (
        (connect.lambda_handler, opening),
        (message.lambda_handler, ws_event("message_heartbeat", "said=")),
        (disconnect.lambda_handler, ws_event("disconnect", "said=")),
    ):
        event["requestContext"]["identity"] = "not an object"
        assert handler(event, FakeLambdaContext())["statusCode"] == 200
        lines = [json.loads(line) for line in capsys.readouterr().out.splitlines() if line]
        left_out = [
            line for line in lines if line.get("message") == "malformed optional fields left out"
        ]
        assert [line["fields"] for line in left_out] == [["requestContext.identity"]], lines
        assert left_out[0]["connection_id"] == "said="
