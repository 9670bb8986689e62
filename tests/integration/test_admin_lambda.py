"""The admin function as Lambda runs it: API Gateway HTTP API (payload v2) events,
shaped as AWS sends them, through ``functions.admin.lambda_handler`` (Mangum)."""

from __future__ import annotations

import asyncio
import copy
import gc
import json
import subprocess
import sys
import time
import warnings
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from tests import connections_standin
from tests.admin_support import OPERATOR_KEY
from tests.conftest import ROOT, SessionFactory
from tests.support import FakeLambdaContext, load_event
from tether import runtime
from tether.admin import operations


@pytest.fixture
def lambda_admin(database_url: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    for name in ("DATABASE_URL", "SUPABASE_URL", "TETHER_CONNECTIONS_ENDPOINT"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("TETHER_DATABASE_URL", database_url)
    monkeypatch.setenv("TETHER_OPERATOR_KEY", OPERATOR_KEY)
    monkeypatch.setenv("TETHER_ANNOUNCE_TO", "log")
    runtime.reset()
    from functions import admin  # noqa: PLC0415

    yield admin.lambda_handler
    runtime.reset()


def _event(path: str, query: str = "", *, key: str | None = OPERATOR_KEY) -> dict[str, Any]:
    event = copy.deepcopy(load_event("admin_http_v2"))
    event["rawPath"] = event["requestContext"]["http"]["path"] = path
    event["rawQueryString"] = query
    params = dict(part.split("=", 1) for part in query.split("&") if part)
    if params:
        event["queryStringParameters"] = params
    else:
        event.pop("queryStringParameters")
    if key is None:
        del event["headers"]["authorization"]
    else:
        event["headers"]["authorization"] = f"Bearer {key}"
    return event


def test_an_http_api_v2_event_lists_sessions(
    lambda_admin: Any, make_session: SessionFactory
) -> None:
    rows = [make_session(started_seconds_ago=s) for s in (30, 20, 10)]
    make_session(started_seconds_ago=60, ended_seconds_ago=30)
    event = load_event("admin_http_v2")
    event["headers"]["authorization"] = f"Bearer {OPERATOR_KEY}"
    response = lambda_admin(event, FakeLambdaContext(function_name="tether-admin"))
    assert response["statusCode"] == 200, response
    assert response["isBase64Encoded"] is False
    assert response["headers"]["content-type"] == "application/json"
    body = json.loads(response["body"])
    assert [s["session_id"] for s in body["sessions"]] == [
        str(rows[2]["session_id"]),
        str(rows[1]["session_id"]),
    ]
    assert body["next_cursor"]
    following = lambda_admin(
        _event("/sessions", f"active=true&limit=2&cursor={body['next_cursor']}"),
        FakeLambdaContext(),
    )
    assert [s["session_id"] for s in json.loads(following["body"])["sessions"]] == [
        str(rows[0]["session_id"])
    ]


def test_a_close_keeps_to_what_its_invocation_has_left(
    lambda_admin: Any, make_session: SessionFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A close counted its 24 s from its own start, not from the invocation's: the time
    spent before it (the token's signing keys fetched, up to 5 s, then the rest of the
    request's making) came on top, past the function's 29 s and API Gateway's. Here an
    invocation with 7 s left as the close starts, the gateway gone quiet: it answers
    within those 7 s less the 5 s kept for the answer and a cold start (8.7 s before)."""
    row = make_session(started_seconds_ago=60)
    connection_id = str(row["connection_id"])
    with connections_standin.serve() as gateway:
        gateway.set_alive(connection_id)
        gateway.silent.add(connection_id)
        monkeypatch.setenv("TETHER_CONNECTIONS_ENDPOINT", gateway.url)
        event = _event(f"/sessions/{row['session_id']}/close")
        event["requestContext"]["http"]["method"] = "POST"
        left = operations.INVOCATION_KEPT_SECONDS + 2.0
        started = time.monotonic()
        response = lambda_admin(event, FakeLambdaContext(time_limit_seconds=left))
        waited = time.monotonic() - started
        gateway.released.set()
    assert response["statusCode"] == 200, response
    # A busy machine's 1.5 s, within the 5 s kept: a close counting from its own start
    # waits on the quiet gateway for its 12 s.
    assert waited < left - operations.INVOCATION_KEPT_SECONDS + 1.5, waited
    body = json.loads(response["body"])
    assert (body["outcome"], body["connection"]) == ("closed", "failed")


def test_problems_and_the_page_come_back_as_text(lambda_admin: Any) -> None:
    refused = lambda_admin(_event("/sessions", key=None), FakeLambdaContext())
    assert refused["statusCode"] == 401
    assert refused["isBase64Encoded"] is False
    assert refused["headers"]["content-type"] == "application/problem+json"
    assert json.loads(refused["body"])["code"] == "unauthorized"

    page = lambda_admin(_event("/dashboard", key=None), FakeLambdaContext())
    assert page["statusCode"] == 200
    assert page["isBase64Encoded"] is False
    assert "<title>tether" in page["body"]
    script = lambda_admin(_event("/dashboard/static/dashboard.js", key=None), FakeLambdaContext())
    assert script["statusCode"] == 200
    assert "sessionStorage" in script["body"]

    health = lambda_admin(_event("/health", key=None), FakeLambdaContext())
    assert health["statusCode"] == 200
    # The status alone without credentials; the operator key brings the details.
    assert json.loads(health["body"]) == {"status": "ok", "database": "reachable"}
    detailed = lambda_admin(_event("/health"), FakeLambdaContext())
    assert detailed["statusCode"] == 200
    assert json.loads(detailed["body"])["migrations"]["pending"] == []
    wrong = lambda_admin(_event("/health", key="not-the-operator-key"), FakeLambdaContext())
    assert wrong["statusCode"] == 401
    for answer in (refused, page, script, health):
        _protected(answer)


def test_head_is_answered_as_get_is_without_a_body(lambda_admin: Any) -> None:
    """HEAD /sessions came back 405 (Allow: GET) through API Gateway, as every GET
    route's HEAD but /health's did."""
    for path, key in (("/sessions", OPERATOR_KEY), ("/stats/live", None), ("/dashboard", None)):
        get = lambda_admin(_event(path, key=key), FakeLambdaContext())
        head_event = _event(path, key=key)
        head_event["requestContext"]["http"]["method"] = "HEAD"
        head = lambda_admin(head_event, FakeLambdaContext())
        assert (head["statusCode"], head["body"]) == (get["statusCode"], ""), path
        assert get["body"], path
        for name in ("content-type", "content-length"):
            assert head["headers"][name] == get["headers"][name], (path, name)
        _protected(head)


def test_a_trailing_slash_is_a_404_problem_with_no_location(lambda_admin: Any) -> None:
    """Behind a custom domain's base path the redirect Starlette made from the Host
    header (https://<domain>/sessions, the base path lost) led elsewhere."""
    event = _event("/sessions/")
    event["headers"]["host"] = "ops.example.com"
    answer = lambda_admin(event, FakeLambdaContext())
    assert answer["statusCode"] == 404, answer
    assert "location" not in answer["headers"]
    assert answer["headers"]["content-type"] == "application/problem+json"
    assert json.loads(answer["body"])["detail"] == (
        "no route serves this path: drop its trailing slash; /openapi.json lists them"
    )


def _protected(response: dict[str, Any]) -> None:
    """What every answer tells the browser, as API Gateway passes it on."""
    headers = response["headers"]
    assert headers["cache-control"] == "no-store", response
    assert headers["x-content-type-options"] == "nosniff", response
    assert headers["x-frame-options"] == "DENY", response
    assert "frame-ancestors 'none'" in headers["content-security-policy"], response
    assert headers["referrer-policy"] == "no-referrer", response


# A warm container whose every file descriptor is taken: the static file's headers are
# sent, then its open fails, and Mangum answers the error with a 500 of its own.
_OUT_OF_DESCRIPTORS = """
import json, os, resource
import functions.admin as admin
from tests.support import FakeLambdaContext, load_event

event = load_event("admin_http_v2")
event["rawPath"] = event["requestContext"]["http"]["path"] = "/dashboard/static/dashboard.css"
event["rawQueryString"] = ""
event.pop("queryStringParameters", None)
assert admin.lambda_handler(event, FakeLambdaContext())["statusCode"] == 200

def in_use(fd):
    try:
        os.fstat(fd)
    except OSError:
        return False
    return True

# A new descriptor takes the lowest free number: the limit is set there.
lowest_free = next(fd for fd in range(65536) if not in_use(fd))
soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
resource.setrlimit(resource.RLIMIT_NOFILE, (lowest_free, hard))
answer = admin.lambda_handler(event, FakeLambdaContext())
resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
print("answer: " + json.dumps(answer))
"""


def test_mangum_s_own_500_carries_the_headers_every_answer_does() -> None:
    """An error after the app began its answer never reaches the app's error handling:
    Mangum answers 500 itself, and its answer came without nosniff, frame-ancestors,
    X-Frame-Options, Referrer-Policy or no-store."""
    result = subprocess.run(  # noqa: S603 - our own interpreter
        [sys.executable, "-c", _OUT_OF_DESCRIPTORS],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        cwd=ROOT,
        env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(ROOT)},
    )
    assert result.returncode == 0, result.stderr
    (said,) = [line for line in result.stdout.splitlines() if line.startswith("answer: ")]
    answer = json.loads(said.removeprefix("answer: "))
    assert "Too many open files" in result.stdout + result.stderr  # the path it took
    assert answer["statusCode"] == 500, answer
    _protected(answer)


def test_importing_the_entry_point_starts_nothing() -> None:
    probe = (
        "import sys, threading; import functions.admin as a;"
        " assert callable(a.lambda_handler);"
        " assert threading.active_count() == 1, threading.enumerate();"
        " assert 'psycopg' not in sys.modules, 'connected at import'"
    )
    result = subprocess.run(  # noqa: S603 - our own interpreter
        [sys.executable, "-c", probe],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        cwd=ROOT,
        env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(ROOT)},
    )
    assert result.returncode == 0, result.stderr


def test_a_warm_container_keeps_one_database_connection_however_many_requests(
    lambda_admin: Any, db: Any, database_url: str
) -> None:
    def connections() -> int:
        row = db.execute(
            "select count(*) as n from pg_stat_activity"
            " where application_name = 'tether' and datname = current_database()"
        ).fetchone()
        return int(row["n"])

    sweep = _event("/sweep")
    sweep["requestContext"]["http"]["method"] = "POST"
    for _ in range(6):
        response = lambda_admin(_event("/sessions", "active=true"), FakeLambdaContext())
        assert response["statusCode"] == 200
        # A sweep run from the API uses the same connection.
        response = lambda_admin(copy.deepcopy(sweep), FakeLambdaContext())
        assert response["statusCode"] == 200, response
        assert connections() == 1


def _without(event: dict[str, Any], *path: str) -> dict[str, Any]:
    holder = event
    for part in path[:-1]:
        holder = holder[part]
    del holder[path[-1]]
    return event


def _with(event: dict[str, Any], value: Any, *path: str) -> dict[str, Any]:
    holder = event
    for part in path[:-1]:
        holder = holder[part]
    holder[path[-1]] = value
    return event


MALFORMED: dict[str, tuple[Callable[[dict[str, Any]], Any], str]] = {
    "not an object": (lambda e: None, "the event must be a JSON object, got NoneType"),
    "a list": (lambda e: [e], "the event must be a JSON object, got list"),
    "empty": (lambda e: {}, "not an API Gateway HTTP event"),
    "no version": (lambda e: _without(e, "version"), "not an API Gateway HTTP event"),
    "no request context": (lambda e: _without(e, "requestContext"), "requestContext: Field"),
    "version 1.0 on a 2.0 event": (lambda e: _with(e, "1.0", "version"), "httpMethod"),
    "version 3.0": (lambda e: _with(e, "3.0", "version"), "not an API Gateway HTTP event"),
    # Mangum knows a payload 1.0 by its version or its resource, not by an httpMethod.
    "1.0 with neither version nor resource": (
        lambda e: {"httpMethod": "GET", "path": "/health", "requestContext": {}},
        "not an API Gateway HTTP event",
    ),
    "an ALB's event": (
        lambda e: {
            "httpMethod": "GET",
            "path": "/health",
            "requestContext": {"elb": {"targetGroupArn": "arn:aws:elb"}},
        },
        "an Application Load Balancer's event",
    ),
    "no http": (lambda e: _without(e, "requestContext", "http"), "requestContext.http"),
    "no method": (
        lambda e: _without(e, "requestContext", "http", "method"),
        "requestContext.http.method",
    ),
    "headers null": (lambda e: _with(e, None, "headers"), "headers"),
    "a header a number": (lambda e: _with(e, 7, "headers", "accept"), "headers.accept"),
    "a header a list": (lambda e: _with(e, ["a"], "headers", "accept"), "headers.accept"),
    "query null": (lambda e: _with(e, None, "rawQueryString"), "rawQueryString"),
    "body a number": (lambda e: _with(e, 5, "body"), "body"),
    "body an object": (lambda e: _with(e, {"a": 1}, "body"), "body"),
    "body not base64": (
        lambda e: _with(_with(e, True, "isBase64Encoded"), "%%%not base64", "body"),
        "the body is not base64",
    ),
    # Mangum reads the server's port as an int, from the Host header or X-Forwarded-Port:
    # anything else raised ValueError in it.
    "a host whose port is a word": (
        lambda e: _with(
            e, "r3pmxmplak.execute-api.us-east-1.amazonaws.com:https", "headers", "host"
        ),
        "headers.host",
    ),
    "a host that is an IPv6 literal": (
        lambda e: _with(e, "[::1]:443", "headers", "host"),
        "headers.host",
    ),
    "a forwarded port that is a word": (
        lambda e: _with(e, "https", "headers", "x-forwarded-port"),
        "headers.x-forwarded-port",
    ),
    "a 1.0 event's forwarded port given twice": (
        lambda e: _as_1_0(e, multi_value_headers={"X-Forwarded-Port": ["443", "443"]}),
        "headers.x-forwarded-port",
    ),
}


def _as_1_0(event: dict[str, Any], *, multi_value_headers: dict[str, list[str]]) -> dict[str, Any]:
    """The same request as a REST API (payload 1.0) sends it."""
    return {
        "version": "1.0",
        "resource": "/{proxy+}",
        "path": event["rawPath"],
        "httpMethod": event["requestContext"]["http"]["method"],
        "headers": {"host": "example.com", "authorization": event["headers"]["authorization"]},
        "multiValueHeaders": multi_value_headers,
        "requestContext": {"identity": {"sourceIp": "203.0.113.10"}},
        "body": None,
        "isBase64Encoded": False,
    }


@pytest.mark.parametrize("name", list(MALFORMED))
def test_a_malformed_event_is_refused_with_a_problem_and_closes_nothing(
    name: str, lambda_admin: Any, make_session: SessionFactory, db: Any
) -> None:
    """A direct invoke, a console test event or an integration set up by hand: Mangum
    trusted every field and escaped as a KeyError or AttributeError (a 502 behind API
    Gateway). Each is a 400 saying which field, and the request is not run: a close
    of a live session leaves it live."""
    session = make_session(started_seconds_ago=30)
    close = _event(f"/sessions/{session['session_id']}/close")
    close["requestContext"]["http"]["method"] = "POST"
    change, said = MALFORMED[name]
    event = change(close)

    response = lambda_admin(event, FakeLambdaContext())

    assert response["statusCode"] == 400, response
    assert response["headers"]["content-type"] == "application/problem+json"
    _protected(response)
    problem = json.loads(response["body"])
    assert problem["code"] == "malformed_event"
    assert problem["status"] == 400
    assert said in problem["detail"], problem
    assert OPERATOR_KEY not in response["body"]
    row = db.execute(
        "select is_active from public.conversation_sessions where session_id = %s",
        (session["session_id"],),
    ).fetchone()
    assert row["is_active"] is True


def test_a_payload_1_0_event_is_still_served(lambda_admin: Any) -> None:
    event = {
        "version": "1.0",
        "resource": "/{proxy+}",
        "path": "/health",
        "httpMethod": "GET",
        "headers": {"host": "example.execute-api.us-east-1.amazonaws.com"},
        "multiValueHeaders": None,
        "queryStringParameters": None,
        "multiValueQueryStringParameters": None,
        "requestContext": {"identity": {"sourceIp": "203.0.113.10"}},
        "body": None,
        "isBase64Encoded": False,
    }
    response = lambda_admin(event, FakeLambdaContext())
    assert response["statusCode"] == 200, response
    assert json.loads(response["body"])["status"] == "ok"


def test_a_loop_run_elsewhere_in_the_process_leaves_the_handler_its_own(
    lambda_admin: Any,
) -> None:
    """Mangum runs each request on the thread's current event loop, which asyncio.run
    (the SessionEnded handler's runner too) replaces and then clears: the loop Mangum had
    made was dropped unclosed, a ResourceWarning in whichever later test the collector
    ran, and the next request failed for want of a current loop."""
    health = _event("/health", key=None)
    assert lambda_admin(health, FakeLambdaContext())["statusCode"] == 200
    asyncio.run(asyncio.sleep(0))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        gc.collect()
    assert [str(w.message) for w in caught if issubclass(w.category, ResourceWarning)] == []
    assert lambda_admin(health, FakeLambdaContext())["statusCode"] == 200


def test_a_body_without_its_length_is_refused_on_lambda_too(
    lambda_admin: Any, make_session: SessionFactory
) -> None:
    """Through Mangum the body comes with the event's headers as they are: an HTTP/2
    client sending none of Content-Length or Transfer-Encoding had its body passed over,
    and POST /sweep with {"dry_run": true} ran a real sweep."""
    make_session(started_seconds_ago=3 * 3600, seen_seconds_ago=60)  # the sweep's to end
    event = _event("/sweep")
    event["requestContext"]["http"]["method"] = "POST"
    del event["headers"]["content-length"]
    event["body"] = '{"dry_run": true}'
    event["isBase64Encoded"] = False
    refused = lambda_admin(event, FakeLambdaContext())
    assert refused["statusCode"] == 400, refused
    assert "takes no body" in json.loads(refused["body"])["detail"]
    event["body"] = ""
    swept = lambda_admin(event, FakeLambdaContext())
    assert swept["statusCode"] == 200, swept
    assert json.loads(swept["body"])["ended"] == 1


def test_behind_a_custom_domain_s_mapping_key_the_app_is_served_under_it(
    lambda_admin: Any, make_session: SessionFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An HTTP API keeps a custom domain's API mapping key in the path it passes on
    (https://ops.example.com/tether/sessions arrives as /tether/sessions): every route
    was a 404 there, and the page named its script and style outside the key."""
    row = make_session(started_seconds_ago=10)
    monkeypatch.setenv("TETHER_ADMIN_BASE_PATH", "tether")

    def under_key(path: str, *, key: str | None = OPERATOR_KEY) -> dict[str, Any]:
        event = _event(path, key=key)
        event["headers"]["host"] = "ops.example.com"
        answer: dict[str, Any] = lambda_admin(event, FakeLambdaContext())
        _protected(answer)
        return answer

    listed = under_key("/tether/sessions")
    assert listed["statusCode"] == 200, listed
    assert [s["session_id"] for s in json.loads(listed["body"])["sessions"]] == [
        str(row["session_id"])
    ]
    refused = under_key("/tether/sessions", key=None)
    assert refused["statusCode"] == 401
    assert json.loads(refused["body"])["instance"] == "/tether/sessions"
    page = under_key("/tether/dashboard", key=None)
    assert page["statusCode"] == 200
    assert '<body data-base="/tether">' in page["body"]
    assert 'src="/tether/dashboard/static/dashboard.js"' in page["body"]
    script = under_key("/tether/dashboard/static/dashboard.js", key=None)
    assert script["statusCode"] == 200
    assert "sessionStorage" in script["body"]
    root = under_key("/tether", key=None)
    assert (root["statusCode"], root["headers"]["location"]) == (307, "/tether/dashboard")
    schema = json.loads(under_key("/tether/openapi.json", key=None)["body"])
    assert schema["servers"] == [{"url": "/tether"}]
    # The API's own address passes no key: served as before.
    assert lambda_admin(_event("/sessions"), FakeLambdaContext())["statusCode"] == 200
    # A path that only begins with the key's letters is not under it.
    assert under_key("/tetherish/sessions")["statusCode"] == 404


def test_a_malformed_base_path_is_a_500_naming_the_setting(
    lambda_admin: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TETHER_ADMIN_BASE_PATH", "ops tether?x=<script>")
    answer = lambda_admin(_event("/health", key=None), FakeLambdaContext())
    assert answer["statusCode"] == 500
    assert answer["headers"]["content-type"] == "application/problem+json"
    problem = json.loads(answer["body"])
    assert problem["code"] == "misconfigured"
    assert "TETHER_ADMIN_BASE_PATH" in problem["detail"]
    assert "<script>" not in answer["body"]
    _protected(answer)
    # Mended, the next request is served.
    monkeypatch.setenv("TETHER_ADMIN_BASE_PATH", "/ops/tether/")
    answer = lambda_admin(_event("/ops/tether/health", key=None), FakeLambdaContext())
    assert answer["statusCode"] == 200, answer
