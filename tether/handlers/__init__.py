"""The Lambda handlers: each parses its event, then calls the lifecycle."""

from __future__ import annotations

from typing import TYPE_CHECKING

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
