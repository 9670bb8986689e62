"""``/stats``: the origin's daily statistics and orphan alert, and the numbers right now."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query

from tether import limits
from tether.admin import operations
from tether.admin.deps import OPERATOR_ROUTES, SettingsDep, StoreDep
from tether.admin.errors import InvalidFieldError
from tether.admin.queries import IN_DIGITS
from tether.admin.schemas import DailyStatsReport, LiveStats, OrphanReport
from tether.durations import DURATION_PATTERN, parse_age
from tether.errors import InvalidInputError

_AGE_MAX_DAYS = f"{limits.ORPHAN_AGE_MAX_SECONDS / 86400:g}"

router = APIRouter(
    prefix="/stats",
    tags=["stats"],
    dependencies=OPERATOR_ROUTES,
)


def _age(text: str) -> float:
    try:
        return parse_age(text)
    except InvalidInputError as exc:
        raise InvalidFieldError("older_than", str(exc)) from None


@router.get("/daily", response_model=DailyStatsReport, summary="Sessions per UTC day")
def daily(
    store: StoreDep,
    days: Annotated[
        int, Query(ge=1, le=366, description="How many days, today included"), IN_DIGITS
    ] = 7,
) -> DailyStatsReport:
    return operations.daily(store, days)


@router.get(
    "/orphans", response_model=OrphanReport, summary="Active sessions older than a threshold"
)
def orphans(
    store: StoreDep,
    older_than: Annotated[
        str,
        Query(
            max_length=32,
            description=(
                "Age with its unit, as the command line writes it (90s, 15m, 2h, 1d,"
                " 1d12h: each unit once, largest first), or a bare number of seconds"
                f" (7200); more than 0 and at most {_AGE_MAX_DAYS} days"
            ),
            # In the schema only: the parser's message says what was wrong, and names
            # the forms, where a pattern's would quote a regular expression.
            json_schema_extra={"pattern": DURATION_PATTERN},
            examples=["2h", "90m", "7200", "1d12h"],
        ),
    ] = "2h",
    alert_above: Annotated[
        int,
        Query(ge=0, le=1_000_000, description="Alert when more than this many"),
        IN_DIGITS,
    ] = operations.ORPHAN_ALERT_DEFAULT,
) -> OrphanReport:
    return operations.orphans(store, older_than_seconds=_age(older_than), alert_above=alert_above)


@router.get("/live", response_model=LiveStats, summary="Right now: what the live page shows")
def live(store: StoreDep, settings: SettingsDep) -> LiveStats:
    return operations.live(store, settings)
