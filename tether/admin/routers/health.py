"""``GET /health``: the one route open without credentials; it says nothing about sessions."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import JSONResponse

from tether.admin import operations
from tether.admin.deps import StoreDep
from tether.admin.schemas import Health

router = APIRouter(tags=["health"])


@router.get(
    "/health",
    response_model=Health,
    summary="Database reachable, migrations current, the sweep's last run",
    responses={503: {"model": Health, "description": "Unreachable, or migrations pending"}},
)
def health(store: StoreDep) -> JSONResponse:
    report = operations.health(store)
    status = 200 if report.status == "ok" else 503
    return JSONResponse(report.model_dump(mode="json"), status_code=status)
