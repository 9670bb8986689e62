"""The Lambda handlers: each parses its event, then calls the lifecycle."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from tether.aws.observability import add_log_keys, logger

if TYPE_CHECKING:
    from tether.events import WebSocketEvent


def tag_invocation(request: WebSocketEvent, **keys: object) -> None:
    """What every WebSocket handler does once its event is read: the invocation's log
    keys, and a line for the optional fields it left out as malformed (their names,
    never their values)."""
    add_log_keys(
        correlation_id=request.request_context.request_id,
        connection_id=request.connection_id,
        **keys,
    )
    if request.dropped_fields:
        # The invocation still goes on: only the bad detail is lost.
        logger.warning(
            "malformed optional fields left out", extra={"fields": request.dropped_fields}
        )


def lease_within_invocation(context: Any, lease_seconds: float) -> float:
    """How long an end this invocation makes stays leased to it for its announcement: the
    lease configured, and never past the invocation's own time. Once that has passed the
    invocation is gone (killed by its timeout, its container lost), and the sweep's next
    check announces the end instead of waiting out the rest of the lease."""
    remaining = getattr(context, "get_remaining_time_in_millis", None)
    if remaining is None:
        return lease_seconds
    return max(0.0, min(lease_seconds, float(remaining()) / 1000))


LOCK_WAIT_SECONDS = 3.0
"""How long tether's functions wait for a row another transaction holds before they
give up (the ``lock_timeout`` each sets: migration 20261129003000 for the first ones,
each later one in its own definition)."""
REPORT_SECONDS = 1.5
"""What an invocation keeps, after its last try, to log and answer before its timeout."""


def time_for_another_try(context: Any) -> bool:
    """Whether the invocation can wait out another lock wait and still report how it
    ended before its timeout kills it."""
    remaining = getattr(context, "get_remaining_time_in_millis", None)
    if remaining is None:
        return False
    return float(remaining()) / 1000 > LOCK_WAIT_SECONDS + REPORT_SECONDS
