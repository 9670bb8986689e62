"""The dependencies every route declares, as short ``Annotated`` aliases.

The store, the settings, the announcer and the @connections API come from
``tether.runtime``: the same per-container singletons the Lambda handlers use.
"""

from __future__ import annotations

import time
from typing import Annotated

from fastapi import Depends, Request, Security
from fastapi.dependencies.models import Dependant
from fastapi.routing import APIRoute
from fastapi.security import APIKeyHeader, HTTPAuthorizationCredentials, HTTPBearer

from tether import runtime
from tether.admin.auth import KEY_HEADER, Operator, authenticate, is_other_scheme
from tether.admin.errors import InvalidFieldError
from tether.aws.connections import ConnectionsApi
from tether.errors import AuthenticationError
from tether.handlers import lease_within_invocation
from tether.outbox import Announcer
from tether.settings import Settings
from tether.store import SessionStore

bearer = HTTPBearer(
    auto_error=False,
    scheme_name="OperatorBearer",
    description="The operator key, or an operator's Supabase access token.",
)
key_header = APIKeyHeader(
    name=KEY_HEADER, auto_error=False, scheme_name="OperatorKey", description="The operator key."
)


def get_settings() -> Settings:
    return runtime.settings()


def get_store() -> SessionStore:
    # FastAPI runs each request in a worker thread that may not outlive it: one
    # connection for the process, not one per thread.
    return runtime.shared_store()


def get_announcer() -> Announcer:
    return runtime.announcer()


def get_connections() -> ConnectionsApi | None:
    return runtime.connections()


SettingsDep = Annotated[Settings, Depends(get_settings)]
StoreDep = Annotated[SessionStore, Depends(get_store)]
AnnouncerDep = Annotated[Announcer, Depends(get_announcer)]
ConnectionsDep = Annotated[ConnectionsApi | None, Depends(get_connections)]


def get_announce_lease(request: Request, settings: SettingsDep) -> float:
    """How long a forced close's end stays leased to this request for its announcement:
    never past the Lambda invocation's time (Mangum passes its context), so an end whose
    invocation was killed mid-announcement goes to the sweep's next check."""
    return lease_within_invocation(
        request.scope.get("aws.context"), settings.announce_lease_seconds
    )


AnnounceLeaseDep = Annotated[float, Depends(get_announce_lease)]


def get_invocation_ends(request: Request) -> float | None:
    """When (``time.monotonic()``) this request's Lambda invocation is cut off (Mangum
    passes its context), or None off Lambda: a close keeps to it as well as to its own
    budget, since what came before it came out of the same time."""
    remaining = getattr(request.scope.get("aws.context"), "get_remaining_time_in_millis", None)
    if remaining is None:
        return None
    return time.monotonic() + float(remaining()) / 1000


InvocationEndsDep = Annotated[float | None, Depends(get_invocation_ends)]


def _checked(
    request: Request,
    settings: Settings,
    credentials: HTTPAuthorizationCredentials | None,
    key: str | None,
    *,
    other_scheme_is_none: bool,
) -> Operator:
    # A header sent twice is read once, the first: a second, wrong credential would be
    # passed over.
    if any(len(request.headers.getlist(name)) > 1 for name in ("authorization", KEY_HEADER)):
        raise AuthenticationError("repeated_credentials")
    authorization = request.headers.get("authorization")
    if (
        credentials is None
        and authorization is not None
        and not (other_scheme_is_none and is_other_scheme(authorization))
    ):
        # Another scheme (Basic, ...) or an empty Bearer, which the Bearer scheme reads
        # as none: beside a valid key header it would be passed over.
        raise AuthenticationError("unsupported_authorization")
    if key is None and KEY_HEADER in request.headers:
        # An empty key header, which the scheme reads as none: beside a valid Bearer it
        # would be passed over too.
        raise AuthenticationError("empty_operator_key")
    return authenticate(credentials.credentials if credentials else None, key, settings)


def require_operator(
    request: Request,
    settings: SettingsDep,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Security(bearer)],
    key: Annotated[str | None, Security(key_header)],
) -> Operator:
    return _checked(request, settings, credentials, key, other_scheme_is_none=False)


OperatorDep = Annotated[Operator, Depends(require_operator)]


def optional_operator(
    request: Request,
    settings: SettingsDep,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Security(bearer)],
    key: Annotated[str | None, Security(key_header)],
) -> Operator | None:
    """For a route that answers anyone and tells an operator more: None when no
    credential is sent. Credentials sent are checked as every route checks them: wrong
    ones are refused (401), never taken for none. An Authorization of another scheme
    than Bearer is not one of them: a load balancer or proxy with basic auth set for
    every request sends it with its health checks, which would all fail."""
    authorization = request.headers.getlist("authorization")
    foreign = len(authorization) == 1 and is_other_scheme(authorization[0])
    if KEY_HEADER not in request.headers and (not authorization or foreign):
        return None
    return _checked(request, settings, credentials, key, other_scheme_is_none=True)


MaybeOperatorDep = Annotated[Operator | None, Depends(optional_operator)]


def known_query_only(request: Request) -> None:
    """A query parameter the route does not take is refused, not passed over: a typo
    such as ``activ=true`` would otherwise list every session. Its name is not echoed."""
    route = request.scope.get("route")
    if not isinstance(route, APIRoute):
        return
    known = _query_names(route.dependant)
    if set(request.query_params) - known:
        takes = ", ".join(sorted(known)) if known else "no query parameters"
        raise InvalidFieldError("query", f"a parameter this route does not take; it takes {takes}")
    if len(request.query_params.multi_items()) > len(request.query_params):
        # No route takes a list: ?limit=5&limit=500 would be read as its last value.
        raise InvalidFieldError("query", "a parameter given more than once; give each once")


def _query_names(dependant: Dependant) -> set[str]:
    names = {field.alias for field in dependant.query_params}
    for each in dependant.dependencies:
        names |= _query_names(each)
    return names


_SAYS_NOTHING = frozenset({b"", b"{}"})
_LONGEST_SAYING_NOTHING = 16  # "{}" with room for whitespace around it


async def no_body(request: Request) -> None:
    """No route takes a body: one sent (``{"dry_run": true}`` to ``POST /sweep``) was
    passed over, and the request run as if it said nothing, a real sweep or close
    included. An empty body, or ``{}`` (some clients always send one), says nothing and
    is taken; anything longer is refused unread past what tells it apart."""
    length = request.headers.get("content-length", "").strip()
    if length.isdigit() and int(length) > _LONGEST_SAYING_NOTHING:
        raise _body_refused()
    # Read whatever the length says or not: on Lambda, Mangum hands the event's body
    # over without a Content-Length when the client sent none (HTTP/2 may not).
    received = b""
    async for chunk in request.stream():
        received += chunk
        if len(received) > _LONGEST_SAYING_NOTHING:
            raise _body_refused()
    if received.strip() not in _SAYS_NOTHING:
        raise _body_refused()


def _body_refused() -> InvalidFieldError:
    return InvalidFieldError(
        "body",
        "this route takes no body; what it takes are query parameters (see the API's schema)",
        location="body",
    )


OPERATOR_ROUTES = [Depends(require_operator), Depends(known_query_only), Depends(no_body)]
"""What every router but /health (``optional_operator``) declares: an operator, then no
query parameter the route does not take and no body (checked after the credentials, so
a caller without them learns nothing of the routes)."""
