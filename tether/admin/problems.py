"""Errors as problem details (RFC 9457), mapped in this one place.

Every error the API answers is ``application/problem+json`` with ``type``, ``title``,
``status``, ``detail``, ``instance`` and tether's stable ``code``; a request that
fails validation also lists each field at fault under ``errors``. Server-side
failures say no more than that they happened: the log has the rest.
"""

from __future__ import annotations

import logging
from http import HTTPStatus
from typing import Any, cast

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect
from starlette.routing import Match

from tether.admin.auth import describe
from tether.admin.errors import InvalidFieldError
from tether.errors import (
    AuthenticationError,
    ConfigurationError,
    GatewayError,
    TetherError,
)
from tether.responses import SERVER_FAILED, error_code, server_side_message

logger = logging.getLogger("tether.admin")

PROBLEM_JSON = "application/problem+json"
TYPE_PREFIX = "urn:tether:problem:"
REALM = 'Bearer realm="tether operators"'


class FieldError(BaseModel):
    field: str = Field(description="The parameter at fault, such as `limit` or `cursor`.")
    location: str = Field(description="Where it was: query, path, header or body.")
    message: str


class Problem(BaseModel):
    """An error, as RFC 9457 problem details."""

    type: str = Field(description="A URI naming the kind of problem.")
    title: str
    status: int
    detail: str
    instance: str | None = Field(
        default=None,
        description="The route that answered, as its template (`/sessions/{session_id}`):"
        " a value sent in the path is never echoed.",
    )
    code: str = Field(description="tether's stable error code, for programs to match on.")
    errors: list[FieldError] | None = None


def problem(
    request: Request,
    status: int,
    code: str,
    detail: str,
    *,
    errors: list[FieldError] | None = None,
    headers: dict[str, str] | None = None,
) -> JSONResponse:
    return JSONResponse(
        problem_body(status, code, detail, instance=_route(request), errors=errors),
        status_code=status,
        media_type=PROBLEM_JSON,
        headers=headers,
    )


def problem_body(
    status: int,
    code: str,
    detail: str,
    *,
    instance: str | None = None,
    errors: list[FieldError] | None = None,
) -> dict[str, Any]:
    """The problem document itself, for an answer made outside the app too."""
    body = Problem(
        type=TYPE_PREFIX + code,
        title=HTTPStatus(status).phrase,
        status=status,
        detail=detail,
        instance=instance,
        code=code,
        errors=errors,
    )
    return body.model_dump(exclude_none=True)


def _route(request: Request) -> str | None:
    """The matched route's template, or None for a path no route serves."""
    route = request.scope.get("route")
    template = getattr(route, "path_format", None)
    if not isinstance(template, str):
        return None
    return str(request.scope.get("root_path", "")) + template


def _field_errors(exc: RequestValidationError) -> list[FieldError]:
    found = []
    for item in exc.errors():
        location = [str(part) for part in item.get("loc", ())]
        where = location[0] if location else "request"
        name = ".".join(location[1:]) or where
        # Only the message: never the input, which could be a credential.
        found.append(FieldError(field=name, location=where, message=_without_input(item)))
    return found


def _without_input(item: Any) -> str:
    """pydantic's message, less a parser's detail that quotes the input (a UUID's
    "invalid character: found `x` at 0")."""
    # Our own validators' words come prefixed by pydantic's "Value error, ".
    message = str(item.get("msg", "")).removeprefix("Value error, ")
    detail = str((item.get("ctx") or {}).get("error", ""))
    if "`" in detail:
        return message.removesuffix(detail).rstrip(", ")
    return message


async def _validation(request: Request, exc: Exception) -> JSONResponse:
    errors = _field_errors(cast(RequestValidationError, exc))
    detail = "; ".join(f"{e.field}: {e.message}" for e in errors) or "the request is invalid"
    return problem(request, 400, "bad_request", detail, errors=errors)


async def _tether(request: Request, error: Exception) -> JSONResponse:
    exc = cast(TetherError, error)
    status, code = error_code(exc)  # the one mapping from typed error to status
    if isinstance(exc, InvalidFieldError):
        field = FieldError(field=exc.field, location=exc.location, message=str(exc))
        return problem(request, status, code, f"{exc.field}: {exc}", errors=[field])
    if isinstance(exc, AuthenticationError):
        # A fixed cause, described; never the credential.
        headers = {"WWW-Authenticate": REALM} if status == 401 else None
        return problem(request, status, code, describe(exc.cause), headers=headers)
    if isinstance(exc, GatewayError):
        logger.error("the gateway did not answer", extra={"error": str(exc)})
        return problem(request, status, code, "the API Gateway did not answer")
    if isinstance(exc, ConfigurationError):
        # The setting's name, never its value; the logs have the rest (which secret).
        logger.error("request failed", extra={"error": str(exc), "code": code})
        return problem(request, status, code, exc.public)
    if status < 500:
        # Our own message: the bad value's field; never a value.
        return problem(request, status, code, str(exc))
    logger.error("request failed", extra={"error": str(exc), "code": code})
    return problem(request, status, code, server_side_message(code))


async def _http(request: Request, error: Exception) -> JSONResponse:
    exc = cast(HTTPException, error)
    code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "http_error")
    detail = str(exc.detail) if exc.detail else HTTPStatus(exc.status_code).phrase
    if exc.status_code == 404:
        # Never the path itself: whatever was sent in it stays out of the answer.
        # The app's own root: under a mount (the live page's static files), root_path
        # has the mount's path added.
        root = request.scope.get("app_root_path", request.scope.get("root_path", ""))
        schema = str(root).rstrip("/") + "/openapi.json"
        detail = f"no route serves this path; {schema} lists them"
        if _served_without_its_trailing_slash(request):
            detail = f"no route serves this path: drop its trailing slash; {schema} lists them"
    headers = dict(exc.headers) if exc.headers else None
    allowed = _methods_of(request) if exc.status_code == 405 else []
    if allowed:
        # Starlette names the methods of the first route of this path only, and never
        # the HEAD that every GET route answers (tether.admin.head).
        headers = {**(headers or {}), "Allow": ", ".join(allowed)}
    return problem(request, exc.status_code, code, detail, headers=headers)


def _served_without_its_trailing_slash(request: Request) -> bool:
    path = str(request.scope.get("path", ""))
    if not path.endswith("/"):
        return False
    trimmed = {**request.scope, "path": path.rstrip("/")}
    return any(route.matches(trimmed)[0] != Match.NONE for route in request.app.router.routes)


_METHODS = ("GET", "POST", "PUT", "PATCH", "DELETE")


def _methods_of(request: Request) -> list[str]:
    """Every method some route serves at this request's path: HEAD beside each GET."""
    routes = request.app.router.routes
    served = [
        method
        for method in _METHODS
        if any(
            route.matches({**request.scope, "method": method})[0] == Match.FULL for route in routes
        )
    ]
    if "GET" in served:
        served.insert(1, "HEAD")
    return served


async def _client_gone(request: Request, exc: Exception) -> JSONResponse:
    # A client that hung up before its request was read (a tab closed, or the live page
    # giving up on a refresh): no fault of ours, and nobody to answer. An answer is
    # made all the same, for the server to drop.
    logger.info("client gone before its request was read")
    return problem(request, 400, "http_error", "the client went away before its request was read")


async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
    logger.exception("unexpected error", exc_info=exc)
    return problem(request, 500, "internal_error", SERVER_FAILED)


def install(app: FastAPI) -> None:
    app.add_exception_handler(RequestValidationError, _validation)
    app.add_exception_handler(TetherError, _tether)
    app.add_exception_handler(HTTPException, _http)
    app.add_exception_handler(ClientDisconnect, _client_gone)
    app.add_exception_handler(Exception, _unexpected)
