"""Facts and bounds, each defined once.

API Gateway's WebSocket limits are facts of the service: nothing configures
them upwards. The bounds below are the ranges every setting and every SQL
function accepts; ``tests/integration/test_bounds.py`` checks the SQL side
agrees with these numbers.
"""

from __future__ import annotations

import math

# API Gateway WebSocket quotas (https://docs.aws.amazon.com/apigateway/latest/
# developerguide/apigateway-execution-service-websocket-limits-table.html).
GATEWAY_IDLE_TIMEOUT_SECONDS = 600.0
"""A connection with no traffic for 10 minutes is closed; it cannot be raised."""
GATEWAY_MAX_CONNECTION_SECONDS = 7200.0
"""No connection lasts more than 2 hours; it cannot be raised."""
GATEWAY_FRAME_BYTES = 32 * 1024
GATEWAY_MESSAGE_BYTES = 128 * 1024
GATEWAY_URL_CHARACTERS = 4096
"""The longest URL a client may connect with, its query (a ?token=) included."""
GATEWAY_HEADER_BYTES = 10240
"""The most the request line and the header values of one request may come to: the HTTP
API's quota (https://docs.aws.amazon.com/apigateway/latest/developerguide/
http-api-quotas.html), the operators' API's; the WebSocket API documents none beside its
URL's 4096 characters, and the local gateway holds its handshake to the same."""
GATEWAY_INTEGRATION_TIMEOUT_SECONDS = 29.0
"""The longest API Gateway waits for a route's integration to answer."""
CONNECTION_ID_MAX_LENGTH = 128
CONNECTION_ID_PATTERN = rf"^[A-Za-z0-9_\-=+/]{{1,{CONNECTION_ID_MAX_LENGTH}}}$"
"""The shape of an API Gateway connection id (here, not in tether.events, so that an
application route's sign of life does not import the event models)."""

# The heartbeat clients are asked to keep (every reply to a heartbeat says the
# configured interval); with the sweep's defaults, a client that vanishes is ended
# within 40 s (README: "The bounds, at the defaults").
HEARTBEAT_INTERVAL_SECONDS = 15.0
HEARTBEATS_OFF = 0.0
"""A heartbeat grace of "off" (the commands' flag): heartbeats not required."""

# Ranges accepted by the settings and checked again by the SQL functions.
HEARTBEAT_THROTTLE_MAX_SECONDS = 300.0
LEASE_MAX_SECONDS = 3600.0
SILENCE_MAX_SECONDS = 86400.0
BATCH_SIZE_MAX = 10000
# A WebSocket close code (RFC 6455): 1000 to 4999. Outside them, no code a gateway
# sends, and the end function refuses it.
DISCONNECT_STATUS_CODE_MIN = 1000
DISCONNECT_STATUS_CODE_MAX = 4999
DISCONNECT_REASON_MAX_LENGTH = 1024
SOURCE_IP_MAX_LENGTH = 64
USER_AGENT_MAX_LENGTH = 1024
API_ID_MAX_LENGTH = 64
STAGE_MAX_LENGTH = 128

# The longest age `close-orphans` and the API's orphan query take: a year of history,
# as far back as the daily statistics go.
ORPHAN_AGE_MAX_SECONDS = 366 * 86400.0


def gone_within_seconds(*, suspect_after: float, check_every: float, settle: float) -> float:
    """How long after its last sign of life a session whose connection the gateway says
    is gone (410) is ended: a suspect after ``suspect_after`` of silence, asked at the
    next check, then asked again at each check until ``settle`` has passed since the
    first 410 (at once when it is 0)."""
    return suspect_after + check_every * (1 + math.ceil(settle / check_every))


def vanished_within_seconds(
    *, suspect_after: float, check_every: float, settle: float, grace: float | None
) -> float:
    """The bound the README states for a client that vanished: the gateway knows it is
    gone, or (half-open) it does not and the heartbeat grace ends it, one check later.
    Heartbeats off (None, or the flag's 0), a half-open client is left to the gateway's
    idle limit instead."""
    gone = gone_within_seconds(suspect_after=suspect_after, check_every=check_every, settle=settle)
    if grace is None or grace == HEARTBEATS_OFF:
        return gone
    return max(gone, grace + check_every)
