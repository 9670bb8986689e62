"""``$connect``: authenticate the handshake and open the session.

Any failure answers a non-2xx status, so API Gateway refuses the handshake and
no connection exists without its row. This module is on the user's handshake:
it imports only what this path needs (no boto3, no supabase-py unless
configured to use them).
"""

from __future__ import annotations

from typing import Any

from tether import runtime
from tether.aws.observability import add_log_keys, emit_metric, invocation, logger
from tether.errors import (
    AuthenticationError,
    ConflictError,
    SigningKeysUnavailableError,
    TetherError,
)
from tether.events import parse_websocket_event
from tether.handlers import tag_invocation
from tether.lifecycle import PROTOCOL_HEADER, open_connection
from tether.responses import Response, error_code, error_response, respond


def _reject(exc: TetherError, cause: str) -> Response:
    emit_metric("ConnectRejected", dimensions={"Cause": cause})
    return error_response(exc)


@invocation
def lambda_handler(event: dict[str, Any], context: Any) -> Response:
    try:
        request = parse_websocket_event(event, "CONNECT")
    except TetherError as exc:
        logger.warning("malformed $connect event", extra={"error": str(exc)})
        return _reject(exc, "malformed_event")

    tag_invocation(request)
    try:
        config = runtime.settings()
        result = open_connection(
            request,
            store=runtime.store(),
            verifier=runtime.verifier(),
            allow_anonymous=config.allow_anonymous,
        )
    except AuthenticationError as exc:
        # The cause is a fixed code; the token itself is never logged.
        logger.info("connection refused", extra={"cause": exc.cause})
        return _reject(exc, exc.cause)
    except ConflictError as exc:
        logger.warning("connection refused", extra={"error": str(exc)})
        return _reject(exc, "reused_connection_id")
    except SigningKeysUnavailableError as exc:
        logger.warning("connection refused: tokens cannot be verified now")
        return _reject(exc, "signing_keys_unavailable")
    except TetherError as exc:
        logger.error("connection refused: could not open the session", extra={"error": str(exc)})
        return _reject(exc, error_code(exc)[1])

    session = result.session
    add_log_keys(session_id=str(session.session_id))
    if session.opened:
        # No user for an anonymous client (the API and SessionEnded say null), not "".
        logger.info(
            "session opened", extra={"user_id": str(session.user_id) if session.user_id else None}
        )
        emit_metric("SessionsOpened")
    else:
        logger.info("repeated $connect; the session was already open")
    if result.subprotocol:
        return respond(200, headers={PROTOCOL_HEADER: result.subprotocol})
    return respond(200)
