"""``POST /sweep``: one sweep, now, reported as the scheduled one reports."""

from __future__ import annotations

from fastapi import APIRouter

from tether.admin import operations
from tether.admin.deps import OPERATOR_ROUTES, StoreDep
from tether.admin.schemas import SweepSummary

router = APIRouter(tags=["sweep"], dependencies=OPERATOR_ROUTES)


@router.post("/sweep", response_model=SweepSummary, summary="Run one sweep now")
def sweep(store: StoreDep) -> SweepSummary:
    return operations.sweep_now(store)
