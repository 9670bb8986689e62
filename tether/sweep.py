"""The sweep: end every session whose connection is gone, within a stated bound.

Each run, in order:
1. hard limits by SQL alone: sessions silent beyond API Gateway's idle timeout or
   older than its maximum duration (each plus a grace) end as ``idle_timeout`` /
   ``max_duration``;
2. suspects (silent longer than ``suspect_after``) are checked with GetConnection:
   410 ends them as ``gone``; alive refreshes ``last_seen_at`` from LastActiveAt,
   unless heartbeats are required and the connection has been silent beyond the
   grace, in which case it is deleted at the gateway and ends as
   ``heartbeat_timeout``;
3. every end waiting in the outbox is announced: this run's, and any earlier one
   whose announcement failed (at least once);
4. the numbers the run reports (``tether.sweep_metrics`` turns them into metrics).

Every batch is its own short transaction with ``FOR UPDATE SKIP LOCKED``, so two
sweeps at once share the work and a backlog drains across runs. No new batch is
taken once the remaining time falls below the margin.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import UUID

from tether.aws.connections import ConnectionInfo, ConnectionsApi, ConnectionState
from tether.errors import GatewayError
from tether.models import EndOutcome, EndReason, SessionHealth, Suspect
from tether.outbox import Announcer, drain_outbox
from tether.settings import Settings
from tether.store import SessionStore

logger = logging.getLogger("tether.sweep")

RemainingSeconds = Callable[[], float]


@dataclass(frozen=True)
class SweepPolicy:
    idle_limit_seconds: float
    max_age_seconds: float
    suspect_after_seconds: float
    heartbeat_grace_seconds: float | None
    batch_size: int
    concurrency: int
    time_margin_seconds: float
    announce_lease_seconds: float
    suspect_lease_seconds: float

    @classmethod
    def from_settings(cls, settings: Settings) -> SweepPolicy:
        grace = settings.limit_grace_seconds
        return cls(
            idle_limit_seconds=settings.idle_timeout_seconds + grace,
            max_age_seconds=settings.max_duration_seconds + grace,
            suspect_after_seconds=settings.suspect_after_seconds,
            heartbeat_grace_seconds=settings.heartbeat_grace_seconds,
            batch_size=settings.sweep_batch_size,
            concurrency=settings.sweep_concurrency,
            time_margin_seconds=settings.sweep_time_margin_seconds,
            announce_lease_seconds=settings.announce_lease_seconds,
            suspect_lease_seconds=settings.suspect_lease_seconds,
        )


@dataclass
class SweepReport:
    ended_by_reason: Counter[str] = field(default_factory=Counter)
    checked: int = 0
    refreshed: int = 0
    gateway_errors: int = 0
    announced: int = 0
    redelivered: int = 0
    announce_failed: int = 0
    announce_error: str | None = None
    stopped_for_time: bool = False
    health: SessionHealth | None = None
    seconds: float = 0.0

    @property
    def ended(self) -> int:
        return sum(self.ended_by_reason.values())

    def as_dict(self) -> dict[str, Any]:
        health = self.health
        return {
            "ended": self.ended,
            "ended_by_reason": dict(self.ended_by_reason),
            "checked": self.checked,
            "refreshed": self.refreshed,
            "gateway_errors": self.gateway_errors,
            "announced": self.announced,
            "redelivered": self.redelivered,
            "announce_failed": self.announce_failed,
            "announce_error": self.announce_error,
            "stopped_for_time": self.stopped_for_time,
            "active_sessions": health.active_sessions if health else None,
            "orphaned_sessions": health.orphaned_sessions if health else None,
            "unannounced": health.unannounced if health else None,
            "seconds": round(self.seconds, 3),
        }


class Sweep:
    def __init__(
        self,
        *,
        store: SessionStore,
        announcer: Announcer,
        policy: SweepPolicy,
        connections: ConnectionsApi | None,
        remaining_seconds: RemainingSeconds,
    ) -> None:
        self._store = store
        self._announcer = announcer
        self._policy = policy
        self._connections = connections
        self._remaining = remaining_seconds
        self.report = SweepReport()

    def _time_left(self) -> bool:
        if self._remaining() > self._policy.time_margin_seconds:
            return True
        self.report.stopped_for_time = True
        return False

    def _count_ends(self, ended: dict[EndReason, int]) -> None:
        for reason, count in ended.items():
            self.report.ended_by_reason[reason.value] += count

    def end_hard_limits(self) -> None:
        while self._time_left():
            ended = self._store.close_stale(
                idle_seconds=self._policy.idle_limit_seconds,
                max_age_seconds=self._policy.max_age_seconds,
                limit=self._policy.batch_size,
            )
            self._count_ends(ended)
            if sum(ended.values()) < self._policy.batch_size:
                return

    @staticmethod
    def _ask(connections: ConnectionsApi, suspect: Suspect) -> ConnectionInfo | GatewayError:
        # Runs in the pool: only the HTTP call, no shared state.
        try:
            return connections.get(suspect.connection_id)
        except GatewayError as exc:
            return exc

    def _settle(
        self,
        connections: ConnectionsApi,
        suspect: Suspect,
        info: ConnectionInfo | GatewayError,
        still_connected: dict[UUID, datetime | None],
    ) -> EndReason | None:
        """Act on the gateway's answer about one suspect; why it ended, if it did.
        Suspects left connected (or unanswered) are collected in ``still_connected``."""
        if isinstance(info, GatewayError):
            logger.warning(
                "GetConnection failed; the suspect waits for the next sweep",
                extra={"connection_id": suspect.connection_id, "error": str(info)},
            )
            self.report.gateway_errors += 1
            still_connected[suspect.session_id] = None
            return None
        self.report.checked += 1
        if info.state is ConnectionState.GONE:
            return self._end(suspect, EndReason.GONE, suspect.last_seen_at)

        last_sign = max(filter(None, (suspect.last_seen_at, info.last_active_at)))
        grace = self._policy.heartbeat_grace_seconds
        if grace is not None and last_sign < datetime.now(UTC) - timedelta(seconds=grace):
            try:
                connections.delete(suspect.connection_id)
            except GatewayError as exc:
                logger.warning(
                    "DeleteConnection failed; the session stays until the next sweep",
                    extra={"connection_id": suspect.connection_id, "error": str(exc)},
                )
                self.report.gateway_errors += 1
                still_connected[suspect.session_id] = None
                return None
            return self._end(suspect, EndReason.HEARTBEAT_TIMEOUT, last_sign)
        if info.last_active_at is not None and info.last_active_at > suspect.last_seen_at:
            self.report.refreshed += 1
        still_connected[suspect.session_id] = info.last_active_at
        return None

    def _end(self, suspect: Suspect, reason: EndReason, ended_at: datetime) -> EndReason | None:
        # No lease: the end waits in the outbox for this run's announce step.
        result = self._store.end_session(
            suspect.connection_id, reason, ended_at=ended_at, announce_lease_seconds=0
        )
        # already_ended: its own $disconnect (or another sweep) won; nothing to do.
        return reason if result.outcome is EndOutcome.ENDED else None

    def check_suspects(self, run_started: datetime) -> None:
        connections = self._connections
        if connections is None:
            return
        with ThreadPoolExecutor(
            max_workers=self._policy.concurrency, thread_name_prefix="tether-sweep"
        ) as pool:
            while self._time_left():
                suspects = self._store.claim_suspects(
                    silent_seconds=self._policy.suspect_after_seconds,
                    limit=self._policy.batch_size,
                    lease_seconds=self._policy.suspect_lease_seconds,
                    run_started=run_started,
                )
                answers = pool.map(lambda s: self._ask(connections, s), suspects)
                still_connected: dict[UUID, datetime | None] = {}
                settled = [
                    self._settle(connections, suspect, answer, still_connected)
                    for suspect, answer in zip(suspects, answers, strict=True)
                ]
                self._store.settle_suspects(still_connected)
                self._count_ends(Counter(reason for reason in settled if reason is not None))
                if len(suspects) < self._policy.batch_size:
                    return

    def announce(self, run_started: datetime) -> None:
        drained = drain_outbox(
            self._store,
            self._announcer,
            batch_size=self._policy.batch_size,
            lease_seconds=max(self._policy.announce_lease_seconds, 1.0),
            time_left=self._time_left,
            since=run_started,
        )
        self.report.announced += drained.announced
        self.report.redelivered += drained.redelivered
        self.report.announce_failed += drained.failed
        self.report.announce_error = self.report.announce_error or drained.error

    def run(self) -> SweepReport:
        started = time.monotonic()
        idle, max_age = self._policy.idle_limit_seconds, self._policy.max_age_seconds
        # The run's clock is the database's: every "since this run started" below
        # compares it with the database's own now().
        run_started = self._store.record_sweep(idle_limit_seconds=idle, max_age_seconds=max_age)
        self.end_hard_limits()
        self.check_suspects(run_started)
        self.announce(run_started)
        self.report.health = self._store.session_health(
            idle_limit_seconds=idle, max_age_seconds=max_age
        )
        self.report.seconds = time.monotonic() - started
        self._store.record_sweep(
            idle_limit_seconds=idle, max_age_seconds=max_age, report=self.report.as_dict()
        )
        return self.report
