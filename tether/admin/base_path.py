"""The API mapping key a custom domain puts before every path of the operators' API.

Behind a custom domain name whose API mapping has a key (``https://ops.example.com/tether``
mapped to the API with the key ``tether``), an HTTP API passes the key on in the event's
path: ``/tether/sessions``. With ``TETHER_ADMIN_BASE_PATH`` set to the key, a path under it
is served with the key as the app's root (the ASGI ``root_path``, as ``tether dev`` serves
the app under ``/admin``): the routes match, and the live page and the problem documents
name their paths under the key. A path without it (the API's own ``execute-api`` address)
is served as before.
"""

from __future__ import annotations

import functools
import os
import re

from starlette.types import ASGIApp, Receive, Scope, Send

from tether.errors import ConfigurationError

BASE_PATH_ENV = "TETHER_ADMIN_BASE_PATH"
# API Gateway's mapping keys: segments of letters, digits and . _ ~ - split by '/'.
_MAPPING_KEY = re.compile(r"[A-Za-z0-9._~-]+(?:/[A-Za-z0-9._~-]+)*")


@functools.lru_cache(maxsize=8)
def _normalized(value: str) -> str:
    key = value.strip().strip("/")
    if not key:
        return ""
    if not _MAPPING_KEY.fullmatch(key):
        raise ConfigurationError(
            f"{BASE_PATH_ENV} must be the custom domain's API mapping key, such as tether or"
            " ops/tether (letters, digits, '.', '_', '~' and '-', segments split by '/')"
        )
    return "/" + key


def configured_base_path() -> str:
    """``/key`` from the environment, or "" when none is set; a malformed value is a
    ConfigurationError naming the setting (never quoting it)."""
    return _normalized(os.environ.get(BASE_PATH_ENV, ""))


class UnderBasePath:
    """An app, serving a path under the configured key with the key as its root."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            root = configured_base_path()
            path: str = scope["path"]
            if root and (path == root or path.startswith(root + "/")):
                # The key alone is the app's root, as API Gateway passes "/" for its own.
                scope = {**scope, "root_path": root, "path": path if path != root else root + "/"}
        await self.app(scope, receive, send)
