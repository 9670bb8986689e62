"""``$default`` and ``heartbeat``: a sign of life, or a clear error frame.

``{"action": "heartbeat"}`` touches ``last_seen_at`` through the throttled SQL
function. Malformed JSON or an unknown action answers 400 with a JSON body and
writes nothing. A heartbeat from a connection with no active session closes that
connection: no connection stays up without its row.
"""

from __future__ import annotations

from typing import Any

from tether import runtime
from tether.aws.observability import invocation, logger, remaining_seconds
from tether.bounded_calls import Raised, call_all
from tether.errors import GatewayError, InvalidInputError, TetherError
from tether.events import parse_websocket_event
from tether.handlers import tag_invocation
from tether.lifecycle import HEARTBEAT_ACTION, KNOWN_ACTIONS, heartbeat, parse_action
from tether.models import TouchOutcome
from tether.responses import Response, error_response, respond


@invocation
def lambda_handler(event: dict[str, Any], context: Any) -> Response:
    try:
        request = parse_websocket_event(event, "MESSAGE")
        tag_invocation(request, route_key=request.request_context.route_key)
        action, _payload = parse_action(request)
        if action != HEARTBEAT_ACTION:
            known = ", ".join(KNOWN_ACTIONS)
            # Not the action itself: the reply is logged, and a client may send anything.
            raise InvalidInputError(f"unknown action; known actions: {known}")
        config = runtime.settings()
        touched = heartbeat(
            request.connection_id,
            store=runtime.store(),
            throttle_seconds=config.heartbeat_throttle_seconds,
        )
    except TetherError as exc:
        logger.info("message refused", extra={"error": str(exc)})
        return error_response(exc)

    if touched.outcome is TouchOutcome.UNKNOWN:
        _close_sessionless(request.connection_id, _close_budget(context))
        return respond(410, {"error": "gone", "message": "no active session for this connection"})
    # Every reply says how often to come back: a client library can follow it.
    interval = config.heartbeat_interval_seconds
    return respond(
        200,
        {
            "action": HEARTBEAT_ACTION,
            "status": touched.outcome.value,
            # 15, as the README shows it, not 15.0: whole seconds as a JSON integer.
            "heartbeat_seconds": int(interval) if interval.is_integer() else interval,
        },
    )


CLOSE_WAIT_SECONDS = 3.0
"""How long a heartbeat waits for the gateway to take a close: well within the message
function's timeout, whatever the client's retries would allow."""
CLOSE_MARGIN_SECONDS = 1.0
"""Kept of the invocation's time for the answer, after a close that could not be made."""


def _close_budget(context: Any) -> float:
    """The wait for the close: CLOSE_WAIT_SECONDS, or less when the invocation (a cold
    start, a slow database) has less left than that and its margin."""
    left = remaining_seconds(context)
    if left is None:
        return CLOSE_WAIT_SECONDS
    return max(0.0, min(CLOSE_WAIT_SECONDS, left - CLOSE_MARGIN_SECONDS))


def _close_sessionless(connection_id: str, seconds: float) -> None:
    """Close a connection whose session has ended while it stayed up: an operator's
    forced close whose DeleteConnection failed, a clean-up with ``close-orphans
    --force``. Its $disconnect then finds the session already ended and ends nothing.
    Without an @connections endpoint the gateway's idle timeout closes it."""
    try:
        connections = runtime.connections()
    except TetherError as exc:
        logger.warning("cannot close a connection without a session", extra={"error": str(exc)})
        return
    if connections is None:
        logger.info("a connection without a session stays open: no @connections endpoint")
        return

    def close(target: str) -> str:
        try:
            return "closed" if connections.delete(target) else "already gone"
        except GatewayError as exc:
            return f"refused: {exc}"

    [outcome] = call_all(
        close, [connection_id], concurrency=1, seconds=seconds, name="tether-close"
    )
    if outcome in ("closed", "already gone"):
        logger.info("a connection without a session: " + outcome)
    else:
        # It stays up until the next heartbeat tries again, or the gateway's idle timeout.
        if outcome is None:
            error = f"no answer within {seconds:g}s"
        elif isinstance(outcome, Raised):
            error = f"a bug: {type(outcome.error).__name__} (logged above)"
        else:
            error = outcome
        logger.warning("could not close a connection without a session", extra={"error": error})
