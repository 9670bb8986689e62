"""What the operators' API answers, named for what each shows. The command line prints
the same models with ``--json``, so both say the same thing the same way."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Any, Literal
from uuid import UUID

from pydantic import BaseModel, ConfigDict, Field

from tether.sweep_and_admin_models import DailyStats, SessionRecord


class _Model(BaseModel):
    model_config = ConfigDict(frozen=True)


class SessionPublic(SessionRecord):
    """A session row as operators read it."""


class SessionsPage(_Model):
    sessions: list[SessionPublic]
    next_cursor: str | None = Field(
        description="Pass as `cursor` for the next page, with the same filters;"
        " null on the last page."
    )
    limit: int


class CloseOutcome(StrEnum):
    CLOSED = "closed"
    """This call ended the session (reason forced_close)."""
    ALREADY_CLOSED = "already_closed"
    """It had ended before; its first end and reason stay."""


class Disconnection(StrEnum):
    DISCONNECTED = "disconnected"
    """The gateway closed the client's connection."""
    ALREADY_GONE = "already_gone"
    """The gateway no longer had the connection (410 Gone)."""
    FAILED = "failed"
    """The gateway could not be told; the row is ended, and closing again retries."""


class SessionClosed(_Model):
    session_id: UUID
    outcome: CloseOutcome
    connection: Disconnection
    announced: bool | None = Field(
        description="Whether SessionEnded went out now (null when this call ended nothing);"
        " an end not announced now stays queued for the sweep."
    )
    detail: str
    session: SessionPublic | None = None


class LiveConnection(_Model):
    session_id: UUID
    connection_id: str
    session_start: datetime
    last_seen_at: datetime
    source_ip: str | None = None
    user_agent: str | None = None


class UserPresence(_Model):
    user_id: UUID
    online: bool
    connections: list[LiveConnection]


class UserDisconnected(_Model):
    user_id: UUID
    closed: int
    sessions: list[SessionClosed]


class DayStats(DailyStats):
    """One UTC day: sessions started, still active, ended, average and longest duration."""


class DailyStatsReport(_Model):
    days: int
    stats: list[DayStats] = Field(description="One row per UTC day, newest first.")


class OrphanReport(_Model):
    """The origin's alert query: active sessions started longer ago than the threshold."""

    older_than_seconds: float
    orphans: int
    oldest_start: datetime | None
    newest_start: datetime | None
    alert_above: int
    alerting: bool


class SweepRun(_Model):
    last_started_at: datetime | None
    last_finished_at: datetime | None
    seconds_since_finished: float | None
    idle_limit_seconds: float
    max_age_seconds: float
    last_report: dict[str, Any] | None


class LiveStats(_Model):
    active_sessions: int
    oldest_active_start: datetime | None
    orphaned_sessions: int = Field(
        description="Active sessions past the sweep's idle or age limit: the sweep ends them."
    )
    unannounced: int
    ended_last_hour: int
    ended_last_hour_by_reason: dict[str, int]
    sweep: SweepRun
    checked_at: datetime


class SweepSummary(_Model):
    ended: int
    ended_by_reason: dict[str, int]
    checked: int
    refreshed: int
    closed_silent: int = Field(
        0,
        description="Connections closed at the gateway for silence (heartbeat_timeout);"
        " their $disconnect may record the end first, and `ended` counts only this run's.",
    )
    gateway_errors: int
    left_unasked: int = Field(
        0,
        description="Suspects whose GetConnection never started: the check's wait for the"
        " gateway ran out first (not a failure); the next check asks about them.",
    )
    left_unclosed: int = Field(
        0,
        description="Silent connections whose DeleteConnection never started: the check's"
        " wait for the gateway ran out first (not a failure); the next check closes them.",
    )
    bugs: int = Field(
        0,
        description="Calls to the gateway that raised an unexpected error (a bug, logged):"
        " their suspects are asked about again at the next check.",
    )
    failed_checks: int = Field(0, description="Checks cut short by the database's absence.")
    announced: int
    redelivered: int
    announce_failed: int
    announce_unrecorded: int = Field(
        0, description="Announced, but not recorded (the database was away): announced again."
    )
    announce_error: str | None
    stopped_for_time: bool
    active_sessions: int | None
    orphaned_sessions: int | None
    unannounced: int | None
    seconds: float


class MigrationsHealth(_Model):
    current: bool
    applied: int
    pending: list[str] = Field(
        description="Migration files this release ships that are not applied."
    )


class SweepTimes(_Model):
    last_started_at: datetime | None
    last_finished_at: datetime | None
    seconds_since_finished: float | None


class Health(_Model):
    status: Literal["ok", "degraded", "unavailable"]
    database: Literal["reachable", "unreachable"]
    migrations: MigrationsHealth | None
    sweep: SweepTimes | None
    problems: list[str] | None = Field(
        default=None,
        description="What in the database stops tether's functions (row level security"
        " forced on a table of tether's, say), each with what to do; null when the"
        " database is unreachable.",
    )
