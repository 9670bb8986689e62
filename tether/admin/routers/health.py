"""``GET /health``: open without credentials, for uptime checks and load balancers,
which get the status alone; an operator's credentials bring why it is not ``ok``. It
says nothing about sessions either way."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import JSONResponse

from tether.admin import operations
from tether.admin.auth import KEY_HEADER
from tether.admin.deps import MaybeOperatorDep, StoreDep
from tether.admin.problems import PROBLEM_JSON
from tether.admin.schemas import Health, HealthSummary

router = APIRouter(tags=["health"])

_ANSWER = Health | HealthSummary
_VARY = f"Authorization, {KEY_HEADER}"
_PROBLEM = {PROBLEM_JSON: {"schema": {"$ref": "#/components/schemas/Problem"}}}


@router.get(
    "/health",
    response_model=_ANSWER,
    summary="The status for anyone; with credentials, migrations, the sweep and problems",
    description="Without credentials: `status` and `database` alone. With an operator's"
    " credentials: also the migrations pending, the sweep's last run and what in the"
    " database stops tether's functions. Credentials sent that do not verify are refused"
    " (401, or 403 for a token whose holder is no operator), as on every route. An"
    " `Authorization` of another scheme than `Bearer` (`Basic`, which a load balancer or"
    " proxy may send with every request) is no credential tether takes: it gets the"
    " status alone, as without credentials.",
    responses={
        401: {
            "description": "Credentials that do not verify (none at all, or an"
            " Authorization of another scheme than Bearer, get the status)",
            "content": _PROBLEM,
        },
        503: {
            "model": _ANSWER,
            "description": "Unreachable, migrations pending, or the database stops"
            " tether's functions; a problem document when something the answer needs"
            " cannot be reached (the token issuer's signing keys, the key's store, the"
            " database lost mid-answer)",
            "content": _PROBLEM,
        },
    },
    # Optional: anonymous callers are answered too (OpenAPI's empty requirement).
    openapi_extra={"security": [{}]},
)
def health(operator: MaybeOperatorDep, store: StoreDep) -> JSONResponse:
    # The credentials first: wrong ones are refused before the database is asked.
    report = operations.health(store, details=operator is not None)
    status = 200 if report.status == "ok" else 503
    # The answer depends on the credentials: a cache between the caller and the API
    # must not give an operator's answer to anyone else.
    return JSONResponse(report.model_dump(mode="json"), status_code=status, headers={"Vary": _VARY})
