"""The operators' API and live page (FastAPI through Mangum), behind an API Gateway HTTP API."""

from typing import Any

from mangum import Mangum

from tether.admin.app import TEXT_MIME_TYPES, create_app
from tether.admin.http_events import refusal
from tether.aws.observability import invocation

_asgi = Mangum(create_app(), lifespan="off", text_mime_types=TEXT_MIME_TYPES)


@invocation
def lambda_handler(event: Any, context: Any) -> dict[str, Any]:
    refused = refusal(event)
    return refused if refused is not None else _asgi(event, context)


__all__ = ["lambda_handler"]
