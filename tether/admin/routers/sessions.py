"""``/sessions``: list with filters and keyset pages, read one, force one closed."""

from __future__ import annotations

import re
from typing import Annotated
from uuid import UUID

from fastapi import APIRouter, Query
from pydantic import AwareDatetime, BeforeValidator

from tether.admin import operations
from tether.admin.deps import (
    OPERATOR_ROUTES,
    AnnouncerDep,
    ConnectionsDep,
    OperatorDep,
    SettingsDep,
    StoreDep,
)
from tether.admin.schemas import SessionClosed, SessionPublic, SessionsPage
from tether.errors import NotFoundError
from tether.models import EndReason, SessionFilter

_NUMBER = re.compile(r"[+-]?[0-9]+(\.[0-9]*)?")
# A time, then an offset whose '+' arrived as a space: "...T12:00:00 01:00".
_OFFSET_WITHOUT_SIGN = re.compile(
    r"[0-9]{2}:[0-9]{2}(:[0-9]{2}(\.[0-9]+)?)? [0-9]{2}(:?[0-9]{2})?$"
)


def _written_as_a_moment(value: object) -> object:
    """ISO 8601 only: pydantic also reads a number as Unix seconds (0 is 1970), and a
    '+' sent unencoded arrives as a space, which it calls "extra characters"."""
    if isinstance(value, str):
        if _NUMBER.fullmatch(value.strip()):
            raise ValueError(
                "an ISO 8601 time with an offset is expected, such as 2026-11-29T12:00Z"
            )
        if _OFFSET_WITHOUT_SIGN.search(value.strip()):
            raise ValueError("a '+' in a URL must be written %2B (a bare '+' reads as a space)")
    return value


Moment = Annotated[AwareDatetime, BeforeValidator(_written_as_a_moment)]

router = APIRouter(
    prefix="/sessions",
    tags=["sessions"],
    dependencies=OPERATOR_ROUTES,
)


@router.get("", response_model=SessionsPage, summary="Sessions, newest first, a page at a time")
def list_sessions(
    *,
    store: StoreDep,
    active: Annotated[
        bool | None, Query(description="true: live sessions only; false: ended ones only")
    ] = None,
    user_id: Annotated[UUID | None, Query(description="Only this user's sessions")] = None,
    started_after: Annotated[
        Moment | None, Query(description="Started at or after (ISO 8601 with offset)")
    ] = None,
    started_before: Annotated[
        Moment | None, Query(description="Started before (ISO 8601 with offset)")
    ] = None,
    end_reason: Annotated[EndReason | None, Query(description="Ended for this reason")] = None,
    cursor: Annotated[
        str | None,
        Query(
            min_length=1,
            max_length=512,
            description="The `next_cursor` of the previous page (same filters)",
        ),
    ] = None,
    limit: Annotated[
        int,
        Query(ge=1, le=operations.PAGE_SIZE_MAX, description="Rows per page"),
    ] = operations.PAGE_SIZE_DEFAULT,
) -> SessionsPage:
    where = SessionFilter(
        active=active,
        user_id=user_id,
        started_after=started_after,
        started_before=started_before,
        end_reason=end_reason,
    )
    return operations.list_page(store, where, cursor_text=cursor, limit=limit)


@router.get("/{session_id}", response_model=SessionPublic, summary="One session")
def get_session(session_id: UUID, store: StoreDep) -> SessionPublic:
    found = operations.get_session(store, session_id)
    if found is None:
        raise NotFoundError(f"no session {session_id}")
    return found


@router.post(
    "/{session_id}/close",
    response_model=SessionClosed,
    summary="End the session (forced_close) and disconnect its client",
)
def close_session(
    *,
    session_id: UUID,
    store: StoreDep,
    settings: SettingsDep,
    announcer: AnnouncerDep,
    connections: ConnectionsDep,
    operator: OperatorDep,
) -> SessionClosed:
    closed = operations.close_session(
        session_id,
        store=store,
        connections=connections,
        announcer=announcer,
        announce_lease_seconds=settings.announce_lease_seconds,
        operator=str(operator),
    )
    if closed is None:
        raise NotFoundError(f"no session {session_id}")
    return closed
