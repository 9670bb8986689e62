"""The one mapping per direction: SQLSTATE to a typed error, a typed error to a response."""

from __future__ import annotations

import json

import pytest

from tether.errors import (
    AuthenticationError,
    ConfigurationError,
    ConflictError,
    DatabaseBusyError,
    DatabaseError,
    DatabaseUnavailableError,
    ForbiddenError,
    GatewayError,
    InvalidInputError,
    NotFoundError,
    TetherError,
    error_for_sqlstate,
    error_from_postgrest,
)
from tether.responses import error_code, error_response


@pytest.mark.parametrize(
    ("sqlstate", "kind"),
    [
        ("22023", InvalidInputError),
        ("23514", InvalidInputError),
        ("08006", DatabaseUnavailableError),
        ("57P01", DatabaseUnavailableError),
        ("53300", DatabaseUnavailableError),
        ("55P03", DatabaseBusyError),
        ("40P01", DatabaseBusyError),
        ("42883", DatabaseError),
        ("XX000", DatabaseError),
        (None, DatabaseError),
    ],
)
def test_sqlstates_map_to_typed_errors(sqlstate: str | None, kind: type[TetherError]) -> None:
    error = error_for_sqlstate(sqlstate, "message")
    assert type(error) is kind
    # The SQLSTATE is named where there is one; none is not called "unknown".
    assert str(error) in ("message", f"{sqlstate}: message")
    assert "unknown" not in str(error)


def test_postgrest_errors_map_like_sqlstates() -> None:
    assert isinstance(error_from_postgrest({"code": "22023", "message": "m"}), InvalidInputError)
    unknown = error_from_postgrest({"code": "PGRST202", "message": "no such function"})
    assert isinstance(unknown, DatabaseError)
    assert "PGRST202" in str(unknown)
    assert "tether migrate" not in str(unknown)  # not one of tether's
    assert isinstance(error_from_postgrest({}), DatabaseError)


def test_a_missing_tether_function_says_to_migrate() -> None:
    missing = error_for_sqlstate(
        "42883", "function public.tether_orphan_summary_v1(p_older_than_seconds => ...)"
    )
    assert type(missing) is DatabaseError
    assert "`tether migrate` applies them" in str(missing)
    # The function's name, not the call's signature as Postgres writes it.
    assert str(missing).startswith("this database has no public.tether_orphan_summary_v1 (")
    assert "=>" not in str(missing)
    through_postgrest = error_from_postgrest(
        {"code": "PGRST202", "message": "Could not find the function public.tether_touch_v9"}
    )
    assert "`tether migrate` applies them" in str(through_postgrest)
    assert "notify pgrst, 'reload schema'" in str(through_postgrest)
    for other in (
        "function public.f()",
        "operator does not exist: public.tether_end_reason = integer",
    ):
        assert "tether migrate" not in str(error_for_sqlstate("42883", other))


@pytest.mark.parametrize(
    "code",
    # PostgREST without its database (503), or out of pooled connections (504); a
    # proxy's error page in front of it, which supabase-py reports by its status.
    ["PGRST000", "PGRST001", "PGRST002", "PGRST003", "502", "503", "504", "522"],
)
def test_postgrest_without_its_database_is_unavailable(code: str) -> None:
    error = error_from_postgrest({"code": code, "message": "m"})
    assert type(error) is DatabaseUnavailableError
    assert str(error) == f"{code}: m"


def test_a_proxy_s_own_json_body_is_read_by_its_status() -> None:
    """Kong answers an upstream failure in JSON with no code: only the status tells."""
    said = {"message": "An invalid response was received from the upstream server"}
    assert type(error_from_postgrest(said, status=502)) is DatabaseUnavailableError
    assert type(error_from_postgrest(said, status=400)) is DatabaseError


@pytest.mark.parametrize(
    ("said", "status"),
    [
        ({"message": "Invalid API key"}, 401),  # Supabase's gateway, no code
        ({"code": "PGRST301", "message": "JWT invalid"}, 401),
        ({"code": "PGRST303", "message": "JWT expired"}, None),
    ],
)
def test_a_service_key_refused_is_the_database_unavailable(
    said: dict[str, str], status: int | None
) -> None:
    """A revoked or mistyped service key was a DatabaseError, where psycopg's refused
    password is the database unavailable: $disconnect failed without DisconnectFailed."""
    error = error_from_postgrest(said, status=status)
    assert type(error) is DatabaseUnavailableError
    assert "TETHER_SUPABASE_SERVICE_KEY" in str(error)


@pytest.mark.parametrize("code", [["PGRST001"], {"a": 1}, 503, None])
def test_a_code_that_is_not_a_string_is_read_as_none(code: object) -> None:
    """A proxy's body may hold anything under "code": never a crash while mapping it."""
    assert type(error_from_postgrest({"code": code, "message": "m"})) is DatabaseError


@pytest.mark.parametrize(
    ("error", "status", "code"),
    [
        (ForbiddenError("role_not_allowed"), 403, "forbidden"),
        (AuthenticationError("expired"), 401, "unauthorized"),
        (InvalidInputError("bad"), 400, "bad_request"),
        (DatabaseUnavailableError("down"), 503, "unavailable"),
        (ConfigurationError("missing"), 500, "misconfigured"),
        (NotFoundError("no such session"), 404, "not_found"),
        (GatewayError("throttled"), 502, "gateway_error"),
        (ConflictError("reused"), 409, "conflict"),
        (DatabaseError("odd"), 500, "internal_error"),
    ],
)
def test_typed_errors_map_to_responses(error: TetherError, status: int, code: str) -> None:
    assert error_code(error) == (status, code)
    response = error_response(error)
    assert response["statusCode"] == status
    body = json.loads(response["body"])
    assert body["error"] == code
    if status >= 500:
        # Server-side detail (hosts, settings) stays in the logs; the kind is said.
        assert body["message"] == (
            "the database is unavailable or busy; try again shortly"
            if code == "unavailable"
            else "the service could not complete the request"
        )
    elif isinstance(error, AuthenticationError):
        assert body["message"] == error.cause


def test_a_rate_limit_says_its_wait_only_in_seconds() -> None:
    """Retry-After comes from whatever answered: only a number of seconds is repeated."""
    said = {"message": "API rate limit exceeded"}
    in_seconds = error_from_postgrest(said, status=429, retry_after="30")
    as_a_date = error_from_postgrest(said, status=429, retry_after="Wed, 21 Oct 2026 07:28 GMT")
    assert type(in_seconds) is DatabaseUnavailableError
    assert "30s before another try" in str(in_seconds)
    assert type(as_a_date) is DatabaseUnavailableError
    assert "GMT" not in str(as_a_date)
