"""``/sessions``: list with filters and keyset pages, read one, force one closed."""

from __future__ import annotations

from typing import Annotated
from uuid import UUID

from fastapi import APIRouter, Query

from tether.admin import operations
from tether.admin.deps import (
    OPERATOR_ROUTES,
    AnnounceLeaseDep,
    AnnouncerDep,
    ConnectionsDep,
    InvocationEndsDep,
    OperatorDep,
    StoreDep,
)
from tether.admin.queries import IN_DIGITS, Moment, TrueOrFalse
from tether.admin.schemas import SessionClosed, SessionPublic, SessionsPage
from tether.errors import NotFoundError
from tether.models import EndReason
from tether.sweep_and_admin_models import SessionFilter

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
        TrueOrFalse | None,
        Query(description="true: live sessions only; false: ended ones only"),
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
        IN_DIGITS,
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
    announce_lease: AnnounceLeaseDep,
    announcer: AnnouncerDep,
    connections: ConnectionsDep,
    operator: OperatorDep,
    invocation_ends: InvocationEndsDep,
) -> SessionClosed:
    closed = operations.close_session(
        session_id,
        store=store,
        connections=connections,
        announcer=announcer,
        announce_lease_seconds=announce_lease,
        operator=str(operator),
        invocation_ends=invocation_ends,
    )
    if closed is None:
        raise NotFoundError(f"no session {session_id}")
    return closed
