"""The sweep: end every session whose connection is gone, within a stated bound.

One run (one scheduled invocation) makes a check every ``check_every`` seconds for
as long as its schedule period lasts, so sessions are checked more often than
EventBridge's one-minute schedule allows. Each check, in order:

1. hard limits by SQL alone: sessions silent beyond API Gateway's idle timeout or
   older than its maximum duration (each plus a grace) end as ``idle_timeout`` /
   ``max_duration``;
2. suspects (silent longer than ``suspect_after``) are checked with GetConnection,
   once per check:
   - 410: remembered, and ended as ``gone`` once it has stayed gone for the settle
     time; a clean close answers 410 before its ``$disconnect`` has run, and that
     ``$disconnect`` keeps its own reason, code and time;
   - alive: ``last_seen_at`` moves to LastActiveAt; if heartbeats are required and
     the connection has been silent beyond the grace, the end is recorded as an
     intent (``heartbeat_timeout`` at its last sign of life), the connection is
     deleted at the gateway, and the session ended: the ``$disconnect`` the delete
     causes finds the intent and records the same reason and time;
3. every end waiting in the outbox is announced: this run's, and any earlier one
   whose announcement failed (at least once).

Then the run reports its numbers (``tether.sweep_metrics`` turns them into metrics).
Every batch is its own short transaction, and what a batch takes it claims with ``FOR
UPDATE SKIP LOCKED`` (its silent clients' ends alone wait for their rows, a few seconds
at most: each is ended once, as a $disconnect's), so two sweeps at once share the work
and a backlog drains across runs. No new batch is
taken once the remaining time falls below the margin, and no call to the gateway is
waited for past it: a gateway that takes calls and never answers leaves those suspects
to the next check, not the run killed by Lambda before its report. The run's clock is the
database's: its start is read from the database, and later moments are that plus
the time elapsed here.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any
from uuid import UUID

from tether.aws.connections import ConnectionInfo, ConnectionsApi, ConnectionState
from tether.bounded_calls import Raised, call_all
from tether.errors import DatabaseUnavailableError, GatewayError, TetherError
from tether.models import EndReason
from tether.outbox import Announcer, DrainResult, drain_outbox
from tether.settings import Settings
from tether.store import SessionStore
from tether.sweep_and_admin_models import SessionHealth, Suspect

logger = logging.getLogger("tether.sweep")

RemainingSeconds = Callable[[], float]


class StoppableClock:
    """A run's remaining time that its caller can also stop (``tether dev`` stopping,
    or standing down for another that took its database): once ``stopped`` says so,
    the run ends as at the end of its time, and its report says it was interrupted,
    not stopped for time."""

    def __init__(self, remaining: RemainingSeconds, stopped: Callable[[], bool]) -> None:
        self._remaining = remaining
        self.stopped = stopped

    def __call__(self) -> float:
        return 0.0 if self.stopped() else self._remaining()


LEASE_SHARE = 0.8
"""Of the time between two checks, how much a suspect's lease may last."""
Sleep = Callable[[float], object]
ASKING_SHARE = 0.5
"""Of a batch's wait for the gateway, how much its GetConnection calls may take once
they have found a silent connection to close: its DeleteConnection has the rest."""
MIN_GATEWAY_WAIT_SECONDS = 1.0
"""The least a batch waits for the gateway's answers, however short its leases (a
check every half second, as tests and chaos runs use): a first call builds its client."""


@dataclass(frozen=True)
class SweepPolicy:
    idle_limit_seconds: float
    max_age_seconds: float
    suspect_after_seconds: float
    heartbeat_grace_seconds: float | None
    gone_settle_seconds: float
    batch_size: int
    concurrency: int
    time_margin_seconds: float
    announce_lease_seconds: float
    suspect_lease_seconds: float
    check_every_seconds: float
    """How often a run checks."""
    keep_checking_seconds: float
    """How long after its first check a run makes more (0: one check)."""

    @classmethod
    def from_settings(cls, settings: Settings, *, keep_checking: bool = True) -> SweepPolicy:
        grace = settings.limit_grace_seconds
        every = settings.sweep_check_every_seconds
        return cls(
            idle_limit_seconds=settings.idle_timeout_seconds + grace,
            max_age_seconds=settings.max_duration_seconds + grace,
            suspect_after_seconds=settings.suspect_after_seconds,
            heartbeat_grace_seconds=settings.heartbeat_grace_seconds,
            gone_settle_seconds=settings.gone_settle_seconds,
            batch_size=settings.sweep_batch_size,
            concurrency=settings.sweep_concurrency,
            time_margin_seconds=settings.sweep_time_margin_seconds,
            announce_lease_seconds=settings.announce_lease_seconds,
            # A lease ends before the next check: a run that dies holding one must not
            # delay the next check's look at its suspects.
            suspect_lease_seconds=min(settings.suspect_lease_seconds, LEASE_SHARE * every),
            check_every_seconds=every,
            # The next scheduled run takes over where this one's period ends.
            keep_checking_seconds=(
                max(0.0, settings.sweep_schedule_seconds - every) if keep_checking else 0.0
            ),
        )


@dataclass
class SweepReport:
    ended_by_reason: Counter[str] = field(default_factory=Counter)
    checks: int = 0
    checked: int = 0
    refreshed: int = 0
    gone_waiting: int = 0
    closed_silent: int = 0
    """Connections this run closed at the gateway for silence. Their $disconnect may
    record the end before this run does: ``ended_by_reason`` counts only the ends this
    run recorded, so a metric never counts one end twice."""
    gateway_errors: int = 0
    """Calls to the gateway that failed: refused, or made and not answered in time."""
    left_unasked: int = 0
    """Suspects whose GetConnection never started: the check's questions had had their
    share of its wait for the gateway (the deletes have the rest). Not failures; the
    next check asks about them."""
    left_unclosed: int = 0
    """Silent connections found whose DeleteConnection never started: the check's wait
    for the gateway ran out first. Not failures; the next check closes them."""
    bugs: int = 0
    """Calls to the gateway that raised what tether does not expect (a bug, its
    traceback in the log), counted apart from the gateway's errors and silence: their
    sessions are neither ended nor dropped, and are asked about again at the next check."""
    unchecked: int = 0
    """The calls to the gateway that failed or raised, or never started for want of
    the check's time, in the run's last check: their suspects are left for another
    run. An earlier check's were asked about again by the next, as every suspect a
    check finds is, unless the run's time cut one short."""
    unchecked_for_time: int = 0
    """Of ``unchecked``, the suspects whose calls never started (left unasked or
    unclosed for want of time): no call of theirs failed."""
    failed_checks: int = 0
    """Checks the database's absence cut short (the run carried on)."""
    announced: int = 0
    redelivered: int = 0
    announce_failed: int = 0
    announced_unrecorded: int = 0
    """Announced, but the database could not record it: announced again after the lease."""
    announce_error: str | None = None
    failed_still_queued: set[UUID] = field(default_factory=set)
    """The ends whose announcement failed in this run and that no later check of it
    announced: they stay queued for the next run. ``announce_failed`` counts every
    failure, a later check's retry of an earlier one's too; not in the report's dict."""
    failed_then_announced: int = 0
    """The ends whose announcement failed in this run and a later check of it announced;
    not in the report's dict."""
    stopped_for_time: bool = False
    interrupted: bool = False
    """Stopped by its caller before it finished (see ``StoppableClock``), not for time."""
    health: SessionHealth | None = None
    seconds: float = 0.0

    @property
    def ended(self) -> int:
        return sum(self.ended_by_reason.values())

    @property
    def ended_closed_or_announced(self) -> bool:
        """Whether the run ended a session, closed a connection at the gateway or sent
        an announcement: what a failure part way leaves done."""
        return bool(self.ended or self.closed_silent or self.announced or self.announced_unrecorded)

    def as_dict(self) -> dict[str, Any]:
        health = self.health
        return {
            "ended": self.ended,
            "ended_by_reason": dict(self.ended_by_reason),
            "checks": self.checks,
            "checked": self.checked,
            "refreshed": self.refreshed,
            "gone_waiting": self.gone_waiting,
            "closed_silent": self.closed_silent,
            "gateway_errors": self.gateway_errors,
            "left_unasked": self.left_unasked,
            "left_unclosed": self.left_unclosed,
            "bugs": self.bugs,
            "unchecked": self.unchecked,
            "unchecked_for_time": self.unchecked_for_time,
            "failed_checks": self.failed_checks,
            "announced": self.announced,
            "redelivered": self.redelivered,
            "announce_failed": self.announce_failed,
            "announced_unrecorded": self.announced_unrecorded,
            "announce_error": self.announce_error,
            "stopped_for_time": self.stopped_for_time,
            "interrupted": self.interrupted,
            "active_sessions": health.active_sessions if health else None,
            "orphaned_sessions": health.orphaned_sessions if health else None,
            "unannounced": health.unannounced if health else None,
            "seconds": round(self.seconds, 3),
        }


@dataclass
class _Answers:
    """What the gateway said about one batch of suspects."""

    gone: list[UUID] = field(default_factory=list)
    to_close: dict[UUID, datetime] = field(default_factory=dict)
    """Silent beyond the heartbeat grace: their last sign of life."""
    still_connected: dict[UUID, datetime | None] = field(default_factory=dict)
    """Alive (LastActiveAt), or unanswered (None): their leases end now."""
    raised: int = 0
    """Calls that raised what tether does not expect (a bug): not answers."""
    errors: list[GatewayError] = field(default_factory=list)
    unanswered: int = 0
    """Calls made with no answer in time: asked again by the next check."""
    unasked: int = 0
    """Questions never started (the questions' share of the wait was over)."""
    unclosed: int = 0
    """Deletes never started (the wait was over)."""
    run_out: bool = False
    """Whether the run's own time, not the batch's leases, ended the wait."""


class Sweep:
    def __init__(
        self,
        *,
        store: SessionStore,
        announcer: Announcer,
        policy: SweepPolicy,
        connections: ConnectionsApi | None,
        remaining_seconds: RemainingSeconds,
        sleep: Sleep = time.sleep,
        report: SweepReport | None = None,
    ) -> None:
        self._store = store
        self._announcer = announcer
        self._policy = policy
        self._connections = connections
        self._remaining = remaining_seconds
        self._sleep = sleep
        self.report = SweepReport() if report is None else report
        """What the run has done so far; a caller that passed it reads it after a failure."""
        self._next_check_at: float | None = None
        """When the run's next check is due (``time.monotonic``), if another follows."""

    def _time_left(self) -> bool:
        if self._remaining() > self._policy.time_margin_seconds:
            return True
        self._cut_short()
        return False

    def _cut_short(self) -> None:
        """The run stops before it is done: for time, unless its caller stopped it."""
        if isinstance(self._remaining, StoppableClock) and self._remaining.stopped():
            self.report.interrupted = True
        else:
            self.report.stopped_for_time = True

    def _batch_deadline(self) -> tuple[float, bool]:
        """Until when a batch's calls to the gateway are waited for, and whether the
        run's own time is what ends the wait. A gateway that takes calls and never
        answers must neither keep the run past its time (Lambda would kill it before
        its report) nor outlast the batch's leases (another run would ask again) and
        hold a check from its announcements."""
        run_left = self._remaining() - self._policy.time_margin_seconds
        lease = max(self._policy.suspect_lease_seconds, MIN_GATEWAY_WAIT_SECONDS)
        return time.monotonic() + min(run_left, lease), run_left <= lease

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
        # Runs on a thread of its own: only the HTTP call, no shared state.
        try:
            return connections.get(suspect.connection_id)
        except GatewayError as exc:
            return exc

    def _sort(
        self,
        suspect: Suspect,
        info: ConnectionInfo | GatewayError,
        now: datetime,
        answers: _Answers,
    ) -> None:
        """File the gateway's answer about one suspect."""
        if isinstance(info, GatewayError):
            answers.errors.append(info)
            answers.still_connected[suspect.session_id] = None
            return
        self.report.checked += 1
        if info.state is ConnectionState.GONE:
            answers.gone.append(suspect.session_id)
            return
        silent_since = self._silent_since(suspect, info, now)
        if silent_since is not None:
            answers.to_close[suspect.session_id] = silent_since
            return
        if info.last_active_at is not None and info.last_active_at > suspect.last_seen_at:
            self.report.refreshed += 1
        answers.still_connected[suspect.session_id] = info.last_active_at

    def _silent_since(
        self, suspect: Suspect, info: ConnectionInfo, now: datetime
    ) -> datetime | None:
        """The last sign of life of a connection still up but silent past the heartbeat
        grace, to be closed; None for one that is not."""
        if info.state is ConnectionState.GONE:
            return None
        last_sign = max(filter(None, (suspect.last_seen_at, info.last_active_at)))
        grace = self._policy.heartbeat_grace_seconds
        if grace is not None and last_sign < now - timedelta(seconds=grace):
            return last_sign
        return None

    @staticmethod
    def _delete(connections: ConnectionsApi, connection_id: str) -> GatewayError | ConnectionState:
        # Runs on a thread of its own: only the HTTP call, no shared state.
        try:
            connections.delete(connection_id)
        except GatewayError as exc:
            return exc
        return ConnectionState.GONE

    def _close_silent(
        self,
        connections: ConnectionsApi,
        to_close: dict[UUID, datetime],
        answers: _Answers,
        deadline: float,
    ) -> None:
        """Heartbeat timeouts: the end is recorded as an intent first, so the
        $disconnect the delete causes ends the row with the same reason and time.
        The deletes go out at once, as the questions did: under mass silence, one
        at a time would spend the check's time waiting on the gateway."""
        intended = self._store.intend_end(EndReason.HEARTBEAT_TIMEOUT, to_close)
        for session_id in to_close.keys() - intended.keys():
            answers.still_connected[session_id] = None  # alive after all: a heartbeat came
        closing = list(intended.items())
        started: list[bool] = []
        closed = call_all(
            lambda item: self._delete(connections, item[1]),
            closing,
            concurrency=self._policy.concurrency,
            seconds=deadline - time.monotonic(),
            name="tether-sweep-delete",
            made_out=started,
        )
        ended_at: dict[UUID, datetime] = {}
        for (session_id, _), outcome, made in zip(closing, closed, started, strict=True):
            if outcome is not ConnectionState.GONE:
                # The session stays active with its intent; the next check retries.
                if outcome is None:
                    if made:
                        answers.unanswered += 1
                    else:
                        answers.unclosed += 1
                elif isinstance(outcome, Raised):
                    answers.raised += 1
                elif isinstance(outcome, GatewayError):
                    answers.errors.append(outcome)
                answers.still_connected[session_id] = None
                continue
            self.report.closed_silent += 1
            ended_at[session_id] = to_close[session_id]
        # One call for the batch: one per end would cost a round trip each, and under
        # mass silence outlast the run. A $disconnect that ended one first is kept;
        # only the ends recorded here are counted. Announced by this run's announce step.
        self._count_ends(self._store.end_sessions(EndReason.HEARTBEAT_TIMEOUT, ended_at))

    def check_suspects(self, check_started: datetime) -> None:
        connections = self._connections
        if connections is None:
            return
        while self._time_left():
            suspects = self._store.claim_suspects(
                silent_seconds=self._policy.suspect_after_seconds,
                limit=self._policy.batch_size,
                lease_seconds=self._policy.suspect_lease_seconds,
                run_started=check_started,
            )
            try:
                self._settle_batch(connections, suspects, check_started)
            except TetherError:
                # Leave nothing leased behind: the next check asks again at once.
                self._release([s.session_id for s in suspects])
                raise
            if len(suspects) < self._policy.batch_size:
                return

    def _settle_batch(
        self,
        connections: ConnectionsApi,
        suspects: list[Suspect],
        check_started: datetime,
    ) -> None:
        answers = _Answers()
        now = check_started
        deadline, answers.run_out = self._batch_deadline()
        wait = deadline - time.monotonic()

        def silent_found(infos: Sequence[object]) -> bool:
            return any(
                isinstance(info, ConnectionInfo) and self._silent_since(s, info, now) is not None
                for s, info in zip(suspects, infos, strict=True)
            )

        # Questions slow to answer (throttled, retried) would take all of the wait, and
        # the silent connections the others found would never be closed, check after
        # check: once they have had their share of it, the deletes have the rest.
        started: list[bool] = []
        infos = call_all(
            lambda s: self._ask(connections, s),
            suspects,
            concurrency=self._policy.concurrency,
            seconds=wait,
            name="tether-sweep-get",
            enough=silent_found,
            enough_after=max(wait * ASKING_SHARE, min(wait, MIN_GATEWAY_WAIT_SECONDS)),
            made_out=started,
        )
        for suspect, info, made in zip(suspects, infos, started, strict=True):
            if isinstance(info, Raised):
                answers.raised += 1
                answers.still_connected[suspect.session_id] = None
                continue
            if info is None:
                if made:
                    answers.unanswered += 1
                else:
                    answers.unasked += 1
                answers.still_connected[suspect.session_id] = None
                continue
            self._sort(suspect, info, now, answers)
        if answers.to_close:
            self._close_silent(connections, answers.to_close, answers, deadline)
        ended_gone = self._store.settle_gone(
            answers.gone, settle_seconds=self._policy.gone_settle_seconds
        )
        self._count_ends(ended_gone)
        waiting = len(answers.gone) - sum(ended_gone.values())
        self.report.gone_waiting += waiting
        # Gone but not yet settled: its lease ends so the next check asks again.
        for session_id in answers.gone:
            answers.still_connected.setdefault(session_id, None)
        self._store.settle_suspects(answers.still_connected)
        self._count_left(answers)

    def _count_left(self, answers: _Answers) -> None:
        """Count, and log once per batch, the calls of a batch that left its suspects
        for the next check: failed, raised, unanswered, never started."""
        if answers.unanswered:
            if answers.run_out:
                self._cut_short()
            else:
                self.report.gateway_errors += answers.unanswered
            logger.warning(
                "the gateway did not answer in time; those suspects wait for the next check",
                extra={
                    "unanswered": answers.unanswered,
                    "waited_until": "the run's margin" if answers.run_out else "the leases' end",
                },
            )
        if answers.unasked or answers.unclosed:
            # Calls never made failed nothing: the run's time, when it is what ran out,
            # says so as it always has; else the check's wait did, and they are counted
            # apart from the gateway's errors.
            if answers.run_out:
                self._cut_short()
            else:
                self.report.left_unasked += answers.unasked
                self.report.left_unclosed += answers.unclosed
            logger.warning(
                "some of the check's calls to the gateway never started (its questions"
                " had had their share of its wait, or the wait was over); those suspects"
                " wait for the next check",
                extra={"unasked": answers.unasked, "unclosed": answers.unclosed},
            )
        if answers.raised:
            self.report.bugs += answers.raised
            logger.error(
                "calls to the gateway raised an unexpected error (a bug: each traceback is"
                " logged); those suspects wait for the next check",
                extra={"raised": answers.raised},
            )
        if answers.errors:
            # One line per batch, not one per suspect: an outage means thousands.
            self.report.gateway_errors += len(answers.errors)
            logger.warning(
                "GetConnection failed; those suspects wait for the next check",
                extra={"failed": len(answers.errors), "example": str(answers.errors[0])},
            )

    def _release(self, session_ids: list[UUID]) -> None:
        try:
            self._store.settle_suspects(dict.fromkeys(session_ids))
        except TetherError:
            logger.warning("could not release the suspects this run held; their leases run out")

    def announce(self) -> None:
        # A claim never outlasts the run: killed holding one (its Lambda timeout), its
        # ends go to the next run at once, not after the rest of a minute's lease. Read
        # at each batch's claim: a later batch has less of the run left than the first.
        def lease() -> float:
            return max(min(self._policy.announce_lease_seconds, self._remaining()), 1.0)

        # A backlog is announced until the next check is due, one batch at least: the
        # next check's ends (hard limits, suspects) must not wait for it, and it goes on
        # where this one stopped.
        next_check_at = self._next_check_at
        batches = 0

        def time_left() -> bool:
            nonlocal batches
            batches += 1
            if batches > 1 and next_check_at is not None and time.monotonic() >= next_check_at:
                return False
            return self._time_left()

        drained = DrainResult()
        try:
            drain_outbox(
                self._store,
                self._announcer,
                batch_size=self._policy.batch_size,
                lease_seconds=lease,
                time_left=time_left,
                into=drained,
            )
        finally:
            # Counted when the database refuses to record them too: they went out.
            self.report.announced += drained.announced
            self.report.redelivered += drained.redelivered
            self.report.announce_failed += drained.failed
            self.report.announced_unrecorded += drained.unrecorded
            self.report.announce_error = self.report.announce_error or drained.error
            self.report.failed_then_announced += len(
                self.report.failed_still_queued & drained.announced_sessions
            )
            self.report.failed_still_queued -= drained.announced_sessions
            self.report.failed_still_queued |= drained.failed_sessions

    def check(self, check_started: datetime) -> None:
        """One check: hard limits, suspects, announcements."""
        self.report.checks += 1
        checked_before = self.report.checked
        failed_before = self.report.gateway_errors + self.report.bugs
        left_before = self._left_for_time()
        self.end_hard_limits()
        self.check_suspects(check_started)
        failed = self.report.gateway_errors + self.report.bugs - failed_before
        left = self._left_for_time() - left_before
        # A check that asked nobody (none due yet: one run late, right after the check
        # that failed) has not asked again what an earlier one could not; nor may one
        # cut short for time have.
        if self.report.checked > checked_before or failed or left:
            carried = self.report.stopped_for_time or self.report.interrupted
            earlier = self.report.unchecked if carried else 0
            earlier_for_time = self.report.unchecked_for_time if carried else 0
            self.report.unchecked = failed + left + earlier
            self.report.unchecked_for_time = left + earlier_for_time
        self.announce()

    def _left_for_time(self) -> int:
        return self.report.left_unasked + self.report.left_unclosed

    def run(self) -> SweepReport:
        started = time.monotonic()
        idle, max_age = self._policy.idle_limit_seconds, self._policy.max_age_seconds
        every = self._policy.check_every_seconds
        run_started: datetime | None = None
        clock_origin = started
        failure: DatabaseUnavailableError | None = None
        next_check = 0.0
        while True:
            # The database gone for a few seconds costs this run a check or two,
            # not the rest of its period: after recovery, the next check is on time.
            try:
                if run_started is None:
                    run_started = self._store.record_sweep(
                        idle_limit_seconds=idle, max_age_seconds=max_age
                    )
                    clock_origin = time.monotonic()
                following = next_check + every
                self._next_check_at = (
                    started + following if following <= self._policy.keep_checking_seconds else None
                )
                self.check(run_started + timedelta(seconds=time.monotonic() - clock_origin))
                failure = None
            except DatabaseUnavailableError as exc:
                failure = exc
                self.report.failed_checks += 1
            next_check += every
            # Another check only if it fits in this run's period and its time.
            wait = next_check - (time.monotonic() - started)
            if next_check > self._policy.keep_checking_seconds or not self._fits(wait):
                break
            if failure is not None:
                logger.warning(
                    "check failed: the database is unavailable; the next check tries again",
                    extra={"error": str(failure)},
                )
            if wait > 0:
                self._sleep(wait)
        if failure is not None:
            raise failure
        self.report.health = self._store.session_health(
            idle_limit_seconds=idle, max_age_seconds=max_age
        )
        self.report.seconds = time.monotonic() - started
        self._store.record_sweep(
            idle_limit_seconds=idle,
            max_age_seconds=max_age,
            report=self.report.as_dict(),
            started_at=run_started,
        )
        return self.report

    def _fits(self, wait: float) -> bool:
        return self._remaining() - max(wait, 0.0) > self._policy.time_margin_seconds
