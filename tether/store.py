"""The one interface every function uses to reach the session table.

Both drivers (``tether.drivers.postgres``: psycopg 3 to a ``DATABASE_URL``;
``tether.drivers.supabase``: supabase-py ``rpc()``) implement ``call``: one SQL
function, named arguments, its rows. This class turns those rows into the typed
models, so both drivers return the same thing.
"""

from __future__ import annotations

import functools
import math
import re
import threading
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, ParamSpec, TypeVar
from uuid import UUID

from pydantic import TypeAdapter, ValidationError

from tether.errors import DatabaseError, InvalidInputError
from tether.models import (
    EndOutcome,
    EndReason,
    EndResult,
    FinalizeClaim,
    Moment,
    OpenedSession,
    OpenSessionRequest,
    QueuedSession,
    SessionEnded,
    TouchOutcome,
    TouchResult,
)

# The sweep's and the operators' models (and the row security judgement) are imported by
# the methods that return them, so that a handler's cold start never builds them.
if TYPE_CHECKING:
    from tether.row_security import Judged
    from tether.sweep_and_admin_models import (
        AppliedMigration,
        DailyStats,
        OrphanSummary,
        SessionFilter,
        SessionHealth,
        SessionRecord,
        Suspect,
        SweepPreview,
        SweepState,
    )

Row = dict[str, Any]

# Versioned names of the SQL functions this code speaks to.
OPEN_SESSION = "tether_open_session_v1"
TOUCH_SESSION = "tether_touch_session_v1"
END_SESSION = "tether_end_session_v3"
END_SESSIONS = "tether_end_sessions_v1"
CLOSE_STALE = "tether_close_stale_v4"
CLAIM_UNANNOUNCED = "tether_claim_unannounced_v2"
MARK_ANNOUNCED = "tether_mark_announced_v1"
BEGIN_FINALIZE = "tether_begin_finalize_v2"
FINISH_FINALIZE = "tether_finish_finalize_v2"
INTEND_END = "tether_intend_end_v2"
SETTLE_GONE = "tether_settle_gone_v1"
CLAIM_SUSPECTS = "tether_claim_suspects_v1"
SETTLE_SUSPECTS = "tether_settle_suspects_v2"
CLOSE_ORPHANS = "tether_close_orphans_v3"
RELEASE_ANNOUNCEMENTS = "tether_release_announcements_v2"
ORPHAN_SUMMARY = "tether_orphan_summary_v3"
SWEEP_PREVIEW = "tether_sweep_preview_v4"
SESSION_HEALTH = "tether_session_health_v2"
RECORD_SWEEP = "tether_record_sweep_v2"
# The operators' API, page and commands.
LIST_SESSIONS = "tether_list_sessions_v1"
GET_SESSION = "tether_get_session_v1"
FORCE_CLOSE = "tether_force_close_v2"
FORCE_CLOSE_USER = "tether_force_close_user_v1"
DAILY_STATS = "tether_daily_stats_v1"
RECENT_ENDS = "tether_recent_ends_v2"
SWEEP_STATE = "tether_sweep_state_v1"
APPLIED_MIGRATIONS = "tether_applied_migrations_v1"
ROW_SECURITY_PROBLEMS = "tether_row_security_problems_v2"

DEFAULT_ANNOUNCE_LEASE_SECONDS = 60.0
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


# One validation call for a whole batch: the announcer takes thousands at once. These
# validators, the sweep's and the operators' alone, are built on first use, as their models
# are: no handler's cold start pays for them.
@functools.cache
def _queued_sessions() -> TypeAdapter[list[QueuedSession]]:
    return TypeAdapter(list[QueuedSession])


@functools.cache
def _session_records() -> TypeAdapter[list[SessionRecord]]:
    from tether.sweep_and_admin_models import SessionRecord  # noqa: PLC0415

    return TypeAdapter(list[SessionRecord])


# Read as the models read them, whichever driver answered: a moment in UTC, a session id
# as a UUID (PostgREST answers both as text).
@functools.cache
def _moment() -> TypeAdapter[datetime]:
    return TypeAdapter(Moment)


@functools.cache
def _connections_by_session() -> TypeAdapter[dict[UUID, str]]:
    return TypeAdapter(dict[UUID, str])


@functools.cache
def _ended_sessions() -> TypeAdapter[dict[UUID, EndReason]]:
    return TypeAdapter(dict[UUID, EndReason])


def _counts(rows: list[Row]) -> dict[EndReason, int]:
    return {EndReason(row["end_reason"]): int(row["ended"]) for row in rows}


_P = ParamSpec("_P")
_R = TypeVar("_R")


def _reads_rows(method: Callable[_P, _R]) -> Callable[_P, _R]:
    """A row the models cannot take (a moment outside Python's years, written around
    the SQL functions) fails as a DatabaseError through either driver: psycopg refuses
    it as it reads it, PostgREST hands it over as text for the models to refuse. So does
    an answer of another shape (no row where one is due, a column missing or null, a
    reason tether does not know), which only something in front of PostgREST gives."""

    @functools.wraps(method)
    def reading(*args: _P.args, **kwargs: _P.kwargs) -> _R:
        try:
            return method(*args, **kwargs)
        except ValidationError as exc:
            # The value itself stays out of the message: rows hold personal data.
            problem = exc.errors(include_url=False, include_input=False)[0]
            where = ".".join(str(part) for part in problem["loc"])
            raise DatabaseError(
                f"{method.__name__}: a row tether cannot read ({where}: {problem['msg']})"
            ) from None
        except IndexError:
            raise DatabaseError(f"{method.__name__}: no row where one is due") from None
        except KeyError as exc:
            raise DatabaseError(f"{method.__name__}: a row without its {exc} column") from None
        except (TypeError, ValueError) as exc:
            # int(None), EndReason('...'): again no value in the message.
            raise DatabaseError(
                f"{method.__name__}: a row tether cannot read ({type(exc).__name__})"
            ) from None

    return reading


def _ends_by_session(
    reason: EndReason | str, ended_at: Mapping[UUID, datetime]
) -> dict[str, object]:
    """The arguments of a function that ends (or intends to end) sessions, each at its
    own moment, for one reason: two arrays in step."""
    ids = list(ended_at)
    return {
        "p_session_ids": ids,
        "p_reason": EndReason.parse(reason).value,
        "p_ended_ats": [ended_at[i] for i in ids],
    }


_UNSTORABLE = re.compile("[\x00\ud800-\udfff]")


def refuse_unstorable_text(function: str, args: Mapping[str, object]) -> None:
    """Refuse, as bad input and before it is sent, text Postgres cannot hold: a NUL, a
    lone surrogate. Each driver failed on its own (psycopg's DataError read as a
    database error, a UnicodeEncodeError from either, PostgREST's 22P05), so the same
    connection id was told apart by the driver that carried it. The psycopg driver
    looks only once psycopg has refused a call: the look costs every call of the hot
    path a few microseconds."""
    for name, value in args.items():
        items = value if isinstance(value, list | tuple) else (value,)
        if any(isinstance(item, str) and _UNSTORABLE.search(item) for item in items):
            raise InvalidInputError(
                f"{function}: {name} holds a NUL or a lone surrogate,"
                " which Postgres text cannot hold"
            )


def _finite(name: str, value: float) -> float:
    number = float(value)
    if not math.isfinite(number):
        raise InvalidInputError(f"{name} must be a finite number of seconds, got {value!r}")
    return number


class SessionStore(ABC):
    """Typed access to the lifecycle SQL functions. One call is one round trip."""

    @abstractmethod
    def call(self, function: str, args: Mapping[str, object]) -> list[Row]:
        """Call ``public.<function>`` with named arguments and return its rows.
        A ``dict`` argument is a ``jsonb`` parameter."""

    @property
    @abstractmethod
    def longest_call_seconds(self) -> float:
        """The longest one call can take, from the driver's own timeouts (connecting
        included): a caller that must answer by a deadline (the operators' API, within
        API Gateway's 29 s) starts a call only with this much time left."""

    def close(self) -> None:  # noqa: B027 - optional hook, most stores hold nothing
        """Release what the store holds."""

    @_reads_rows
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

    @_reads_rows
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

    @_reads_rows
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
        session = None if outcome is EndOutcome.UNKNOWN else SessionEnded.model_validate(row)
        return EndResult(outcome=outcome, connection_id=connection_id, session=session)

    @_reads_rows
    def end_sessions(
        self, reason: EndReason | str, ended_at: Mapping[UUID, datetime]
    ) -> dict[EndReason, int]:
        """End these sessions in one call, each as ``end_session`` would (the first end
        wins, an intent in force gives the reason and time); how many, by reason. Their
        announcements wait in the outbox, free to take at once."""
        if not ended_at:
            return {}
        rows = self.call(END_SESSIONS, _ends_by_session(reason, ended_at))
        ended: dict[EndReason, int] = {}
        for row in rows:
            ended_reason = EndReason(row["end_reason"])
            ended[ended_reason] = ended.get(ended_reason, 0) + 1
        return ended

    @_reads_rows
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

    @_reads_rows
    def claim_unannounced(
        self, *, limit: int = 100, lease_seconds: float = DEFAULT_ANNOUNCE_LEASE_SECONDS
    ) -> list[QueuedSession]:
        rows = self.call(
            CLAIM_UNANNOUNCED,
            {"p_limit": int(limit), "p_lease_seconds": _finite("lease", lease_seconds)},
        )
        return _queued_sessions().validate_python(rows)

    def mark_announced(self, session_ids: Iterable[UUID]) -> int:
        """Record that EventBridge accepted these; how many were newly marked."""
        ids: Sequence[UUID] = list(session_ids)
        return len(self.call(MARK_ANNOUNCED, {"p_session_ids": ids})) if ids else 0

    def release_announcements(self, claims: Mapping[UUID, int]) -> int:
        """Let the next sweep retry these at once (their announcement failed): each end
        by the claim count it was claimed with (0 for the end's own try). An end claimed
        since by another announcer stays theirs. How many were released."""
        if not claims:
            return 0
        ids = list(claims)
        rows = self.call(
            RELEASE_ANNOUNCEMENTS,
            {"p_session_ids": ids, "p_claim_counts": [int(claims[i]) for i in ids]},
        )
        return len(rows)

    @_reads_rows
    def begin_finalize(self, session_id: UUID, *, lease_seconds: float) -> FinalizeClaim:
        rows = self.call(
            BEGIN_FINALIZE,
            {"p_session_id": session_id, "p_lease_seconds": _finite("lease", lease_seconds)},
        )
        return FinalizeClaim(outcome=rows[0]["outcome"], token=rows[0]["claim_token"])

    def finish_finalize(self, session_id: UUID, token: UUID, *, succeeded: bool) -> bool:
        """End the claim ``token`` holds; False when that claim is no longer in force."""
        rows = self.call(
            FINISH_FINALIZE,
            {"p_session_id": session_id, "p_claim_token": token, "p_succeeded": succeeded},
        )
        return bool(rows)

    @_reads_rows
    def intend_end(self, reason: EndReason, ended_at: Mapping[UUID, datetime]) -> dict[UUID, str]:
        """Record why and when these sessions end before closing their connections;
        the connection id of each still active."""
        if not ended_at:
            return {}
        rows = self.call(INTEND_END, _ends_by_session(reason, ended_at))
        return _connections_by_session().validate_python(
            {row["session_id"]: row["connection_id"] for row in rows}
        )

    @_reads_rows
    def settle_gone(
        self, session_ids: Iterable[UUID], *, settle_seconds: float
    ) -> dict[EndReason, int]:
        """The gateway answered 410 for these: end those gone for the settle time
        (a $disconnect on its way wins meanwhile); how many, by reason."""
        ids = list(session_ids)
        if not ids:
            return {}
        rows = self.call(
            SETTLE_GONE,
            {"p_session_ids": ids, "p_settle_seconds": _finite("settle time", settle_seconds)},
        )
        ended: dict[EndReason, int] = {}
        for row in rows:
            reason = EndReason(row["outcome"])
            ended[reason] = ended.get(reason, 0) + 1
        return ended

    @_reads_rows
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
        from tether.sweep_and_admin_models import Suspect  # noqa: PLC0415

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

    @_reads_rows
    def close_orphans(
        self, *, older_than_seconds: float, limit: int = 500
    ) -> dict[UUID, EndReason]:
        """End one batch of sessions started before the age given; each one ended, with
        its reason (orphan_cleanup, or that of its end intent in force)."""
        rows = self.call(
            CLOSE_ORPHANS,
            {"p_older_than_seconds": _finite("age", older_than_seconds), "p_limit": int(limit)},
        )
        return _ended_sessions().validate_python(
            {row["session_id"]: row["end_reason"] for row in rows}
        )

    @_reads_rows
    def orphan_summary(self, *, older_than_seconds: float) -> OrphanSummary:
        rows = self.call(
            ORPHAN_SUMMARY, {"p_older_than_seconds": _finite("age", older_than_seconds)}
        )
        from tether.sweep_and_admin_models import OrphanSummary  # noqa: PLC0415

        return OrphanSummary.model_validate(rows[0])

    @_reads_rows
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
        from tether.sweep_and_admin_models import SweepPreview  # noqa: PLC0415

        return SweepPreview.model_validate(rows[0])

    @_reads_rows
    def session_health(self, *, idle_limit_seconds: float, max_age_seconds: float) -> SessionHealth:
        """Live sessions, orphans by these limits, ends not yet announced."""
        rows = self.call(
            SESSION_HEALTH,
            {
                "p_idle_limit_seconds": _finite("idle limit", idle_limit_seconds),
                "p_max_age_seconds": _finite("age limit", max_age_seconds),
            },
        )
        from tether.sweep_and_admin_models import SessionHealth  # noqa: PLC0415

        return SessionHealth.model_validate(rows[0])

    @_reads_rows
    def record_sweep(
        self,
        *,
        idle_limit_seconds: float,
        max_age_seconds: float,
        report: Mapping[str, object] | None = None,
        started_at: datetime | None = None,
    ) -> datetime:
        """Record a run's limits (at its start: returns the database's clock, the run's
        one clock) or its report (at its end, with the moment it started)."""
        rows = self.call(
            RECORD_SWEEP,
            {
                "p_idle_limit_seconds": _finite("idle limit", idle_limit_seconds),
                "p_max_age_seconds": _finite("age limit", max_age_seconds),
                "p_report": dict(report) if report is not None else None,
                "p_started_at": started_at,
            },
        )
        moment = rows[0]["last_started_at"] if report is None else rows[0]["last_finished_at"]
        return _moment().validate_python(moment)

    # --- the operators' API, page and commands ---------------------------------------

    @_reads_rows
    def list_sessions(
        self,
        where: SessionFilter,
        *,
        after: tuple[datetime, UUID] | None = None,
        limit: int = 50,
    ) -> list[SessionRecord]:
        """A page of sessions, newest first, after a position (the last row's
        ``session_start`` and ``session_id`` of the page before)."""
        rows = self.call(
            LIST_SESSIONS,
            {
                "p_active": where.active,
                "p_user_id": where.user_id,
                "p_started_after": where.started_after,
                "p_started_before": where.started_before,
                "p_end_reason": where.end_reason.value if where.end_reason else None,
                "p_after_start": after[0] if after else None,
                "p_after_session_id": after[1] if after else None,
                "p_limit": int(limit),
            },
        )
        return _session_records().validate_python(rows)

    @_reads_rows
    def get_session(self, session_id: UUID) -> SessionRecord | None:
        rows = self.call(GET_SESSION, {"p_session_id": session_id})
        from tether.sweep_and_admin_models import SessionRecord  # noqa: PLC0415

        return SessionRecord.model_validate(rows[0]) if rows else None

    @_reads_rows
    def force_close(
        self,
        session_id: UUID,
        *,
        announce_lease_seconds: float = DEFAULT_ANNOUNCE_LEASE_SECONDS,
    ) -> EndResult | None:
        """End one session now as ``forced_close`` (first end wins); None for an unknown id.
        A session another forced close ended and still works on says until when."""
        rows = self.call(
            FORCE_CLOSE,
            {
                "p_session_id": session_id,
                "p_announce_lease_seconds": _finite("announce lease", announce_lease_seconds),
            },
        )
        if not rows:
            return None
        row = rows[0]
        return EndResult(
            outcome=EndOutcome(row["outcome"]),
            connection_id=str(row["connection_id"]),
            session=SessionEnded.model_validate(row),
            closing_until=row["closing_until"],
        )

    @_reads_rows
    def force_close_user(
        self,
        user_id: UUID,
        *,
        announce_lease_seconds: float = DEFAULT_ANNOUNCE_LEASE_SECONDS,
    ) -> list[SessionEnded]:
        """End every live session of a user now as ``forced_close``; those it ended."""
        rows = self.call(
            FORCE_CLOSE_USER,
            {
                "p_user_id": user_id,
                "p_announce_lease_seconds": _finite("announce lease", announce_lease_seconds),
            },
        )
        return [SessionEnded.model_validate(row) for row in rows]

    @_reads_rows
    def daily_stats(self, *, days: int = 7) -> list[DailyStats]:
        """The origin's daily statistics for the last ``days`` UTC days, newest first."""
        rows = self.call(DAILY_STATS, {"p_days": int(days)})
        from tether.sweep_and_admin_models import DailyStats  # noqa: PLC0415

        return [DailyStats.model_validate(row) for row in rows]

    @_reads_rows
    def recent_ends(self, *, seconds: float) -> dict[EndReason, int]:
        """How many sessions ended in the last ``seconds``, by reason."""
        rows = self.call(RECENT_ENDS, {"p_seconds": _finite("window", seconds)})
        return _counts(rows)

    @_reads_rows
    def sweep_state(self) -> SweepState:
        rows = self.call(SWEEP_STATE, {})
        from tether.sweep_and_admin_models import SweepState  # noqa: PLC0415

        return SweepState.model_validate(rows[0])

    @_reads_rows
    def applied_migrations(self) -> list[AppliedMigration]:
        from tether.sweep_and_admin_models import AppliedMigration  # noqa: PLC0415

        return [AppliedMigration.model_validate(row) for row in self.call(APPLIED_MIGRATIONS, {})]

    @_reads_rows
    def row_security_problems(self) -> list[Judged]:
        """tether's tables whose row level security judges tether's functions."""
        from tether import row_security  # noqa: PLC0415 - the operators' question alone

        return row_security.judged_tables(self.call(ROW_SECURITY_PROBLEMS, {}))


class SerializedStore(SessionStore):
    """Another store's calls, one at a time, from any thread."""

    def __init__(self, inner: SessionStore) -> None:
        self._inner = inner
        self._lock = threading.Lock()

    @property
    def longest_call_seconds(self) -> float:
        """The other store's: the wait for a call another thread is making comes on
        top."""
        return self._inner.longest_call_seconds

    def call(self, function: str, args: Mapping[str, object]) -> list[Row]:
        with self._lock:
            return self._inner.call(function, args)

    def close(self) -> None:
        with self._lock:
            self._inner.close()
