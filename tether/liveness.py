"""For the application's own routes: every message counts as a sign of life.

    from tether.liveness import counts_as_sign_of_life

    @counts_as_sign_of_life
    def lambda_handler(event, context):
        ...  # the application's own route

The touch goes through the same throttled SQL function as the heartbeat, so a
chatty route costs at most one write per throttle interval. A failed touch is
logged and never breaks the application's route.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable
from typing import Any, TypeVar

from tether import limits, runtime
from tether.errors import ConfigurationError, TetherError
from tether.models import TouchResult

R = TypeVar("R")

Handler = Callable[[dict[str, Any], Any], R]


def record_sign_of_life(event: dict[str, Any]) -> TouchResult | None:
    """Touch the session of the event's connection; None when that was not possible."""
    from tether.aws.observability import emit_metric, logger  # noqa: PLC0415
    from tether.responses import error_code  # noqa: PLC0415

    context = event.get("requestContext") if isinstance(event, dict) else None
    connection_id = context.get("connectionId") if isinstance(context, dict) else None
    if not isinstance(connection_id, str) or not re.fullmatch(
        limits.CONNECTION_ID_PATTERN, connection_id
    ):
        logger.warning("no connectionId of API Gateway's shape in the event; nothing to touch")
        return None
    try:
        return runtime.store().touch_session(
            connection_id, runtime.settings().heartbeat_throttle_seconds
        )
    except ConfigurationError as exc:
        # Not transient: every message of every client is affected until it is fixed.
        emit_metric("SignOfLifeFailed", dimensions={"Cause": "configuration"})
        logger.error("cannot record signs of life: misconfigured", extra={"error": str(exc)})
        return None
    except TetherError as exc:
        emit_metric("SignOfLifeFailed", dimensions={"Cause": error_code(exc)[1]})
        logger.warning("could not record a sign of life", extra={"error": str(exc)})
        return None


def counts_as_sign_of_life(handler: Handler[R]) -> Handler[R]:
    @functools.wraps(handler)
    def wrapper(event: dict[str, Any], context: Any) -> R:
        record_sign_of_life(event)
        return handler(event, context)

    return wrapper
