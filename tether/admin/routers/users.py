"""``/users/{user_id}``: whether a user is online, and disconnecting every live session."""

from __future__ import annotations

from uuid import UUID

from fastapi import APIRouter

from tether.admin import operations
from tether.admin.deps import (
    OPERATOR_ROUTES,
    AnnounceLeaseDep,
    AnnouncerDep,
    ConnectionsDep,
    OperatorDep,
    StoreDep,
)
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
def presence(user_id: UUID, store: StoreDep) -> UserPresence:
    return operations.presence(store, user_id)


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
) -> UserDisconnected:
    return operations.close_user(
        user_id,
        store=store,
        connections=connections,
        announcer=announcer,
        announce_lease_seconds=announce_lease,
        operator=str(operator),
    )
