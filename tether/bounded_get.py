"""An HTTP GET given a time in all, not per socket operation.

urllib's timeout bounds each socket operation alone: a server (or a proxy in front of
it) that sends its headers or body a few bytes at a time, each just before the timeout,
holds the caller as long as it likes. Here connecting, the TLS handshake, the status
line, the headers and the body share one monotonic deadline: each step is given only
the time left, and past it the step raises ``TimeoutError``. Resolving the host name
shares it too: ``getaddrinfo`` takes no timeout (the system resolver's own come to tens
of seconds), so it runs in a thread of its own, waited for only the time left.
"""

from __future__ import annotations

import functools
import http.client
import io
import socket
import ssl
import threading
import time
import urllib.request
from typing import Any
from urllib.parse import urlsplit

CHUNK_BYTES = 64 * 1024


class BodyTooLargeError(ValueError):
    """The body was longer than the caller allows."""


def get_within(
    url: str,
    *,
    seconds: float,
    max_bytes: int,
    headers: dict[str, Any] | None = None,
    ssl_context: ssl.SSLContext | None = None,
) -> bytes:
    """The body ``url`` answers with a 2xx status, read within ``seconds`` in all.

    Raises ``TimeoutError`` past the deadline, ``BodyTooLargeError`` for a body over
    ``max_bytes``, ``urllib.error.HTTPError`` for any other status (a redirect is not
    followed), and what urllib and http.client raise for the rest (``OSError``,
    ``http.client.HTTPException``).
    """
    if urlsplit(url).scheme not in {"http", "https"}:
        raise ValueError("only an http or https address is fetched")
    deadline = time.monotonic() + seconds
    opener = urllib.request.build_opener(
        _NoRedirect(), _HTTPHandler(deadline), _HTTPSHandler(deadline, ssl_context)
    )
    request = urllib.request.Request(url=url, headers=headers or {})  # noqa: S310 (checked above)
    with opener.open(request, timeout=seconds) as response:
        body = bytearray()
        # In chunks, each socket read given the time left only: no more is read, nor
        # held, than max_bytes and one chunk.
        while chunk := response.read(CHUNK_BYTES):
            body += chunk
            if len(body) > max_bytes:
                raise BodyTooLargeError(f"the answer is longer than {max_bytes} bytes")
    return bytes(body)


def _time_left(deadline: float) -> float:
    left = deadline - time.monotonic()
    if left <= 0:
        raise TimeoutError("the time given to the request has passed")
    return left


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    """A redirect is answered as the error it is, not followed (as PyJWT does)."""

    def redirect_request(  # noqa: PLR0917 (urllib's signature)
        self,
        req: urllib.request.Request,
        fp: Any,
        code: int,
        msg: str,
        headers: Any,
        newurl: str,
    ) -> urllib.request.Request | None:
        return None


class _DeadlineReader(io.RawIOBase):
    """A socket's reads, each given only the time left until the deadline."""

    def __init__(self, sock: socket.socket, deadline: float) -> None:
        super().__init__()
        self._sock = sock
        # makefile counts as a reference: urllib closes the connection's socket once
        # the headers are read, and the socket stays open while the body is.
        self._raw = sock.makefile("rb", buffering=0)
        self._deadline = deadline

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int | None:
        self._sock.settimeout(_time_left(self._deadline))
        return self._raw.readinto(buffer)

    def close(self) -> None:
        self._raw.close()
        super().close()


class _DeadlineResponse(http.client.HTTPResponse):
    """http.client's response, its status line, headers and body read by the deadline."""

    def __init__(
        self,
        sock: socket.socket,
        debuglevel: int = 0,
        method: str | None = None,
        url: str | None = None,
        *,
        deadline: float,
    ) -> None:
        super().__init__(sock, debuglevel, method, url)
        reader: io.BufferedReader = io.BufferedReader(_DeadlineReader(sock, deadline))
        self.fp.close()
        self.fp = reader


def _connect(
    address: tuple[str, int],
    timeout: object,
    source_address: tuple[str, int] | None = None,
    *,
    deadline: float,
) -> socket.socket:
    """socket.create_connection, every address tried in the time left only; the socket
    it gives keeps that time for the TLS handshake and the request."""
    host, port = address
    failure: OSError = OSError(f"no address found for {host}")
    for family, kind, proto, _, sockaddr in _resolve(host, port, deadline):
        sock = socket.socket(family, kind, proto)
        try:
            sock.settimeout(_time_left(deadline))
            if source_address:
                sock.bind(source_address)
            sock.connect(sockaddr)
            sock.settimeout(_time_left(deadline))
        except OSError as exc:
            sock.close()
            failure = exc
            continue
        return sock
    raise failure


def _resolve(host: str, port: int, deadline: float) -> list[tuple[Any, ...]]:
    """socket.getaddrinfo, its answer waited for only the time left."""
    answer: list[tuple[Any, ...]] = []
    failure: list[Exception] = []

    def resolve() -> None:
        try:
            answer.extend(socket.getaddrinfo(host, port, 0, socket.SOCK_STREAM))
        except (OSError, UnicodeError) as exc:  # raised below, as if resolved there
            failure.append(exc)

    # A daemon thread: one the resolver holds past the deadline is left to finish on
    # its own, and never keeps the process from ending.
    left = _time_left(deadline)
    resolver = threading.Thread(target=resolve, name=f"resolve {host}", daemon=True)
    resolver.start()
    resolver.join(left)
    if resolver.is_alive():
        raise TimeoutError(f"resolving {host} took longer than the time given to the request")
    if failure:
        raise failure[0]
    return answer


def _bind_to(connection: http.client.HTTPConnection, deadline: float) -> None:
    # http.client's own hook for making its socket, and the class that reads an answer
    # (a proxy's answer to CONNECT included).
    connection._create_connection = functools.partial(_connect, deadline=deadline)  # type: ignore[attr-defined]
    connection.response_class = functools.partial(_DeadlineResponse, deadline=deadline)  # type: ignore[assignment]


class _HTTPConnection(http.client.HTTPConnection):
    def __init__(self, host: str, *, deadline: float, **kwargs: Any) -> None:
        super().__init__(host, **kwargs)
        _bind_to(self, deadline)


class _HTTPSConnection(http.client.HTTPSConnection):
    def __init__(self, host: str, *, deadline: float, **kwargs: Any) -> None:
        super().__init__(host, **kwargs)
        _bind_to(self, deadline)


class _HTTPHandler(urllib.request.HTTPHandler):
    def __init__(self, deadline: float) -> None:
        super().__init__()
        self._deadline = deadline

    def http_open(self, req: urllib.request.Request) -> http.client.HTTPResponse:
        return self.do_open(_HTTPConnection, req, deadline=self._deadline)  # type: ignore[arg-type]


class _HTTPSHandler(urllib.request.HTTPSHandler):
    def __init__(self, deadline: float, context: ssl.SSLContext | None) -> None:
        super().__init__(context=context)
        self._deadline = deadline
        self._ssl_context = context

    def https_open(self, req: urllib.request.Request) -> http.client.HTTPResponse:
        return self.do_open(
            _HTTPSConnection,  # type: ignore[arg-type]
            req,
            context=self._ssl_context,
            deadline=self._deadline,
        )
