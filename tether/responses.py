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
    TetherError,
)

Response = dict[str, Any]


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
    if isinstance(exc, ConfigurationError):
        return 500, "misconfigured"
    return 500, "internal_error"


def error_response(exc: TetherError) -> Response:
    status, code = error_code(exc)
    # Authentication causes are safe codes; other messages are ours, never input.
    message = exc.cause if isinstance(exc, AuthenticationError) else str(exc)
    if status >= 500:
        message = "the service could not complete the request"
    return respond(status, {"error": code, "message": message})
