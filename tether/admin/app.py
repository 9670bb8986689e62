"""The operators' API and live page, as one FastAPI application.

``create_app()`` builds it; nothing connects or starts until a request comes. The
Lambda entry point (``functions.admin``) wraps it in Mangum behind an API Gateway HTTP
API; ``tether dev`` serves it under ``/admin`` on the local gateway's port. Its OpenAPI
schema is served at ``/openapi.json``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi
from fastapi.staticfiles import StaticFiles
from starlette.types import ASGIApp

from tether import __version__
from tether.admin import problems
from tether.admin.head import HeadAsGet
from tether.admin.headers import WithResponseHeaders
from tether.admin.routers import dashboard, health, sessions, stats, sweep, users

TITLE = "tether operators' API"
DESCRIPTION = (
    "Sessions, forced closes, presence, statistics and the sweep of a tether deployment."
    " Every route that reads or changes sessions needs the operator key (`Authorization:"
    " Bearer <key>` or `X-Tether-Operator-Key`) or an operator's Supabase access token;"
    " this schema and the live page's shell answer without, and so does `/health`, with"
    " its status alone (the credentials bring its details). Errors are"
    " `application/problem+json` (RFC 9457)."
)
STATIC = Path(__file__).parent / "static"
TEXT_MIME_TYPES = [
    "text/",
    "application/json",
    "application/problem+json",
    "application/javascript",
    "image/svg+xml",
]
"""What Mangum returns as text rather than base64."""

# Problem statuses every operation may answer, beside its own.
_PROBLEM_STATUSES = {
    "400": "Bad request: the `errors` list names each parameter at fault",
    "401": "No credentials, or credentials that do not verify",
    "403": "A valid token whose holder is not an operator",
    "404": "No such resource",
    "500": "The service failed, or is misconfigured (the detail names the setting)",
    "502": "The API Gateway did not answer",
    "503": "The database, or the token issuer's signing keys, cannot be reached",
}


def _openapi(app: FastAPI) -> dict[str, Any]:
    """FastAPI's schema, with every error response documented as a problem document."""
    if app.openapi_schema:
        return app.openapi_schema
    schema = get_openapi(
        title=app.title, version=app.version, description=app.description, routes=app.routes
    )
    components = schema.setdefault("components", {}).setdefault("schemas", {})
    for name in ("HTTPValidationError", "ValidationError"):
        components.pop(name, None)
    problem_schema = problems.Problem.model_json_schema(ref_template="#/components/schemas/{model}")
    components.update(problem_schema.pop("$defs", {}))
    components["Problem"] = problem_schema
    reference = {"$ref": "#/components/schemas/Problem"}
    for path, path_item in schema.get("paths", {}).items():
        for operation in path_item.values():
            responses = operation.setdefault("responses", {})
            responses.pop("422", None)
            # Credentials optional (an empty requirement among them, /health's): such a
            # route does not check its query as the operators' routes do.
            required = "security" in operation and {} not in operation["security"]
            for status, description in _PROBLEM_STATUSES.items():
                if status in responses:
                    continue
                if status in {"401", "403"} and "security" not in operation:
                    continue
                # Only what the operation can answer: a 404 needs a session's id in the
                # path (a user with no session is answered, offline or with nothing
                # closed), a 400 something to get wrong (parameters, or the query the
                # routes check).
                if status == "404" and "{session_id}" not in path:
                    continue
                if status == "400" and not operation.get("parameters") and not required:
                    continue
                responses[status] = {
                    "description": description,
                    "content": {problems.PROBLEM_JSON: {"schema": reference}},
                }
    app.openapi_schema = schema
    return schema


class _App(FastAPI):
    def build_middleware_stack(self) -> ASGIApp:
        # Outside Starlette's own error handling, which answers a 500 past every
        # middleware added with add_middleware.
        return HeadAsGet(WithResponseHeaders(super().build_middleware_stack()))


def create_app() -> FastAPI:
    app = _App(
        title=TITLE,
        version=__version__,
        description=DESCRIPTION,
        openapi_url="/openapi.json",
        docs_url=None,  # Swagger UI loads its assets from a CDN: read /openapi.json instead
        redoc_url=None,
        # A path with a slash too many is a 404 like any unknown path. Starlette's
        # redirect to the path without it was a bare 307 whose Location it built from
        # the Host header, wrong behind a custom domain's base path.
        redirect_slashes=False,
    )
    problems.install(app)
    for module in (health, sessions, users, stats, sweep, dashboard):
        app.include_router(module.router)
    app.mount("/dashboard/static", StaticFiles(directory=STATIC), name="static")
    app.openapi = lambda: _openapi(app)  # type: ignore[method-assign]
    return app
