"""``POST /sweep``: one sweep, now, reported as the scheduled one reports."""

from __future__ import annotations

from fastapi import APIRouter, Depends

from tether.admin import operations
from tether.admin.deps import StoreDep, known_query_only, require_operator
from tether.admin.schemas import SweepSummary

router = APIRouter(
    tags=["sweep"], dependencies=[Depends(require_operator), Depends(known_query_only)]
)


@router.post("/sweep", response_model=SweepSummary, summary="Run one sweep now")
def sweep(store: StoreDep) -> SweepSummary:
    return operations.sweep_now(store)
