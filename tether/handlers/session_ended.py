"""``SessionEnded`` subscriber: where the original system's "finalize memory" lives now.

EventBridge delivers each ``SessionEnded`` at least once. This handler claims
the session, calls the finalizer named by ``TETHER_FINALIZER``
(``module:function``, called with the session as the database recorded it), and
records that the session was finalized, so a redelivered event does nothing twice. A
failing finalizer raises: EventBridge's retry policy and dead-letter queue take over.

The event names the session; its other fields are not believed. Anyone allowed to put
events on the bus could send a detail of their own, and the finalizer would then act on
another user or a duration that never was, once and for good: finalizing cannot be
redone.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from tether import runtime
from tether.aws.observability import (
    add_log_keys,
    emit_metric,
    invocation,
    logger,
    remaining_seconds,
)
from tether.dburl import hide_secrets
from tether.errors import ConfigurationError, FinalizerError, InvalidInputError, TetherError
from tether.loading import load_callable
from tether.models import SESSION_ENDED, FinalizeOutcome, SessionEnded

if TYPE_CHECKING:
    import asyncio
    from uuid import UUID

    from tether.store import SessionStore


class SessionEndedEvent(BaseModel):
    """The EventBridge envelope around a ``SessionEnded`` detail."""

    model_config = ConfigDict(extra="ignore", frozen=True, populate_by_name=True)

    # EventBridge's ids are UUIDs; this one goes into every log line of the invocation.
    id: str | None = Field(default=None, max_length=128)
    detail_type: str = Field(alias="detail-type")
    source: str
    detail: SessionEnded


Finalizer = Callable[[SessionEnded], object]
"""Called with each ended session; an ``async def`` one is run to its end."""


def log_finalizer(detail: SessionEnded) -> None:
    """The default finalizer: records that the session ended, nothing more."""
    logger.info(
        "session finalized",
        extra={
            "session_id": str(detail.session_id),
            "end_reason": detail.end_reason.value,
            "duration_seconds": detail.duration_seconds,
        },
    )


@functools.cache
def load_finalizer(reference: str) -> Finalizer:
    return load_callable(reference, what="TETHER_FINALIZER")


@functools.cache
def _is_generator_function(reference: str) -> bool:
    """Whether the finalizer has a ``yield`` in it, read once per container: calling it
    runs none of its body. Seen through functools.wraps decorators and partials; what
    another wrapper hides, its result shows (``_refuse_generator``)."""
    function = inspect.unwrap(load_finalizer(reference))
    # A callable object runs its __call__; a functools.partial is read as its function.
    runs = (function, inspect.unwrap(type(function).__call__))
    return any(inspect.isgeneratorfunction(f) or inspect.isasyncgenfunction(f) for f in runs)


def _refuse_generator(result: object) -> None:
    """A generator (or async generator) the finalizer returned is never iterated here: if
    the finalizer's work is in it (a function with a ``yield``, under a wrapper that
    hides it), none of that work ran, and the session must not be recorded as
    finalized, for good. Which it is cannot be told from outside, so any is refused."""
    if inspect.isgenerator(result) or inspect.isasyncgen(result):
        raise TypeError(
            "the finalizer returned a generator, which is never iterated: if its work is in"
            " it (a yield in the function, under a decorator), none of it ran; return"
            " instead of yielding, and return no generator"
        )


_runner: asyncio.Runner | None = None


def _run(reference: str, recorded: SessionEnded) -> None:
    """Call the finalizer ``reference`` names to its end: an ``async def`` one returns a
    coroutine, which, left unawaited, never ran, while the session was recorded as
    finalized. It runs on one event loop for the container's life, so a client it keeps
    between invocations (a connection pool) stays on the loop it was made on."""
    global _runner  # noqa: PLW0603 - one loop per container, made on first use
    finalizer = load_finalizer(reference)
    if _is_generator_function(reference):
        # A function with a ``yield`` in it: calling it runs none of its body, and the
        # session would be recorded as finalized, for good.
        raise TypeError(
            "the finalizer is a generator function (it has a yield): calling it runs none"
            " of its body; return instead of yielding"
        )
    result = finalizer(recorded)
    _refuse_generator(result)
    if not inspect.isawaitable(result):
        return
    import asyncio  # noqa: PLC0415 - only for an async finalizer: off the cold start

    try:
        asyncio.get_running_loop()
    except RuntimeError:
        pass
    else:
        # Called from async code (a wrapper, a test): its loop cannot be run from here.
        if inspect.iscoroutine(result):
            result.close()
        raise ConfigurationError(
            "an async finalizer is run by the SessionEnded handler on a loop of its own:"
            " call the handler outside a running event loop"
        )
    awaitable = result

    async def awaited() -> None:
        # What an async wrapper returns of the function it calls, too.
        _refuse_generator(await awaitable)

    if _runner is None:
        _runner = asyncio.Runner()
    try:
        _runner.run(awaited())
    except asyncio.CancelledError:
        # No Exception: as one, it fails as any failing finalizer does (counted, its
        # claim released), not past that handling.
        raise RuntimeError("the async finalizer was cancelled") from None


def parse_event(event: Any) -> SessionEndedEvent:
    try:
        parsed = SessionEndedEvent.model_validate(event)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}"
            for e in exc.errors(include_input=False, include_url=False)[:5]
        )
        raise InvalidInputError(f"malformed SessionEnded event: {problems}") from None
    if parsed.detail_type != SESSION_ENDED:
        # Not quoted: it is the sender's, of any size.
        raise InvalidInputError("expected a SessionEnded event: detail-type is another")
    return parsed


# The claim must outlive the invocation that holds it, or a retry could claim the
# session while this one still runs the finalizer.
LEASE_MARGIN_SECONDS = 5.0


def _lease_seconds(configured: float, context: Any) -> float:
    """The invocation's own time and the margin, no more: one killed at its timeout (a
    finalizer that hangs) must not still hold the session when Lambda retries it a
    minute later, or every retry finds it in progress and the event goes to the
    dead-letter queue unfinalized. The configured lease is for callers with no context."""
    left = remaining_seconds(context)
    if left is None:
        return configured
    return left + LEASE_MARGIN_SECONDS


def _as_recorded(store: SessionStore, detail: SessionEnded) -> SessionEnded:
    """The session as the database recorded its end, whatever the event said of it."""
    record = store.get_session(detail.session_id)
    if record is None or record.session_end is None or record.end_reason is None:
        # The claim found it ended a moment ago: only a deleted row gets here.
        raise FinalizerError(f"session {detail.session_id} is no longer in this database")
    recorded = SessionEnded(
        session_id=record.session_id,
        connection_id=record.connection_id,
        user_id=record.user_id,
        session_start=record.session_start,
        session_end=record.session_end,
        duration_seconds=record.duration_seconds or 0.0,
        end_reason=record.end_reason,
        disconnect_status_code=record.disconnect_status_code,
    )
    differing = sorted(
        name
        for name in SessionEnded.model_fields
        if getattr(detail, name) != getattr(recorded, name)
    )
    if differing:
        # Names only: the values are the sender's, and may be anything.
        emit_metric("FinalizeDetailMismatch")
        logger.warning(
            "SessionEnded's detail differs from the session as recorded; the record is finalized",
            extra={"differing_fields": differing},
        )
    return recorded


def _release(store: SessionStore, detail: SessionEnded, token: UUID) -> None:
    """Let the next delivery claim the session at once. A release that fails must not
    hide why the finalization did not happen: said, and the claim runs out by itself."""
    try:
        store.finish_finalize(detail.session_id, token, succeeded=False)
    except TetherError as exc:
        logger.warning(
            "could not release the claim: a retry waits until it runs out",
            extra={"error": str(exc)},
        )


@invocation
def lambda_handler(event: dict[str, Any], context: Any) -> dict[str, str]:
    parsed = parse_event(event)  # a malformed event fails loudly: it belongs in the DLQ
    detail = parsed.detail
    add_log_keys(correlation_id=parsed.id, session_id=str(detail.session_id))
    config = runtime.settings()
    load_finalizer(config.finalizer)  # a setting that names none fails before the claim
    store = runtime.store()

    claim = store.begin_finalize(
        detail.session_id, lease_seconds=_lease_seconds(config.finalize_lease_seconds, context)
    )
    outcome = claim.outcome
    if outcome is FinalizeOutcome.ALREADY_FINALIZED:
        logger.info("redelivered SessionEnded: already finalized")
        return {"outcome": outcome.value}
    if outcome is FinalizeOutcome.UNKNOWN:
        # Most likely this subscriber reads another database than the producer:
        # fail, so the event ends in the dead-letter queue rather than being lost.
        emit_metric("FinalizeUnknownSession")
        logger.error("SessionEnded for a session this database does not hold")
        raise FinalizerError(f"session {detail.session_id} is not in this database")
    if outcome is not FinalizeOutcome.CLAIMED or claim.token is None:
        # Another delivery holds the claim (or the event raced ahead of its end):
        # fail so EventBridge retries after it has finished.
        raise FinalizerError(f"session {detail.session_id} is not ready: {outcome.value}")

    try:
        recorded = _as_recorded(store, detail)
    except Exception:
        _release(store, detail, claim.token)
        raise
    try:
        _run(config.finalizer, recorded)
    except (Exception, SystemExit) as exc:
        # The application's code may raise anything: said first, then the claim is
        # released, and EventBridge retries. A release that fails too must not hide why.
        # A sys.exit (a library written as a script) too: no Exception, it ended the
        # Lambda runtime with nothing said, the claim held until its lease ran out.
        emit_metric("FinalizeFailed")
        logger.exception("finalizer failed; EventBridge will retry")
        _release(store, detail, claim.token)
        said = f"sys.exit({exc.code!r})" if isinstance(exc, SystemExit) else str(exc)
        raise FinalizerError(f"finalizer {config.finalizer} failed: {hide_secrets(said)}") from exc
    try:
        recorded_done = store.finish_finalize(detail.session_id, claim.token, succeeded=True)
    except TetherError as exc:
        # Done but not recorded: the redelivery that follows runs it again.
        emit_metric("FinalizeUnrecorded")
        logger.error(
            "the finalizer succeeded but could not be recorded; the next delivery runs it again",
            extra={"error": str(exc)},
        )
        raise
    if not recorded_done:
        # The lease ran out and another delivery claimed the session: its result stands.
        emit_metric("FinalizeLeaseLost")
        logger.warning("finalized after the claim ran out; the newer claim decides")
        return {"outcome": "lease_lost"}
    emit_metric("SessionsFinalized")
    return {"outcome": "finalized"}
