"""uvicorn's protocols, held to what API Gateway allows.

- WebSocket: 32 KB frames (a larger one closes with 1009), 1007 for a text message that
  is not UTF-8 (said in one line), 1006 for a peer that
  vanished without a close frame, 400 for a handshake websockets cannot take (a header
  that is not ASCII, or holds a control character, a body), what a client still sends
  after a 1009 or a 400 read and dropped (16 MiB at most), nothing more read from a peer
  that pings without reading its pongs, and a closing connection dropped after 5 s
  if its client reads nothing.
- HTTP, before a request is complete: each request, a handshake or the next one on a
  kept-alive connection, must arrive whole (headers and body) within a timeout of its
  first byte (408), its request line and header values API Gateway's 10,240 bytes
  (431), a handshake's URL API Gateway's
  4096 characters (414), and past a maximum of open connections new
  WebSockets are refused with 503 (plain HTTP requests, the @connections API and
  /admin, have a reserve of their own past it, then are refused too), so the process
  never runs out of file descriptors and keeps serving the connections it has. Each
  refusal's body is a JSON ``message`` saying the limit (and what the request came to,
  where known), but a HEAD's.
- HTTP, once answered: a connection closed while its client is still sending (the rest
  of a body refused before it was whole, on a request that asked to be closed; a request
  refused 408, 414 or 431, or 503 once read) lingers:
  the answer is followed by a half-close, and what the client still sends is read and
  dropped until it closes too, for 5 s and 16 MiB at most. Closed with that data
  unread, the kernel would answer with a reset, which the client meets while still
  sending, before it has read the answer. Kept alive, the rest of a refused body is
  read and dropped (the next request follows it), within the same 16 MiB.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Callable
from typing import Any, cast

import h11
from uvicorn.protocols.http.h11_impl import H11Protocol
from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol
from websockets import http11 as websockets_http11

from tether import limits
from tether.durations import format_duration

logger = logging.getLogger("tether.gateway")

ABNORMAL = 1006
INVALID_DATA = 1007
TOO_BIG = 1009

CLOSED_BY_CLIENT = "tether.closed_by_client"
"""Set in a connection's ASGI scope when the client's close frame came first: the close
is the client's, whatever code it chose (a browser tab closing sends 1001)."""

ABANDON_AFTER_SECONDS = 5.0
"""How long a closing connection may wait for its client to read what is left."""
HTTP_RESERVE = 64
"""Connections past the maximum that may still make plain HTTP requests (the
@connections API, /admin); beyond them, every new connection is refused at once."""
HANDSHAKE_TIMEOUT_SECONDS = 10.0
HEADER_LIMIT_BYTES = limits.GATEWAY_HEADER_BYTES
"""What the request line and the header values may come to, as API Gateway counts."""
LINGER_SECONDS = 5.0
"""How long a connection closed under a client still sending may read what it sends."""
LINGER_BYTES = 16 * 1024 * 1024
"""How much of it: past this, the connection is closed, and what follows is reset."""
HEAD_BYTES_MAX = HEADER_LIMIT_BYTES + 8 * 1024
"""The most a request's head may take on the wire before it ends: the values the limit
counts, with room for the header names and line ends it does not."""

# The handshake is parsed again by websockets, which refuses any line over 8 KiB (its
# WEBSOCKETS_MAX_LINE_LENGTH): one header of 9 KB, within API Gateway's limit, would be
# a 400 here and not deployed.
websockets_http11.MAX_LINE_LENGTH = max(websockets_http11.MAX_LINE_LENGTH, HEAD_BYTES_MAX)


class OpenWebSockets:
    """How many WebSockets a gateway holds: what --max-connections caps."""

    def __init__(self) -> None:
        self.count = 0


class FrameLimitedProtocol(WebSocketsSansIOProtocol):
    """uvicorn's sans-I/O WebSocket protocol, plus API Gateway's 32 KB frame limit and
    1006 (not 1005) for a connection that drops without a close frame."""

    frame_limit = limits.GATEWAY_FRAME_BYTES
    open_sockets = OpenWebSockets()
    _paused_for_pongs = False
    _counted = False
    _draining = False
    _drain_left = LINGER_BYTES

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self.open_sockets.count += 1
        self._counted = True

    def _frame_fits(self, data: bytes) -> bool:
        if len(data) <= self.frame_limit:
            return True
        self.conn.send_close(TOO_BIG, "Frame size exceeds the limit")
        self.handle_parser_exception()
        return False

    def handle_text(self, event: Any) -> None:
        if self._frame_fits(event.data):
            super().handle_text(event)

    def handle_bytes(self, event: Any) -> None:
        if self._frame_fits(event.data):
            super().handle_bytes(event)

    def handle_cont(self, event: Any) -> None:
        if self._frame_fits(event.data):
            super().handle_cont(event)

    def send_receive_event_to_app(self) -> None:
        if self.curr_msg_data_type == "text" and not self.close_sent:
            try:
                b"".join(self.frames).decode()
            except UnicodeDecodeError:
                # A text message that is not UTF-8 is the client's fault, closed 1007 as
                # uvicorn does, said in one line: uvicorn logs it as an ERROR of its own,
                # traceback and all.
                self.frames = []
                logger.info("message refused: not valid UTF-8", extra={"code": INVALID_DATA})
                self.conn.send_close(INVALID_DATA)
                self.handle_parser_exception()
                return
        super().send_receive_event_to_app()

    async def send(self, message: Any) -> None:
        await super().send(message)
        if message["type"] == "websocket.http.response.body" and not message.get("more_body"):
            # The refusal is on the wire. uvicorn's sans-I/O protocol leaves the handshake
            # "incomplete" and logs an ERROR line for every refused handshake when the
            # app returns; its wsproto protocol marks it complete, as here.
            self.handshake_complete = True

    def handle_close(self, event: Any) -> None:
        if not self.close_sent:
            # The same scope the gateway holds: the disconnect message that follows
            # carries the client's code alone, as a close the gateway started does.
            cast("dict[str, Any]", self.scope)[CLOSED_BY_CLIENT] = True
        super().handle_close(event)

    def handle_ping(self) -> None:
        super().handle_ping()
        if not self.writable.is_set():
            # A peer that pings without reading its pongs: read nothing more from it
            # until it has, or the pongs would pile up in memory without bound. Checked
            # at every ping, so uvicorn resuming reads after a message lets at most one
            # more read in before the pause is back.
            self._paused_for_pongs = True
            self.transport.pause_reading()

    def resume_writing(self) -> None:
        super().resume_writing()
        if self._paused_for_pongs:
            self._paused_for_pongs = False
            if not self.read_paused:  # uvicorn's own pause stays as it is
                self.transport.resume_reading()

    def handle_parser_exception(self) -> None:
        # uvicorn writes the close frame (1009 for a message too big, say) and closes
        # the socket at once: with the client's data still unread, the kernel answers
        # with a reset, which can destroy the close frame before the client reads it
        # (it sees 1006). Here the frame is followed by a half-close, and what the
        # client still sends is read and dropped until it closes too, or is abandoned.
        sent = self.conn.close_sent
        code, reason = (sent.code, sent.reason) if sent is not None else (ABNORMAL, "")
        self.queue.put_nowait({"type": "websocket.disconnect", "code": code, "reason": reason})
        self.transport.write(b"".join(self.conn.data_to_send()))
        self.close_sent = True
        self._drain()

    def _drain(self) -> None:
        """Half-close, then read and drop what the client still sends until it closes
        too, for LINGER_BYTES at most, or is abandoned."""
        self._draining = True
        if not self.transport.can_write_eof():
            self.transport.close()
            return
        self.transport.write_eof()
        self.transport.resume_reading()
        self._abandon_later()

    def data_received(self, data: bytes) -> None:
        if self._draining:
            self._drain_left -= len(data)
            if self._drain_left < 0 and not self.transport.is_closing():
                logger.info(
                    "connection closed: its client went on sending past the linger's bound",
                    extra={"bytes": LINGER_BYTES},
                )
                self.transport.close()
            return
        super().data_received(data)
        if self.conn.handshake_exc is not None and not self.handshake_complete:
            # websockets could not parse the request (a control character in a
            # header, say): it gives up without an answer, which would leave the
            # connection open, past the handshake timeout, until the client leaves.
            # (uvicorn before 0.55; later ones call handle_handshake_exception.)
            self._refuse_handshake("the request is not a valid HTTP request")

    def handle_handshake_exception(self) -> None:
        # uvicorn 0.55+ answers such a request itself, then closes at once: with a body
        # still unread, the kernel's reset would reach the client before the answer.
        self._refuse_handshake("the request is not a valid HTTP request")

    def shutdown(self) -> None:
        super().shutdown()
        self._abandon_later()

    async def run_asgi(self) -> None:
        await super().run_asgi()
        self._abandon_later()

    def _abandon_later(self) -> None:
        # The connection is closing, but closing waits for what is buffered to be
        # read: a client that reads nothing would hold it, and Ctrl-C, forever.
        self.loop.call_later(ABANDON_AFTER_SECONDS, self._abandon)

    def _abandon(self) -> None:
        if not self.disconnected:
            self.transport.abort()

    def handle_connect(self, event: Any) -> None:
        try:
            super().handle_connect(event)
        except UnicodeError:
            # A header value that is not ASCII: websockets fails writing its own
            # refusal, which would leave this connection half made (and the server
            # waiting on it at shutdown).
            self._refuse_handshake("a header value is not ASCII")

    def _refuse_handshake(self, why: str) -> None:
        """API Gateway's answer to a request it cannot take: 400, then the end."""
        logger.info("handshake refused", extra={"why": why})
        self.handshake_complete = True
        self.close_sent = True
        self.transport.write(
            b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
        )
        # The rest of what it sent (a body, say) is read, or the refusal would be reset.
        self._drain()

    def connection_lost(self, exc: Exception | None) -> None:
        if self._counted:
            self._counted = False
            self.open_sockets.count -= 1
        if self.handshake_complete and self.conn.close_rcvd is None and not self.close_sent:
            # The peer vanished: no close frame, so no status code of its own.
            self.queue.put_nowait({"type": "websocket.disconnect", "code": ABNORMAL})
        super().connection_lost(exc)


_REASONS = {
    408: "Request Timeout",
    414: "URI Too Long",
    431: "Request Header Fields Too Large",
    503: "Service Unavailable",
}


class GuardedHttpProtocol(H11Protocol):
    """uvicorn's HTTP/1.1 protocol, refusing what would tie the gateway up."""

    handshake_timeout = HANDSHAKE_TIMEOUT_SECONDS
    header_limit = HEADER_LIMIT_BYTES
    max_connections = 10_000
    http_reserve = HTTP_RESERVE
    open_sockets = OpenWebSockets()

    _deadline: asyncio.TimerHandle | None = None
    _head: bytes = b""
    _lingering = False
    _linger_left = LINGER_BYTES
    _linger_timer: asyncio.TimerHandle | None = None
    _stopping = False
    _dropping: object = None
    """The request whose body, answered before it was whole, is being read and dropped."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # h11 gives up on a head over 16 KiB with a bare 400: this one may be longer,
        # and is refused here past HEAD_BYTES_MAX.
        self.conn = h11.Connection(h11.SERVER, max_incomplete_event_size=HEAD_BYTES_MAX + 4)

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        if len(self.connections) > self.max_connections + self.http_reserve:
            # Answered before any request is read: its method is unknown, so the answer
            # says why as every other refusal does.
            self._refuse(
                503,
                "too many connections",
                message=f"Service Unavailable: the gateway holds its {self.max_connections}"
                f" WebSocket connections (its maximum) and {self.http_reserve} more for"
                " plain HTTP requests; try again once one closes",
                # Nothing read yet, and the descriptors are what is short: no linger.
                linger=False,
            )
            return
        self._deadline = self.loop.call_later(self.handshake_timeout, self._too_slow)

    def handle_websocket_upgrade(self, event: h11.Request) -> None:
        # The maximum is of WebSockets: a full gateway still answers the @connections
        # API and /admin (the sweep's kept-alive calls among them), or the sweep and
        # the operators could not reach its clients.
        head_request = event.method == b"HEAD"
        if self.open_sockets.count >= self.max_connections:
            self._refuse(
                503,
                "too many connections",
                message="Service Unavailable: the gateway holds its maximum of"
                f" {self.max_connections} WebSocket connections; try again once one closes",
                head_request=head_request,
            )
            return
        url_characters = _url_characters(event)
        if url_characters > limits.GATEWAY_URL_CHARACTERS:
            # API Gateway refuses it: a token that only fits here would fail once deployed.
            self._refuse(
                414,
                f"a URL over {limits.GATEWAY_URL_CHARACTERS} characters",
                message=f"URI Too Long: a WebSocket URL may have {limits.GATEWAY_URL_CHARACTERS}"
                f" characters, as API Gateway allows; this one has {url_characters}",
                head_request=head_request,
            )
            return
        super().handle_websocket_upgrade(event)

    def _drop(self, data: bytes) -> bool:
        """Count what is read of a body after its answer; False, and the connection
        closed, once past the bound."""
        self._linger_left -= len(data)
        if self._linger_left >= 0:
            return True
        if not self.transport.is_closing():
            logger.info(
                "connection closed: its client went on sending past the linger's bound",
                extra={"bytes": LINGER_BYTES},
            )
            self.transport.close()
        return False

    def handle_events(self) -> None:
        super().handle_events()
        if self.cycle is not None and not isinstance(self.cycle.transport, _LingeringClose):
            # The cycle closes the connection itself once it has answered a request that
            # asked to be closed: through this, that close lingers when it must.
            self.cycle.transport = cast(
                "asyncio.Transport", _LingeringClose(self.transport, self._close_answered)
            )

    def _close_answered(self) -> None:
        """Close once answered; lingering while the client is still sending the body."""
        if self.conn.their_state is h11.SEND_BODY:
            self._linger()
        else:
            self.transport.close()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        if self._lingering:
            # No keep-alive wait: the linger has a bound of its own.
            self._unset_keepalive_if_required()

    def _linger(self) -> None:
        """Close without a reset: the answer, a half-close, then what the client still
        sends is read and dropped until it closes too, within the linger's bounds."""
        self._cancel_deadline()
        if self._lingering or self.transport.is_closing():
            return
        if self._stopping or not self.transport.can_write_eof():
            self.transport.close()
            return
        self._lingering = True
        # A refused head on a kept-alive connection never reaches uvicorn's reading: the
        # keep-alive timeout of the answer before it would still close the linger.
        self._unset_keepalive_if_required()
        self.transport.write_eof()
        self.flow.resume_reading()
        # A client that neither closes nor reads its answer: the connection is dropped.
        self._linger_timer = self.loop.call_later(LINGER_SECONDS, self.transport.abort)

    def shutdown(self) -> None:
        self._stopping = True
        if self._lingering:
            self.transport.close()
            return
        super().shutdown()

    def data_received(self, data: bytes) -> None:
        if self._lingering:
            self._drop(data)
            return
        answered = self.cycle is not None and self.cycle.response_complete
        if answered and self.conn.their_state is h11.SEND_BODY:
            # The rest of a body answered before it was whole, kept alive: uvicorn reads
            # and drops it, within the same bound as a linger.
            if self._dropping is not self.cycle:
                self._dropping, self._linger_left = self.cycle, LINGER_BYTES
            if not self._drop(data):
                return
        if self.conn.their_state is h11.IDLE:
            oversize = self._head_oversize(data)
            if oversize is not None:
                self._refuse_headers(oversize)
                return
        super().data_received(data)
        if (
            self.transport.is_closing()
            or self._lingering
            or self.transport.get_protocol() is not self
        ):
            return
        if not self._request_pending():
            self._cancel_deadline()
        elif self._deadline is None:
            # A request begun on a kept-alive connection, or headers whose body still
            # trickles in: each gets the handshake's time from here, or a client sending a
            # byte now and then would hold the connection for good.
            self._deadline = self.loop.call_later(self.handshake_timeout, self._too_slow)

    def _request_pending(self) -> bool:
        """Whether a request is yet to arrive whole: none has come on this connection
        yet, or one is part-way in (its headers, or its body). Between requests, uvicorn's
        keep-alive timeout closes a connection that sends nothing."""
        state = self.conn.their_state
        if state is h11.SEND_BODY:
            return True
        if state is h11.IDLE:
            return self.cycle is None or bool(self.conn.trailing_data[0])
        return False

    def _head_oversize(self, data: bytes) -> tuple[bytes, int | None] | None:
        """None while the request's head fits; else its request line and the size its
        request line and header values come to (None when the head never ended). The
        body that may follow in the same read does not count."""
        self._head = (self._head + data)[: HEAD_BYTES_MAX + 4]
        end = self._head.find(b"\r\n\r\n")
        if end == -1:
            if len(self._head) <= HEAD_BYTES_MAX:
                return None
            return self._head.partition(b"\r\n")[0], None
        head, self._head = self._head[:end], b""
        size = counted_head_bytes(head)
        return None if size <= self.header_limit else (head.partition(b"\r\n")[0], size)

    def _refuse_headers(self, oversize: tuple[bytes, int | None]) -> None:
        request_line, size = oversize
        counted = (
            f"they come to {size} bytes"
            if size is not None
            else f"its head ran past {HEAD_BYTES_MAX} bytes without ending"
        )
        message = (
            f"Request Header Fields Too Large: the request line and header values may come"
            f" to {self.header_limit} bytes, as API Gateway allows; {counted}"
        )
        self._refuse(
            431,
            "request headers over the limit",
            message=message,
            head_request=request_line.startswith(b"HEAD "),
        )

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel_deadline()
        if self._linger_timer is not None:
            self._linger_timer.cancel()
            self._linger_timer = None
        super().connection_lost(exc)

    def _cancel_deadline(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None

    def _too_slow(self) -> None:
        self._deadline = None
        # Upgraded to a WebSocket, or a request whole and being answered (however long
        # its handler takes): not ours to time out.
        if self.transport.get_protocol() is not self or not self._request_pending():
            return
        if self.conn.their_state is h11.SEND_BODY and self.cycle and self.cycle.response_started:
            # Answered before its body was whole (413 on its declared length): a 408
            # would follow that answer on the wire; the connection just ends.
            logger.info("connection closed: the request's body did not arrive in time")
            self._linger()
            return
        if self.conn.their_state is h11.SEND_BODY:
            method = self.cycle.scope["method"] if self.cycle else ""
            came = "its head came, its body did not arrive whole"
        else:
            # The part of a head read so far (_head_oversize keeps it until it ends).
            method = self._head.partition(b" ")[0].decode("ascii", "replace")
            came = f"{len(self._head)} bytes of its head came" if self._head else "nothing came"
        self._refuse(
            408,
            "no complete request within the handshake timeout",
            message="Request Timeout: a request must arrive whole within"
            f" {format_duration(self.handshake_timeout)} of its first byte (the local"
            f" gateway's handshake timeout); {came}",
            head_request=method == "HEAD",
        )

    def _refuse(
        self,
        status: int,
        why: str,
        *,
        message: str = "",
        head_request: bool = False,
        linger: bool = True,
    ) -> None:
        """Answer ``status`` and close, lingering: the client may still be sending (the
        rest of its headers, its body). The body is a JSON ``message`` saying why, as
        the 431 of API Gateway's own limits does, except to a HEAD (RFC 9110: no body)."""
        self._cancel_deadline()
        if self.transport.is_closing() or self._lingering:
            return
        logger.info("connection refused", extra={"status": status, "why": why})
        content = b"" if head_request or not message else json.dumps({"message": message}).encode()
        content_type = "content-type: application/json\r\n" if content else ""
        head = (
            f"HTTP/1.1 {status} {_REASONS[status]}\r\n{content_type}"
            f"content-length: {len(content)}\r\nconnection: close\r\n\r\n"
        )
        self.transport.write(head.encode() + content)
        if linger:
            self._linger()
        else:
            self.transport.close()


class _LingeringClose:
    """A transport whose close is another's: the rest goes to the transport itself."""

    def __init__(self, transport: asyncio.Transport, close: Callable[[], None]) -> None:
        self._transport = transport
        self._close = close

    def close(self) -> None:
        self._close()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._transport, name)


def counted_head_bytes(head: bytes) -> int:
    """What API Gateway counts of a request's head: its request line and its header
    values (not the names, nor the separators and line ends)."""
    request_line, *fields = head.split(b"\r\n")
    size = len(request_line)
    for field in fields:
        if field[:1] in (b" ", b"\t"):  # a folded line: more of the value above
            size += len(field.strip(b" \t"))
            continue
        size += len(field.partition(b":")[2].strip(b" \t"))
    return size


def _url_characters(request: h11.Request) -> int:
    """The length of the URL the client connected with: ws://, its host, path and query."""
    host = next((value for name, value in request.headers if name == b"host"), b"")
    return len(b"ws://") + len(host) + len(request.target)


def websocket_protocol(
    frame_bytes: int, open_sockets: OpenWebSockets
) -> type[WebSocketsSansIOProtocol]:
    """The WebSocket protocol class for this frame limit, counting into ``open_sockets``."""
    return type(
        "GatewayWebSocketProtocol",
        (FrameLimitedProtocol,),
        {"frame_limit": frame_bytes, "open_sockets": open_sockets},
    )


def http_protocol(
    *,
    max_connections: int,
    open_sockets: OpenWebSockets,
    handshake_timeout: float = HANDSHAKE_TIMEOUT_SECONDS,
) -> type[H11Protocol]:
    """The HTTP protocol class with these limits: at most ``max_connections`` of
    ``open_sockets``."""
    return type(
        "GatewayHttpProtocol",
        (GuardedHttpProtocol,),
        {
            "max_connections": max_connections,
            "handshake_timeout": handshake_timeout,
            "open_sockets": open_sockets,
        },
    )
