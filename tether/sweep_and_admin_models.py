"""The sweep's and the operators' models: what the sweep, the operators' API, page and
commands read, and no WebSocket handler does.

Kept apart from ``tether.models`` so that a ``$connect``, ``$disconnect`` or ``$default``
container never builds them: each pydantic model costs a cold start about half a
millisecond, and the store imports them only in the methods that return them.
"""

from __future__ import annotations

from datetime import date, datetime
from typing import Any
from uuid import UUID

from tether.models import EndReason, Moment, RowModel

# --- what the sweep reads -----------------------------------------------------------


class Suspect(RowModel):
    """An active session silent long enough that the sweep asks the gateway about it."""

    session_id: UUID
    connection_id: str
    user_id: UUID | None
    session_start: Moment
    last_seen_at: Moment


class OrphanSummary(RowModel):
    orphans: int
    intended: int
    """Of the orphans, those ended with the reason of their end intent in force (a
    sweep closed their connections), not as orphan_cleanup."""
    oldest_start: Moment | None
    newest_start: Moment | None


class SweepPreview(RowModel):
    past_max_age: int
    past_idle: int
    intended: int
    """Ended with the reason of their end intent in force (the sweep's own closes)."""
    suspects: int
    """Those a run would ask about: none a run under way is asking about."""
    unannounced: int
    """Ends waiting to be announced that a run would take now."""
    unannounced_held: int
    """Ends a lease holds for the caller announcing them (a $disconnect, a kick, a run),
    or, that caller gone, for a later run once the lease ends."""


class SessionHealth(RowModel):
    active_sessions: int
    oldest_active_start: Moment | None
    orphaned_sessions: int
    unannounced: int


# --- what the operators' API, page and commands read ------------------------------


class SessionRecord(RowModel):
    """A session as operators see it: every column but the sweep's bookkeeping."""

    session_id: UUID
    user_id: UUID | None
    connection_id: str
    is_active: bool
    session_start: Moment
    session_end: Moment | None
    duration_seconds: float | None
    last_seen_at: Moment
    end_reason: EndReason | None
    disconnect_status_code: int | None = None
    source_ip: str | None = None
    user_agent: str | None = None
    api_id: str | None = None
    stage: str | None = None
    announced_at: Moment | None = None
    finalized_at: Moment | None = None


class SessionFilter(RowModel):
    """Which sessions a listing shows; every field left out matches everything."""

    active: bool | None = None
    user_id: UUID | None = None
    started_after: datetime | None = None
    started_before: datetime | None = None
    end_reason: EndReason | None = None


class DailyStats(RowModel):
    """One UTC day of the origin's daily statistics."""

    day: date
    total_sessions: int
    still_active: int
    ended_sessions: int
    avg_duration_seconds: float | None
    max_duration_seconds: float | None


class SweepState(RowModel):
    """The limits the sweep last ran with, its last run and report, and the database clock."""

    idle_limit_seconds: float
    max_age_seconds: float
    last_started_at: Moment | None
    last_finished_at: Moment | None
    last_report: dict[str, Any] | None
    checked_at: Moment


class AppliedMigration(RowModel):
    """A migration a database records, in tether's ledger or in Supabase's."""

    ledger: str
    version: str
    name: str
    statements: list[str] | None = None
    """Supabase's rows: the statements ``supabase db push`` ran (a file's content)."""
