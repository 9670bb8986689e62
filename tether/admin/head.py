"""HEAD wherever GET is served (RFC 9110 section 9.3.2): the same status and headers as
a GET would have, and no body. FastAPI registers GET routes for GET alone, so each would
answer HEAD with 405; here a HEAD is answered as its GET, its body dropped, for every
route at once, locally and on Lambda alike."""

from __future__ import annotations

from starlette.types import ASGIApp, Message, Receive, Scope, Send


class HeadAsGet:
    """Runs a HEAD request as its GET and sends the answer's status and headers only
    (Content-Length still the GET's, as RFC 9110 allows)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] != "HEAD":
            await self.app(scope, receive, send)
            return

        async def send_without_body(message: Message) -> None:
            if message["type"] != "http.response.body":
                await send(message)
            elif not message.get("more_body", False):
                await send({"type": "http.response.body", "body": b"", "more_body": False})

        await self.app({**scope, "method": "GET"}, receive, send_without_body)
