"""The HTTP events the operators' API takes on Lambda, checked before Mangum reads them.

API Gateway's HTTP API (payload 2.0, what infra/ deploys) and its payload 1.0, the
REST API's shape, are taken; so is what Mangum reads of them and nothing more. Mangum
itself trusts the event: a field missing or of the wrong type (a direct invoke, a
console test event, an integration set up by hand) escaped it as a KeyError or an
AttributeError, a 502 behind API Gateway with nothing said. Here it is a 400 problem
document saying which field, and nothing is run.
"""

from __future__ import annotations

import base64
import binascii
import json
import logging
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictStr, ValidationError

from tether.admin.headers import RESPONSE_HEADERS
from tether.admin.problems import PROBLEM_JSON, problem_body
from tether.errors import ConfigurationError
from tether.responses import error_code

logger = logging.getLogger("tether.admin")


class _Body(BaseModel):
    model_config = ConfigDict(extra="allow", populate_by_name=True)

    body: StrictStr | None = None
    is_base64_encoded: StrictBool = Field(default=False, alias="isBase64Encoded")


class _Http(BaseModel):
    model_config = ConfigDict(extra="allow")

    method: StrictStr
    path: StrictStr
    source_ip: StrictStr = Field(alias="sourceIp")


class _ContextV2(BaseModel):
    model_config = ConfigDict(extra="allow")

    http: _Http


class _EventV2(_Body):
    version: Literal["2.0"]
    request_context: _ContextV2 = Field(alias="requestContext")
    headers: dict[StrictStr, StrictStr] = {}
    raw_query_string: StrictStr = Field(default="", alias="rawQueryString")
    cookies: list[StrictStr] | None = None


class _Identity(BaseModel):
    model_config = ConfigDict(extra="allow")

    source_ip: StrictStr | None = Field(default=None, alias="sourceIp")


class _ContextV1(BaseModel):
    model_config = ConfigDict(extra="allow")

    identity: _Identity = _Identity()


class _EventV1(_Body):
    request_context: _ContextV1 = Field(alias="requestContext")
    http_method: StrictStr = Field(alias="httpMethod")
    path: StrictStr
    headers: dict[StrictStr, StrictStr] | None = None
    multi_value_headers: dict[StrictStr, list[StrictStr]] | None = Field(
        default=None, alias="multiValueHeaders"
    )
    query_string_parameters: dict[StrictStr, StrictStr] | None = Field(
        default=None, alias="queryStringParameters"
    )
    multi_value_query_string_parameters: dict[StrictStr, list[StrictStr]] | None = Field(
        default=None, alias="multiValueQueryStringParameters"
    )


def refusal(event: Any) -> dict[str, Any] | None:
    """None for an event Mangum can read; else the 400 response that refuses it."""
    problem = _problem(event)
    if problem is None:
        return None
    logger.warning("malformed HTTP event", extra={"error": problem})
    return _answer(400, "malformed_event", f"malformed event: {problem}")


def misconfigured(exc: ConfigurationError) -> dict[str, Any]:
    """The 500 answer to every request while a setting read before the app is wrong."""
    status, code = error_code(exc)
    logger.error("request failed", extra={"error": str(exc), "code": code})
    return _answer(status, code, exc.public)


def _answer(status: int, code: str, detail: str) -> dict[str, Any]:
    return {
        "statusCode": status,
        "headers": {**RESPONSE_HEADERS, "content-type": PROBLEM_JSON},
        "body": json.dumps(problem_body(status, code, detail)),
        "isBase64Encoded": False,
    }


def _problem(event: Any) -> str | None:
    if not isinstance(event, dict):
        return f"the event must be a JSON object, got {type(event).__name__}"
    context = event.get("requestContext")
    if isinstance(context, dict) and "elb" in context:
        return "an Application Load Balancer's event, not API Gateway's"
    # As Mangum tells them apart: by a version (HTTP API), else by a resource (REST API).
    if event.get("version") == "2.0":
        model: type[_Body] = _EventV2
    elif event.get("version") == "1.0" or "resource" in event:
        model = _EventV1
    else:
        return (
            "not an API Gateway HTTP event (payload 2.0 or 1.0: a version, or a REST API's"
            " resource)"
        )
    try:
        parsed = model.model_validate(event)
    except ValidationError as exc:
        return _summary(exc)
    if parsed.is_base64_encoded and parsed.body:
        try:
            base64.b64decode(parsed.body, validate=True)
        except (binascii.Error, ValueError):
            return "body: isBase64Encoded is true but the body is not base64"
    return _port_problem(_headers_as_mangum_reads_them(parsed))


def _headers_as_mangum_reads_them(parsed: _Body) -> dict[str, str]:
    """The request's headers by lowercase name, a payload 1.0's multi-value ones joined
    over its single ones, as Mangum merges them."""
    if isinstance(parsed, _EventV2):
        return {name.lower(): value for name, value in parsed.headers.items()}
    if not isinstance(parsed, _EventV1):
        return {}
    headers = {name.lower(): value for name, value in (parsed.headers or {}).items()}
    for name, values in (parsed.multi_value_headers or {}).items():
        headers[name.lower()] = ", ".join(values)
    return headers


def _port_problem(headers: dict[str, str]) -> str | None:
    """Mangum reads the server's port from the Host header (after its one ':') or else
    X-Forwarded-Port, as an int, and raised ValueError on anything else (a port that is a
    word, an IPv6 literal, a forwarded port given twice): a 502 with a traceback."""
    host = headers.get("host")
    if host is not None and ":" in host:
        port = host.partition(":")[2]
        if ":" in port or not _digits(port):
            return "headers.host: a port, after the host name, must be a number"
        return None
    forwarded = headers.get("x-forwarded-port")
    if forwarded is not None and not _digits(forwarded):
        return "headers.x-forwarded-port: must be a number"
    return None


def _digits(text: str) -> bool:
    return text.isascii() and text.isdigit()


def _summary(exc: ValidationError) -> str:
    """Where each fault is and what was wrong, never the value sent."""
    faults = [
        f"{'.'.join(str(part) for part in error['loc']) or 'event'}: {error['msg']}"
        for error in exc.errors(include_input=False, include_url=False)[:3]
    ]
    more = exc.error_count() - len(faults)
    return "; ".join(faults) + (f" (and {more} more)" if more > 0 else "")
