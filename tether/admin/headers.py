"""What every answer of the operators' API carries, the live page's included: session
rows kept by no cache, content read only as the type it is said to be, nothing shown
in another site's frame (the page can end sessions), no address given on as a Referer.
The page sends its own Content-Security-Policy; every other answer is data, and may
run, load or frame nothing."""

from __future__ import annotations

from typing import Any

from starlette.datastructures import MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

RESPONSE_HEADERS = {
    "cache-control": "no-store",
    "content-security-policy": "default-src 'none'; base-uri 'none'; form-action 'none';"
    " frame-ancestors 'none'",
    "cross-origin-resource-policy": "same-origin",
    "referrer-policy": "no-referrer",
    "x-content-type-options": "nosniff",
    "x-frame-options": "DENY",
}
"""Each one a route has not set itself (names as ASGI and a Lambda answer spell them)."""


class WithResponseHeaders:
    """Adds RESPONSE_HEADERS to every HTTP answer of the app it wraps. It wraps the
    whole app, so an answer made outside the routes (a 500 from an unexpected error,
    a static file) has them too."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = MutableHeaders(scope=message)
                for name, value in RESPONSE_HEADERS.items():
                    headers.setdefault(name, value)
            await send(message)

        await self.app(scope, receive, send_with_headers)


def with_response_headers(answer: dict[str, Any]) -> dict[str, Any]:
    """A Lambda answer with each of RESPONSE_HEADERS it lacks. Mangum answers an error
    raised after the app began its answer (a static file that could not be opened once
    its headers were sent) with a 500 of its own, which no part of the app sees."""
    headers = dict(answer.get("headers") or {})
    present = {name.lower() for name in (*headers, *(answer.get("multiValueHeaders") or {}))}
    for name, value in RESPONSE_HEADERS.items():
        if name not in present:
            headers[name] = value
    return {**answer, "headers": headers}
