"""``$default`` and ``heartbeat``: a sign of life, or a clear error frame.

``{"action": "heartbeat"}`` touches ``last_seen_at`` through the throttled SQL
function. Malformed JSON or an unknown action answers 400 with a JSON body and
writes nothing.
"""

from __future__ import annotations

from typing import Any

from tether import runtime
from tether.aws.observability import add_log_keys, invocation, logger
from tether.errors import InvalidInputError, TetherError
from tether.events import parse_websocket_event
from tether.lifecycle import HEARTBEAT_ACTION, KNOWN_ACTIONS, heartbeat, parse_action
from tether.models import TouchOutcome
from tether.responses import Response, error_response, respond


@invocation
def lambda_handler(event: dict[str, Any], context: Any) -> Response:
    try:
        request = parse_websocket_event(event, "MESSAGE")
        add_log_keys(
            correlation_id=request.request_context.request_id,
            connection_id=request.connection_id,
            route_key=request.request_context.route_key,
        )
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
