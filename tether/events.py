"""Typed models of the events API Gateway (WebSocket) and EventBridge deliver.

They accept what API Gateway really sends and nothing looser: strings must be
strings, the connection id has API Gateway's shape, bodies stay within its
128 KB message limit. ``disconnectStatusCode`` and ``disconnectReason`` are
optional because emulators often omit them.
"""

from __future__ import annotations

import base64
import binascii
from datetime import UTC, datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictInt, StrictStr, ValidationError

from tether import limits
from tether.errors import InvalidInputError

MAX_MESSAGE_BYTES = limits.GATEWAY_MESSAGE_BYTES
"""API Gateway's WebSocket message limit; a larger body cannot be real."""
CONNECTION_ID_PATTERN = r"^[A-Za-z0-9_\-=+/]{1,128}$"


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
    connected_at: StrictInt | None = Field(default=None, alias="connectedAt", ge=0)
    request_time_epoch: StrictInt | None = Field(default=None, alias="requestTimeEpoch", ge=0)
    api_id: StrictStr | None = Field(default=None, alias="apiId", max_length=64)
    stage: StrictStr | None = Field(default=None, max_length=128)
    domain_name: StrictStr | None = Field(default=None, alias="domainName", max_length=256)
    identity: Identity | None = None
    disconnect_status_code: StrictInt | None = Field(
        default=None, alias="disconnectStatusCode", ge=0, le=9999
    )
    disconnect_reason: StrictStr | None = Field(
        default=None, alias="disconnectReason", max_length=1024
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
            return base64.b64decode(self.body, validate=True).decode("utf-8")
        except (binascii.Error, UnicodeDecodeError) as exc:
            raise InvalidInputError("message body is not valid base64-encoded UTF-8") from exc


def _summary(error: ValidationError) -> str:
    # Locations and messages only: never echo the input, which may hold a token.
    parts = [
        f"{'.'.join(str(p) for p in item['loc']) or 'event'}: {item['msg']}"
        for item in error.errors(include_input=False, include_url=False)[:5]
    ]
    return "; ".join(parts)


def parse_websocket_event(
    event: Any, expected: Literal["CONNECT", "DISCONNECT", "MESSAGE"]
) -> WebSocketEvent:
    """Validate a raw Lambda event, or raise InvalidInputError saying what is wrong."""
    if not isinstance(event, dict):
        raise InvalidInputError(f"event must be a JSON object, got {type(event).__name__}")
    body = event.get("body")
    if isinstance(body, str) and len(body) > MAX_MESSAGE_BYTES * 4 // 3 + 4:
        raise InvalidInputError(f"message body exceeds {MAX_MESSAGE_BYTES} bytes")
    try:
        parsed = WebSocketEvent.model_validate(event)
    except ValidationError as exc:
        raise InvalidInputError(f"malformed event: {_summary(exc)}") from None
    if parsed.request_context.event_type != expected:
        raise InvalidInputError(
            f"expected a {expected} event, got {parsed.request_context.event_type}"
        )
    if parsed.body is not None and len(parsed.text_body().encode()) > MAX_MESSAGE_BYTES:
        raise InvalidInputError(f"message body exceeds {MAX_MESSAGE_BYTES} bytes")
    return parsed
