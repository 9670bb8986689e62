"""The operators' API on a real Postgres, route by route, as an operator uses it:
credentials, filters and pages, forced closes, presence, statistics, the sweep, health."""

from __future__ import annotations

import json
import logging
import socket
import threading
import time
import uuid
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import psycopg
import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from tests import connections_standin, eventbridge_standin
from tests.admin_support import AUTH, OPERATOR_KEY, AdminApi, admin_api, token
from tests.conftest import SessionFactory
from tests.support import claims, sign
from tether import migrate, runtime
from tether.admin import cursor, deps, operations
from tether.admin.schemas import SessionClosed, UserDisconnected
from tether.aws import eventbridge
from tether.aws.connections import ConnectionsApi
from tether.drivers import supabase as supabase_driver
from tether.drivers.postgres import PostgresStore
from tether.errors import DatabaseError, DatabaseUnavailableError
from tether.models import OpenSessionRequest, SessionEnded
from tether.outbox import AnnounceResult, LogAnnouncer
from tether.store import (
    APPLIED_MIGRATIONS,
    FORCE_CLOSE,
    FORCE_CLOSE_USER,
    GET_SESSION,
    LIST_SESSIONS,
    ROW_SECURITY_PROBLEMS,
    SWEEP_STATE,
    Row,
    SerializedStore,
    SessionStore,
)
from tether.sweep_and_admin_models import SessionFilter

Conn = psycopg.Connection[dict[str, object]]


@pytest.fixture
def api(database_url: str) -> Iterator[AdminApi]:
    with admin_api(database_url) as running:
        yield running


def _problem(response: Any, status: int) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/problem+json"
    body: dict[str, Any] = response.json()
    assert body["status"] == status
    assert {"type", "title", "detail"} <= set(body)
    return body


def _fields(response: Any) -> list[str]:
    body = _problem(response, 400)
    return [error["field"] for error in body["errors"]]


# --- credentials ------------------------------------------------------------------


def _routes(api: AdminApi) -> list[tuple[str, str]]:
    schema = api.client.get("/openapi.json").json()
    sample = str(uuid.uuid4())
    found = []
    for path, item in schema["paths"].items():
        for method in item:
            found.append(
                (method.upper(), path.replace("{session_id}", sample).replace("{user_id}", sample))
            )
    found.append(("GET", "/dashboard/chart.svg"))
    return found


def test_every_route_but_health_refuses_a_caller_without_credentials(api: AdminApi) -> None:
    routes = _routes(api)
    assert len(routes) >= 10
    for method, path in routes:
        response = api.client.request(method, path)
        if path == "/health":
            assert response.status_code == 200, response.text
            continue
        body = _problem(response, 401)
        assert response.headers["www-authenticate"].startswith("Bearer")
        assert "operator key" in body["detail"]


@pytest.mark.parametrize(
    "headers",
    [
        {"Authorization": f"Bearer {OPERATOR_KEY}x"},
        {"Authorization": f"Bearer {OPERATOR_KEY[:-1]}"},
        {"X-Tether-Operator-Key": "guess"},
        {"Authorization": "Bearer " + token(role="service_role", expires_in=-60)},
        {"Authorization": "Bearer " + token(role="service_role", iss="https://elsewhere/auth/v1")},
        {"Authorization": "Bearer " + token(role="service_role")[:-4] + "AAAA"},
    ],
    ids=[
        "longer-key",
        "shorter-key",
        "wrong-header-key",
        "expired",
        "issuer",
        "signature",
    ],
)
def test_credentials_that_do_not_verify_get_401(api: AdminApi, headers: dict[str, str]) -> None:
    # /health answers a caller without credentials, but one whose credentials fail is
    # told so, as everywhere: not quietly given the short answer.
    for path in ("/sessions", "/health"):
        response = api.client.get(path, headers=headers)
        body = _problem(response, 401)
        assert OPERATOR_KEY not in response.text
        assert body["code"] == "unauthorized"
        assert response.headers["www-authenticate"].startswith("Bearer")
        assert api.client.head(path, headers=headers).status_code == 401


@pytest.mark.parametrize(
    "headers",
    [
        [
            ("Authorization", f"Bearer {OPERATOR_KEY}"),
            ("Authorization", "Bearer wrong-key-0000000"),
        ],
        [("X-Tether-Operator-Key", OPERATOR_KEY), ("X-Tether-Operator-Key", "wrong-key-0000000")],
        [("Authorization", f"Bearer {OPERATOR_KEY}"), ("Authorization", f"Bearer {OPERATOR_KEY}")],
    ],
    ids=["bearer-then-wrong", "key-then-wrong", "the-same-twice"],
)
def test_a_credential_sent_twice_is_refused_not_read_once(
    api: AdminApi, headers: list[tuple[str, str]]
) -> None:
    for path in ("/sessions", "/health"):
        body = _problem(api.client.get(path, headers=headers), 401)
        assert "send each credential once" in body["detail"]
        assert OPERATOR_KEY not in json.dumps(body)


@pytest.mark.parametrize(
    ("authorization", "paths"),
    [
        (f"Basic {OPERATOR_KEY}", ("/sessions",)),
        ("Bearer", ("/sessions", "/health")),
        ("Bearer ", ("/sessions", "/health")),
        ("Digest x=1", ("/sessions",)),
        ("garbage", ("/sessions", "/health")),
    ],
)
def test_an_authorization_that_is_no_bearer_is_refused_beside_a_valid_key(
    api: AdminApi, authorization: str, paths: tuple[str, ...]
) -> None:
    """Sent both ways, both must verify: an Authorization of another scheme, or an
    empty Bearer, was read as none and passed over beside a valid key header. (/health
    takes another scheme for no credential: below.)"""
    for path in paths:
        response = api.client.get(
            path,
            headers={"Authorization": authorization, "X-Tether-Operator-Key": OPERATOR_KEY},
        )
        body = _problem(response, 401)
        assert "Authorization must be 'Bearer <key or token>'" in body["detail"]
        assert OPERATOR_KEY not in response.text


def test_an_empty_key_header_is_refused_beside_a_valid_bearer(api: AdminApi) -> None:
    """Sent both ways, both must verify: an empty X-Tether-Operator-Key was read as none
    and passed over beside a valid Bearer (and, alone on /health, was told to send a
    key, as if the route needed one)."""
    both = [("Authorization", f"Bearer {OPERATOR_KEY}"), ("X-Tether-Operator-Key", "")]
    for headers in (both, both[1:]):
        for path in ("/sessions", "/health"):
            response = api.client.get(path, headers=headers)
            body = _problem(response, 401)
            assert (
                body["detail"]
                == "X-Tether-Operator-Key is empty: send the key in it, or leave it out"
            )
            assert OPERATOR_KEY not in response.text
            assert api.client.head(path, headers=headers).status_code == 401


def test_a_query_parameter_given_twice_is_refused(api: AdminApi) -> None:
    response = api.client.get("/sessions", params=[("limit", "5"), ("limit", "500")], headers=AUTH)
    assert _fields(response) == ["query"]
    assert "more than once" in response.json()["detail"]


@pytest.mark.parametrize(
    "claims",
    [
        {"role": "authenticated"},
        {"role": "anon"},
        {"role": "authenticated", "app_metadata": {"tether_operator": "yes"}},
    ],
    ids=["user", "anon", "claim-not-true"],
)
def test_a_valid_token_of_a_non_operator_gets_403(api: AdminApi, claims: dict[str, Any]) -> None:
    for path in ("/sessions", "/health"):
        response = api.client.get(path, headers={"Authorization": f"Bearer {token(**claims)}"})
        body = _problem(response, 403)
        assert body["code"] == "forbidden"


@pytest.mark.parametrize(
    "headers",
    [
        AUTH,
        {"X-Tether-Operator-Key": OPERATOR_KEY},
        {"Authorization": "Bearer " + token(role="service_role")},
        {"Authorization": "Bearer " + token(app_metadata={"tether_operator": True})},
        {"Authorization": f"bearer {OPERATOR_KEY}"},
    ],
    ids=["bearer-key", "header-key", "operator-role", "operator-claim", "scheme-in-lower-case"],
)
def test_operators_get_in(api: AdminApi, headers: dict[str, str]) -> None:
    response = api.client.get("/sessions", headers=headers)
    assert response.status_code == 200, response.text
    health = api.client.get("/health", headers=headers)
    assert (health.status_code, health.json()["migrations"]["pending"]) == (200, [])


def test_the_key_may_be_kept_in_ssm(database_url: str, aws: str) -> None:
    import boto3  # noqa: PLC0415

    boto3.client("ssm", endpoint_url=aws).put_parameter(
        Name="/tether/operator-key", Value=OPERATOR_KEY, Type="SecureString"
    )
    with admin_api(
        database_url, operator_key="ssm:/tether/operator-key", aws_endpoint_url=aws
    ) as running:
        assert running.client.get("/sessions", headers=AUTH).status_code == 200
        _problem(running.client.get("/sessions", headers={"Authorization": "Bearer nope"}), 401)


def test_a_key_store_that_does_not_answer_is_a_503_that_names_nothing(
    database_url: str,
) -> None:
    """Secrets Manager or SSM down or throttling: the caller is told to retry, not that
    tether is misconfigured, and learns nothing of where the key is kept."""
    with socket.socket() as probe:  # a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        nowhere = f"http://127.0.0.1:{probe.getsockname()[1]}"
    with admin_api(
        database_url, operator_key="ssm:/tether/operator-key", aws_endpoint_url=nowhere
    ) as running:
        response = running.client.get(
            "/sessions", headers={"Authorization": "Bearer any-key-at-all-00"}
        )
        body = _problem(response, 503)
        assert body["code"] == "secret_unavailable"
        assert "try again" in body["detail"]
        assert "ssm:" not in response.text and "operator-key" not in response.text


@pytest.mark.parametrize(
    ("kept", "says"),
    [("short", "at least 16"), ("\u043a\u043b\u044e\u0447-" * 4, "printable ASCII")],
)
def test_a_key_kept_in_ssm_that_no_header_could_carry_is_a_configuration_error(
    database_url: str, aws: str, kept: str, says: str
) -> None:
    # A plain value is refused as the settings are read; one kept in a secret, once read.
    import boto3  # noqa: PLC0415

    name = f"/tether/unfit-key-{len(kept)}"
    boto3.client("ssm", endpoint_url=aws).put_parameter(Name=name, Value=kept, Type="String")
    with admin_api(database_url, operator_key=f"ssm:{name}", aws_endpoint_url=aws) as running:
        body = _problem(
            running.client.get("/sessions", headers={"Authorization": "Bearer anything-at-all"}),
            500,
        )
        assert "TETHER_OPERATOR_KEY" in body["detail"] and says in body["detail"]
        assert kept not in body["detail"]


def test_a_short_hs256_secret_kept_in_ssm_is_a_configuration_error_for_tokens(
    database_url: str, aws: str
) -> None:
    # A plain value is refused as the settings are read; one kept in a secret, once read.
    import boto3  # noqa: PLC0415

    short = "short-hs256-secret-0123456789ab"  # 31 bytes
    boto3.client("ssm", endpoint_url=aws).put_parameter(
        Name="/tether/short-jwt", Value=short, Type="SecureString"
    )
    with admin_api(database_url, jwt_secret="ssm:/tether/short-jwt", aws_endpoint_url=aws) as api:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # PyJWT's own warning of a short key
            forged = sign(claims(role="service_role"), short, "HS256")
        response = api.client.get("/sessions", headers={"Authorization": f"Bearer {forged}"})
        body = _problem(response, 500)
        assert "TETHER_JWT_SECRET" in body["detail"] and "at least 32 bytes" in body["detail"]
        assert short not in response.text
        # The key does not depend on the secret.
        assert api.client.get("/sessions", headers=AUTH).status_code == 200


# --- listing and pages ------------------------------------------------------------


def test_filters(api: AdminApi, make_session: SessionFactory) -> None:
    user = uuid.uuid4()
    live_mine = make_session(user_id=user, started_seconds_ago=30)
    ended_mine = make_session(
        user_id=user, started_seconds_ago=7200, ended_seconds_ago=3600, end_reason="gone"
    )
    make_session(started_seconds_ago=10)
    make_session(started_seconds_ago=90000, ended_seconds_ago=86000, end_reason="idle_timeout")

    def ids(**params: Any) -> list[str]:
        response = api.client.get("/sessions", params=params, headers=AUTH)
        assert response.status_code == 200, response.text
        return [s["session_id"] for s in response.json()["sessions"]]

    assert len(ids()) == 4
    assert len(ids(active="true")) == 2
    assert len(ids(active="false")) == 2
    assert ids(user_id=str(user)) == [str(live_mine["session_id"]), str(ended_mine["session_id"])]
    assert ids(user_id=str(user), active="true") == [str(live_mine["session_id"])]
    assert ids(end_reason="gone") == [str(ended_mine["session_id"])]
    assert len(ids(started_after="2000-01-01T00:00:00Z")) == 4
    recent = ids(started_after=_ago_iso(api, 3600))
    assert len(recent) == 2
    assert len(ids(started_before=_ago_iso(api, 3600))) == 2


def _ago_iso(api: AdminApi, seconds: float) -> str:
    from datetime import UTC, datetime, timedelta  # noqa: PLC0415

    return (datetime.now(UTC) - timedelta(seconds=seconds)).isoformat()


def test_one_session_and_an_unknown_one(api: AdminApi, make_session: SessionFactory) -> None:
    row = make_session(started_seconds_ago=5)
    response = api.client.get(f"/sessions/{row['session_id']}", headers=AUTH)
    assert response.status_code == 200
    body = response.json()
    assert (body["connection_id"], body["is_active"]) == (row["connection_id"], True)
    missing = uuid.uuid4()
    problem = _problem(api.client.get(f"/sessions/{missing}", headers=AUTH), 404)
    assert str(missing) in problem["detail"]
    assert _fields(api.client.get("/sessions/not-a-uuid", headers=AUTH)) == ["session_id"]
    # The value is never echoed, not even one character of it.
    secretish = _problem(api.client.get("/sessions/zq-secret-value", headers=AUTH), 400)
    assert secretish["detail"] == "session_id: Input should be a valid UUID"
    assert secretish["instance"] == "/sessions/{session_id}"
    assert "`" not in json.dumps(secretish)
    assert "secret" not in json.dumps(secretish)


@pytest.mark.parametrize(
    ("path", "params", "status"),
    [
        ("/sessions/' OR 1=1--zq", {}, 400),
        ("/sessions/" + "zq" * 2500, {}, 400),
        ("/stats/orphans", {"older_than": "2zq"}, 400),
        ("/stats/orphans", {"older_than": "-1zq"}, 400),
        ("/users/zq<script>/presence", {}, 400),
        ("/nowhere/<script>zq</script>", {}, 404),
        ("/sessions/zq%FF%FE", {}, 400),
    ],
)
def test_no_answer_echoes_what_was_sent(
    api: AdminApi, path: str, params: dict[str, str], status: int
) -> None:
    for headers in (AUTH, {}):
        response = api.client.get(path, params=params, headers=headers)
        expected = status if headers or status == 404 else 401
        body = _problem(response, expected)
        assert "zq" not in response.text, body
        assert "<script>" not in response.text


def test_pages_skip_and_repeat_nothing_while_sessions_open_in_between(
    api: AdminApi, make_session: SessionFactory
) -> None:
    # 23 sessions, some started in the same microsecond (ties are broken by session_id).
    existing = set()
    for index in range(23):
        row = make_session(started_seconds_ago=600 - (index // 2) * 10)
        existing.add(str(row["session_id"]))
    seen: list[str] = []
    page_cursor = None
    pages = 0
    while True:
        params: dict[str, Any] = {"limit": 5}
        if page_cursor:
            params["cursor"] = page_cursor
        response = api.client.get("/sessions", params=params, headers=AUTH)
        assert response.status_code == 200, response.text
        page = response.json()
        seen.extend(s["session_id"] for s in page["sessions"])
        pages += 1
        # New connections arrive between pages, as they do in production.
        make_session(started_seconds_ago=0)
        make_session(started_seconds_ago=0)
        page_cursor = page["next_cursor"]
        if page_cursor is None:
            break
    assert len(seen) == len(set(seen)), "a row was repeated"
    assert set(seen) == existing, "a row was skipped (or a newer one crept in)"
    assert pages == 5
    starts = api.client.get("/sessions", params={"limit": 500}, headers=AUTH).json()["sessions"]
    assert len(starts) == 23 + 2 * pages


@pytest.mark.parametrize(("rows", "limit"), [(5, 5), (4, 2), (500, 500), (501, 500)])
def test_a_page_has_a_next_cursor_only_while_more_rows_follow(
    api: AdminApi, make_session: SessionFactory, rows: int, limit: int
) -> None:
    """A last page that happened to be full came with a cursor, which led to an empty
    page: a script that pages until the cursor is gone made a request for nothing, and
    a person saw "more" where there was none."""
    for index in range(rows):
        make_session(started_seconds_ago=1000 - index)
    listed = 0
    params: dict[str, Any] = {"limit": limit, "active": "true"}
    while True:
        page = api.client.get("/sessions", params=params, headers=AUTH).json()
        assert page["sessions"], "a cursor led to an empty page"
        listed += len(page["sessions"])
        if page["next_cursor"] is None:
            break
        params = {"limit": limit, "active": "true", "cursor": page["next_cursor"]}
    assert listed == rows


def test_a_cursor_is_bound_to_its_filters(api: AdminApi, make_session: SessionFactory) -> None:
    for _ in range(3):
        make_session()
    page = api.client.get("/sessions", params={"limit": 1, "active": "true"}, headers=AUTH).json()
    again = api.client.get(
        "/sessions", params={"limit": 1, "cursor": page["next_cursor"]}, headers=AUTH
    )
    assert _fields(again) == ["cursor"]
    assert "other filters" in again.json()["detail"]


@pytest.mark.parametrize(
    ("path", "params", "field"),
    [
        ("/sessions", {"limit": 0}, "limit"),
        ("/sessions", {"limit": 501}, "limit"),
        ("/sessions", {"limit": "ten"}, "limit"),
        # Digits alone: pydantic reads these as 5, 5 and 50.
        ("/sessions", {"limit": "5.0"}, "limit"),
        ("/sessions", {"limit": "+5"}, "limit"),
        ("/sessions", {"limit": "5_0"}, "limit"),
        ("/stats/daily", {"days": "0x7"}, "days"),
        ("/stats/orphans", {"alert_above": "5.0"}, "alert_above"),
        ("/sessions", {"active": "maybe"}, "active"),
        # true or false alone: pydantic reads these as true.
        ("/sessions", {"active": "yes"}, "active"),
        ("/sessions", {"active": "1"}, "active"),
        ("/sessions", {"active": "on"}, "active"),
        ("/sessions", {"active": "TRUE"}, "active"),
        ("/sessions", {"user_id": "bob"}, "user_id"),
        ("/sessions", {"started_after": "yesterday"}, "started_after"),
        ("/sessions", {"started_after": "2026-11-01T00:00:00"}, "started_after"),
        # Not Unix seconds, though pydantic would read them so.
        ("/sessions", {"started_after": "0"}, "started_after"),
        ("/sessions", {"started_before": "1764417600.5"}, "started_before"),
        ("/sessions", {"end_reason": "bored"}, "end_reason"),
        ("/sessions", {"cursor": "x" * 600}, "cursor"),
        ("/sessions", {"cursor": "not-a-cursor"}, "cursor"),
        (
            "/sessions",
            {"started_after": "2026-11-02T00:00:00Z", "started_before": "2026-11-01T00:00:00Z"},
            "started_before",
        ),
        ("/stats/daily", {"days": 0}, "days"),
        ("/stats/daily", {"days": 367}, "days"),
        ("/stats/orphans", {"older_than": "soon"}, "older_than"),
        ("/stats/orphans", {"older_than": "400d"}, "older_than"),
        ("/stats/orphans", {"alert_above": -1}, "alert_above"),
        ("/users/bob/presence", {}, "user_id"),
    ],
)
def test_bad_values_get_a_400_naming_the_field(
    api: AdminApi, path: str, params: dict[str, Any], field: str
) -> None:
    response = api.client.get(path, params=params, headers=AUTH)
    assert _fields(response) == [field]
    assert field in response.json()["detail"]


@pytest.mark.parametrize(
    ("path", "field", "bound"),
    [
        ("/sessions?limit=-1", "limit", "greater than or equal to 1"),
        ("/stats/daily?days=-7", "days", "greater than or equal to 1"),
        ("/stats/orphans?alert_above=-1", "alert_above", "greater than or equal to 0"),
    ],
)
def test_a_negative_number_is_told_the_bound_it_is_under(
    api: AdminApi, path: str, field: str, bound: str
) -> None:
    """limit=-1 was answered "a whole number written in digits is expected, such as 50",
    which -1 is; the command line says "between 1 and 500" of the same value."""
    response = api.client.get(path, headers=AUTH)
    assert _fields(response) == [field]
    assert bound in response.json()["detail"]


def test_the_schema_documents_a_404_only_where_one_can_come(api: AdminApi) -> None:
    """The user routes were documented as answering 404 ("No such resource"), which they
    never do: a user unknown to the table is offline, and has nothing to close."""
    schema = api.client.get("/openapi.json").json()
    stranger = uuid.uuid4()
    presence = api.client.get(f"/users/{stranger}/presence", headers=AUTH)
    assert presence.status_code == 200 and presence.json()["online"] is False
    closed = api.client.post(f"/users/{stranger}/disconnect", headers=AUTH)
    assert closed.status_code == 200 and closed.json()["closed"] == 0
    documented = {
        (method.upper(), path)
        for path, item in schema["paths"].items()
        for method, operation in item.items()
        if "404" in operation["responses"]
    }
    assert documented == {
        ("GET", "/sessions/{session_id}"),
        ("POST", "/sessions/{session_id}/close"),
    }


def test_the_schema_gives_each_number_s_bounds_in_json_schema_s_words(api: AdminApi) -> None:
    """The schema said a page's size was {"ge": 1, "le": 500}, words JSON Schema does not
    have: a client generated from it, or a validator, knew of no bound at all."""
    schema = api.client.get("/openapi.json").json()
    bounds = {}
    for path, item in schema["paths"].items():
        for parameter in item.get("get", {}).get("parameters", []):
            given = parameter["schema"]
            assert not {"ge", "le", "gt", "lt"} & set(given), (path, parameter["name"], given)
            if given.get("type") == "integer":
                bounds[path, parameter["name"]] = (given.get("minimum"), given.get("maximum"))
    assert bounds == {
        ("/sessions", "limit"): (1, 500),
        ("/users/{user_id}/presence", "limit"): (1, 500),
        ("/stats/daily", "days"): (1, 366),
        ("/stats/orphans", "alert_above"): (0, 1_000_000),
    }
    # Still read as digits alone, before the bounds.
    for path in ("/sessions?limit=5.0", "/stats/daily?days=%2B5", "/stats/orphans?alert_above=5_0"):
        assert "written in digits" in api.client.get(path, headers=AUTH).json()["detail"], path


def test_an_unencoded_plus_in_a_time_is_explained(api: AdminApi) -> None:
    # A bare '+' in a query string is a space: the offset is lost on the way.
    response = api.client.get("/sessions?started_after=2026-11-01T00:00:00+00:00", headers=AUTH)
    assert _fields(response) == ["started_after"]
    assert response.json()["detail"] == (
        "started_after: a '+' in a URL must be written %2B (a bare '+' reads as a space)"
    )
    encoded = api.client.get("/sessions?started_after=2026-11-01T00:00:00%2B00:00", headers=AUTH)
    assert encoded.status_code == 200, encoded.text
    # A space between date and time (as Python writes a datetime) is no lost '+'.
    spaced = api.client.get(
        "/sessions", params={"started_after": "2026-11-01 00:00:00+00:00"}, headers=AUTH
    )
    assert spaced.status_code == 200, spaced.text


def test_a_tampered_cursor_is_refused(api: AdminApi, make_session: SessionFactory) -> None:
    for _ in range(3):
        make_session()
    issued = api.client.get("/sessions", params={"limit": 1}, headers=AUTH).json()["next_cursor"]
    position = cursor.decode(issued, SessionFilter())
    # Same shape, another position: the checksum no longer matches.
    forged = cursor.encode(position[0], uuid.uuid4(), SessionFilter())
    tampered = forged[:-6] + issued[-6:]
    response = api.client.get("/sessions", params={"cursor": tampered}, headers=AUTH)
    assert _fields(response) == ["cursor"]


# --- forced closes ----------------------------------------------------------------


def _row(db: Conn, session_id: object) -> dict[str, Any]:
    row = db.execute(
        "select s.*, exists (select 1 from public.conversation_session_announcements a"
        " where a.session_id = s.session_id) as queued"
        " from public.conversation_sessions s where s.session_id = %s",
        (session_id,),
    ).fetchone()
    assert row is not None
    return row


def test_forced_close_ends_announces_and_disconnects_once(
    api: AdminApi, db: Conn, make_session: SessionFactory
) -> None:
    assert api.gateway is not None
    row = make_session(started_seconds_ago=60)
    api.gateway.set_alive(str(row["connection_id"]))
    first = api.client.post(f"/sessions/{row['session_id']}/close", headers=AUTH)
    assert first.status_code == 200, first.text
    body = first.json()
    assert (body["outcome"], body["connection"], body["announced"]) == (
        "closed",
        "disconnected",
        True,
    )
    assert body["session"]["end_reason"] == "forced_close"
    assert ("DELETE", row["connection_id"]) in api.gateway.calls
    after = _row(db, row["session_id"])
    assert (after["is_active"], after["end_reason"]) == (False, "forced_close")
    assert after["announced_at"] is not None and not after["queued"]

    again = api.client.post(f"/sessions/{row['session_id']}/close", headers=AUTH).json()
    assert (again["outcome"], again["connection"], again["announced"]) == (
        "already_closed",
        "already_gone",
        None,
    )
    assert "already ended (forced_close)" in again["detail"]
    assert _row(db, row["session_id"])["session_end"] == after["session_end"]


def _close_at_once(
    database_url: str, closes: Sequence[Callable[[SessionStore], object]]
) -> list[object]:
    """Each close on its own thread, store and gateway client, all let go at once."""
    barrier = threading.Barrier(len(closes))
    answers: list[object] = [None] * len(closes)

    def run(index: int) -> None:
        store = PostgresStore(database_url)
        try:
            barrier.wait()
            answers[index] = closes[index](store)
        finally:
            store.close()

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(closes))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    return answers


def test_of_two_closes_at_once_the_one_that_ended_the_row_says_it_disconnected(
    database_url: str, make_session: SessionFactory
) -> None:
    """Both closes asked the gateway, and whichever reached it first was told it closed
    the connection: the close that ended the row (it announces first) answered, about
    one race in two, that the connection had already gone, and the close that ended
    nothing that it closed it."""
    with connections_standin.serve() as gateway:
        common: dict[str, Any] = {
            "connections": ConnectionsApi(gateway.url),
            "announcer": LogAnnouncer(),
            "announce_lease_seconds": 60.0,
            "operator": "test",
        }
        for _ in range(15):
            row = make_session(started_seconds_ago=60)
            gateway.set_alive(str(row["connection_id"]))
            session_id = uuid.UUID(str(row["session_id"]))

            def close(store: SessionStore, session_id: uuid.UUID = session_id) -> object:
                return operations.close_session(session_id, store=store, **common)

            answers = _close_at_once(database_url, [close, close])
            said = sorted(
                (a.outcome.value, a.connection.value)
                for a in answers
                if isinstance(a, SessionClosed)
            )
            assert said == [("already_closed", "already_gone"), ("closed", "disconnected")]
            assert [m for m, c in gateway.calls if c == row["connection_id"]] == [
                "DELETE",
                "DELETE",
            ]


def test_a_user_s_disconnect_and_a_close_at_once_the_one_that_ended_the_row_disconnected(
    database_url: str, make_session: SessionFactory
) -> None:
    with connections_standin.serve() as gateway:
        common: dict[str, Any] = {
            "connections": ConnectionsApi(gateway.url),
            "announcer": LogAnnouncer(),
            "announce_lease_seconds": 60.0,
            "operator": "test",
        }
        for _ in range(10):
            user = uuid.uuid4()
            row = make_session(user_id=user, started_seconds_ago=60)
            gateway.set_alive(str(row["connection_id"]))
            session_id = uuid.UUID(str(row["session_id"]))

            def close_one(store: SessionStore, session_id: uuid.UUID = session_id) -> object:
                return operations.close_session(session_id, store=store, **common)

            def close_user(store: SessionStore, user: uuid.UUID = user) -> object:
                return operations.close_user(user, store=store, **common)

            one, everyone = _close_at_once(database_url, [close_one, close_user])
            assert isinstance(one, SessionClosed) and isinstance(everyone, UserDisconnected)
            if everyone.closed:  # the user's disconnect ended the row
                [theirs] = everyone.sessions
                assert (theirs.connection.value, one.outcome.value, one.connection.value) == (
                    "disconnected",
                    "already_closed",
                    "already_gone",
                )
            else:
                assert (one.outcome.value, one.connection.value) == ("closed", "disconnected")


def test_a_close_waits_only_for_a_forced_close_still_at_work(
    store: PostgresStore, make_session: SessionFactory
) -> None:
    """The end's own lease says that its close is at work: once the close has announced
    (or given the lease back), or for an end another cause made, nothing is waited for."""
    forced = make_session(started_seconds_ago=60)
    session_id = uuid.UUID(str(forced["session_id"]))
    first = store.force_close(session_id, announce_lease_seconds=60)
    assert first is not None and first.closing_until is None  # it ended it
    at_work = store.force_close(session_id, announce_lease_seconds=60)
    assert at_work is not None and at_work.outcome.value == "already_ended"
    assert at_work.closing_until is not None
    store.mark_announced([session_id])
    done = store.force_close(session_id, announce_lease_seconds=60)
    assert done is not None and done.closing_until is None
    # Given back after a failed announcement: the sweep's to take, nothing at work.
    released = make_session(started_seconds_ago=60)
    released_id = uuid.UUID(str(released["session_id"]))
    store.force_close(released_id, announce_lease_seconds=60)
    store.release_announcements({released_id: 0})
    again = store.force_close(released_id, announce_lease_seconds=60)
    assert again is not None and again.closing_until is None
    # Ended by its client's $disconnect, whose announcement is at work: no close to wait for.
    ended = store.open_session(OpenSessionRequest(connection_id="ended-by-client="))
    store.end_session("ended-by-client=", "client_disconnect", announce_lease_seconds=60)
    by_client = store.force_close(ended.session_id, announce_lease_seconds=60)
    assert by_client is not None and by_client.closing_until is None


def _a_close_at_work(store: PostgresStore, make_session: SessionFactory) -> uuid.UUID:
    """A session a forced close ended and holds, that never asked the gateway (it crashed,
    or could not record its announcement): its lease lasts a minute."""
    row = make_session(started_seconds_ago=60)
    session_id = uuid.UUID(str(row["session_id"]))
    crashed = store.force_close(session_id, announce_lease_seconds=60)
    assert crashed is not None and crashed.outcome.value == "ended"
    return session_id


def test_a_close_that_waited_for_a_close_at_work_leaves_the_gateway_its_share(
    store: PostgresStore, make_session: SessionFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """After waiting its whole 12 s for a close at work that had crashed, a close gave the
    gateway 1 s: a gateway answering in more failed every retry while the lease lasted.
    Here at a third: 4 s for the wait and the gateway, a gateway answering in 1.2 s."""
    monkeypatch.setattr(operations, "DISCONNECT_BUDGET_SECONDS", 4.0)
    monkeypatch.setattr(operations, "DISCONNECT_FLOOR_SECONDS", 1.0 / 3)
    session_id = _a_close_at_work(store, make_session)
    connection_id = str(store.get_session(session_id).connection_id)  # type: ignore[union-attr]
    with connections_standin.serve() as gateway:
        gateway.set_alive(connection_id)
        gateway.on_request = lambda method, _: time.sleep(1.2 if method == "DELETE" else 0)
        started = time.monotonic()
        closed = operations.close_session(
            session_id,
            store=store,
            connections=ConnectionsApi(gateway.url),
            announcer=LogAnnouncer(),
            announce_lease_seconds=60.0,
            operator="test",
        )
        waited = time.monotonic() - started
    assert closed is not None
    assert (closed.outcome.value, closed.connection.value) == ("already_closed", "disconnected")
    assert waited < 4.0 + 1.0, waited


def test_a_close_on_a_slow_database_with_a_close_at_work_answers_within_its_budget(
    store: PostgresStore, make_session: SessionFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A close's steps added up past API Gateway's 29 s: ending the row, a wait of 12 s
    for a close at work (and the look that ends it), the gateway's wait, reading the
    session back, each call as long as the driver allows. Here all at a quarter: a 6 s
    budget, calls that may take the supabase driver's longest, a gateway gone quiet."""
    scale = 6.0 / operations.SESSION_CLOSE_BUDGET_SECONDS
    monkeypatch.setattr(operations, "SESSION_CLOSE_BUDGET_SECONDS", 6.0)
    monkeypatch.setattr(operations, "DISCONNECT_BUDGET_SECONDS", 12.0 * scale)
    monkeypatch.setattr(operations, "DISCONNECT_FLOOR_SECONDS", 1.0 * scale)
    _longest_call(monkeypatch, supabase_driver.LONGEST_CALL_SECONDS * scale)
    session_id = _a_close_at_work(store, make_session)
    connection_id = str(store.get_session(session_id).connection_id)  # type: ignore[union-attr]
    slow = _SlowStore(store, 1.2)
    with connections_standin.serve() as gateway:
        gateway.set_alive(connection_id)
        gateway.silent.add(connection_id)
        started = time.monotonic()
        closed = operations.close_session(
            session_id,
            store=slow,
            connections=ConnectionsApi(gateway.url),
            announcer=LogAnnouncer(),
            announce_lease_seconds=60.0,
            operator="test",
        )
        waited = time.monotonic() - started
        gateway.released.set()
    assert closed is not None
    assert waited < 6.0 + 0.6, waited
    assert (closed.outcome.value, closed.connection.value) == ("already_closed", "failed")
    # What it had no time for is said.
    assert closed.session is None and "not read back in time" in closed.detail


class _FailsAfterTheFirstClose(SerializedStore):
    """The test database, failing every forced close after the first (a database gone
    while a close waits for another at work)."""

    def __init__(self, inner: SessionStore) -> None:
        super().__init__(inner)
        self.closes = 0

    def call(self, function: str, args: Mapping[str, object]) -> list[Row]:
        if function == FORCE_CLOSE:
            self.closes += 1
            if self.closes > 1:
                raise DatabaseUnavailableError(f"the database did not answer {function}")
        return super().call(function, args)


def test_a_close_whose_look_at_a_close_at_work_fails_still_asks_the_gateway(
    store: PostgresStore, make_session: SessionFactory
) -> None:
    """The wait for a close at work only lets that close reach the gateway first: a look
    at the database failing during it answered 503, the connection not asked to close,
    though this close had its session and the gateway was there. Now the wait ends, and
    the close asks the gateway."""
    session_id = _a_close_at_work(store, make_session)
    connection_id = str(store.get_session(session_id).connection_id)  # type: ignore[union-attr]
    failing = _FailsAfterTheFirstClose(store)
    with connections_standin.serve() as gateway:
        gateway.set_alive(connection_id)
        closed = operations.close_session(
            session_id,
            store=failing,
            connections=ConnectionsApi(gateway.url),
            announcer=LogAnnouncer(),
            announce_lease_seconds=60.0,
            operator="test",
        )
        asked = [c for m, c in gateway.calls if m == "DELETE"]
    assert failing.closes == 2  # it looked again, and the look failed
    assert closed is not None
    assert (closed.outcome.value, closed.connection.value) == ("already_closed", "disconnected")
    assert asked == [connection_id]


def test_a_forced_close_whose_announcement_cannot_be_recorded_still_disconnects(
    api: AdminApi, db: Conn, make_session: SessionFactory
) -> None:
    """The row ended: its client must go too, or it stays connected to an ended
    session. The error recording the announcement had skipped the gateway's close."""
    from tests.integration.test_disconnect import REFUSE_RECORDING  # noqa: PLC0415

    assert api.gateway is not None
    row = make_session(started_seconds_ago=60)
    api.gateway.set_alive(str(row["connection_id"]))
    db.execute(REFUSE_RECORDING)
    response = api.client.post(f"/sessions/{row['session_id']}/close", headers=AUTH)
    assert response.status_code == 200, response.text
    body = response.json()
    # SessionEnded went out; unrecorded, it stays queued and goes out once more.
    assert (body["outcome"], body["connection"], body["announced"]) == (
        "closed",
        "disconnected",
        True,
    )
    assert ("DELETE", row["connection_id"]) in api.gateway.calls
    after = _row(db, row["session_id"])
    assert (after["is_active"], after["end_reason"], after["queued"]) == (
        False,
        "forced_close",
        True,
    )


def test_a_gone_connection_still_ends_the_row(
    api: AdminApi, db: Conn, make_session: SessionFactory
) -> None:
    row = make_session(started_seconds_ago=60)  # the stand-in never heard of it: 410
    body = api.client.post(f"/sessions/{row['session_id']}/close", headers=AUTH).json()
    assert (body["outcome"], body["connection"]) == ("closed", "already_gone")
    assert _row(db, row["session_id"])["end_reason"] == "forced_close"


def test_closing_an_ended_session_keeps_its_first_end(
    api: AdminApi, db: Conn, make_session: SessionFactory
) -> None:
    row = make_session(started_seconds_ago=60, ended_seconds_ago=30, end_reason="gone")
    body = api.client.post(f"/sessions/{row['session_id']}/close", headers=AUTH).json()
    assert body["outcome"] == "already_closed"
    assert _row(db, row["session_id"])["end_reason"] == "gone"


def test_a_gateway_that_does_not_answer_leaves_the_row_ended_and_says_so(
    api: AdminApi, db: Conn, make_session: SessionFactory
) -> None:
    assert api.gateway is not None
    row = make_session(started_seconds_ago=60)
    connection_id = str(row["connection_id"])
    api.gateway.set_alive(connection_id)
    api.gateway.throttle[connection_id] = 100
    body = api.client.post(f"/sessions/{row['session_id']}/close", headers=AUTH).json()
    assert (body["outcome"], body["connection"]) == ("closed", "failed")
    assert _row(db, row["session_id"])["end_reason"] == "forced_close"
    # Closing again retries the gateway.
    api.gateway.throttle[connection_id] = 0
    retry = api.client.post(f"/sessions/{row['session_id']}/close", headers=AUTH).json()
    assert (retry["outcome"], retry["connection"]) == ("already_closed", "disconnected")


def test_a_forced_close_s_worst_case_fits_in_api_gateway_s_29_seconds() -> None:
    """The test below shortens the budget to run quickly; the real one, with the
    announcement's own worst case before it (each attempt's connect and read timeouts,
    and botocore's backoff of at most a second between two attempts), must leave the
    database's statements room inside API Gateway's 29 s."""
    announcing = eventbridge.CALL_ATTEMPTS * 2 * eventbridge.CALL_TIMEOUT_SECONDS + 1.0
    assert operations.DISCONNECT_BUDGET_SECONDS + announcing <= 29 - 5
    # A user's close keeps to its own budget, whatever it has to do: the same room is
    # left for the function's start and the answer.
    assert operations.USER_DISCONNECT_BUDGET_SECONDS <= 29 - 5
    assert operations.SESSION_CLOSE_BUDGET_SECONDS <= 29 - 5
    # A close that waits for another at work and the gateway share the gateway's budget.
    assert 0 < operations.AT_WORK_SHARE < 1
    assert announcing == operations.ANNOUNCING_SECONDS
    # Ending the rows comes first, whatever its time: either driver's longest call fits
    # in the user's budget, and so does a chunk's announcement (after a quick end).
    for longest in (
        PostgresStore("postgresql://localhost/tether").longest_call_seconds,
        supabase_driver.LONGEST_CALL_SECONDS,
    ):
        assert longest + announcing <= operations.USER_DISCONNECT_BUDGET_SECONDS
        assert longest + announcing <= operations.SESSION_CLOSE_BUDGET_SECONDS


def test_a_gateway_gone_quiet_does_not_hold_the_answer_past_api_gateway_s_limit(
    api: AdminApi, db: Conn, make_session: SessionFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Each DeleteConnection to a gateway that takes requests and never answers waits
    # out its timeouts and retries (about 20 s); a user's sessions closed one after
    # another ran past the 29 s API Gateway gives the answer, which was then lost.
    assert api.gateway is not None
    monkeypatch.setattr(operations, "DISCONNECT_BUDGET_SECONDS", 1.0)
    user = uuid.uuid4()
    rows = [make_session(user_id=user, started_seconds_ago=30) for _ in range(3)]
    api.gateway.silent.update(str(r["connection_id"]) for r in rows)
    started = time.monotonic()
    closed = api.client.post(f"/users/{user}/disconnect", headers=AUTH).json()
    waited = time.monotonic() - started
    assert closed["closed"] == 3
    assert [s["connection"] for s in closed["sessions"]] == ["failed"] * 3
    assert all("did not answer in time" in s["detail"] for s in closed["sessions"])
    # Asked all at once: the gateway heard every close before the answer came.
    assert sorted(c for m, c in api.gateway.calls if m == "DELETE") == sorted(
        str(r["connection_id"]) for r in rows
    )
    assert waited < 10, waited  # the budget, not 3 x 20 s
    assert all(_row(db, r["session_id"])["end_reason"] == "forced_close" for r in rows)
    # A single close keeps to the budget too, and says to retry.
    single = make_session(started_seconds_ago=30)
    api.gateway.silent.add(str(single["connection_id"]))
    body = api.client.post(f"/sessions/{single['session_id']}/close", headers=AUTH).json()
    assert (body["outcome"], body["connection"]) == ("closed", "failed")


class _SlowStore(SerializedStore):
    """The test database, answering each call ``delay`` seconds late (a database under
    load, or far away)."""

    def __init__(self, inner: SessionStore, delay: float) -> None:
        super().__init__(inner)
        self.delay = delay
        self.calls = 0

    def call(self, function: str, args: Mapping[str, object]) -> list[Row]:
        time.sleep(self.delay)
        self.calls += 1
        return super().call(function, args)


class _SlowAnnouncer:
    """EventBridge answering each PutEvents call (ten ends) ``delay`` seconds late."""

    def __init__(self, delay: float) -> None:
        self.delay = delay
        self.inner = LogAnnouncer()

    def announce(self, sessions: Sequence[SessionEnded]) -> AnnounceResult:
        time.sleep(self.delay * -(-len(sessions) // eventbridge.PUT_EVENTS_BATCH))
        return self.inner.announce(sessions)


def _shorter_budget(monkeypatch: pytest.MonkeyPatch, seconds: float) -> None:
    """The user's close given ``seconds`` (24 in production), its steps' worst cases
    scaled down with it."""
    monkeypatch.setattr(operations, "USER_DISCONNECT_BUDGET_SECONDS", seconds)
    _longest_call(monkeypatch, seconds / 15)
    monkeypatch.setattr(operations, "ANNOUNCING_SECONDS", seconds / 4 - seconds / 15)


def _longest_call(monkeypatch: pytest.MonkeyPatch, seconds: float) -> None:
    """The test database's store says one call takes ``seconds`` at most."""
    monkeypatch.setattr(PostgresStore, "longest_call_seconds", property(lambda _: seconds))


def test_a_user_s_hundreds_of_sessions_on_a_slow_database_answer_in_time(
    api: AdminApi, db: Conn, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each session closed was read back with a call of its own: 300 sessions on a
    database answering in 20 ms took over 6 s there alone, and at 100 ms past API
    Gateway's 29 s, whose 504 left the operator not knowing what was done."""
    user = uuid.uuid4()
    live = _place_live_sessions(db, user, 300)
    # 6 s, not 3: the gateway's 300 closes took over a second on a busy machine, and
    # with 3 s no chunk was left time to start.
    _shorter_budget(monkeypatch, 6.0)
    slow = _SlowStore(runtime.store(), 0.02)
    app = api.client.app
    assert isinstance(app, FastAPI)
    app.dependency_overrides[deps.get_store] = lambda: slow
    started = time.monotonic()
    response = api.client.post(f"/users/{user}/disconnect", headers=AUTH)
    waited = time.monotonic() - started
    assert response.status_code == 200, response.text
    body = response.json()
    assert waited < 6.0 + 0.5, waited
    assert (body["closed"], body["complete"]) == (300, True), body["detail"]
    assert {s["session_id"] for s in body["sessions"]} == live
    assert {(s["connection"], s["announced"]) for s in body["sessions"]} == {("already_gone", True)}
    assert {s["session"]["end_reason"] for s in body["sessions"]} == {"forced_close"}
    assert slow.calls < 20  # one to end them, a few to announce and read them back


class _SlowAfterTheEnds(SerializedStore):
    """The test database, answering every call after the one that ends a user's sessions
    ``delay`` seconds late."""

    def __init__(self, inner: SessionStore, delay: float) -> None:
        super().__init__(inner)
        self.delay = delay

    def call(self, function: str, args: Mapping[str, object]) -> list[Row]:
        if function != FORCE_CLOSE_USER:
            time.sleep(self.delay)
        return super().call(function, args)


def test_a_user_s_close_counts_a_database_call_at_the_store_s_longest(
    api: AdminApi, db: Conn, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The budget counted a database call at 5 s (the psycopg driver's wait for an
    answer), which the supabase driver's calls exceed, and the psycopg driver's own when
    they reconnect: a step started with 5 s left finished past the budget, and the answer
    past API Gateway's 29 s. Here all at a quarter: a 6 s budget, calls that may take the
    supabase driver's longest and take most of it."""
    user = uuid.uuid4()
    _place_live_sessions(db, user, 3)
    scale = 6.0 / operations.USER_DISCONNECT_BUDGET_SECONDS
    monkeypatch.setattr(operations, "USER_DISCONNECT_BUDGET_SECONDS", 6.0)
    monkeypatch.setattr(operations, "ANNOUNCING_SECONDS", 7.0 * scale)
    longest = supabase_driver.LONGEST_CALL_SECONDS * scale
    _longest_call(monkeypatch, longest)
    slow = _SlowAfterTheEnds(runtime.store(), 0.95 * longest)
    app = api.client.app
    assert isinstance(app, FastAPI)
    app.dependency_overrides[deps.get_store] = lambda: slow
    started = time.monotonic()
    response = api.client.post(f"/users/{user}/disconnect", headers=AUTH)
    waited = time.monotonic() - started
    assert response.status_code == 200, response.text
    body = response.json()
    assert waited < 6.0 + 1.0, waited
    assert body["closed"] == 3
    # What it had no time for is said.
    assert body["complete"] is False and "not read back in time" in body["detail"]
    assert {s["connection"] for s in body["sessions"]} == {"already_gone"}


def test_closing_a_user_stops_at_its_deadline_and_says_what_it_left(
    api: AdminApi, db: Conn, monkeypatch: pytest.MonkeyPatch
) -> None:
    """EventBridge answering slowly: the ends are announced while there is time, the
    rest are said to be queued, and the answer comes within the budget. The rows are
    all ended, and calling again ends nothing twice."""
    user = uuid.uuid4()
    _place_live_sessions(db, user, 400)
    # 6 s, not 3: the gateway's 400 closes took over a second on a busy machine, and
    # with 3 s no chunk was left time to start.
    _shorter_budget(monkeypatch, 6.0)
    app = api.client.app
    assert isinstance(app, FastAPI)
    # A chunk of 80 ends takes 1.44 s, within its worst case (1.5 s here): about three
    # chunks go out, the last two not.
    app.dependency_overrides[deps.get_announcer] = lambda: _SlowAnnouncer(0.18)
    started = time.monotonic()
    body = api.client.post(f"/users/{user}/disconnect", headers=AUTH).json()
    waited = time.monotonic() - started
    assert waited < 6.0 + 0.5, waited
    assert body["closed"] == 400 and body["complete"] is False
    went_out = [s for s in body["sessions"] if s["announced"]]
    left = [s for s in body["sessions"] if not s["announced"]]
    assert went_out and left, body["detail"]
    assert {s["announce_error"] for s in left} == {operations.NOT_ANNOUNCED_IN_TIME}
    assert all("queued: the sweep announces it" in s["detail"] for s in left)
    assert f"{len(left)} SessionEnded queued" in body["detail"]
    # Every row ended; what was not announced waits in the outbox for the sweep.
    for each in body["sessions"]:
        row = _row(db, each["session_id"])
        assert (row["is_active"], row["end_reason"]) == (False, "forced_close")
        assert row["queued"] is (not each["announced"])
    again = api.client.post(f"/users/{user}/disconnect", headers=AUTH).json()
    assert (again["closed"], again["complete"], again["sessions"]) == (0, True, [])


class _CountingListings(SerializedStore):
    """The test database, counting the pages of sessions it was asked for."""

    def __init__(self, inner: SessionStore) -> None:
        super().__init__(inner)
        self.listings = 0

    def call(self, function: str, args: Mapping[str, object]) -> list[Row]:
        if function == LIST_SESSIONS:
            self.listings += 1
        return super().call(function, args)


def test_a_user_s_close_reads_back_only_what_it_ended(api: AdminApi, db: Conn) -> None:
    """The read back listed every ended session of the user started since the oldest one
    just closed: an old live session with many short ones closed since paged through all
    of them (three pages here, each a call), and ran out of time on a slow database."""
    user = uuid.uuid4()
    live = _place_live_sessions(db, user, 2)
    old = db.execute(
        "insert into public.conversation_sessions (connection_id, user_id, session_start,"
        " last_seen_at) values (%s, %s, now() - interval '1 hour', now())"
        " returning session_id",
        (f"{user.hex[:12]}-old=", user),
    ).fetchone()
    assert old is not None
    # Closed since, some by earlier forced closes: none of them this call's.
    db.execute(
        """
        insert into public.conversation_sessions (connection_id, user_id, session_start,
                                                  last_seen_at, session_end, end_reason)
        select %(prefix)s || i || '=', %(user)s, now() - make_interval(secs => 10 + i),
               now() - make_interval(secs => 5 + i), now() - make_interval(secs => 5 + i),
               (case when i %% 2 = 0 then 'forced_close' else 'client_disconnect' end)
                 ::public.tether_end_reason
        from generate_series(1, 1400) as i
        """,
        {"user": user, "prefix": f"{user.hex[:12]}-short-"},
    )
    counting = _CountingListings(runtime.store())
    app = api.client.app
    assert isinstance(app, FastAPI)
    app.dependency_overrides[deps.get_store] = lambda: counting
    body = api.client.post(f"/users/{user}/disconnect", headers=AUTH).json()
    assert (body["closed"], body["complete"]) == (3, True), body["detail"]
    assert {s["session"]["session_id"] for s in body["sessions"]} == live | {str(old["session_id"])}
    # A page from the newest closed (the 500 sessions of the page, 498 not this call's),
    # then straight to the old one.
    assert counting.listings == 2, counting.listings


class _RefusingOneAnnouncer:
    """EventBridge refusing one entry of what it is sent (as PutEvents does, entry by
    entry, when throttled), accepting the rest."""

    def __init__(self) -> None:
        self.refused: set[uuid.UUID] = set()

    def announce(self, sessions: Sequence[SessionEnded]) -> AnnounceResult:
        first, *rest = sessions
        self.refused.add(first.session_id)
        LogAnnouncer().announce(rest)
        return AnnounceResult(announced=[s.session_id for s in rest], failed=[first.session_id])


def test_a_user_s_close_says_which_ends_were_announced_one_by_one(api: AdminApi, db: Conn) -> None:
    """One entry refused in a chunk of 80 said all 80 unannounced and queued, while 79
    had gone out and left the outbox."""
    user = uuid.uuid4()
    _place_live_sessions(db, user, 5)
    announcer = _RefusingOneAnnouncer()
    app = api.client.app
    assert isinstance(app, FastAPI)
    app.dependency_overrides[deps.get_announcer] = lambda: announcer
    body = api.client.post(f"/users/{user}/disconnect", headers=AUTH).json()
    assert body["closed"] == 5 and body["complete"] is False
    said = {uuid.UUID(s["session_id"]): s["announced"] for s in body["sessions"]}
    assert {session for session, went_out in said.items() if not went_out} == announcer.refused
    assert "1 SessionEnded queued" in body["detail"]
    for each in body["sessions"]:
        assert _row(db, each["session_id"])["queued"] is (not each["announced"])
    # The refused end is given back: the sweep's to take now, no close at work on it.
    [refused] = announcer.refused
    due = db.execute(
        "select announce_after <= now() as due"
        " from public.conversation_session_announcements where session_id = %s",
        (refused,),
    ).fetchone()
    assert due is not None and due["due"] is True


@pytest.fixture
def mixed_bus() -> Iterator[str]:
    """An EventBridge endpoint answering each PutEvents entry by entry: the first entry
    throttled, the second an internal failure, the rest accepted."""

    def answer(entries: eventbridge_standin.Entries) -> eventbridge_standin.Entries:
        refused = [{"ErrorCode": "ThrottlingException"}, {"ErrorCode": "InternalFailure"}]
        taken = [{"EventId": str(uuid.uuid4())} for _ in entries]
        return (refused + taken)[: len(entries)]

    with eventbridge_standin.serve(answer) as url:
        yield url


def test_a_user_s_close_says_why_each_end_was_not_announced(
    api: AdminApi, db: Conn, mixed_bus: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each end said whether it went out, but not why it did not: each refused end said
    every error code of its chunk ("InternalFailure, ThrottlingException"), so the end
    EventBridge throttled was also said to have met an internal failure."""
    for name, value in (
        ("AWS_ACCESS_KEY_ID", "testing"),
        ("AWS_SECRET_ACCESS_KEY", "testing"),
        ("AWS_DEFAULT_REGION", "us-east-1"),
    ):
        monkeypatch.setenv(name, value)
    user = uuid.uuid4()
    _place_live_sessions(db, user, 5)
    announcer = eventbridge.EventBridgeAnnouncer("bus", endpoint_url=mixed_bus)
    app = api.client.app
    assert isinstance(app, FastAPI)
    app.dependency_overrides[deps.get_announcer] = lambda: announcer
    body = api.client.post(f"/users/{user}/disconnect", headers=AUTH).json()
    assert body["closed"] == 5 and "2 SessionEnded queued" in body["detail"]
    assert sorted(str(s["announce_error"]) for s in body["sessions"]) == [
        "InternalFailure",
        "None",
        "None",
        "None",
        "ThrottlingException",
    ]
    for each in body["sessions"]:
        assert _row(db, each["session_id"])["queued"] is (not each["announced"])


class _SlowRefusingOneAnnouncer(_RefusingOneAnnouncer):
    """The same, answering ``delay`` seconds late."""

    def __init__(self, delay: float) -> None:
        super().__init__()
        self.delay = delay

    def announce(self, sessions: Sequence[SessionEnded]) -> AnnounceResult:
        time.sleep(self.delay)
        return super().announce(sessions)


def test_a_user_s_close_whose_chunk_is_partly_refused_keeps_its_deadline(
    api: AdminApi, db: Conn, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A chunk of announcements started when EventBridge's worst case and one database
    call fitted in the time left, but a chunk partly refused (an entry throttled, or a
    PutEvents call failed whole and those after it not made) made two: recording what went
    out, then giving back the rest. It ended a database call past the budget, and the
    answer past API Gateway's 29 s. Here at a quarter: a 6 s budget, calls near the
    supabase driver's longest, EventBridge near its own."""
    user = uuid.uuid4()
    _place_live_sessions(db, user, 5)
    scale = 6.0 / operations.USER_DISCONNECT_BUDGET_SECONDS
    announcing = operations.ANNOUNCING_SECONDS * scale
    monkeypatch.setattr(operations, "USER_DISCONNECT_BUDGET_SECONDS", 6.0)
    monkeypatch.setattr(operations, "ANNOUNCING_SECONDS", announcing)
    longest = supabase_driver.LONGEST_CALL_SECONDS * scale
    _longest_call(monkeypatch, longest)
    slow = _SlowAfterTheEnds(runtime.store(), 0.9 * longest)
    announcer = _SlowRefusingOneAnnouncer(0.9 * announcing)
    app = api.client.app
    assert isinstance(app, FastAPI)
    app.dependency_overrides[deps.get_store] = lambda: slow
    app.dependency_overrides[deps.get_announcer] = lambda: announcer
    started = time.monotonic()
    response = api.client.post(f"/users/{user}/disconnect", headers=AUTH)
    waited = time.monotonic() - started
    assert response.status_code == 200, response.text
    assert waited < 6.0 + 1.0, waited
    body = response.json()
    assert body["closed"] == 5 and body["complete"] is False
    said = {uuid.UUID(s["session_id"]): s["announced"] for s in body["sessions"]}
    assert {session for session, went_out in said.items() if not went_out} == announcer.refused
    for each in body["sessions"]:
        assert _row(db, each["session_id"])["queued"] is (not each["announced"])


def test_a_gateway_gone_quiet_leaves_a_user_s_close_its_deadline(
    api: AdminApi, db: Conn, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The gateway's wait (12 s) came on top of the rest: within the whole budget now,
    the sessions still read back; the ends it had no time to announce are queued."""
    assert api.gateway is not None
    user = uuid.uuid4()
    _place_live_sessions(db, user, 5)
    api.gateway.silent.update(f"{user.hex[:12]}-{i}=" for i in range(1, 6))
    _shorter_budget(monkeypatch, 6.0)
    started = time.monotonic()
    body = api.client.post(f"/users/{user}/disconnect", headers=AUTH).json()
    waited = time.monotonic() - started
    assert waited < 6.0 + 1.0, waited
    assert [s["connection"] for s in body["sessions"]] == ["failed"] * 5
    assert body["complete"] is False and "POST /sessions/{id}/close" in body["detail"]
    assert all(s["session"]["end_reason"] == "forced_close" for s in body["sessions"])
    for each in body["sessions"]:
        if not each["announced"]:
            assert _row(db, each["session_id"])["queued"] is True


def test_a_user_s_close_that_had_no_time_to_announce_leaves_no_close_at_work(
    api: AdminApi, db: Conn, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The ends a user's close had no time to announce stayed leased to it after it had
    answered: the close it advises for a connection left ``failed`` (POST
    /sessions/{id}/close) took it for a close still at work, waited its whole budget
    for it and then gave the gateway its floor only; the sweep left them alone until
    the lease ran out."""
    assert api.gateway is not None
    user = uuid.uuid4()
    _place_live_sessions(db, user, 3)
    ids = [f"{user.hex[:12]}-{i}=" for i in range(1, 4)]
    api.gateway.silent.update(ids)
    _shorter_budget(monkeypatch, 3.0)
    monkeypatch.setattr(operations, "DISCONNECT_BUDGET_SECONDS", 2.5)
    body = api.client.post(f"/users/{user}/disconnect", headers=AUTH).json()
    assert [s["connection"] for s in body["sessions"]] == ["failed"] * 3
    assert [s["announced"] for s in body["sessions"]] == [False] * 3
    # Queued, and the sweep's to take now.
    for each in body["sessions"]:
        row = db.execute(
            "select announce_after <= now() as due"
            " from public.conversation_session_announcements where session_id = %s",
            (each["session_id"],),
        ).fetchone()
        assert row is not None and row["due"] is True
    # The close it advises, with the gateway answering again, waits for nothing.
    api.gateway.silent.clear()
    retried = body["sessions"][0]["session_id"]
    started = time.monotonic()
    again = api.client.post(f"/sessions/{retried}/close", headers=AUTH)
    waited = time.monotonic() - started
    assert again.status_code == 200, again.text
    assert (again.json()["outcome"], again.json()["connection"]) == (
        "already_closed",
        "already_gone",
    )
    assert waited < 1.0, waited


class _ReadsFail(SerializedStore):
    """The test database, failing every read of sessions after the closes (a database
    that stopped answering, or a page that took longer than the driver waits)."""

    def call(self, function: str, args: Mapping[str, object]) -> list[Row]:
        if function in (LIST_SESSIONS, GET_SESSION):
            raise DatabaseUnavailableError(f"the database did not answer {function} within 5s")
        return super().call(function, args)


def test_a_close_whose_read_back_fails_still_says_what_it_did(
    api: AdminApi, db: Conn, make_session: SessionFactory
) -> None:
    """Reading the sessions back comes last, and only shows them: a database failing it
    answered 503 for a close that had ended the rows, closed the connections and announced
    the ends. The operator, told the database was unavailable, did not know what was done,
    nor which connection to retry; calling again closed nothing and said so."""
    assert api.gateway is not None
    user = uuid.uuid4()
    _place_live_sessions(db, user, 3)
    api.gateway.set_alive(f"{user.hex[:12]}-1=")
    app = api.client.app
    assert isinstance(app, FastAPI)
    app.dependency_overrides[deps.get_store] = lambda: _ReadsFail(runtime.store())
    response = api.client.post(f"/users/{user}/disconnect", headers=AUTH)
    assert response.status_code == 200, response.text
    body = response.json()
    assert (body["closed"], body["complete"]) == (3, False)
    assert sorted(s["connection"] for s in body["sessions"]) == [
        "already_gone",
        "already_gone",
        "disconnected",
    ]
    assert all(s["announced"] and s["session"] is None for s in body["sessions"])
    assert "3 session(s) not read back, the database failing" in body["detail"]
    # One session alone, the same.
    row = make_session(started_seconds_ago=60)
    api.gateway.set_alive(str(row["connection_id"]))
    one = api.client.post(f"/sessions/{row['session_id']}/close", headers=AUTH)
    assert one.status_code == 200, one.text
    closed = one.json()
    assert (closed["outcome"], closed["connection"], closed["announced"]) == (
        "closed",
        "disconnected",
        True,
    )
    assert closed["session"] is None
    assert "not read back, the database failing: GET /sessions/{id}" in closed["detail"]
    assert _row(db, row["session_id"])["end_reason"] == "forced_close"


def test_closing_an_unknown_session_is_404(api: AdminApi) -> None:
    _problem(api.client.post(f"/sessions/{uuid.uuid4()}/close", headers=AUTH), 404)


def test_without_a_gateway_endpoint_a_close_changes_nothing(
    database_url: str, db: Conn, make_session: SessionFactory
) -> None:
    row = make_session(started_seconds_ago=60)
    with admin_api(database_url, gateway=False) as running:
        body = _problem(
            running.client.post(f"/sessions/{row['session_id']}/close", headers=AUTH), 500
        )
    assert "TETHER_CONNECTIONS_ENDPOINT" in body["detail"]
    assert _row(db, row["session_id"])["is_active"] is True


# --- users ------------------------------------------------------------------------


def test_presence_and_disconnecting_a_user(
    api: AdminApi, db: Conn, make_session: SessionFactory
) -> None:
    assert api.gateway is not None
    user = uuid.uuid4()
    live = [make_session(user_id=user, started_seconds_ago=s) for s in (30, 20)]
    make_session(user_id=user, started_seconds_ago=900, ended_seconds_ago=600)
    other = make_session(user_id=uuid.uuid4())
    for row in live:
        api.gateway.set_alive(str(row["connection_id"]))

    presence = api.client.get(f"/users/{user}/presence", headers=AUTH).json()
    assert presence["online"] is True
    assert {c["session_id"] for c in presence["connections"]} == {
        str(r["session_id"]) for r in live
    }

    closed = api.client.post(f"/users/{user}/disconnect", headers=AUTH).json()
    assert closed["closed"] == 2
    assert {s["connection"] for s in closed["sessions"]} == {"disconnected"}
    # Each as it stands now, as a single close answers it.
    assert {
        (s["session"]["end_reason"], s["session"]["is_active"]) for s in closed["sessions"]
    } == {("forced_close", False)}
    assert all(_row(db, r["session_id"])["end_reason"] == "forced_close" for r in live)
    assert _row(db, other["session_id"])["is_active"] is True

    assert api.client.get(f"/users/{user}/presence", headers=AUTH).json() == {
        "user_id": str(user),
        "online": False,
        "connections": [],
        "next_cursor": None,
        "limit": operations.PRESENCE_LIMIT,
    }
    assert api.client.post(f"/users/{user}/disconnect", headers=AUTH).json()["closed"] == 0


def _place_live_sessions(db: Conn, user: uuid.UUID, count: int) -> set[str]:
    """``count`` live sessions of the user, one a second apart, newest a second old; the
    oldest's connection id is the user's hex, 12 digits, then ``-{count}=``."""
    rows = db.execute(
        """
        insert into public.conversation_sessions (connection_id, user_id, session_start,
                                                  last_seen_at)
        select %(prefix)s || i || '=', %(user)s, now() - make_interval(secs => i),
               now() - make_interval(secs => i)
        from generate_series(1, %(count)s) as i
        returning session_id
        """,
        {"user": user, "count": count, "prefix": f"{user.hex[:12]}-"},
    ).fetchall()
    return {str(row["session_id"]) for row in rows}


def test_presence_past_the_page_size_says_more_follow_and_pages_to_the_last(
    api: AdminApi, db: Conn
) -> None:
    """A user with more live connections than a page holds was shown 500 of them, and
    nothing said that there were more: a script counting them, or looking for one, was
    wrong without knowing it."""
    user = uuid.uuid4()
    live = _place_live_sessions(db, user, operations.PRESENCE_LIMIT + 7)

    first = api.client.get(f"/users/{user}/presence", headers=AUTH)
    assert first.status_code == 200, first.text
    page = first.json()
    assert page["online"] is True and page["limit"] == operations.PRESENCE_LIMIT
    assert len(page["connections"]) == operations.PRESENCE_LIMIT
    assert page["next_cursor"] is not None
    seen = [c["session_id"] for c in page["connections"]]
    starts = [c["session_start"] for c in page["connections"]]
    assert starts == sorted(starts, reverse=True)  # newest first

    rest = api.client.get(
        f"/users/{user}/presence", params={"cursor": page["next_cursor"]}, headers=AUTH
    ).json()
    assert len(rest["connections"]) == 7 and rest["next_cursor"] is None
    seen += [c["session_id"] for c in rest["connections"]]
    assert len(seen) == len(set(seen)) and set(seen) == live

    # Smaller pages, walked to the end: every connection once.
    walked: list[str] = []
    cursor_text: str | None = None
    while True:
        params: dict[str, str | int] = {"limit": 200}
        if cursor_text is not None:
            params["cursor"] = cursor_text
        body = api.client.get(f"/users/{user}/presence", params=params, headers=AUTH).json()
        walked += [c["session_id"] for c in body["connections"]]
        cursor_text = body["next_cursor"]
        if cursor_text is None:
            break
    assert len(walked) == len(live) and set(walked) == live

    # A page that exactly holds them all is the last: no cursor to an empty page.
    other = uuid.uuid4()
    _place_live_sessions(db, other, 2)
    both = api.client.get(f"/users/{other}/presence", params={"limit": 2}, headers=AUTH).json()
    assert len(both["connections"]) == 2 and both["next_cursor"] is None

    # Another user's cursor, an edited one, or a limit past the cap are refused by name.
    assert _fields(
        api.client.get(
            f"/users/{other}/presence", params={"cursor": page["next_cursor"]}, headers=AUTH
        )
    ) == ["cursor"]
    assert _fields(
        api.client.get(
            f"/users/{user}/presence", params={"cursor": page["next_cursor"][:-2]}, headers=AUTH
        )
    ) == ["cursor"]
    assert _fields(
        api.client.get(
            f"/users/{user}/presence",
            params={"limit": operations.PAGE_SIZE_MAX + 1},
            headers=AUTH,
        )
    ) == ["limit"]


def test_a_later_page_of_presence_still_says_whether_the_user_is_online(
    api: AdminApi, db: Conn
) -> None:
    user = uuid.uuid4()
    _place_live_sessions(db, user, 3)
    first = api.client.get(f"/users/{user}/presence", params={"limit": 2}, headers=AUTH).json()
    # The last page's connection ends meanwhile: the page is empty, the user still online.
    db.execute(
        "update public.conversation_sessions set session_end = now(),"
        " end_reason = 'client_disconnect' where connection_id = %s",
        (f"{user.hex[:12]}-3=",),
    )
    later = api.client.get(
        f"/users/{user}/presence", params={"cursor": first["next_cursor"]}, headers=AUTH
    ).json()
    assert (later["connections"], later["online"], later["next_cursor"]) == ([], True, None)


# --- statistics and the sweep -----------------------------------------------------


def test_daily_stats_are_the_origin_s_query(
    api: AdminApi, db: Conn, make_session: SessionFactory
) -> None:
    make_session(started_seconds_ago=0)
    make_session(started_seconds_ago=0, ended_seconds_ago=0)
    make_session(started_seconds_ago=3 * 86400, ended_seconds_ago=3 * 86400 - 60)
    body = api.client.get("/stats/daily", params={"days": 7}, headers=AUTH).json()
    assert body["days"] == 7 and len(body["stats"]) == 7
    origin = db.execute(
        """
        select date(session_start at time zone 'UTC') as date, count(*) as total_sessions,
               count(*) filter (where is_active) as still_active
        from conversation_sessions
        where session_start > now() - interval '7 days'
        group by 1 order by 1 desc
        """
    ).fetchall()
    by_day = {s["day"]: s for s in body["stats"]}
    for expected in origin:
        day = by_day[str(expected["date"])]
        assert (day["total_sessions"], day["still_active"]) == (
            expected["total_sessions"],
            expected["still_active"],
        )
    assert sum(s["total_sessions"] for s in body["stats"]) == 3


def test_orphan_alert_with_its_threshold(api: AdminApi, make_session: SessionFactory) -> None:
    for hours in (3, 5, 9):
        make_session(started_seconds_ago=hours * 3600)
    make_session(started_seconds_ago=60)
    body = api.client.get("/stats/orphans", headers=AUTH).json()
    assert (body["older_than_seconds"], body["orphans"], body["alerting"]) == (7200, 3, False)
    body = api.client.get(
        "/stats/orphans", params={"older_than": "4h", "alert_above": 1}, headers=AUTH
    ).json()
    assert (body["orphans"], body["alerting"]) == (2, True)


def test_an_age_is_read_as_the_command_line_writes_it(api: AdminApi) -> None:
    """The value an operator copies from `tether close-orphans --older-than` (or from a
    sweep's settings, in seconds) means the same here, within the same bounds."""
    for text, seconds in (
        ("2h", 7200),
        ("90m", 5400),
        ("7200", 7200),
        ("1d12h", 129600),
        (" 2H ", 7200),
        ("366d", 366 * 86400),
    ):
        response = api.client.get("/stats/orphans", params={"older_than": text}, headers=AUTH)
        assert response.status_code == 200, (text, response.text)
        assert response.json()["older_than_seconds"] == seconds, text
    for text, says in (
        ("2 hours", "use a number with s, m, h or d, such as 90s, 2h or 1d12h"),
        ("30m1h", "each unit once, largest first"),
        ("0", "more than 0"),
        ("366d1s", "at most 366 days"),
    ):
        response = api.client.get("/stats/orphans", params={"older_than": text}, headers=AUTH)
        assert says in _problem(response, 400)["detail"], text


def test_the_last_hour_s_ends_are_those_already_past(
    api: AdminApi, make_session: SessionFactory
) -> None:
    """An end written directly with a session_end still to come (a team's own update, a
    history brought in by hand) was counted among the last hour's ends until its moment
    came: the live page's card said it had ended."""
    make_session(started_seconds_ago=600, ended_seconds_ago=300, end_reason="gone")
    make_session(
        started_seconds_ago=600, ended_seconds_ago=-1800, end_reason="forced_close", announced=True
    )
    live = api.client.get("/stats/live", headers=AUTH).json()
    assert (live["ended_last_hour"], live["ended_last_hour_by_reason"]) == (1, {"gone": 1})


def test_live_stats_and_a_sweep_run_through_the_api(
    api: AdminApi, make_session: SessionFactory
) -> None:
    make_session(started_seconds_ago=30)
    # Past API Gateway's 2 hours, heard from a minute ago: an orphan of the age limit.
    make_session(started_seconds_ago=3 * 3600, seen_seconds_ago=60)
    make_session(started_seconds_ago=600, ended_seconds_ago=300, end_reason="gone")
    make_session(started_seconds_ago=6000, ended_seconds_ago=5000, end_reason="gone")
    live = api.client.get("/stats/live", headers=AUTH).json()
    assert (live["active_sessions"], live["orphaned_sessions"]) == (2, 1)
    assert (live["ended_last_hour"], live["ended_last_hour_by_reason"]) == (1, {"gone": 1})
    assert live["sweep"]["last_finished_at"] is None

    swept = api.client.post("/sweep", headers=AUTH)
    assert swept.status_code == 200, swept.text
    summary = swept.json()
    assert summary["ended_by_reason"] == {"max_duration": 1}
    assert summary["active_sessions"] == 1

    after = api.client.get("/stats/live", headers=AUTH).json()
    assert (after["active_sessions"], after["orphaned_sessions"]) == (1, 0)
    assert after["sweep"]["last_report"]["ended"] == 1
    # The answer is the run's whole report, as recorded and as `tether sweep --json`
    # prints it: no field of it dropped on the way out.
    assert set(summary) == set(after["sweep"]["last_report"])
    health = api.client.get("/health", headers=AUTH).json()
    assert health["sweep"]["last_finished_at"] == after["sweep"]["last_finished_at"]


def test_a_body_is_refused_where_no_route_takes_one(
    api: AdminApi, make_session: SessionFactory
) -> None:
    """POST /sweep with {"dry_run": true} ran a real sweep, the body passed over, and a
    close ignored a 20 MB one: every option is a query parameter, and a body is refused
    before anything is done. An empty body, or {}, says nothing and is taken."""
    make_session(started_seconds_ago=3 * 3600, seen_seconds_ago=60)  # the sweep's to end
    for body in (b'{"dry_run": true}', b"dry_run=1", b"x" * (20 * 1024 * 1024), b"{} x"):
        refused = api.client.post("/sweep", content=body, headers=AUTH)
        assert _fields(refused) == ["body"], body[:20]
        assert "takes no body" in refused.json()["detail"]
    # Sent in chunks, with no length said: read no further than tells it apart.
    chunked = api.client.post("/sweep", content=iter([b"{", b'"dry_run": true}']), headers=AUTH)
    assert _fields(chunked) == ["body"]
    user = uuid.uuid4()
    refused = api.client.post(f"/users/{user}/disconnect", content=b'{"reason": "x"}', headers=AUTH)
    assert _fields(refused) == ["body"]
    live = api.client.get("/stats/live", headers=AUTH).json()
    assert (live["active_sessions"], live["sweep"]["last_finished_at"]) == (1, None)
    for body in (b"", b"{}", b" {} \n"):
        swept = api.client.post("/sweep", content=body, headers=AUTH)
        assert swept.status_code == 200, swept.text


@pytest.mark.parametrize(
    "authorization",
    [f"Basic {OPERATOR_KEY}", "Basic dXNlcjpwYXNzd29yZA==", "Digest x=1", "Negotiate YIIB"],
    ids=["basic-of-the-key", "basic", "digest", "negotiate"],
)
def test_health_reads_an_authorization_of_another_scheme_as_no_credentials(
    api: AdminApi, authorization: str
) -> None:
    """A load balancer or proxy with basic auth set for every request sends its Basic
    header with each health check too: /health refused it (401), turning the checks
    red, though Basic is no scheme tether takes at all. It now answers the status alone,
    as without credentials; every other route still refuses it."""
    anyone = api.client.get("/health")
    sent = {"Authorization": authorization}
    checked = api.client.get("/health", headers=sent)
    assert (checked.status_code, checked.json()) == (200, anyone.json()), checked.text
    assert checked.json() == {"status": "ok", "database": "reachable"}
    varies = {name.strip().lower() for name in checked.headers["vary"].split(",")}
    assert {"authorization", "x-tether-operator-key"} <= varies
    head = api.client.head("/health", headers=sent)
    assert (head.status_code, head.content) == (200, b"")
    # Beside the key header, the key alone is checked: right, the details; wrong, 401.
    operator = api.client.get("/health", headers={**sent, "X-Tether-Operator-Key": OPERATOR_KEY})
    assert operator.status_code == 200, operator.text
    assert operator.json()["migrations"]["pending"] == []
    wrong = api.client.get("/health", headers={**sent, "X-Tether-Operator-Key": "guess"})
    assert _problem(wrong, 401)["code"] == "unauthorized"
    # Sent twice, it is refused as every credential sent twice is.
    twice = api.client.get("/health", headers=[("Authorization", authorization)] * 2)
    assert "send each credential once" in _problem(twice, 401)["detail"]
    # Every other route refuses it, as before.
    refused = api.client.get("/sessions", headers=sent)
    assert "Authorization must be 'Bearer <key or token>'" in _problem(refused, 401)["detail"]
    for response in (checked, operator, wrong, twice, refused):
        assert OPERATOR_KEY not in response.text


# --- health -----------------------------------------------------------------------


def test_health_when_all_is_well(api: AdminApi) -> None:
    response = api.client.get("/health", headers=AUTH)
    assert response.status_code == 200
    body = response.json()
    assert (body["status"], body["database"], body["migrations"]["pending"]) == (
        "ok",
        "reachable",
        [],
    )
    anyone = api.client.get("/health")
    assert (anyone.status_code, anyone.json()) == (200, {"status": "ok", "database": "reachable"})
    # The two answers differ by the credentials: a shared cache must keep them apart.
    for answer in (response, anyone):
        varies = {name.strip().lower() for name in answer.headers["vary"].split(",")}
        assert {"authorization", "x-tether-operator-key"} <= varies
    # Uptime checks often ask with HEAD: the same status, no body, no credentials.
    head = api.client.head("/health")
    assert (head.status_code, head.content) == (200, b"")


def test_health_names_pending_migrations(api: AdminApi, db: Conn) -> None:
    db.execute("delete from tether.schema_migrations where name = 'operators'")
    response = api.client.get("/health", headers=AUTH)
    assert response.status_code == 503
    body = response.json()
    assert body["status"] == "degraded"
    assert body["migrations"]["pending"] == ["20261129001000_operators.sql"]
    # Judged the same without credentials: a probe sees it degraded, not which file.
    anyone = api.client.get("/health")
    assert (anyone.status_code, anyone.json()) == (
        503,
        {"status": "degraded", "database": "reachable"},
    )
    assert api.client.head("/health").status_code == 503


def test_health_tells_a_caller_without_credentials_its_status_and_nothing_more(
    plain_owner_url: str,
) -> None:
    """/health answers anyone on the internet: it named the migrations the database
    lacked, when the sweep last ran, and which table's row level security refused
    tether's functions with the statement that mends it. Without credentials it says
    only what a probe needs; the operator key brings the rest."""
    migrate.migrate(plain_owner_url)
    pending = "20261129001000_operators.sql"
    with admin_api(plain_owner_url) as running:
        assert running.client.post("/sweep", headers=AUTH).status_code == 200
        with psycopg.connect(plain_owner_url, autocommit=True) as owner:
            owner.execute("delete from tether.schema_migrations where name = 'operators'")
            owner.execute("alter table public.conversation_sessions force row level security")

        full = running.client.get("/health", headers=AUTH)
        assert full.status_code == 503, full.text
        details = full.json()
        assert details["migrations"]["pending"] == [pending]
        (problem,) = details["problems"]
        assert "no force row level security" in problem
        finished = details["sweep"]["last_finished_at"]
        assert finished is not None

        for anyone in (running.client.get("/health"), running.client.get("/health", headers={})):
            assert anyone.status_code == 503
            assert anyone.json() == {"status": "degraded", "database": "reachable"}
            text = anyone.text
            assert pending not in text and "operators" not in text
            assert "row level security" not in text and "conversation_sessions" not in text
            assert finished not in text and finished[:10] not in text
        assert running.client.head("/health").status_code == 503
        assert running.client.head("/health", headers=AUTH).status_code == 503


def test_health_without_credentials_asks_only_what_its_status_needs(database_url: str) -> None:
    """Anyone may call /health as often as they like: without credentials it asks the
    database what the status is judged on (the migrations applied, the row level
    security of tether's tables), not the sweep's state, which only an operator reads."""

    class Recording(SerializedStore):
        def __init__(self, inner: PostgresStore) -> None:
            super().__init__(inner)
            self.asked: list[str] = []

        def call(self, function: str, args: Mapping[str, object]) -> list[Row]:
            self.asked.append(function)
            return super().call(function, args)

    store = Recording(PostgresStore(database_url))
    try:
        with admin_api(database_url) as running:
            running.client.app.dependency_overrides[deps.get_store] = lambda: store  # type: ignore[attr-defined]
            assert running.client.get("/health").status_code == 200
            anyone, store.asked = store.asked, []
            assert running.client.get("/health", headers=AUTH).status_code == 200
            operator = store.asked
    finally:
        store.close()
    assert anyone == [APPLIED_MIGRATIONS, ROW_SECURITY_PROBLEMS]
    assert sorted(operator) == sorted([*anyone, SWEEP_STATE])


def test_health_says_when_row_level_security_refuses_tether_s_functions(
    plain_owner_url: str,
) -> None:
    """tether's functions run as the role that migrated, here one that is no superuser
    and has no BYPASSRLS: a session table that then forces row level security on its
    owner refuses every session they open, and /health said all was well."""
    migrate.migrate(plain_owner_url)
    with psycopg.connect(plain_owner_url, autocommit=True) as owner:
        owner.execute("alter table public.conversation_sessions force row level security")
    store = PostgresStore(plain_owner_url)
    try:
        with pytest.raises(DatabaseError, match="row-level security policy"):
            store.open_session(OpenSessionRequest(connection_id="rls=", user_id=uuid.uuid4()))
    finally:
        store.close()
    with admin_api(plain_owner_url) as running:
        response = running.client.get("/health", headers=AUTH)
        assert response.status_code == 503, response.text
        body = response.json()
        assert (body["status"], body["database"], body["migrations"]["pending"]) == (
            "degraded",
            "reachable",
            [],
        )
        (problem,) = body["problems"]
        assert problem.startswith("public.conversation_sessions forces row level security")
        assert problem.endswith(
            "alter table public.conversation_sessions no force row level security"
        )
        assert running.client.head("/health").status_code == 503
        # What it says to do is what mends it.
        with psycopg.connect(plain_owner_url, autocommit=True) as owner:
            owner.execute(problem.split("Stop forcing it first: ", 1)[1])
        mended = running.client.get("/health", headers=AUTH)
        assert (mended.status_code, mended.json()["problems"]) == (200, [])


def test_health_logs_a_lasting_row_level_security_problem_once_not_per_call(
    plain_owner_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    """/health is open and may be polled every few seconds: a table refusing tether's
    functions was logged as an error on every call, for as long as it lasted. It is
    logged when it appears and when it is mended, and said in every response."""
    migrate.migrate(plain_owner_url)
    table = "public.conversation_sessions"

    def logged(message: str) -> list[logging.LogRecord]:
        return [r for r in caplog.records if r.name == "tether.admin" and r.msg == message]

    refusing = "row level security refuses tether's functions"
    mended = "row level security no longer refuses tether's functions"
    caplog.set_level(logging.INFO, logger="tether.admin")
    with admin_api(plain_owner_url) as running:
        with psycopg.connect(plain_owner_url, autocommit=True) as owner:
            owner.execute(f"alter table {table} force row level security")
        # Whoever asks, without credentials or with: the same judgement, logged once.
        for headers in ({}, AUTH, {}, AUTH, {}):
            assert running.client.get("/health", headers=headers).status_code == 503
        assert len(running.client.get("/health", headers=AUTH).json()["problems"]) == 1
        assert running.client.head("/health").status_code == 503
        (record,) = logged(refusing)
        assert (record.levelno, vars(record)["table"]) == (logging.ERROR, table)

        with psycopg.connect(plain_owner_url, autocommit=True) as owner:
            owner.execute(f"alter table {table} no force row level security")
        for _ in range(3):
            assert running.client.get("/health").status_code == 200
        (record,) = logged(mended)
        assert vars(record)["table"] == table

        # Back again: a change, so logged again, once.
        with psycopg.connect(plain_owner_url, autocommit=True) as owner:
            owner.execute(f"alter table {table} force row level security")
        for _ in range(3):
            assert running.client.get("/health").status_code == 503
        assert len(logged(refusing)) == 2
        assert len(logged(mended)) == 1


def test_health_does_not_log_as_mended_a_table_that_still_refuses_for_another_reason(
    plain_owner_url: str, server_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    """A table another role owns, forced: /health says to stop forcing it. Once it is
    not forced, the table still refuses tether's functions (their role does not own it),
    and /health says so; the log said it was no longer refusing."""
    migrate.migrate(plain_owner_url)
    table = "public.conversation_sessions"
    dbname = psycopg.conninfo.conninfo_to_dict(plain_owner_url)["dbname"]
    as_superuser = psycopg.conninfo.make_conninfo(server_url, dbname=dbname)
    with psycopg.connect(as_superuser, autocommit=True) as admin:
        admin.execute(f"alter table {table} owner to service_role")
        admin.execute(f"alter table {table} force row level security")
    caplog.set_level(logging.INFO, logger="tether.admin")
    with admin_api(plain_owner_url) as running:
        (forced,) = running.client.get("/health", headers=AUTH).json()["problems"]
        assert forced.endswith(
            f"Stop forcing it first: alter table {table} no force row level security"
        )
        with psycopg.connect(as_superuser, autocommit=True) as admin:
            admin.execute(forced.split("Stop forcing it first: ", 1)[1])
        (owned_by_another,) = running.client.get("/health", headers=AUTH).json()["problems"]
        assert owned_by_another.startswith(f"row level security on {table} judges tether's")
    said = [
        (r.levelno, r.getMessage())
        for r in caplog.records
        if r.name == "tether.admin" and vars(r).get("table") == table
    ]
    assert said == [(logging.ERROR, "row level security refuses tether's functions")] * 2


def test_health_when_the_database_is_unreachable(
    database_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    import socket  # noqa: PLC0415

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    nowhere = f"postgresql://tether:secret-password@127.0.0.1:{port}/none"
    with admin_api(nowhere) as running:
        response = running.client.get("/health", headers=AUTH)
        assert response.status_code == 503
        assert response.json() == {
            "status": "unavailable",
            "database": "unreachable",
            "migrations": None,
            "sweep": None,
            "problems": None,
        }
        anyone = running.client.get("/health")
        assert (anyone.status_code, anyone.json()) == (
            503,
            {"status": "unavailable", "database": "unreachable"},
        )
        problem = _problem(running.client.get("/sessions", headers=AUTH), 503)
        assert "secret-password" not in problem["detail"]
        # What failed is said (the database), not where it is.
        assert problem["detail"] == "the database is unavailable or busy; try again shortly"
    # The failure is logged with its cause (every field of each record), never the password.
    logged = " ".join(str(vars(record)) for record in caplog.records)
    assert "127.0.0.1" in logged
    assert "secret-password" not in logged


@pytest.mark.parametrize(
    "reference",
    [
        "arn:aws:secretsmanager:us-east-1:123456789012:secret:prod/tether/db-AbCdEf",
        "ssm:/prod/tether/database-url",
    ],
)
def test_a_secret_that_cannot_be_read_is_not_named_to_callers(
    aws: str, reference: str, caplog: pytest.LogCaptureFixture
) -> None:
    """/health answers anyone: a database URL kept in a secret that cannot be read is
    said to be a configuration problem, without the reference (an account, a secret's
    name), which the operator's logs carry."""
    with admin_api(reference, aws_endpoint_url=aws) as running:
        for response in (
            running.client.get("/health"),
            running.client.get("/sessions", headers=AUTH),
        ):
            body = _problem(response, 500)
            assert body["code"] == "misconfigured"
            assert "prod/tether" not in response.text and "123456789012" not in response.text
            # The setting is named, as every other configuration problem is.
            assert body["detail"].startswith("TETHER_DATABASE_URL: cannot read the "), body
            assert "the logs name it" in body["detail"]
    logged = " ".join(str(vars(record)) for record in caplog.records)
    assert "prod/tether" in logged


def test_unknown_paths_and_methods_are_problems_too(api: AdminApi) -> None:
    _problem(api.client.get("/nothing-here", headers=AUTH), 404)
    _problem(api.client.delete("/sessions", headers=AUTH), 405)


@pytest.mark.parametrize("method", ["GET", "HEAD", "POST"])
def test_a_trailing_slash_is_a_404_problem_not_a_redirect_built_from_the_host(
    api: AdminApi, method: str
) -> None:
    """GET /sessions/ answered a bare 307 to http://<Host>/sessions: behind a custom
    domain's base path (or a stage's), a Location that led elsewhere."""
    paths = {"GET": "/sessions/", "HEAD": "/stats/live/", "POST": "/sweep/"}
    response = api.client.request(
        method,
        paths[method],
        headers={"Host": "ops.example.com", **AUTH},
        follow_redirects=False,
    )
    assert response.status_code == 404
    assert "location" not in response.headers
    if method != "HEAD":
        assert _problem(response, 404)["detail"] == (
            "no route serves this path: drop its trailing slash; /openapi.json lists them"
        )
    # A path served with no slash to drop keeps the plain answer.
    assert _problem(api.client.get("/nowhere/", headers=AUTH), 404)["detail"] == (
        "no route serves this path; /openapi.json lists them"
    )


# --- what every answer tells the browser ------------------------------------------


def _protected(response: Any) -> None:
    """What an operators' page and API should send on every answer: no cache keeps
    it, no type is guessed, no other site frames it, no address leaves as a Referer."""
    headers = response.headers
    label = f"{response.request.method} {response.request.url.path} {response.status_code}"
    assert headers["cache-control"] == "no-store", label
    assert headers["x-content-type-options"] == "nosniff", label
    assert headers["x-frame-options"] == "DENY", label
    assert "frame-ancestors 'none'" in headers["content-security-policy"], label
    assert headers["referrer-policy"] == "no-referrer", label
    assert "access-control-allow-origin" not in headers, label


def test_every_answer_carries_the_headers_that_keep_it_to_this_page(
    api: AdminApi, make_session: SessionFactory
) -> None:
    session = make_session(started_seconds_ago=30)
    answers = [
        api.client.get("/dashboard"),
        api.client.get("/dashboard/static/dashboard.js"),
        api.client.get("/dashboard/static/dashboard.css"),
        api.client.get("/dashboard/chart.svg", headers=AUTH),
        api.client.get("/sessions", headers=AUTH),
        api.client.get(f"/sessions/{session['session_id']}", headers=AUTH),
        api.client.get("/sessions", headers={"Origin": "https://elsewhere.example", **AUTH}),
        api.client.get("/stats/live", headers=AUTH),
        api.client.get("/openapi.json"),
        api.client.get("/health"),
        api.client.get("/sessions"),
        api.client.get("/nothing-here", headers=AUTH),
        api.client.get(f"/sessions/{session['session_id']}/close", headers=AUTH),
        api.client.options(
            f"/sessions/{session['session_id']}/close",
            headers={
                "Origin": "https://elsewhere.example",
                "Access-Control-Request-Method": "POST",
                "Access-Control-Request-Headers": "authorization",
            },
        ),
    ]
    assert [answer.status_code for answer in answers] == [*[200] * 10, 401, 404, 405, 405]
    for answer in answers:
        _protected(answer)
    # The page's own policy stays its own: its script and style, this origin only.
    assert "script-src 'self'" in answers[0].headers["content-security-policy"]
    # Data may run nothing, even opened on its own in a tab (the chart is an SVG).
    for answer in answers[1:]:
        assert answer.headers["content-security-policy"].startswith("default-src 'none'")


def test_an_unexpected_error_s_answer_carries_them_too(database_url: str) -> None:
    with admin_api(database_url) as running:
        app = running.client.app

        def fails() -> None:
            raise RuntimeError("a bug")

        app.add_api_route("/fails", fails)  # type: ignore[attr-defined]
        with TestClient(app, raise_server_exceptions=False) as client:
            response = client.get("/fails")
    _problem(response, 500)
    _protected(response)


@pytest.mark.parametrize(
    ("method", "path", "allowed"),
    [
        ("POST", "/health", "GET, HEAD"),
        ("OPTIONS", "/health", "GET, HEAD"),
        ("DELETE", "/sessions", "GET, HEAD"),
        ("PUT", "/stats/live", "GET, HEAD"),
        ("GET", "/sessions/0193b5a4-0000-7000-8000-000000000000/close", "POST"),
    ],
)
def test_a_method_not_allowed_names_every_method_the_path_takes(
    api: AdminApi, method: str, path: str, allowed: str
) -> None:
    response = api.client.request(method, path, headers=AUTH)
    _problem(response, 405)
    assert response.headers["allow"] == allowed


def _every_get_path(api: AdminApi, session_id: str, user_id: str) -> list[str]:
    """Each path a GET is served at: the schema's, and the live page's beside them."""
    schema = api.client.get("/openapi.json").json()
    listed = [
        path.format(session_id=session_id, user_id=user_id)
        for path, operations in schema["paths"].items()
        if "get" in operations
    ]
    page = ["/", "/dashboard", "/dashboard/chart.svg", "/dashboard/static/dashboard.js"]
    return [*listed, *page, "/openapi.json"]


def test_head_answers_wherever_get_does_with_its_headers_and_no_body(
    api: AdminApi, make_session: SessionFactory
) -> None:
    """RFC 9110 expects HEAD wherever GET is served: HEAD /sessions was a 405 (Allow:
    GET), and so was every GET route's HEAD but /health's."""
    row = make_session(started_seconds_ago=30, user_id=uuid.uuid4())
    paths = _every_get_path(api, str(row["session_id"]), str(row["user_id"]))
    assert len(paths) == 12, paths
    for path in paths:
        for headers in (AUTH, {}):
            get = api.client.get(path, headers=headers, follow_redirects=False)
            head = api.client.head(path, headers=headers, follow_redirects=False)
            label = f"HEAD {path} {'with' if headers else 'without'} credentials"
            assert (head.status_code, head.content) == (get.status_code, b""), label
            assert head.status_code != 405, label
            for name in ("content-type", "content-length", "www-authenticate", "location"):
                assert head.headers.get(name) == get.headers.get(name), (label, name)
    # The schema lists each operation once: HEAD is not a second copy of each route.
    schema = api.client.get("/openapi.json").json()
    assert not [path for path, operations in schema["paths"].items() if "head" in operations]


def test_health_reads_supabase_s_ledger_after_db_push(
    supabase_cli: Path, pg15_database: str, tmp_path: Path
) -> None:
    from tests.integration.test_supabase_cli import _project, _supabase  # noqa: PLC0415

    pushed = _supabase(supabase_cli, _project(tmp_path), "db", "push", "--db-url", pg15_database)
    assert pushed.returncode == 0, pushed.stderr
    with admin_api(pg15_database) as running:
        response = running.client.get("/health", headers=AUTH)
    assert response.status_code == 200, response.text
    assert response.json()["migrations"]["pending"] == []


@pytest.mark.parametrize(
    ("path", "params", "takes"),
    [
        ("/sessions", {"zqactiv": "true"}, "active, cursor, end_reason, limit"),
        ("/stats/daily", {"zqday": "3"}, "days"),
        ("/stats/live", {"zq": "1"}, "no query parameters"),
        ("/dashboard/chart.svg", {"zqdays": "3"}, "days"),
    ],
)
def test_a_parameter_the_route_does_not_take_is_refused_not_passed_over(
    api: AdminApi, path: str, params: dict[str, str], takes: str
) -> None:
    response = api.client.get(path, params={**params}, headers=AUTH)
    assert _fields(response) == ["query"]
    assert takes in response.json()["detail"]
    assert "zq" not in response.text  # the name sent is not echoed
    # Without credentials, the answer is still 401: nothing is told before that.
    assert api.client.get(path, params=params).status_code == 401
