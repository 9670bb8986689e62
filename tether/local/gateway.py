"""A local gateway that speaks API Gateway's WebSocket protocol and event shapes.

It invokes the real handlers in-process, with the events API Gateway sends:
- the handshake becomes ``$connect``; a non-2xx ``statusCode`` refuses it with that
  HTTP status, and the sub-protocol the handler returns is echoed;
- messages are routed on ``$request.body.<key>`` (``action`` by default), else
  ``$default``, each invoking its route on its own as it arrives (at most
  ``Limits.messages_in_flight`` of a connection's at once); a route's response body
  goes back to the client;
- a close by either side, or the network dropping, becomes ``$disconnect`` with
  ``disconnectStatusCode`` and ``disconnectReason``;
- API Gateway's limits: idle timeout, maximum duration, 32 KB frames and 128 KB
  messages (close 1009);
- the ``{stage}/@connections/{id}`` API on the same port (POST, GET, DELETE, 410 for gone
  ids), so boto3 works against it through ``endpoint_url``; as on AWS, a call must be
  signed (SigV4), and one naming a host that is not the gateway's own is refused; a
  POST to a client whose outbox is full (it does not read) gets 429;
- optionally, another ASGI application (the operators' API) for HTTP requests under
  ``/admin``, which it sees as its ``root_path``.

``disconnect_loss`` makes ``$disconnect`` best-effort, as on AWS: that fraction of
connections that drop without a close frame never produce one, and only the sweep
can end their sessions.
"""

from __future__ import annotations

import asyncio
import base64
import contextvars
import functools
import ipaddress
import json
import logging
import os
import random
import re
import time
import uuid
from collections.abc import Awaitable, Callable, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from uvicorn.protocols.utils import ClientDisconnected

from tether import limits
from tether.errors import InvalidInputError, TetherError
from tether.events import json_object
from tether.local.lambda_context import LocalLambdaContext
from tether.local.protocols import CLOSED_BY_CLIENT

logger = logging.getLogger("tether.gateway")

Handler = Callable[[dict[str, Any], Any], Any]
Scope = dict[str, Any]
Message = dict[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

FRAME_LIMIT = limits.GATEWAY_FRAME_BYTES
MESSAGE_LIMIT = limits.GATEWAY_MESSAGE_BYTES
CONNECTIONS_PATH = re.compile(r"^(?:/(?P<stage>[^/@]*))?/@connections/(?P<id>[^/]+)$")
ADMIN_PREFIX = "/admin"
SIGV4_SCHEME = b"AWS4-HMAC-SHA256 "
"""How every SigV4-signed request's Authorization header starts (boto3's, the AWS
CLI's, curl --aws-sigv4's)."""

# Close codes and the reasons API Gateway gives with them.
GOING_AWAY = 1001
NO_STATUS = 1005
ABNORMAL = 1006
TOO_BIG = 1009
IDLE_REASON = "Idle timeout exceeded"
DURATION_REASON = "Maximum connection duration exceeded"
DELETED_REASON = "Connection closed by the @connections API"
HANDSHAKE_LOST_REASON = "Connection closed before the handshake completed"
FAULTS_REREAD_SECONDS = 0.5
HANDLER_THREADS = 64
"""Handler invocations running at once, each on a thread of the gateway's own (as each
Lambda invocation has its container), so none waits on the loop's small default pool or
on the dev's sweep. tether keeps one database connection per thread, as a container
does: 64, with the sweep's, the lock's and the operators' API's, stay well within the
100 a Postgres allows by default. Past them, an invocation waits for a thread."""
CLOSE_WAIT_SECONDS = 5.0
"""How long a close frame may wait on a client that is not reading."""
OUTBOX_BYTES = 1024 * 1024
"""What may wait for a client that does not read, past what the sockets hold: eight
messages of API Gateway's largest. Its own buffer's size is not published."""


class HandlerExitedError(Exception):
    """A handler ended its thread with SystemExit or KeyboardInterrupt: a failed
    invocation, as any exception of its own is."""


@dataclass(frozen=True)
class Limits:
    idle_timeout_seconds: float = limits.GATEWAY_IDLE_TIMEOUT_SECONDS
    max_duration_seconds: float = limits.GATEWAY_MAX_CONNECTION_SECONDS
    frame_bytes: int = FRAME_LIMIT
    message_bytes: int = MESSAGE_LIMIT
    messages_per_second: float = 100.0
    """Per connection, with a burst of twice as many: a client flooding its route
    gets "Too Many Requests" frames, and the route is not invoked for them."""
    messages_in_flight: int = 10
    """Per connection: its messages whose handlers are running at once. Past them, its
    next message is read when one has answered (the idle timeout stands still)."""
    outbox_bytes: int = OUTBOX_BYTES
    """Per connection: what waits to be sent to it. An @connections POST that would
    pass it is refused with 429, as API Gateway refuses one when "the WebSocket client
    side buffer is full"."""


@dataclass
class RateLimit:
    """A token bucket: ``rate`` per second, holding at most ``burst``."""

    rate: float
    burst: float
    tokens: float = 0.0
    updated: float = field(default_factory=time.monotonic)

    def __post_init__(self) -> None:
        self.tokens = self.burst

    def allow(self) -> bool:
        now = time.monotonic()
        self.tokens = min(self.burst, self.tokens + (now - self.updated) * self.rate)
        self.updated = now
        if self.tokens < 1:
            return False
        self.tokens -= 1
        return True


@dataclass
class LocalConnection:
    connection_id: str
    connected_at: datetime
    source_ip: str
    user_agent: str
    last_active_at: datetime
    rate: RateLimit
    outbox: asyncio.Queue[Message] = field(default_factory=asyncio.Queue)
    """What goes to the client, in order: @connections POSTs, route responses."""
    outbox_bytes: int = 0
    """The size of what the outbox holds."""
    closing: asyncio.Event = field(default_factory=asyncio.Event)
    """Set when the gateway must close the connection (DELETE, a message too big):
    a close never waits behind data a client does not read."""
    close_with: tuple[int, str] = (GOING_AWAY, DELETED_REASON)

    def queue(self, message: Message) -> None:
        """Put a message in the outbox, counted."""
        self.outbox_bytes += _outgoing_size(message)
        self.outbox.put_nowait(message)

    async def next_outgoing(self) -> Message:
        """The outbox's next message, once there is one; no longer counted."""
        return self._taken(await self.outbox.get())

    def next_outgoing_nowait(self) -> Message:
        return self._taken(self.outbox.get_nowait())

    def _taken(self, message: Message) -> Message:
        self.outbox_bytes -= _outgoing_size(message)
        return message

    def request_close(self, code: int, reason: str) -> None:
        if not self.closing.is_set():
            self.close_with = (code, reason)
            self.closing.set()


class Faults:
    """Faults a test run injects (`tether chaos`): read from a small JSON file, such as
    ``{"connections_throttle": 0.5}`` (half of the @connections calls answer 429), and
    read again as it changes."""

    def __init__(self, path: Path | None) -> None:
        self._path = path
        self._read_at = 0.0
        self._current: dict[str, Any] = {}
        self._problem: str | None = None
        """Why the last read of the file was not used, if it was not."""
        self._said = False
        """Whether that has been said."""
        if path is not None:
            # At start, a file that is missing or not a JSON object is a mistake, not
            # "no faults", and the flag's value, refused as one (exit 2).
            self._current = _read_faults(path)
            self._read_at = time.monotonic()

    def _values(self) -> dict[str, Any]:
        if self._path is None:
            return {}
        now = time.monotonic()
        if now - self._read_at > FAULTS_REREAD_SECONDS:
            self._read_at = now
            self._current = self._read_again(self._path)
        return self._current

    def _read_again(self, path: Path) -> dict[str, Any]:
        """The faults the file names now. One that no longer names faults as at start
        keeps those read before: caught mid-rewrite, it will again; changed by hand to
        something no fault is (a typo), it read as no faults and said nothing, the run
        looking like a run under faults. Said once it is so on two reads in a row (a
        rewrite is over by the next), and again each time the reason changes."""
        try:
            loaded = _read_faults(path)
        except InvalidInputError as exc:
            problem = str(exc)
            if problem == self._problem and not self._said:
                logger.warning(
                    "the fault file names no faults now; the faults read before stay",
                    extra={"problem": problem, "faults": self._current},
                )
                self._said = True
            elif problem != self._problem:
                self._problem, self._said = problem, False
            return self._current
        self._problem, self._said = None, False
        return loaded

    def throttled(self) -> bool:
        # Every share read is a number from 0 to 1 (_check_faults).
        share: float = self._values().get("connections_throttle", 0)
        return random.random() < share  # noqa: S311


def _read_faults(path: Path) -> dict[str, Any]:
    """The faults the file names, or InvalidInputError saying why it names none."""
    try:
        loaded = json.loads(path.read_text())
    except OSError as exc:
        why = (exc.strerror or type(exc).__name__).lower()
        raise InvalidInputError(f"--fault-file {path}: cannot be read: {why}") from None
    except ValueError as exc:
        raise InvalidInputError(f"--fault-file {path}: not JSON ({exc})") from None
    if not isinstance(loaded, dict):
        raise InvalidInputError(
            f'--fault-file {path}: not a JSON object, such as {{"connections_throttle": 0.5}}'
        )
    _check_faults(path, loaded)
    return loaded


FAULT_SHARES = ("connections_throttle",)
"""The faults a fault file may name, each the share (0 to 1) of the calls it hits."""


def _check_faults(path: Path, faults: dict[str, Any]) -> None:
    """A fault misspelt, or a share that is no number from 0 to 1, would inject nothing
    and say nothing: the run would look like a run under faults."""
    unknown = sorted(set(faults) - set(FAULT_SHARES))
    if unknown:
        raise InvalidInputError(
            f"--fault-file {path}: no fault named {', '.join(map(repr, unknown))}; the faults"
            f" are {', '.join(FAULT_SHARES)}"
        )
    for name, share in faults.items():
        if isinstance(share, bool) or not isinstance(share, int | float) or not 0 <= share <= 1:
            raise InvalidInputError(
                f"--fault-file {path}: {name} must be a number from 0 to 1, got {share!r}"
            )


@dataclass
class GatewayStats:
    opened: int = 0
    refused: int = 0
    ended: int = 0
    disconnects_lost: int = 0
    disconnects_failed: int = 0
    """$disconnect invocations that raised or answered an error: their sessions stay
    active until a sweep ends them."""


def _succeeded(invocation: Future[Any]) -> bool:
    """Whether a finished handler's thread answered 2xx (not dropped, not raised)."""
    if invocation.cancelled() or invocation.exception() is not None:
        return False
    return 200 <= _status_code(invocation.result()) < 300


def _route_answer(route_key: str, response: object) -> str | None:
    """What a route's handler answers its client: the ``body`` string of the dict it
    returns. Anything else is sent to no one; said, since a handler returning its
    answer as a dict, bytes or a bare string would otherwise wonder where it went."""
    if response is None:
        return None
    if isinstance(response, dict):
        body = response.get("body")
        if body is None or isinstance(body, str):
            return body
        shape = f"a body of type {type(body).__name__}"
    else:
        shape = f"a {type(response).__name__}, not a dict"
    logger.warning(
        "a route's answer was not sent: a handler answers its client with"
        ' {"statusCode": 200, "body": "<text>"} (json.dumps a JSON answer)',
        extra={"route_key": route_key, "returned": shape},
    )
    return None


def _status_code(response: object) -> int:
    """The status a handler answered, as API Gateway reads it: 200 when it names none,
    500 when what it names is no status."""
    if not isinstance(response, dict):
        return 200
    try:
        return int(response.get("statusCode", 200))
    except (TypeError, ValueError):
        return 500


def new_connection_id() -> str:
    # API Gateway ids are 16 base64 characters ending in '='; url-safe here so
    # they sit in an @connections path unescaped.
    return base64.urlsafe_b64encode(os.urandom(11)).decode()


def _now_ms() -> int:
    return int(time.time() * 1000)


def _iso(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _header_maps(scope: Scope) -> tuple[dict[str, str], dict[str, list[str]]]:
    single: dict[str, str] = {}
    multi: dict[str, list[str]] = {}
    for raw_name, raw_value in scope.get("headers", []):
        name = raw_name.decode("latin-1")
        value = raw_value.decode("latin-1")
        # API Gateway keeps the client's spelling; HTTP/1.1 servers see it lowercased.
        title = "-".join(part.capitalize() for part in name.split("-"))
        multi.setdefault(title, []).append(value)
        single[title] = ", ".join(multi[title])
    return single, multi


def _query_maps(scope: Scope) -> tuple[dict[str, str] | None, dict[str, list[str]] | None]:
    from urllib.parse import parse_qsl  # noqa: PLC0415

    pairs = parse_qsl(scope.get("query_string", b"").decode("latin-1"), keep_blank_values=True)
    if not pairs:
        return None, None
    multi: dict[str, list[str]] = {}
    for name, value in pairs:
        multi.setdefault(name, []).append(value)
    return {name: values[-1] for name, values in multi.items()}, multi


class LocalGateway:
    """An ASGI application: WebSocket connections plus the @connections API."""

    def __init__(
        self,
        *,
        connect: Handler,
        disconnect: Handler,
        routes: Mapping[str, Handler],
        limits: Limits = Limits(),
        route_selection_key: str = "action",
        api_id: str = "local",
        stage: str = "local",
        domain_name: str = "localhost",
        disconnect_loss: float = 0.0,
        on_event: Callable[[str, str], None] | None = None,
        admin: Callable[..., Awaitable[None]] | None = None,
        faults: Faults | None = None,
        handler_threads: int = HANDLER_THREADS,
    ) -> None:
        if "$default" not in routes:
            raise ValueError("a $default route is required")
        self._handlers = ThreadPoolExecutor(handler_threads, thread_name_prefix="tether-handler")
        # $disconnects the stop cut short, judged once their threads are done (close()).
        self._cut_short: list[tuple[str, Future[Any]]] = []
        # Each invocation submitted and not yet done, by its function's name.
        self._invocations: dict[Future[Any], str] = {}
        self._connect = connect
        self._disconnect = disconnect
        self._routes = dict(routes)
        self.limits = limits
        self.faults = faults or Faults(None)
        self._selection_key = route_selection_key
        self.api_id = api_id
        self.stage = stage
        self.domain_name = domain_name
        self._disconnect_loss = disconnect_loss
        self._on_event = on_event
        self._admin = admin
        self.connections: dict[str, LocalConnection] = {}
        self.stats = GatewayStats()

    # --- events shaped as API Gateway sends them ---------------------------------

    def _context(
        self, connection: LocalConnection, route_key: str, event_type: str
    ) -> dict[str, Any]:
        request_id = base64.urlsafe_b64encode(os.urandom(12)).decode()
        return {
            "routeKey": route_key,
            "eventType": event_type,
            "extendedRequestId": request_id,
            "requestTime": datetime.now(UTC).strftime("%d/%b/%Y:%H:%M:%S +0000"),
            "messageDirection": "IN",
            "stage": self.stage,
            "connectedAt": int(connection.connected_at.timestamp() * 1000),
            "requestTimeEpoch": _now_ms(),
            "identity": {"sourceIp": connection.source_ip, "userAgent": connection.user_agent},
            "requestId": request_id,
            "domainName": self.domain_name,
            "connectionId": connection.connection_id,
            "apiId": self.api_id,
        }

    def _submit(self, name: str, handler: Handler, event: dict[str, Any]) -> Future[Any]:
        context = LocalLambdaContext(function_name=f"tether-{name}")
        # As asyncio.to_thread calls it (in a copy of this context), on the handlers' pool.
        call = functools.partial(contextvars.copy_context().run, handler, event, context)
        invocation = self._handlers.submit(call)
        self._invocations[invocation] = name
        invocation.add_done_callback(lambda done: self._invocations.pop(done, None))
        return invocation

    async def _invoke(self, name: str, handler: Handler, event: dict[str, Any]) -> Any:
        invocation = self._submit(name, handler, event)
        try:
            return await asyncio.wrap_future(invocation)
        except (SystemExit, KeyboardInterrupt) as exc:
            # A handler that exits (sys.exit) fails its own invocation, as Lambda's
            # runtime says (Runtime.ExitError); raised on in the loop, it would stop the
            # whole gateway, every client cut off. Only the handler's own: a Ctrl-C is not.
            if invocation.cancelled() or invocation.exception() is not exc:
                raise
            raise HandlerExitedError(f"the {name} handler exited ({exc!r})") from exc

    def close(self) -> None:
        """Once the server has stopped: an invocation still waiting for a thread is
        dropped, and those running (cut short by a second Ctrl-C, say) are waited for,
        so none outlives the stores and the database they use. A $disconnect cut short
        counts as failed unless its thread went on to end the session."""
        running = sorted(
            name for invocation, name in list(self._invocations.items()) if invocation.running()
        )
        if running:
            # Else the stop hangs, saying nothing, as long as a slow handler takes.
            logger.warning(
                "stopping: waiting for the invocations still running to return, as their"
                " Lambdas would; Ctrl-C again to stop without them",
                extra={"running": running},
            )
        self._handlers.shutdown(wait=True, cancel_futures=True)
        for connection_id, invocation in self._cut_short:
            if not _succeeded(invocation):
                self.stats.disconnects_failed += 1
                logger.warning(
                    "$disconnect cut short by the stop; a sweep ends the session",
                    extra={"connection_id": connection_id},
                )
        self._cut_short.clear()

    def _notify(self, what: str, connection_id: str) -> None:
        if self._on_event is not None:
            self._on_event(what, connection_id)

    # --- ASGI entry ----------------------------------------------------------------

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            if scope["type"] == "websocket":
                await self._websocket(scope, receive, send)
            elif scope["type"] == "http":
                await self._http(scope, receive, send)
            elif scope["type"] == "lifespan":
                await self._lifespan(receive, send)
        except asyncio.CancelledError:
            # Only the server's forced stop (a second Ctrl-C) cancels these tasks, and
            # what it cut short is said where it was cut. Raised on, it would be
            # printed as a traceback per connection, as if the gateway had failed.
            return

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return

    # --- WebSocket -------------------------------------------------------------------

    async def _websocket(self, scope: Scope, receive: Receive, send: Send) -> None:
        first = await receive()
        if first["type"] != "websocket.connect":
            return
        headers, multi_headers = _header_maps(scope)
        query, multi_query = _query_maps(scope)
        client = scope.get("client") or ("127.0.0.1", 0)
        now = datetime.now(UTC)
        connection = LocalConnection(
            connection_id=new_connection_id(),
            connected_at=now,
            source_ip=str(client[0]),
            user_agent=headers.get("User-Agent", ""),
            last_active_at=now,
            rate=RateLimit(
                rate=self.limits.messages_per_second, burst=2 * self.limits.messages_per_second
            ),
        )
        event: dict[str, Any] = {
            "headers": headers,
            "multiValueHeaders": multi_headers,
            "requestContext": self._context(connection, "$connect", "CONNECT"),
            "isBase64Encoded": False,
        }
        if query is not None:
            event["queryStringParameters"] = query
            event["multiValueQueryStringParameters"] = multi_query
        try:
            response = await self._invoke("connect", self._connect, event)
        except Exception:  # a crashing handler is a 500 at the handshake, as on AWS
            logger.exception("$connect handler raised")
            response = {"statusCode": 500}
        status = _status_code(response)
        if not 200 <= status < 300:
            self.stats.refused += 1
            await self._deny(send, status, response)
            return
        response_headers = (response.get("headers") or {}) if isinstance(response, dict) else {}
        subprotocol = next(
            (v for k, v in response_headers.items() if k.lower() == "sec-websocket-protocol"), None
        )
        # $connect has opened the session: from here on, whatever happens (the client
        # gone before the handshake completes, a crash, shutdown), exactly one
        # $disconnect follows, as API Gateway sends it.
        self.stats.opened += 1
        code, reason = ABNORMAL, HANDSHAKE_LOST_REASON
        try:
            await send({"type": "websocket.accept", "subprotocol": subprotocol})
            self.connections[connection.connection_id] = connection
            self._notify("opened", connection.connection_id)
            code, reason = 1011, "Internal server error"
            code, reason = await self._serve(connection, scope, receive, send)
        except ClientDisconnected:
            logger.info(
                "client gone during the handshake",
                extra={"connection_id": connection.connection_id},
            )
        finally:
            # Whatever ended the connection, the gateway forgets it and (best effort)
            # tells $disconnect, as API Gateway does.
            self.connections.pop(connection.connection_id, None)
            await self._deliver_disconnect(connection, code, reason)

    async def _deny(self, send: Send, status: int, response: Any) -> None:
        body = b""
        if isinstance(response, dict) and isinstance(response.get("body"), str):
            body = response["body"].encode()
        await send(
            {
                "type": "websocket.http.response.start",
                "status": status,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(body)).encode()),
                ],
            }
        )
        await send({"type": "websocket.http.response.body", "body": body})

    async def _serve(
        self, connection: LocalConnection, scope: Scope, receive: Receive, send: Send
    ) -> tuple[int, str]:
        """Pump messages both ways until the connection ends; its close code and reason."""
        started = time.monotonic()
        last_active = started
        inbound: asyncio.Future[Message] | None = asyncio.ensure_future(receive())
        outbound = asyncio.ensure_future(connection.next_outgoing())
        closer = asyncio.ensure_future(connection.closing.wait())
        # One send at a time, waited for beside the rest: a client that reads nothing
        # holds its own data back, never its close or its limits. Nothing more is read
        # from it meanwhile (uvicorn reads on only when asked): its messages' answers
        # would otherwise pile up unsent, without bound.
        sending: asyncio.Future[None] | None = None
        # Each message is routed on its own, as API Gateway invokes a Lambda per
        # message: the client's next messages are read (its activity) while a slow
        # handler runs. At most so many at once, or a client sending faster than its
        # handlers answer would hold threads, and answers, without bound.
        routing: set[asyncio.Task[None]] = set()
        held = False  # its next message waits on the gateway's handlers, not on it
        try:
            while True:
                now = time.monotonic()
                # A client is not idle while its messages wait on the gateway.
                idle_left = self.limits.idle_timeout_seconds - (0 if held else now - last_active)
                duration_left = self.limits.max_duration_seconds - (now - started)
                if idle_left <= 0 or duration_left <= 0:
                    connection.request_close(
                        GOING_AWAY, IDLE_REASON if idle_left <= 0 else DURATION_REASON
                    )
                if connection.closing.is_set():
                    code, reason = connection.close_with
                    await self._flush_then_close(connection, send, sending, outbound)
                    return code, reason
                waiting = {closer, sending or outbound, *routing}
                done, _ = await asyncio.wait(
                    waiting | ({inbound} if inbound else set()),
                    timeout=min(idle_left, duration_left),
                    return_when=asyncio.FIRST_COMPLETED,
                )
                _collect(routing, done)
                if sending is not None and sending in done:
                    sending = None
                    outbound = asyncio.ensure_future(connection.next_outgoing())
                elif sending is None and outbound in done:
                    sending = asyncio.ensure_future(_send_quietly(send, outbound.result()))
                if inbound is not None and inbound in done:
                    message = inbound.result()
                    if message["type"] == "websocket.disconnect":
                        code = int(message.get("code") or 1005)
                        # The reason is the gateway's own words, never the client's
                        # text: "idle" from a client must not read as the gateway's
                        # idle timeout, nor its 1012 as the gateway's shutdown.
                        return code, _close_reason(code, by_client=CLOSED_BY_CLIENT in scope)
                    last_active = time.monotonic()
                    connection.last_active_at = datetime.now(UTC)
                    routing.add(asyncio.create_task(self._route(connection, message)))
                    inbound = None
                if held and len(routing) < self.limits.messages_in_flight:
                    # Its idle time counts from when the gateway can read it again: a
                    # message that waited meanwhile is read before any idle check.
                    last_active = max(last_active, time.monotonic())
                held = len(routing) >= self.limits.messages_in_flight
                if inbound is None and sending is None and not held:
                    inbound = asyncio.ensure_future(receive())
        finally:
            # A handler still running goes on in its thread, as a Lambda would; its
            # answer has nowhere to go.
            for task in (inbound, outbound, closer, sending, *routing):
                if task is not None:
                    task.cancel()

    async def _flush_then_close(
        self,
        connection: LocalConnection,
        send: Send,
        sending: asyncio.Future[None] | None,
        outbound: asyncio.Future[Message],
    ) -> None:
        """What was queued before the close goes first (a "goodbye" posted before a
        DELETE), for as long as a close frame may wait; then the close."""

        async def flush() -> None:
            if sending is not None:
                await sending
            elif outbound.done():
                await _send_quietly(send, outbound.result())
            while not connection.outbox.empty():
                await _send_quietly(send, connection.next_outgoing_nowait())

        # One wait for both: a client that did not take its messages in time will not
        # take the close frame after them either.
        deadline = time.monotonic() + CLOSE_WAIT_SECONDS
        try:
            await asyncio.wait_for(flush(), CLOSE_WAIT_SECONDS)
        except TimeoutError:
            logger.info("queued messages not taken before the close")
        code, reason = connection.close_with
        await self._close(send, code, reason, wait=max(0.0, deadline - time.monotonic()))

    async def _close(
        self, send: Send, code: int, reason: str, *, wait: float = CLOSE_WAIT_SECONDS
    ) -> None:
        close = {"type": "websocket.close", "code": code, "reason": reason}
        try:
            await asyncio.wait_for(_send_quietly(send, close), wait)
        except TimeoutError:
            # A client that reads nothing never takes its close frame: the connection
            # ends all the same, and its $disconnect follows.
            logger.info("close frame not taken in time", extra={"code": code})

    async def _route(self, connection: LocalConnection, message: Message) -> None:
        text = message.get("text")
        data = message.get("bytes")
        body = text if text is not None else (data or b"").decode("utf-8", errors="replace")
        size = len(body.encode()) if text is not None else len(data or b"")
        if size > self.limits.message_bytes:
            # The protocol enforces this first; kept for messages it lets through.
            connection.request_close(TOO_BIG, "Message too big")
            return
        if not connection.rate.allow():
            connection.queue(
                {
                    "type": "websocket.send",
                    "text": json.dumps(
                        {"message": "Too Many Requests", "connectionId": connection.connection_id}
                    ),
                },
            )
            return
        route_key = "$default"
        selected = json_object(body)  # hostile JSON selects $default, as on AWS
        if selected is not None:
            value = selected.get(self._selection_key)
            if isinstance(value, str) and value in self._routes:
                route_key = value
        event: dict[str, Any] = {
            "requestContext": {
                **self._context(connection, route_key, "MESSAGE"),
                "messageId": base64.urlsafe_b64encode(os.urandom(12)).decode(),
            },
            "body": body if text is not None else base64.b64encode(data or b"").decode(),
            "isBase64Encoded": text is None,
        }
        try:
            response = await self._invoke(route_key, self._routes[route_key], event)
        except Exception:
            logger.exception("route handler raised", extra={"route_key": route_key})
            error = {
                "message": "Internal server error",
                "connectionId": connection.connection_id,
                "requestId": event["requestContext"]["requestId"],
            }
            connection.queue({"type": "websocket.send", "text": json.dumps(error)})
            return
        answer = _route_answer(route_key, response)
        if answer is not None:
            connection.queue({"type": "websocket.send", "text": answer})

    async def _deliver_disconnect(
        self, connection: LocalConnection, code: int, reason: str
    ) -> None:
        self.stats.ended += 1
        if code == ABNORMAL and random.random() < self._disconnect_loss:  # noqa: S311 - simulation
            # Best-effort, as on AWS: this $disconnect never comes.
            self.stats.disconnects_lost += 1
            self._notify("lost", connection.connection_id)
            return
        event = {
            "headers": {"Host": self.domain_name},
            "multiValueHeaders": {"Host": [self.domain_name]},
            "requestContext": {
                **self._context(connection, "$disconnect", "DISCONNECT"),
                "disconnectStatusCode": code,
                "disconnectReason": reason,
            },
            "isBase64Encoded": False,
        }
        invocation = self._submit("disconnect", self._disconnect, event)
        try:
            response = await asyncio.wrap_future(invocation)
        except asyncio.CancelledError:
            # Cut short (a second Ctrl-C): one still waiting for a thread never runs, one
            # running goes on (close() waits for it) and may end its session all the same,
            # or not (the database hanging). close() counts those that did not, so the
            # last line says how many sessions a sweep must end.
            self._cut_short.append((connection.connection_id, invocation))
            raise
        except TetherError as exc:
            # A failure the handler knows (the database down) and has logged itself:
            # failed, as on AWS, and not retried; no traceback to read.
            logger.error(  # noqa: TRY400 - a known failure, said in a line
                "$disconnect failed",
                extra={"connection_id": connection.connection_id, "error": str(exc)},
            )
            response = {"statusCode": 500}
        except Exception:  # as on AWS, a failed $disconnect is logged and not retried
            logger.exception(
                "$disconnect handler raised", extra={"connection_id": connection.connection_id}
            )
            response = {"statusCode": 500}
        if not 200 <= _status_code(response) < 300:
            self.stats.disconnects_failed += 1
        self._notify("ended", connection.connection_id)

    # --- the @connections API --------------------------------------------------------

    async def _bounded_body(self, scope: Scope, receive: Receive) -> bytes | None:
        """The body, or None when it exceeds the message limit: refused as soon as its
        declared length says so, or while it streams in."""
        limit = self.limits.message_bytes
        for name, value in scope.get("headers", []):
            if name.lower() == b"content-length":
                try:
                    if int(value) > limit:
                        return None
                except ValueError:
                    return None
        return await _read_bounded(receive, limit)

    def _refused_caller(self, scope: Scope) -> tuple[str, str, str] | None:
        """Why a caller may not use the @connections API (in the log's words, then API
        Gateway's message and error type); None when it may."""
        if not self._is_own_host(scope):
            # DNS rebinding: a page on another site whose name now resolves to this
            # machine reaches the gateway under that name.
            return (
                "the host it names is not this gateway's: call it by its --host, localhost"
                " or an IP address",
                "Forbidden",
                "ForbiddenException",
            )
        if not _signed(scope):
            return (
                "not signed",
                "Missing Authentication Token",
                "MissingAuthenticationTokenException",
            )
        return None

    def _is_own_host(self, scope: Scope) -> bool:
        """Whether the request names this gateway: its own host name, ``localhost``, or
        an IP address (its port aside). A name another site controls (DNS rebinding) is
        none of them; an address cannot be rebound."""
        own = _host_name(self.domain_name)
        for name, value in scope.get("headers", []):
            if name.lower() == b"host":
                host = _host_name(value.decode("latin-1"))
                return host is not None and (host in (own, "localhost") or _is_address(host))
        return False

    async def _http(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope.get("path", "")
        if self._admin is not None and (path + "/").startswith(ADMIN_PREFIX + "/"):
            root = scope.get("root_path", "") + ADMIN_PREFIX
            if path == ADMIN_PREFIX:
                # The app's root, as API Gateway passes an empty path on: "/".
                path = ADMIN_PREFIX + "/"
            await self._admin({**scope, "path": path, "root_path": root}, receive, send)
            return
        refusal = self._refused_caller(scope)
        if refusal is not None:  # before the body is read: none of it is wanted
            why, message, error_type = refusal
            # A warning: a caller of the developer's own (a container calling the
            # laptop by name, say) learns here why, which a 403 alone does not say.
            logger.warning("@connections call refused", extra={"path": path, "why": why})
            await _json(send, 403, {"message": message}, error_type=error_type)
            return
        try:
            body = await self._bounded_body(scope, receive)
        except _RequestCutOff:
            # Half a message is not a message: nothing is delivered, nobody to answer.
            logger.info("request cut off before its body was whole", extra={"path": path})
            return
        if body is None:
            await _json(
                send,
                413,
                {"message": f"Payload too large: the limit is {self.limits.message_bytes} bytes"},
                error_type="PayloadTooLargeException",
            )
            return
        match = CONNECTIONS_PATH.match(scope.get("path", ""))
        if match is None:
            await _json(send, 404, {"message": "Not Found"})
            return
        if match["stage"] != self.stage:
            # API Gateway knows no such stage: code that posts to the wrong one fails
            # here as it would on AWS, not only once deployed. Said at the default level,
            # as a refused host is: a bare 403 does not say that the endpoint lacks
            # /local, or names the deployed stage.
            logger.warning(
                "@connections call refused",
                extra={
                    "path": path,
                    "why": (
                        f"stage {match['stage']!r} is not this gateway's"
                        if match["stage"]
                        else "the path names no stage"
                    )
                    + f": its stage is {self.stage!r}, its endpoint ending in /{self.stage}",
                },
            )
            await _json(send, 403, {"message": "Forbidden"}, error_type="ForbiddenException")
            return
        if self.faults.throttled():
            await _json(
                send, 429, {"message": "Too Many Requests"}, error_type="LimitExceededException"
            )
            return
        connection = self.connections.get(match["id"])
        if connection is None:
            await _json(send, 410, {"message": "Gone"}, error_type="GoneException")
            return
        await self._operate(connection, scope["method"], body, send)

    async def _operate(
        self, connection: LocalConnection, method: str, body: bytes, send: Send
    ) -> None:
        """A call on a connection the gateway has: GetConnection, PostToConnection or
        DeleteConnection, by its method."""
        if method == "GET":
            await _json(
                send,
                200,
                {
                    "connectedAt": _iso(connection.connected_at),
                    "lastActiveAt": _iso(connection.last_active_at),
                    "identity": {
                        "sourceIp": connection.source_ip,
                        "userAgent": connection.user_agent,
                    },
                },
            )
        elif method == "POST":
            if connection.outbox_bytes + len(body) > self.limits.outbox_bytes:
                # A client that does not read: the sender is told, as on AWS, and may
                # retry (botocore's standard mode does), rather than the gateway holding
                # whatever it is sent.
                logger.info(
                    "@connections POST refused: the client is not taking its messages",
                    extra={"connection_id": connection.connection_id},
                )
                await _json(
                    send, 429, {"message": "Too Many Requests"}, error_type="LimitExceededException"
                )
                return
            try:
                outgoing: Message = {"type": "websocket.send", "text": body.decode("utf-8")}
            except UnicodeDecodeError:
                outgoing = {"type": "websocket.send", "bytes": body}
            connection.queue(outgoing)
            await _json(send, 200, None)
        elif method == "DELETE":
            connection.request_close(GOING_AWAY, DELETED_REASON)
            await _json(send, 204, None)
        else:
            await _json(send, 403, {"message": "Forbidden"}, error_type="ForbiddenException")


def _signed(scope: Scope) -> bool:
    """Whether the call carries a SigV4 Authorization header, as boto3 always sends.

    The signature is not checked: the credentials are local and arbitrary. The header's
    presence is what keeps web pages out: a page on another site can send a "simple"
    request (a form, fetch in no-cors mode) without asking, but no Authorization header
    with it; to add one, the browser first asks the gateway (a CORS preflight), which
    the gateway never approves. A presigned URL (the signature in the query) is a
    simple request, so it is not taken either."""
    return any(
        name.lower() == b"authorization" and value.startswith(SIGV4_SCHEME)
        for name, value in scope.get("headers", [])
    )


def _host_name(host: str) -> str | None:
    """The name in a Host header, lowercased, without its port or an IPv6 address's
    brackets; None for one that is not a host."""
    try:
        name = urlsplit(f"//{host}").hostname
    except ValueError:
        return None
    return name or None


def _is_address(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


def _outgoing_size(message: Message) -> int:
    text = message.get("text")
    if text is None:
        return len(message.get("bytes") or b"")
    # A route's answer may not be valid text (a lone surrogate): counted all the same,
    # its send fails later, where it is said.
    return len(text.encode("utf-8", "surrogatepass"))


class _RequestCutOff(Exception):
    """The client left before its request's body was whole."""


async def _read_bounded(receive: Receive, limit: int) -> bytes | None:
    """The request body, or None as soon as it passes ``limit``: nothing more is kept."""
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise _RequestCutOff
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            return None
        chunks.append(chunk)
        if not message.get("more_body"):
            return b"".join(chunks)


def _collect(routing: set[asyncio.Task[None]], done: set[Any]) -> None:
    """Forget the routes that have answered; a fault of the gateway's own (not a
    handler's: those are answered as errors) ends the connection, 1011."""
    for routed in routing & done:
        routing.discard(routed)
        routed.result()


async def _send_quietly(send: Send, message: Message) -> None:
    """Send, unless the peer is already gone: its disconnect arrives on the inbound side."""
    try:
        await send(message)
    except (OSError, RuntimeError):
        logger.debug("not sent: the connection is already gone", extra={"type": message["type"]})
    except Exception:
        # A message that cannot be sent (a route's body that is not valid text, say):
        # said, and the connection carries on; unseen, the send would fail in silence.
        logger.exception("a message could not be sent", extra={"type": message["type"]})


# Closes the server started below the gateway's own code: a frame or message over the
# limit, a frame that breaks the protocol, the server shutting down.
_SERVER_CLOSE_REASONS = {
    1002: "Protocol error",
    1007: "Invalid frame payload data",
    1009: "Message too big",
    1012: "Service restart",
}


def _close_reason(code: int, *, by_client: bool) -> str:
    """The reason for a close the gateway's own code did not send: the client's close
    frame (with or without a code), the connection dropping (1006), or the server."""
    if code == ABNORMAL:
        return "Connection closed abnormally"
    if by_client:
        if code == NO_STATUS:
            return "Client-side close frame without status code"
        return "Client-side close frame status code"
    return _SERVER_CLOSE_REASONS.get(code, "Connection closed by the server")


async def _json(send: Send, status: int, payload: object, *, error_type: str | None = None) -> None:
    body = b"" if payload is None else json.dumps(payload).encode()
    headers = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(body)).encode()),
        (b"x-amzn-requestid", str(uuid.uuid4()).encode()),
    ]
    if error_type:
        headers.append((b"x-amzn-errortype", error_type.encode()))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})
