"""``$disconnect``: end the session exactly once and announce ``SessionEnded``.

The end is committed before the announcement. If EventBridge refuses, the
session stays queued for the sweep to redeliver and this function still
succeeds. An end that loses to another transaction's hold on the row is tried again
while the invocation has time for it. If the database is down, or the row stays held,
the invocation fails (and shows in the function's error metric); the sweep ends the
session after recovery.
"""

from __future__ import annotations

from typing import Any

from tether import runtime
from tether.aws.observability import add_log_keys, emit_metric, invocation, logger
from tether.errors import DatabaseUnavailableError, TetherError
from tether.events import parse_websocket_event
from tether.handlers import lease_within_invocation, tag_invocation, time_for_another_try
from tether.lifecycle import end_connection
from tether.models import EndOutcome
from tether.responses import Response, error_response, respond


@invocation
def lambda_handler(event: dict[str, Any], context: Any) -> Response:
    try:
        request = parse_websocket_event(event, "DISCONNECT")
    except TetherError as exc:
        logger.warning("malformed $disconnect event", extra={"error": str(exc)})
        return error_response(exc)

    tag_invocation(request)
    lease_seconds = runtime.settings().announce_lease_seconds
    try:
        result = end_connection(
            request,
            store=runtime.store(),
            announcer=runtime.announcer(),
            announce_lease_seconds=lambda: lease_within_invocation(context, lease_seconds),
            another_try=lambda: time_for_another_try(context),
        )
    except DatabaseUnavailableError as exc:
        logger.error("could not end the session; the sweep will end it", extra={"error": str(exc)})
        emit_metric("DisconnectFailed")
        raise
    except TetherError as exc:
        logger.error("could not end the session", extra={"error": str(exc)})
        return error_response(exc)

    end = result.end
    if end.outcome is not EndOutcome.ENDED or end.session is None:
        logger.info("nothing to end", extra={"outcome": end.outcome.value})
        return respond(200)

    session = end.session
    add_log_keys(session_id=str(session.session_id))
    logger.info(
        "session ended",
        extra={
            "end_reason": session.end_reason.value,
            "disconnect_status_code": session.disconnect_status_code,
            "duration_seconds": session.duration_seconds,
        },
    )
    emit_metric("SessionsEnded", dimensions={"Reason": session.end_reason.value})
    announcement = result.announcement
    if announcement and announcement.failed:
        emit_metric("AnnouncementsDeferred", len(announcement.failed))
    if announcement and announcement.unrecorded:
        emit_metric("AnnouncementsUnrecorded", len(announcement.unrecorded))
    return respond(200)
