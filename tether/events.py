"""Typed models of the events API Gateway (WebSocket) and EventBridge deliver.

They accept what API Gateway really sends and nothing looser: strings must be
strings, the connection id has API Gateway's shape, bodies stay within its
128 KB message limit. ``disconnectStatusCode`` and ``disconnectReason`` are
optional because emulators often omit them.

An optional field of the request context that is malformed (a status code out of
range, a reason too long, an impossible ``connectedAt``) is dropped and named in
``dropped_fields``: a ``$disconnect`` must still end its session over a bad
detail. Only what identifies the request (connection id, event type, route), what
authenticates a ``$connect`` (headers, query) and a message's body make the event
malformed as a whole; the parts a handler never reads are not looked at.
"""

from __future__ import annotations

import base64
import binascii
import json
import math
import sys
from datetime import UTC, datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictInt, StrictStr, ValidationError

from tether import limits
from tether.errors import InvalidInputError

MAX_MESSAGE_BYTES = limits.GATEWAY_MESSAGE_BYTES
"""API Gateway's WebSocket message limit; a larger body cannot be real."""
CONNECTION_ID_PATTERN = limits.CONNECTION_ID_PATTERN
# Milliseconds since the epoch: API Gateway did not exist before 2015, and a date
# past year 3000 cannot be converted, let alone be true.
EARLIEST_MS = 1_420_070_400_000
LATEST_MS = 32_503_680_000_000
DROPPABLE = frozenset(
    {
        "requestId",
        "connectedAt",
        "requestTimeEpoch",
        "apiId",
        "stage",
        "domainName",
        "identity",
        "disconnectStatusCode",
        "disconnectReason",
    }
)


_BODY = frozenset({"body", "isBase64Encoded"})
_REQUEST = frozenset(
    {"headers", "multiValueHeaders", "queryStringParameters", "multiValueQueryStringParameters"}
)
_UNREAD: dict[str, frozenset[str]] = {
    "CONNECT": _BODY,  # the handshake has no body; its headers and query authenticate
    "DISCONNECT": _BODY | _REQUEST,
    "MESSAGE": _REQUEST,
}
"""Per event type, the parts of the event its handler never reads."""


class _Model(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True, populate_by_name=True)


class Identity(_Model):
    source_ip: StrictStr | None = Field(default=None, alias="sourceIp", max_length=64)
    user_agent: StrictStr | None = Field(default=None, alias="userAgent")


class RequestContext(_Model):
    connection_id: StrictStr = Field(alias="connectionId", pattern=CONNECTION_ID_PATTERN)
    event_type: Literal["CONNECT", "DISCONNECT", "MESSAGE"] = Field(alias="eventType")
    route_key: StrictStr = Field(alias="routeKey", min_length=1, max_length=128)
    request_id: StrictStr | None = Field(default=None, alias="requestId", max_length=256)
    connected_at: StrictInt | None = Field(
        default=None, alias="connectedAt", ge=EARLIEST_MS, le=LATEST_MS
    )
    request_time_epoch: StrictInt | None = Field(
        default=None, alias="requestTimeEpoch", ge=EARLIEST_MS, le=LATEST_MS
    )
    api_id: StrictStr | None = Field(default=None, alias="apiId", max_length=64)
    stage: StrictStr | None = Field(default=None, max_length=128)
    domain_name: StrictStr | None = Field(default=None, alias="domainName", max_length=256)
    identity: Identity | None = None
    disconnect_status_code: StrictInt | None = Field(
        default=None,
        alias="disconnectStatusCode",
        ge=limits.DISCONNECT_STATUS_CODE_MIN,
        le=limits.DISCONNECT_STATUS_CODE_MAX,
    )
    disconnect_reason: StrictStr | None = Field(
        default=None, alias="disconnectReason", max_length=limits.DISCONNECT_REASON_MAX_LENGTH
    )

    @property
    def connected_at_time(self) -> datetime | None:
        if self.connected_at is None:
            return None
        return datetime.fromtimestamp(self.connected_at / 1000, tz=UTC)


class WebSocketEvent(_Model):
    request_context: RequestContext = Field(alias="requestContext")
    headers: dict[StrictStr, StrictStr] | None = None
    query_string_parameters: dict[StrictStr, StrictStr] | None = Field(
        default=None, alias="queryStringParameters"
    )
    body: StrictStr | None = Field(default=None)
    is_base64_encoded: StrictBool = Field(default=False, alias="isBase64Encoded")
    dropped_fields: tuple[str, ...] = ()
    """Malformed optional fields left out (their names, never their values)."""

    @property
    def connection_id(self) -> str:
        return self.request_context.connection_id

    def header(self, name: str) -> str | None:
        """A request header, by case-insensitive name."""
        wanted = name.lower()
        for key, value in (self.headers or {}).items():
            if key.lower() == wanted:
                return value
        return None

    def query(self, name: str) -> str | None:
        return (self.query_string_parameters or {}).get(name)

    def text_body(self) -> str:
        if self.body is None:
            return ""
        if not self.is_base64_encoded:
            return self.body
        try:
            decoded = base64.b64decode(self.body, validate=True)
        except binascii.Error as exc:
            # API Gateway's own encoding, broken: the event, not the client, is at fault.
            raise InvalidInputError("the event's body is not valid base64") from exc
        try:
            return decoded.decode("utf-8")
        except UnicodeDecodeError as exc:
            # A binary frame: the client sent bytes, and knows nothing of base64.
            raise InvalidInputError("a binary message must hold UTF-8 text") from exc


def _summary(error: ValidationError) -> str:
    # Locations and messages only: never echo the input, which may hold a token.
    parts = [
        f"{'.'.join(str(p) for p in item['loc']) or 'event'}: {item['msg']}"
        for item in error.errors(include_input=False, include_url=False)[:5]
    ]
    return "; ".join(parts)


def _droppable(error: ValidationError) -> list[tuple[str, ...]] | None:
    """Where each error is, if every one is in an optional request context field."""
    places: list[tuple[str, ...]] = []
    for item in error.errors(include_input=False, include_url=False):
        loc = tuple(str(part) for part in item["loc"])
        if len(loc) < 2 or loc[0] != "requestContext" or loc[1] not in DROPPABLE:
            return None
        places.append(loc[:3] if loc[1] == "identity" and len(loc) > 2 else loc[:2])
    return places


def _without(event: dict[str, Any], places: list[tuple[str, ...]]) -> dict[str, Any]:
    context = dict(event["requestContext"])
    if isinstance(context.get("identity"), dict):
        context["identity"] = dict(context["identity"])
    for place in places:
        holder = context if len(place) == 2 else context.get("identity")
        if isinstance(holder, dict):
            holder.pop(place[-1], None)
    return {**event, "requestContext": context}


def parse_websocket_event(
    event: Any, expected: Literal["CONNECT", "DISCONNECT", "MESSAGE"]
) -> WebSocketEvent:
    """Validate a raw Lambda event, or raise InvalidInputError saying what is wrong."""
    if not isinstance(event, dict):
        raise InvalidInputError(f"event must be a JSON object, got {type(event).__name__}")
    # What an event's handler never reads must not refuse it: a bad header must not
    # stop a $disconnect from ending its session.
    event = {k: v for k, v in event.items() if k not in _UNREAD[expected]}
    body = event.get("body")
    if isinstance(body, str) and len(body) > MAX_MESSAGE_BYTES * 4 // 3 + 4:
        raise InvalidInputError(f"message body exceeds {MAX_MESSAGE_BYTES} bytes")
    try:
        parsed = WebSocketEvent.model_validate(event)
    except ValidationError as exc:
        places = _droppable(exc)
        if places is None:
            raise InvalidInputError(f"malformed event: {_summary(exc)}") from None
        try:
            parsed = WebSocketEvent.model_validate(_without(event, places))
        except ValidationError as again:
            raise InvalidInputError(f"malformed event: {_summary(again)}") from None
        parsed = parsed.model_copy(update={"dropped_fields": tuple(".".join(p) for p in places)})
    if parsed.request_context.event_type != expected:
        raise InvalidInputError(
            f"expected a {expected} event, got {parsed.request_context.event_type}"
        )
    if parsed.body is not None and len(_utf8(parsed.text_body())) > MAX_MESSAGE_BYTES:
        raise InvalidInputError(f"message body exceeds {MAX_MESSAGE_BYTES} bytes")
    return parsed


def _utf8(text: str) -> bytes:
    try:
        return text.encode()
    except UnicodeEncodeError:  # a lone surrogate: no frame API Gateway passes holds one
        raise InvalidInputError("message body is not valid UTF-8") from None


class _NotJsonError(ValueError):
    """What Python's decoder accepts but JSON (RFC 8259) does not."""


def _not_json(constant: str) -> Any:
    # NaN, Infinity and -Infinity: Python's extension, never JSON.
    raise _NotJsonError(f"{constant} is not a JSON number")


def _finite(text: str) -> float:
    # 1e999 is JSON by its grammar, but no number a peer can hold (RFC 8259 section 6
    # asks for IEEE 754 doubles): Python reads it as infinity, which json.dumps then
    # writes as Infinity, no JSON at all.
    number = float(text)
    if not math.isfinite(number):
        raise _NotJsonError("a number is out of range (beyond a double's)")
    return number


def _integer(text: str) -> int:
    # As 1e999, written without a fraction: Python holds it exactly, but no peer
    # holding doubles can.
    number = int(text)
    if abs(number) > sys.float_info.max:
        raise _NotJsonError("a number is out of range (beyond a double's)")
    return number


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    found = dict(pairs)
    if len(found) != len(pairs):
        # Which one counts differs between parsers: the route taken could differ too.
        raise _NotJsonError("an object repeats a key")
    return found


def load_json(text: str) -> Any:
    """A message body's JSON, or InvalidInputError saying why not; hostile frames
    (nesting too deep to decode, integers too long to convert) included."""
    if not text:
        # An empty frame (or an event without a body): no JSON, as any other such text.
        raise InvalidInputError("message is not valid JSON: it is empty")
    try:
        return json.loads(
            text,
            parse_constant=_not_json,
            parse_float=_finite,
            parse_int=_integer,
            object_pairs_hook=_unique_keys,
        )
    except _NotJsonError as exc:
        raise InvalidInputError(f"message is not valid JSON: {exc}") from None
    except json.JSONDecodeError as exc:
        # One of the json module's messages ends in "at" already.
        raise InvalidInputError(
            f"message is not valid JSON: {exc.msg.removesuffix(' at')} at position {exc.pos}"
        ) from None
    except RecursionError:
        raise InvalidInputError("message is not valid JSON: nested too deeply") from None
    except ValueError:
        raise InvalidInputError("message is not valid JSON: a number is too long") from None


def json_object(text: str) -> dict[str, Any] | None:
    """A message body as a JSON object, or None for anything else (route selection)."""
    try:
        value = load_json(text)
    except InvalidInputError:
        return None
    return value if isinstance(value, dict) else None
