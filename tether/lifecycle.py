"""The domain steps the WebSocket handlers take, importable and testable without AWS."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from tether.errors import (
    AuthenticationError,
    ConflictError,
    DatabaseBusyError,
    InvalidInputError,
)
from tether.events import WebSocketEvent, load_json
from tether.models import (
    EndOutcome,
    EndReason,
    EndResult,
    OpenedSession,
    OpenSessionRequest,
    TouchResult,
)
from tether.outbox import Announcer, AnnounceResult, announce_and_mark
from tether.store import SessionStore

if TYPE_CHECKING:
    from tether.auth import TokenVerifier

logger = logging.getLogger("tether.lifecycle")

HEARTBEAT_ACTION = "heartbeat"
KNOWN_ACTIONS = (HEARTBEAT_ACTION,)
TOKEN_QUERY_PARAMETER = "token"  # noqa: S105 - a parameter name, not a secret
PROTOCOL_HEADER = "Sec-WebSocket-Protocol"
END_ATTEMPTS = 3
"""How many times $disconnect tries its end while another transaction holds the row:
API Gateway never calls $disconnect again, and a sweep's later end loses the client's
reason and close code."""

# WebSocket close codes (RFC 6455) as API Gateway reports them in $disconnect.
_REASON_BY_CLOSE_CODE = {
    1000: EndReason.CLIENT_DISCONNECT,  # normal closure
    1001: EndReason.SERVER_DISCONNECT,  # going away: idle or age limit, @connections DELETE
    1005: EndReason.CLIENT_DISCONNECT,  # closed without a status code
    1006: EndReason.CONNECTION_LOST,  # abnormal closure: no close frame
    1009: EndReason.MESSAGE_TOO_BIG,
    1012: EndReason.SHUTDOWN,  # service restart: the local gateway stopping
}
ABNORMAL_CLOSURE = 1006
# The reason API Gateway gives a close the client started (its close frame): whatever
# code the client chose (1001 when a browser tab closes, say), the client ended it.
_CLIENT_CLOSE_REASON = "client-side close frame"
# For "going away", the gateway's reason says which limit closed the connection.
_GOING_AWAY_REASONS = (
    ("idle", EndReason.IDLE_TIMEOUT),
    ("duration", EndReason.MAX_DURATION),
)


def reason_for_close(status_code: int | None, reason: str | None = None) -> EndReason:
    if status_code is None:
        return EndReason.CLIENT_DISCONNECT
    if (
        reason
        and reason.lower().startswith(_CLIENT_CLOSE_REASON)
        and status_code != ABNORMAL_CLOSURE  # never in a close frame: the network's doing
    ):
        return EndReason.CLIENT_DISCONNECT
    if status_code == 1001 and reason:
        lowered = reason.lower()
        for marker, end_reason in _GOING_AWAY_REASONS:
            if marker in lowered:
                return end_reason
    return _REASON_BY_CLOSE_CODE.get(status_code, EndReason.CLIENT_DISCONNECT)


@dataclass(frozen=True)
class ConnectResult:
    session: OpenedSession
    subprotocol: str | None


def open_connection(
    event: WebSocketEvent,
    *,
    store: SessionStore,
    verifier: TokenVerifier | None,
    allow_anonymous: bool,
) -> ConnectResult:
    """Authenticate the handshake and open its session. Raises before writing on bad credentials."""
    from tether.auth import split_protocols  # noqa: PLC0415 - PyJWT is $connect's alone

    header_token, protocols = split_protocols(event.header(PROTOCOL_HEADER))
    token = event.query(TOKEN_QUERY_PARAMETER) or header_token
    user_id = None
    if token and verifier is not None:
        user_id = verifier.verify(token).user_id
    elif not allow_anonymous:
        raise AuthenticationError("missing_token" if not token else "verification_unavailable")
    elif token:
        logger.warning(
            "a token was presented but no verification is configured: connected as anonymous"
        )
    context = event.request_context
    session = store.open_session(
        OpenSessionRequest(
            connection_id=context.connection_id,
            user_id=user_id,
            connected_at=context.connected_at_time,
            source_ip=context.identity.source_ip if context.identity else None,
            user_agent=(context.identity.user_agent if context.identity else None)
            or event.header("User-Agent"),
            api_id=context.api_id,
            stage=context.stage,
        )
    )
    if not session.opened and not session.is_active:
        # API Gateway never reuses an id: accepting would leave a connection untracked.
        raise ConflictError("this connection id belongs to a session that has ended")
    # A browser that offered sub-protocols must get one of them back, or it
    # drops the connection; the token itself is echoed only if it was all it sent.
    subprotocol = protocols[0] if protocols else header_token
    return ConnectResult(session=session, subprotocol=subprotocol)


@dataclass(frozen=True)
class DisconnectResult:
    end: EndResult
    announcement: AnnounceResult | None


def end_connection(
    event: WebSocketEvent,
    *,
    store: SessionStore,
    announcer: Announcer,
    announce_lease_seconds: Callable[[], float],
    another_try: Callable[[], bool] = lambda: False,
) -> DisconnectResult:
    """End the session (committed first), then announce it; a failed announcement stays
    queued. An end that lost to another transaction's hold on the row (nothing written)
    is tried again while ``another_try`` says there is time for it."""
    context = event.request_context
    attempt = 1
    while True:
        try:
            end = store.end_session(
                context.connection_id,
                reason_for_close(context.disconnect_status_code, context.disconnect_reason),
                status_code=context.disconnect_status_code,
                announce_lease_seconds=announce_lease_seconds(),
            )
            break
        except DatabaseBusyError as exc:
            if attempt >= END_ATTEMPTS or not another_try():
                raise
            logger.warning(
                "the session's row is held by another transaction; trying the end again",
                extra={"attempt": attempt, "error": str(exc)},
            )
            attempt += 1
    if end.outcome is not EndOutcome.ENDED or end.session is None:
        return DisconnectResult(end=end, announcement=None)
    announcement = announce_and_mark(store, announcer, [end.session])
    return DisconnectResult(end=end, announcement=announcement)


def parse_action(event: WebSocketEvent) -> tuple[str, dict[str, Any]]:
    """The message's action (route selection on ``$request.body.action``) and its payload."""
    text = event.text_body()
    payload = load_json(text)
    if not isinstance(payload, dict):
        raise InvalidInputError('message must be a JSON object such as {"action": "heartbeat"}')
    action = payload.get("action")
    if not isinstance(action, str) or not action:
        raise InvalidInputError('message has no "action" string')
    return action, payload


def heartbeat(connection_id: str, *, store: SessionStore, throttle_seconds: float) -> TouchResult:
    return store.touch_session(connection_id, throttle_seconds)
