"""The operators' API and live page (FastAPI through Mangum), behind an API Gateway HTTP API."""

import asyncio
import atexit
from typing import Any

from mangum import Mangum

from tether.admin.app import TEXT_MIME_TYPES, create_app
from tether.admin.base_path import UnderBasePath, configured_base_path
from tether.admin.headers import with_response_headers
from tether.admin.http_events import misconfigured, refusal
from tether.aws.observability import invocation
from tether.errors import ConfigurationError

# Mangum runs each request on the thread's current event loop, and makes one if there is
# none, held by asyncio alone. Whatever else runs a loop in the process (asyncio.run, the
# SessionEnded handler's runner) replaces the current loop and then leaves none: that
# loop was dropped unclosed, and the next request failed for want of one. This loop is
# the module's, made current before Mangum looks for one and again for each request.
_loop = asyncio.new_event_loop()
atexit.register(_loop.close)
asyncio.set_event_loop(_loop)
_asgi = Mangum(UnderBasePath(create_app()), lifespan="off", text_mime_types=TEXT_MIME_TYPES)


@invocation
def lambda_handler(event: Any, context: Any) -> dict[str, Any]:
    refused = refusal(event)
    if refused is not None:
        return refused
    try:
        configured_base_path()
    except ConfigurationError as exc:
        return misconfigured(exc)
    asyncio.set_event_loop(_loop)
    return with_response_headers(_asgi(event, context))


__all__ = ["lambda_handler"]
