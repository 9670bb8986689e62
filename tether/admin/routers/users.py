"""``/users/{user_id}``: whether a user is online, and disconnecting every live session."""

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
from tether.admin.queries import IN_DIGITS
from tether.admin.schemas import UserDisconnected, UserPresence

router = APIRouter(
    prefix="/users",
    tags=["users"],
    dependencies=OPERATOR_ROUTES,
)


@router.get(
    "/{user_id}/presence",
    response_model=UserPresence,
    summary="Online or not, with the live connections",
)
def presence(
    *,
    user_id: UUID,
    store: StoreDep,
    cursor: Annotated[
        str | None,
        Query(
            min_length=1,
            max_length=512,
            description="The `next_cursor` of the previous page",
        ),
    ] = None,
    limit: Annotated[
        int,
        Query(ge=1, le=operations.PAGE_SIZE_MAX, description="Connections per page"),
        IN_DIGITS,
    ] = operations.PRESENCE_LIMIT,
) -> UserPresence:
    return operations.presence(store, user_id, cursor_text=cursor, limit=limit)


@router.post(
    "/{user_id}/disconnect",
    response_model=UserDisconnected,
    summary="Close every live session of the user (sign-out, ban)",
)
def disconnect(
    *,
    user_id: UUID,
    store: StoreDep,
    announce_lease: AnnounceLeaseDep,
    announcer: AnnouncerDep,
    connections: ConnectionsDep,
    operator: OperatorDep,
    invocation_ends: InvocationEndsDep,
) -> UserDisconnected:
    return operations.close_user(
        user_id,
        store=store,
        connections=connections,
        announcer=announcer,
        announce_lease_seconds=announce_lease,
        operator=str(operator),
        invocation_ends=invocation_ends,
    )
