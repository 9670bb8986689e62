"""The one place where errors become what API Gateway returns to the caller."""

from __future__ import annotations

import json
from typing import Any

from tether.errors import (
    AuthenticationError,
    ConfigurationError,
    ConflictError,
    DatabaseUnavailableError,
    ForbiddenError,
    GatewayError,
    InvalidInputError,
    NotFoundError,
    SecretUnavailableError,
    SigningKeysUnavailableError,
    TetherError,
)

Response = dict[str, Any]

SERVER_FAILED = "the service could not complete the request"
# What a caller is told of a failure on the server's side: its kind, never its detail
# (hosts, settings), which stays in the logs.
_SERVER_SIDE_MESSAGES = {
    "unavailable": "the database is unavailable or busy; try again shortly",
    "signing_keys_unavailable": "tokens cannot be verified right now; try again shortly",
    "secret_unavailable": "a secret could not be read right now; try again shortly",
}


def server_side_message(code: str) -> str:
    return _SERVER_SIDE_MESSAGES.get(code, SERVER_FAILED)


def respond(
    status_code: int, body: dict[str, Any] | None = None, headers: dict[str, str] | None = None
) -> Response:
    response: Response = {"statusCode": status_code}
    if body is not None:
        response["body"] = json.dumps(body, separators=(",", ":"))
    if headers:
        response["headers"] = headers
    return response


def error_code(exc: TetherError) -> tuple[int, str]:
    """The status and the stable error code that callers may match on."""
    if isinstance(exc, ForbiddenError):
        return 403, "forbidden"
    if isinstance(exc, AuthenticationError):
        return 401, "unauthorized"
    if isinstance(exc, InvalidInputError):
        return 400, "bad_request"
    if isinstance(exc, ConflictError):
        return 409, "conflict"
    if isinstance(exc, NotFoundError):
        return 404, "not_found"
    if isinstance(exc, GatewayError):
        return 502, "gateway_error"
    if isinstance(exc, DatabaseUnavailableError):
        return 503, "unavailable"
    if isinstance(exc, SigningKeysUnavailableError):
        return 503, "signing_keys_unavailable"
    if isinstance(exc, SecretUnavailableError):
        return 503, "secret_unavailable"
    if isinstance(exc, ConfigurationError):
        return 500, "misconfigured"
    return 500, "internal_error"


def error_response(exc: TetherError) -> Response:
    status, code = error_code(exc)
    # Authentication causes are safe codes; other messages are ours, never input.
    message = exc.cause if isinstance(exc, AuthenticationError) else str(exc)
    if status >= 500:
        message = server_side_message(code)
    return respond(status, {"error": code, "message": message})
