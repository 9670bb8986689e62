"""The typed results both data drivers return, whatever the wire format: here, those the
WebSocket handlers and the SessionEnded finalizer read; the sweep's and the operators'
are in ``tether.sweep_and_admin_models``, which no handler's cold start builds.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from enum import StrEnum
from typing import Annotated
from uuid import UUID

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationInfo, field_validator

from tether import limits
from tether.errors import InvalidInputError


class EndReason(StrEnum):
    """Why a session ended. Mirrors the SQL domain ``public.tether_end_reason``."""

    CLIENT_DISCONNECT = "client_disconnect"
    SERVER_DISCONNECT = "server_disconnect"
    CONNECTION_LOST = "connection_lost"
    MESSAGE_TOO_BIG = "message_too_big"
    IDLE_TIMEOUT = "idle_timeout"
    MAX_DURATION = "max_duration"
    GONE = "gone"
    HEARTBEAT_TIMEOUT = "heartbeat_timeout"
    ORPHAN_CLEANUP = "orphan_cleanup"
    FORCED_CLOSE = "forced_close"
    SHUTDOWN = "shutdown"
    UNRECORDED = "unrecorded"
    """Ended by a writer other than tether (an adopted table's old server, before or
    during ``tether adopt``'s transition): it recorded when, not why."""
    END_UNKNOWN = "end_unknown"
    """Found ended by ``tether adopt`` with no believable recorded time:
    ``session_end`` is a lower bound (the last sign of life known)."""

    @classmethod
    def parse(cls, value: str | EndReason) -> EndReason:
        try:
            return cls(value)
        except ValueError:
            known = ", ".join(reason.value for reason in cls)
            raise InvalidInputError(
                f"unknown end reason {value!r}; expected one of: {known}"
            ) from None


class RowModel(BaseModel):
    """A row as tether reads it: frozen, columns it does not know ignored."""

    model_config = ConfigDict(frozen=True, extra="ignore")


def _in_utc(moment: datetime) -> datetime:
    if moment.tzinfo is UTC or moment.tzinfo is None:
        return moment
    try:
        return moment.astimezone(UTC)
    except OverflowError:
        # Read in a zone west of UTC, year 9999's last hours are year 10000's in UTC.
        raise ValueError("a moment outside the years Python can hold in UTC") from None


Moment = Annotated[datetime, AfterValidator(_in_utc)]
"""A moment read from the database, in UTC whatever the server's TimeZone: psycopg
gives the server's zone, in which two moments around a change of clocks subtract by
their wall-clock readings (an hour off), and the announced events mixed offsets."""


SESSION_ENDED = "SessionEnded"
"""The ``detail-type`` of the event announced for every ended session."""


_SURROGATE = re.compile("[\ud800-\udfff]")


def storable_text(value: str | None, max_length: int) -> str | None:
    """Text as Postgres can store it: no NUL, no lone surrogate (each becomes U+FFFD),
    at most ``max_length`` characters. Request metadata is whatever clients send."""
    if value is None:
        return None
    return _SURROGATE.sub("\ufffd", value.replace("\x00", ""))[:max_length]


class OpenSessionRequest(RowModel):
    connection_id: str = Field(min_length=1, max_length=limits.CONNECTION_ID_MAX_LENGTH)
    user_id: UUID | None = None
    connected_at: datetime | None = None
    source_ip: str | None = None
    user_agent: str | None = None
    api_id: str | None = None
    stage: str | None = None

    @field_validator("source_ip", "user_agent", "api_id", "stage", mode="after")
    @classmethod
    def _storable(cls, value: str | None, info: ValidationInfo) -> str | None:
        return storable_text(value, _METADATA_LENGTHS[str(info.field_name)])


_METADATA_LENGTHS = {
    "source_ip": limits.SOURCE_IP_MAX_LENGTH,
    "user_agent": limits.USER_AGENT_MAX_LENGTH,
    "api_id": limits.API_ID_MAX_LENGTH,
    "stage": limits.STAGE_MAX_LENGTH,
}


class OpenedSession(RowModel):
    session_id: UUID
    connection_id: str
    user_id: UUID | None
    session_start: Moment
    is_active: bool
    opened: bool
    """False when the connection already had a row (a repeated ``$connect``)."""


class TouchOutcome(StrEnum):
    TOUCHED = "touched"
    THROTTLED = "throttled"
    UNKNOWN = "unknown"
    """No active session for that connection (never opened, or already ended)."""


class TouchResult(RowModel):
    outcome: TouchOutcome
    session_id: UUID | None = None
    last_seen_at: Moment | None = None


class SessionEnded(RowModel):
    """A session that has ended: the row as the lifecycle functions return it, and the
    detail of the ``SessionEnded`` event, for its producer and its subscribers alike.
    Consumers dedupe by ``session_id``: the event is delivered at least once."""

    session_id: UUID
    connection_id: str
    user_id: UUID | None
    session_start: Moment
    session_end: Moment
    duration_seconds: float
    end_reason: EndReason
    disconnect_status_code: int | None = None


class QueuedSession(SessionEnded):
    """An ended session waiting in the outbox for its SessionEnded."""

    enqueued_at: Moment
    claim_count: int = 1
    """How many times an announcer claimed it, this claim included: above 1, a redelivery."""


class EndOutcome(StrEnum):
    ENDED = "ended"
    ALREADY_ENDED = "already_ended"
    UNKNOWN = "unknown"


class EndResult(RowModel):
    outcome: EndOutcome
    connection_id: str
    session: SessionEnded | None = None
    """The session as it stands after the call: the winning end for ``already_ended``."""
    closing_until: Moment | None = None
    """For a forced close that found the session ended by another forced close still at
    work on it (asking the gateway, then announcing): until when that close holds it."""


class FinalizeOutcome(StrEnum):
    CLAIMED = "claimed"
    ALREADY_FINALIZED = "already_finalized"
    IN_PROGRESS = "in_progress"
    STILL_ACTIVE = "still_active"
    UNKNOWN = "unknown"


class FinalizeClaim(RowModel):
    outcome: FinalizeOutcome
    token: UUID | None = None
    """Present when claimed: only this token may finish or release the claim."""
