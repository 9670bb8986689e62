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
    announce_error: str | None = Field(
        None,
        description="Why SessionEnded could not be announced now (EventBridge's error code,"
        " or what kept it from being reached), or null when it was, or nothing was ended.",
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
    online: bool = Field(description="Whether the user has a live connection now.")
    connections: list[LiveConnection] = Field(
        description="The user's live connections, newest first, a page at a time."
    )
    next_cursor: str | None = Field(
        description="Pass as `cursor` for the next page of connections; null on the last"
        " page: a user with more live connections than `limit` is never shown as having"
        " only those."
    )
    limit: int


class UserDisconnected(_Model):
    user_id: UUID
    closed: int
    sessions: list[SessionClosed]
    complete: bool = Field(
        description="false when something was left undone, each said in its session:"
        " a connection the gateway did not close (`failed`: close it again with"
        " POST /sessions/{id}/close), an end not announced (queued for the sweep), or a"
        " session not read back (`session` null). The rows are ended either way, and"
        " calling again ends nothing twice."
    )
    detail: str


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
    """The report of one sweep run, as `tether sweep --json` prints it."""

    ended: int = Field(description="Sessions this run ended, all reasons together.")
    ended_by_reason: dict[str, int] = Field(
        description="The sessions this run ended, by end reason."
    )
    checks: int = Field(
        0, description="Checks of the silent sessions the run made (one unless it kept checking)."
    )
    checked: int = Field(description="Suspects asked about at the gateway (GetConnection).")
    refreshed: int = Field(
        description="Suspects the gateway said were connected: their last sign of life moved."
    )
    gone_waiting: int = Field(
        0,
        description="Suspects the gateway said were gone, left to settle before they end as"
        " `gone`.",
    )
    closed_silent: int = Field(
        0,
        description="Connections closed at the gateway for silence (heartbeat_timeout);"
        " their $disconnect may record the end first, and `ended` counts only this run's.",
    )
    gateway_errors: int = Field(
        description="Calls to the gateway that failed: refused, or made and not answered in time."
    )
    left_unasked: int = Field(
        0,
        description="Suspects whose GetConnection never started: the check's questions had"
        " had their share of its wait, the rest left to closing the silent connections"
        " found (not a failure); the next check asks about them.",
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
    unchecked: int = Field(
        0,
        description="Suspects of the run's last check whose calls failed, raised or never"
        " started for want of time: left active for another run.",
    )
    unchecked_for_time: int = Field(
        0,
        description="Of `unchecked`, those whose calls never started for want of the"
        " check's time: no call of theirs failed.",
    )
    failed_checks: int = Field(0, description="Checks cut short by the database's absence.")
    announced: int = Field(description="Ends announced by this run.")
    redelivered: int = Field(
        description="Of `announced`, ends whose earlier try was refused or abandoned."
    )
    announce_failed: int = Field(
        description="Ends whose announcement failed: they stay queued for the next run."
    )
    announced_unrecorded: int = Field(
        0, description="Announced, but not recorded (the database was away): announced again."
    )
    announce_error: str | None = Field(
        description="Why announcing failed, or null when nothing failed."
    )
    stopped_for_time: bool = Field(
        description="Whether the run's time ran out before it finished: the next run goes on."
    )
    interrupted: bool = Field(
        False,
        description="Whether the run was stopped before it finished, not for time (a"
        " `tether dev` stopping, or standing down for another that took its database): the"
        " next run goes on.",
    )
    active_sessions: int | None = Field(
        description="Active sessions after the run; null when they could not be counted."
    )
    orphaned_sessions: int | None = Field(
        description="Active sessions past the idle or age limit after the run; null when"
        " they could not be counted."
    )
    unannounced: int | None = Field(
        description="Ends waiting to be announced after the run; null when they could not be"
        " counted."
    )
    seconds: float = Field(description="How long the run took.")


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


class HealthSummary(_Model):
    """What /health answers anyone, an uptime check or a load balancer: the status
    alone. Why it is not ``ok`` is an operator's to read."""

    # Exactly these keys: the schema says an answer without credentials has no other.
    model_config = ConfigDict(frozen=True, extra="forbid")

    status: Literal["ok", "degraded", "unavailable"] = Field(
        description="`ok` (200); `degraded`: reachable, but a shipped migration is not"
        " applied or something in the database stops tether's functions (503);"
        " `unavailable`: the database cannot be reached (503)."
    )
    database: Literal["reachable", "unreachable"]


class Health(HealthSummary):
    """What /health answers an operator: the status, and why."""

    migrations: MigrationsHealth | None
    sweep: SweepTimes | None
    problems: list[str] | None = Field(
        default=None,
        description="What in the database stops tether's functions (row level security"
        " forced on a table of tether's, say), each with what to do; null when the"
        " database is unreachable.",
    )
