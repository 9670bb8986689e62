"""The one interface every function uses to reach the session table.

Both drivers call the same SQL functions (``supabase/migrations``); this module
turns their rows into the typed models. ``PostgresStore`` speaks psycopg 3 to a
``DATABASE_URL``; ``SupabaseStore`` (in ``supabase_store``) speaks PostgREST rpc.
"""

from __future__ import annotations

import logging
import math
from abc import ABC, abstractmethod
from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any
from uuid import UUID

from pydantic import TypeAdapter

from functions.core.errors import (
    DatabaseUnavailableError,
    InvalidInputError,
    error_from_psycopg,
)
from functions.core.models import (
    EndedSession,
    EndOutcome,
    EndReason,
    EndResult,
    FinalizeOutcome,
    OpenedSession,
    OpenSessionRequest,
    OrphanSummary,
    QueuedSession,
    SessionHealth,
    Suspect,
    SweepPreview,
    TouchOutcome,
    TouchResult,
)

if TYPE_CHECKING:
    import psycopg

logger = logging.getLogger("tether.store")

Row = dict[str, Any]

# Versioned names of the SQL functions this code speaks to.
OPEN_SESSION = "tether_open_session_v1"
TOUCH_SESSION = "tether_touch_session_v1"
END_SESSION = "tether_end_session_v1"
CLOSE_STALE = "tether_close_stale_v1"
CLAIM_UNANNOUNCED = "tether_claim_unannounced_v1"
MARK_ANNOUNCED = "tether_mark_announced_v1"
BEGIN_FINALIZE = "tether_begin_finalize_v1"
FINISH_FINALIZE = "tether_finish_finalize_v1"
CLAIM_SUSPECTS = "tether_claim_suspects_v1"
SETTLE_SUSPECTS = "tether_settle_suspects_v1"
CLOSE_ORPHANS = "tether_close_orphans_v1"
RELEASE_ANNOUNCEMENTS = "tether_release_announcements_v1"
ORPHAN_SUMMARY = "tether_orphan_summary_v1"
SWEEP_PREVIEW = "tether_sweep_preview_v1"
SESSION_HEALTH = "tether_session_health_v1"

DEFAULT_ANNOUNCE_LEASE_SECONDS = 60.0
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


# One validation call for a whole batch: the announcer takes thousands at once.
_QUEUED_SESSIONS = TypeAdapter(list[QueuedSession])


def _counts(rows: list[Row]) -> dict[EndReason, int]:
    return {EndReason(row["end_reason"]): int(row["ended"]) for row in rows}


def _finite(name: str, value: float) -> float:
    number = float(value)
    if not math.isfinite(number):
        raise InvalidInputError(f"{name} must be a finite number of seconds, got {value!r}")
    return number


class SessionStore(ABC):
    """Typed access to the lifecycle SQL functions. One call is one round trip."""

    @abstractmethod
    def call(self, function: str, args: Mapping[str, object]) -> list[Row]:
        """Call ``public.<function>`` with named arguments and return its rows."""

    def close(self) -> None:  # noqa: B027 - optional hook, most stores hold nothing
        """Release what the store holds."""

    def open_session(self, request: OpenSessionRequest) -> OpenedSession:
        rows = self.call(
            OPEN_SESSION,
            {
                "p_connection_id": request.connection_id,
                "p_user_id": request.user_id,
                "p_connected_at": request.connected_at,
                "p_source_ip": request.source_ip,
                "p_user_agent": request.user_agent,
                "p_api_id": request.api_id,
                "p_stage": request.stage,
            },
        )
        return OpenedSession.model_validate(rows[0])

    def touch_session(self, connection_id: str, throttle_seconds: float) -> TouchResult:
        rows = self.call(
            TOUCH_SESSION,
            {
                "p_connection_id": connection_id,
                "p_throttle_seconds": _finite("throttle", throttle_seconds),
            },
        )
        if not rows:
            return TouchResult(outcome=TouchOutcome.UNKNOWN)
        row = rows[0]
        outcome = TouchOutcome.TOUCHED if row["touched"] else TouchOutcome.THROTTLED
        return TouchResult(
            outcome=outcome, session_id=row["session_id"], last_seen_at=row["last_seen_at"]
        )

    def end_session(
        self,
        connection_id: str,
        reason: EndReason | str,
        *,
        status_code: int | None = None,
        ended_at: datetime | None = None,
        announce_lease_seconds: float = DEFAULT_ANNOUNCE_LEASE_SECONDS,
    ) -> EndResult:
        rows = self.call(
            END_SESSION,
            {
                "p_connection_id": connection_id,
                "p_reason": EndReason.parse(reason).value,
                "p_status_code": status_code,
                "p_ended_at": ended_at,
                "p_announce_lease_seconds": _finite("announce lease", announce_lease_seconds),
            },
        )
        row = rows[0]
        outcome = EndOutcome(row["outcome"])
        session = None if outcome is EndOutcome.UNKNOWN else EndedSession.model_validate(row)
        return EndResult(outcome=outcome, connection_id=connection_id, session=session)

    def close_stale(
        self, *, idle_seconds: float, max_age_seconds: float, limit: int = 500
    ) -> dict[EndReason, int]:
        """End one batch past the hard limits; how many, by reason. Their
        announcements wait in the outbox (``claim_unannounced``)."""
        rows = self.call(
            CLOSE_STALE,
            {
                "p_idle_seconds": _finite("idle limit", idle_seconds),
                "p_max_age_seconds": _finite("age limit", max_age_seconds),
                "p_limit": int(limit),
            },
        )
        return _counts(rows)

    def claim_unannounced(
        self, *, limit: int = 100, lease_seconds: float = DEFAULT_ANNOUNCE_LEASE_SECONDS
    ) -> list[QueuedSession]:
        rows = self.call(
            CLAIM_UNANNOUNCED,
            {"p_limit": int(limit), "p_lease_seconds": _finite("lease", lease_seconds)},
        )
        return _QUEUED_SESSIONS.validate_python(rows)

    def _for_sessions(self, function: str, session_ids: Iterable[UUID]) -> int:
        ids: Sequence[UUID] = list(session_ids)
        return len(self.call(function, {"p_session_ids": ids})) if ids else 0

    def mark_announced(self, session_ids: Iterable[UUID]) -> int:
        """Record that EventBridge accepted these; how many were newly marked."""
        return self._for_sessions(MARK_ANNOUNCED, session_ids)

    def release_announcements(self, session_ids: Iterable[UUID]) -> int:
        """Let the next sweep retry these at once (their announcement failed)."""
        return self._for_sessions(RELEASE_ANNOUNCEMENTS, session_ids)

    def begin_finalize(self, session_id: UUID, *, lease_seconds: float) -> FinalizeOutcome:
        rows = self.call(
            BEGIN_FINALIZE,
            {"p_session_id": session_id, "p_lease_seconds": _finite("lease", lease_seconds)},
        )
        return FinalizeOutcome(rows[0]["outcome"])

    def finish_finalize(self, session_id: UUID, *, succeeded: bool) -> bool:
        rows = self.call(FINISH_FINALIZE, {"p_session_id": session_id, "p_succeeded": succeeded})
        return bool(rows)

    def claim_suspects(
        self,
        *,
        silent_seconds: float,
        limit: int,
        lease_seconds: float,
        run_started: datetime | None = None,
    ) -> list[Suspect]:
        """Lease suspects not yet asked about in a run that started at ``run_started``."""
        rows = self.call(
            CLAIM_SUSPECTS,
            {
                "p_silent_seconds": _finite("silence", silent_seconds),
                "p_limit": int(limit),
                "p_lease_seconds": _finite("lease", lease_seconds),
                "p_run_started": run_started,
            },
        )
        return [Suspect.model_validate(row) for row in rows]

    def settle_suspects(self, last_active: Mapping[UUID, datetime | None]) -> int:
        """Suspects still connected (or unanswered): move last_seen_at forward to the
        gateway's LastActiveAt where there is one, and drop their leases."""
        if not last_active:
            return 0
        ids = list(last_active)
        # The epoch stands for "no answer": it never moves last_seen_at, and keeps
        # the array's element type a timestamp for both drivers.
        times = [last_active[i] or _EPOCH for i in ids]
        rows = self.call(SETTLE_SUSPECTS, {"p_session_ids": ids, "p_last_active_ats": times})
        return len(rows)

    def close_orphans(self, *, older_than_seconds: float, limit: int = 500) -> int:
        """End one batch of sessions started before the age given; how many."""
        rows = self.call(
            CLOSE_ORPHANS,
            {"p_older_than_seconds": _finite("age", older_than_seconds), "p_limit": int(limit)},
        )
        return sum(_counts(rows).values())

    def orphan_summary(self, *, older_than_seconds: float) -> OrphanSummary:
        rows = self.call(
            ORPHAN_SUMMARY, {"p_older_than_seconds": _finite("age", older_than_seconds)}
        )
        return OrphanSummary.model_validate(rows[0])

    def sweep_preview(
        self, *, idle_seconds: float, max_age_seconds: float, silent_seconds: float
    ) -> SweepPreview:
        rows = self.call(
            SWEEP_PREVIEW,
            {
                "p_idle_seconds": _finite("idle limit", idle_seconds),
                "p_max_age_seconds": _finite("age limit", max_age_seconds),
                "p_silent_seconds": _finite("silence", silent_seconds),
            },
        )
        return SweepPreview.model_validate(rows[0])

    def session_health(self) -> SessionHealth:
        return SessionHealth.model_validate(self.call(SESSION_HEALTH, {})[0])


class PostgresStore(SessionStore):
    """psycopg 3 to any Postgres 14+, Supabase's transaction pooler included.

    One connection per container, opened on first use and reused across
    invocations; a connection found broken is re-opened once. Prepared
    statements are off because the transaction pooler cannot keep them.
    """

    def __init__(self, url: str, *, connect_timeout: float = 5.0) -> None:
        if not url:
            raise InvalidInputError("a database URL is required")
        self._url = url
        self._connect_timeout = connect_timeout
        self._connection: psycopg.Connection[Row] | None = None

    def _connect(self) -> psycopg.Connection[Row]:
        import psycopg  # noqa: PLC0415 - keeps supabase-only deployments free of it
        from psycopg.rows import dict_row  # noqa: PLC0415

        try:
            return psycopg.connect(
                self._url,
                autocommit=True,
                prepare_threshold=None,
                row_factory=dict_row,
                connect_timeout=max(1, math.ceil(self._connect_timeout)),
                application_name="tether",
            )
        except psycopg.Error as exc:
            raise DatabaseUnavailableError(
                f"cannot connect to the database: {error_from_psycopg(exc)}"
            ) from exc

    def call(self, function: str, args: Mapping[str, object]) -> list[Row]:
        import psycopg  # noqa: PLC0415
        from psycopg import sql  # noqa: PLC0415

        query = sql.SQL("select * from {}({})").format(
            sql.Identifier("public", function),
            sql.SQL(", ").join(
                sql.SQL("{} => {}").format(sql.Identifier(name), sql.Placeholder(name))
                for name in args
            ),
        )
        reused = self._connection is not None
        for attempt in (1, 2):
            connection = self._connection or self._connect()
            self._connection = connection
            try:
                return connection.execute(query, dict(args)).fetchall()
            except psycopg.Error as exc:
                if connection.broken or connection.closed:
                    self._connection = None
                    # Retry only a connection kept from an earlier invocation: the
                    # server may have dropped it while the container was frozen.
                    if reused and attempt == 1:
                        logger.warning(
                            "database connection was broken; reconnecting",
                            extra={"function": function},
                        )
                        continue
                    raise DatabaseUnavailableError(
                        f"database connection lost during {function}: {exc}"
                    ) from exc
                raise error_from_psycopg(exc) from exc
        raise AssertionError("unreachable")  # pragma: no cover

    def close(self) -> None:
        if self._connection is not None:
            self._connection.close()
            self._connection = None
