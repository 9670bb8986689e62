"""The outbox: every end waits here until its ``SessionEnded`` is announced, at least once.

An end and its outbox entry commit in one SQL statement. Announcing happens
after the commit: the announcer is told about a batch, what it accepted is
marked (leaving the outbox), what it refused is released for the next sweep.
Consumers dedupe by ``session_id``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol
from uuid import UUID

from tether.errors import DatabaseUnavailableError, TetherError
from tether.models import SESSION_ENDED, QueuedSession, SessionEnded

if TYPE_CHECKING:
    from tether.store import SessionStore

logger = logging.getLogger("tether.outbox")


@dataclass
class AnnounceResult:
    announced: list[UUID] = field(default_factory=list)
    failed: list[UUID] = field(default_factory=list)
    error: str | None = None
    """Why the announcer could not announce at all (no region, no credentials)."""
    errors: dict[UUID, str] = field(default_factory=dict)
    """Why each end of ``failed`` was not announced, where the announcer says so (the
    error code EventBridge gave that end): ``error`` names every reason of the batch."""
    unrecorded: list[UUID] = field(default_factory=list)
    """Announced, but the database could not record it: they will be announced again."""
    refusal: TetherError | None = None
    """The database refused (not: was away for) recording or releasing them: a privilege
    taken away, a trigger. Each end is kept and announced again, but it lasts: the
    sweep fails on it, to be seen, where a caller with an end of its own goes on."""


class Announcer(Protocol):
    def announce(self, sessions: Sequence[SessionEnded]) -> AnnounceResult: ...


DETAIL_FIELDS = set(SessionEnded.model_fields)
"""What a SessionEnded carries, whoever announces it: an end from the outbox
(QueuedSession) has its bookkeeping besides."""


class LogAnnouncer:
    """Announces by writing one structured log line per session (local runs, no AWS)."""

    def announce(self, sessions: Sequence[SessionEnded]) -> AnnounceResult:
        for session in sessions:
            # The event's fields only, as EventBridge gets them: an end from the outbox
            # (QueuedSession) carries its bookkeeping too.
            detail = (
                session.model_dump(mode="json")
                if type(session) is SessionEnded
                else session.model_dump(mode="json", include=DETAIL_FIELDS)
            )
            logger.info(SESSION_ENDED, extra={"detail_type": SESSION_ENDED, **detail})
        return AnnounceResult(announced=[session.session_id for session in sessions])


def announce_and_mark(
    store: SessionStore,
    announcer: Announcer,
    sessions: Sequence[SessionEnded],
    *,
    release: bool = True,
) -> AnnounceResult:
    """Announce, then record what was accepted. What failed stays queued, released for
    the next sweep to retry; with ``release`` false, still leased to the caller, who
    gives it back (one database call for this and more, where a deadline counts them)."""
    if not sessions:
        return AnnounceResult()
    try:
        result = announcer.announce(sessions)
    except TetherError as exc:
        # Misconfigured (no region, a bad endpoint): nothing went out. Release the
        # claim so the next attempt need not wait for the lease.
        logger.warning("could not announce; the ends stay queued", extra={"error": str(exc)})
        result = AnnounceResult(failed=[s.session_id for s in sessions], error=str(exc))
    # The ends are committed before this: a database gone or refusing these calls
    # leaves them queued, never undoes them, and is not the caller's failure.
    if result.announced:
        try:
            store.mark_announced(result.announced)
        except TetherError as exc:
            # Announced, but not recorded: once the lease runs out they are announced
            # again, and consumers dedupe by session_id. Nothing is lost.
            result.refusal = _refusal(exc)
            _log_for(result.refusal)(
                "announced, but the database could not record it; it will be announced again",
                extra={"sessions": len(result.announced), "error": str(exc)},
            )
            result.unrecorded = list(result.announced)
    if result.failed and release:
        try:
            store.release_announcements(_claims_held(sessions, result.failed))
        except TetherError as exc:
            # Still queued: they are retried once their lease runs out instead of at once.
            refused = _refusal(exc)
            result.refusal = result.refusal or refused
            _log_for(refused)(
                "could not release the failed announcements; they are retried after their lease",
                extra={"sessions": len(result.failed), "error": str(exc)},
            )
    return result


def _refusal(exc: TetherError) -> TetherError | None:
    return None if isinstance(exc, DatabaseUnavailableError) else exc


def _log_for(refusal: TetherError | None) -> Callable[..., None]:
    """A database away is expected now and then; one refusing the call (a privilege
    taken away, a trigger) refuses every time, and every end is announced twice."""
    return logger.warning if refusal is None else logger.error


def _claims_held(sessions: Sequence[SessionEnded], failed: Sequence[UUID]) -> dict[UUID, int]:
    """Each failed end by the claim count it was claimed with: an end just made was
    queued leased to its caller before any claim, so its own try holds claim 0."""
    refused = set(failed)
    return {
        session.session_id: session.claim_count if isinstance(session, QueuedSession) else 0
        for session in sessions
        if session.session_id in refused
    }


@dataclass
class DrainResult:
    announced: int = 0
    redelivered: int = 0
    """Of those announced, the ends claimed before (a failed or abandoned try)."""
    failed: int = 0
    unrecorded: int = 0
    error: str | None = None
    announced_sessions: set[UUID] = field(default_factory=set)
    """The sessions whose end was announced: which ends they were, for a caller that
    made some of them."""
    failed_sessions: set[UUID] = field(default_factory=set)
    """The sessions whose announcement failed: still queued, unless a later try took them."""


def drain_outbox(
    store: SessionStore,
    announcer: Announcer,
    *,
    batch_size: int,
    lease_seconds: float | Callable[[], float],
    time_left: Callable[[], bool],
    into: DrainResult | None = None,
) -> DrainResult:
    """Announce what waits in the outbox, a leased batch at a time, while time is left.
    ``lease_seconds`` may be read anew for each batch (what the run has left). Counted
    ``into`` the result given, if any: read after a failure, it says what went out.

    Stops at the first refusal: the bus is likely down, and the next run retries
    at once (refused ends are released) rather than this one spinning on them.
    """
    drained = DrainResult() if into is None else into
    while time_left():
        batch: list[QueuedSession] = store.claim_unannounced(
            limit=batch_size,
            lease_seconds=lease_seconds() if callable(lease_seconds) else lease_seconds,
        )
        outcome = announce_and_mark(store, announcer, batch)
        accepted = set(outcome.announced)
        drained.announced += len(accepted)
        drained.announced_sessions |= accepted
        drained.redelivered += sum(
            1 for queued in batch if queued.session_id in accepted and queued.claim_count > 1
        )
        drained.failed += len(outcome.failed)
        drained.failed_sessions |= set(outcome.failed)
        drained.unrecorded += len(outcome.unrecorded)
        drained.error = drained.error or outcome.error
        if outcome.refusal is not None:
            # Every end would be announced again each lease, for good: the run fails,
            # as before this was caught, so that it is counted and alarmed on.
            raise outcome.refusal
        if len(batch) < batch_size or outcome.failed or outcome.unrecorded:
            break
    return drained
