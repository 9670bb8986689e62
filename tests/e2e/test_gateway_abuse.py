"""The local gateway under abuse: it refuses cleanly and keeps serving what it has,
and every connection whose $connect succeeded gets exactly one $disconnect."""

from __future__ import annotations

import asyncio
import contextlib
import http.client
import json
import os
import signal
import socket
import struct
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterable

import boto3
import psycopg
import pytest
from botocore import UNSIGNED
from botocore.config import Config
from botocore.exceptions import ClientError
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict
from websockets.asyncio.client import connect
from websockets.exceptions import InvalidStatus

from tests.e2e.conftest import SIGNED, DevServer, open_client, run
from tests.support import HS256_SECRET, claims, json_lines, sign

UPGRADE = (
    "GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
    "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n"
    "User-Agent: {agent}\r\n{extra}\r\n"
)

HEAD = f"Host: 127.0.0.1\r\nAuthorization: {SIGNED}\r\n"
"""A raw @connections request's headers, as boto3 sends them."""

CUT_OFF = (ConnectionResetError, BrokenPipeError)
"""What a client sending past a bound meets: not a timeout (an OSError too), which would
be a gateway that stopped reading and held the connection open."""


def _flood_until_cut_off(sock: socket.socket) -> None:
    """Send without end: the gateway must cut the client off (a reset or a broken pipe,
    not a stall) within its 16 MiB bound, and what the sockets' buffers hold."""
    sent = 0
    with pytest.raises(CUT_OFF):
        while sent < 1 << 30:
            sock.sendall(b"x" * 65536)
            sent += 65536
    assert sent < 64 * 1024 * 1024


def _raw(server: DevServer) -> socket.socket:
    return socket.create_connection(("127.0.0.1", server.port), timeout=10)


def _status(
    url: str, method: str, data: bytes | Iterable[bytes] | None = None, *, signed: bool = True
) -> int:
    """The status a signed HTTP call to the gateway answers (unsigned: for /admin, which
    reads an Authorization header as an operator's credentials); its response closed
    either way."""
    headers = {"Authorization": SIGNED} if signed else {}
    request = urllib.request.Request(url, data=data, method=method, headers=headers)  # noqa: S310
    try:
        with urllib.request.urlopen(request, timeout=10) as answer:  # noqa: S310
            return int(answer.status)
    except urllib.error.HTTPError as refused:
        refused.close()
        return refused.code


def _streamed_status(server: DevServer, path: str, chunks: Iterable[bytes]) -> int:
    """The status a signed POST whose body is sent in chunks, with no length, answers.
    Kept alive, as SDKs keep their connections: the gateway reads the rest of a body it
    refused and answers in turn."""
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
    try:
        conn.request(
            "POST", path, body=chunks, headers={"Authorization": SIGNED}, encode_chunked=True
        )
        return conn.getresponse().status
    finally:
        conn.close()


def _answer(sock: socket.socket) -> bytes:
    chunks = []
    while chunk := sock.recv(65536):
        chunks.append(chunk)
    return b"".join(chunks)


def _refusal(answer: bytes, status: int) -> str:
    """The JSON message of a refusal the gateway answered with ``status``."""
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(f"HTTP/1.1 {status} ".encode()), answer[:300]
    assert b"content-type: application/json" in head.lower(), head
    assert f"content-length: {len(body)}".encode() in head.lower(), head
    message = json.loads(body)["message"]
    assert isinstance(message, str)
    return message


def _bodiless(answer: bytes, status: int) -> None:
    """A refusal of a HEAD: the status, and no body (RFC 9110)."""
    assert answer.startswith(f"HTTP/1.1 {status} ".encode()), answer[:300]
    assert answer.endswith(b"content-length: 0\r\nconnection: close\r\n\r\n"), answer


def test_a_client_gone_during_the_handshake_still_gets_its_disconnect(
    start_dev: Callable[..., DevServer],
) -> None:
    server = start_dev()
    for index in range(20):
        sock = _raw(server)
        sock.sendall(UPGRADE.format(agent=f"vanishing/{index}", extra="").encode())
        if index % 2:
            # RST instead of FIN: linger on, zero timeout.
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        sock.close()  # before the 101, while $connect is writing the row
    server.wait_for(lambda r: len(r) >= 10, timeout=20)
    # Ctrl-C: no handshake can start after it, so the count below is final.
    assert server.stop() == 0
    summary = server.log.read_text().splitlines()[-1]
    opened = int(summary.split("stopped; ")[1].split(" opened")[0])
    rows = server.rows()
    assert len(rows) == opened  # every $connect that succeeded counted once
    assert f"{opened} opened, {opened} ended" in summary
    assert not any(r["is_active"] for r in rows)
    assert {r["end_reason"] for r in rows} == {"connection_lost"}


def test_a_header_websockets_cannot_take_gets_400_and_the_gateway_still_stops(
    start_dev: Callable[..., DevServer],
) -> None:
    server = start_dev()
    for header in (
        "Sec-WebSocket-Protocol: t\xe9ther",  # not ASCII
        "X-Note: a\x1b[2Jb",  # an escape sequence
        "X-Note: a\x01b",  # a control character
        "X-Note: a\x7fb",  # delete
    ):
        with _raw(server) as sock:
            sock.sendall(
                UPGRADE.format(agent="bad header", extra=header + "\r\n").encode("latin-1")
            )
            started = time.monotonic()
            assert _answer(sock).startswith(b"HTTP/1.1 400"), header
            # At once, not at the handshake timeout.
            assert time.monotonic() - started < 2, header
    assert server.rows() == []
    # Ctrl-C once is enough, with such a client still there: no half-made connection
    # holds the shutdown up or makes it fail.
    with _raw(server) as sock:
        sock.sendall(UPGRADE.format(agent="held", extra="X-Note: a\x01b\r\n").encode("latin-1"))
        assert _answer(sock).startswith(b"HTTP/1.1 400")
        started = time.monotonic()
        assert server.stop(signal.SIGINT) == 0
        assert time.monotonic() - started < 15
    assert "Traceback" not in server.log.read_text()


def test_a_handshake_that_never_comes_is_closed_with_408(
    start_dev: Callable[..., DevServer],
) -> None:
    server = start_dev("--handshake-timeout", "1s")
    started = time.monotonic()
    with _raw(server) as sock:
        answer = _answer(sock)
    assert _refusal(answer, 408) == (
        "Request Timeout: a request must arrive whole within 1s of its first byte (the local"
        " gateway's handshake timeout); nothing came"
    )
    assert time.monotonic() - started < 5
    with _raw(server) as sock:
        sock.sendall(b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: webs")
        assert "; 46 bytes of its head came" in _refusal(_answer(sock), 408)
    # A HEAD's answer has no body.
    with _raw(server) as sock:
        sock.sendall(b"HEAD /admin/health HTTP/1.1\r\nHo")
        _bodiless(_answer(sock), 408)


def test_a_kept_alive_connection_s_next_request_that_never_comes_whole_is_closed_with_408(
    start_dev: Callable[..., DevServer],
) -> None:
    """The handshake's time holds for every request, not the connection's first alone:
    a byte now and then of a next request's headers held the connection for good."""
    server = start_dev("--handshake-timeout", "1s")
    with _raw(server) as sock:
        sock.sendall(b"GET /admin/health HTTP/1.1\r\nHost: x\r\n\r\n")
        assert sock.recv(4096).startswith(b"HTTP/1.1 200")
        started = time.monotonic()
        sock.sendall(b"GET /admin/health HTTP/1.1\r\nHo")
        time.sleep(0.5)
        sock.sendall(b"st")  # a sign of life that keeps no request coming
        answer = _answer(sock)
    assert b"HTTP/1.1 408" in answer, answer
    assert answer.endswith(b'; 32 bytes of its head came"}'), answer
    assert time.monotonic() - started < 5


def test_a_post_whose_body_trickles_in_is_closed_and_delivers_nothing(
    start_dev: Callable[..., DevServer],
) -> None:
    server = start_dev("--handshake-timeout", "1s")

    async def scenario() -> None:
        ws = await open_client(server)
        [row] = server.wait_for(lambda r: len(r) == 1)
        with _raw(server) as sock:
            sock.sendall(
                f"POST {server.connection_path(row)} HTTP/1.1\r\n{HEAD}"
                "Content-Length: 100\r\n\r\n".encode()
                + b"slow"
            )
            started = time.monotonic()
            answer = await asyncio.to_thread(_answer, sock)
        assert _refusal(answer, 408).endswith("; its head came, its body did not arrive whole")
        assert time.monotonic() - started < 5
        # Nothing of it reached the client: the next message is the first it gets.
        assert await asyncio.to_thread(_status, server.connection_url(row), "POST", b"whole") == 200
        assert await asyncio.wait_for(ws.recv(), 10) == "whole"
        await ws.close()

    run(scenario())


def test_a_url_over_api_gateway_s_4096_characters_is_refused_with_414(
    start_dev: Callable[..., DevServer],
) -> None:
    """API Gateway takes a WebSocket URL of 4096 characters at most: a ?token= (or junk)
    that made it longer connected here, and would fail only once deployed."""
    server = start_dev()
    url = f"{server.ws_url}/?pad="

    async def scenario() -> None:
        fits = url + "x" * (4096 - len(url))
        async with connect(fits, ping_interval=None) as ws:
            await ws.send(json.dumps({"action": "heartbeat"}))
            assert json.loads(await ws.recv())["action"] == "heartbeat"
        with pytest.raises(InvalidStatus) as refused:
            await connect(fits + "x", ping_interval=None)
        response = refused.value.response
        assert response.status_code == 414
        assert response.headers["Content-Type"] == "application/json"
        assert json.loads(response.body) == {
            "message": "URI Too Long: a WebSocket URL may have 4096 characters, as API Gateway"
            " allows; this one has 4097"
        }
        with _raw(server) as sock:
            sock.sendall(
                UPGRADE.replace("GET / ", f"HEAD /?pad={'x' * 4096} ")
                .format(agent="head", extra="")
                .encode()
            )
            _bodiless(await asyncio.to_thread(_answer, sock), 414)

    run(scenario())
    [row] = server.wait_for(lambda r: len(r) == 1 and not r[0]["is_active"])
    assert row["end_reason"] == "client_disconnect"


def _operators_request(method: str, token: str, counted: int) -> bytes:
    """A request to the operators' API whose request line and header values come to
    ``counted`` bytes, as API Gateway counts them (names and line ends aside)."""
    request_line = f"{method} /admin/sessions HTTP/1.1"
    values = ["127.0.0.1", f"Bearer {token}", "close"]
    padding = counted - len(request_line) - sum(len(value) for value in values)
    assert padding > 0
    return (
        f"{request_line}\r\nHost: {values[0]}\r\nAuthorization: {values[1]}\r\n"
        f"Connection: {values[2]}\r\nX-Padding: {'p' * padding}\r\n\r\n"
    ).encode()


def test_headers_are_held_to_api_gateway_s_10240_bytes_and_a_431_says_so(
    start_dev: Callable[..., DevServer],
) -> None:
    """An operator's token of 8 to 10 KB worked deployed (the HTTP API takes 10,240 bytes
    of request line and header values) and got an empty 431 here, refused at 8 KB."""
    server = start_dev()
    operator_token = sign(claims(role="service_role", pad="t" * 7000), HS256_SECRET, "HS256")
    assert 8 * 1024 < len(operator_token) < 10240
    with _raw(server) as sock:
        sock.sendall(_operators_request("GET", operator_token, 10240))
        answer = _answer(sock)
    assert answer.startswith(b"HTTP/1.1 200"), answer[:300]
    with _raw(server) as sock:
        sock.sendall(_operators_request("GET", operator_token, 10241))
        answer = _answer(sock)
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 431"), answer[:300]
    assert b"content-type: application/json" in head.lower()
    assert json.loads(body) == {
        "message": "Request Header Fields Too Large: the request line and header values may"
        " come to 10240 bytes, as API Gateway allows; they come to 10241 bytes"
    }
    # A HEAD's answer has no body.
    with _raw(server) as sock:
        sock.sendall(_operators_request("HEAD", operator_token, 10241))
        answer = _answer(sock)
    assert answer.startswith(b"HTTP/1.1 431"), answer[:300]
    assert answer.endswith(b"content-length: 0\r\nconnection: close\r\n\r\n"), answer
    # A head that never ends is refused once it is past what any request could need.
    with _raw(server) as sock:
        sock.sendall(b"GET /admin/health HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Padding: ")
        sock.sendall(b"p" * 20_000)
        answer = _answer(sock)
    assert answer.startswith(b"HTTP/1.1 431"), answer[:300]
    assert b"its head ran past" in answer
    # A WebSocket handshake is held to the same: one header of 9 KB (over the 8 KiB line
    # its parser took) connects; past the limit, 431 and no session.
    with _raw(server) as sock:
        sock.sendall(
            UPGRADE.format(agent="big", extra="X-Padding: " + "a" * 9000 + "\r\n").encode()
        )
        assert sock.recv(4096).startswith(b"HTTP/1.1 101")
    server.wait_for(lambda r: len(r) == 1 and not r[0]["is_active"])
    with _raw(server) as sock:
        sock.sendall(
            UPGRADE.format(agent="bigger", extra="X-Padding: " + "a" * 10240 + "\r\n").encode()
        )
        answer = _answer(sock)
    assert answer.startswith(b"HTTP/1.1 431"), answer[:300]
    assert b"may come to 10240 bytes" in answer
    assert len(server.rows()) == 1


def test_a_refusal_of_a_request_still_coming_is_read_not_reset(
    start_dev: Callable[..., DevServer],
) -> None:
    """A request refused for its head (431, 414) was answered and closed at once, under
    a client still sending the rest (its headers, its body): the kernel reset the
    connection, and the client's write failed before it could read why."""
    server = start_dev()
    body = b"x" * (8 * 1024 * 1024)
    with _raw(server) as sock:
        sock.sendall(
            b"POST /admin/sweep HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Padding: "
            + b"p" * 12_000
            + f"\r\nContent-Length: {len(body)}\r\n\r\n".encode()
        )
        sock.sendall(body)
        assert "they come to" in _refusal(_answer(sock), 431)
    with _raw(server) as sock:
        sock.sendall(
            UPGRADE.replace("GET / ", f"GET /?pad={'x' * 4096} ")
            .format(agent="long", extra=f"Content-Length: {len(body)}\r\n")
            .encode()
        )
        sock.sendall(body)
        assert "this one has" in _refusal(_answer(sock), 414)
    assert server.rows() == []


def test_a_kept_alive_connection_s_refusal_lingers_past_its_keep_alive_timeout(
    start_dev: Callable[..., DevServer],
) -> None:
    """A request refused for its head on a kept-alive connection: the keep-alive
    timeout the answer before it had set (5 s) was still running, and closed the
    linger when it ran out, under a client still sending its body: a reset instead of
    the 431 for a request sent late in that wait."""
    server = start_dev()
    with _raw(server) as sock:
        sock.sendall(b"GET /admin/health HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        answered = b""
        while b'"database"' not in answered:
            chunk = sock.recv(65536)
            assert chunk, answered
            answered += chunk
        time.sleep(4)  # of uvicorn's 5 s keep-alive timeout
        body = b"x" * (4 * 1024 * 1024)
        sock.sendall(
            b"POST /admin/sweep HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Padding: "
            + b"p" * 12_000
            + f"\r\nContent-Length: {len(body)}\r\n\r\n".encode()
        )
        # The body sent over 2 s: past the keep-alive timeout, within the linger's 5 s.
        for start in range(0, len(body), 64 * 1024):
            sock.sendall(body[start : start + 64 * 1024])
            time.sleep(2 / 64)
        assert "they come to" in _refusal(_answer(sock), 431)


def test_past_the_maximum_new_connections_get_503_and_the_others_keep_working(
    start_dev: Callable[..., DevServer],
) -> None:
    server = start_dev("--max-connections", "4")

    async def scenario() -> None:
        # A kept-alive HTTP connection (as the sweep's calls to @connections are) is
        # not one of the WebSockets the maximum counts.
        kept = _raw(server)
        kept.sendall(b"GET /admin/health HTTP/1.1\r\nHost: x\r\n\r\n")
        assert kept.recv(4096).startswith(b"HTTP/1.1 200")
        clients = [await open_client(server) for _ in range(4)]
        server.wait_for(lambda r: len(r) == 4)
        try:
            await open_client(server)
        except InvalidStatus as refused:
            assert refused.response.status_code == 503
            assert json.loads(refused.response.body) == {
                "message": "Service Unavailable: the gateway holds its maximum of 4 WebSocket"
                " connections; try again once one closes"
            }
        else:
            raise AssertionError("the fifth connection was accepted")
        with _raw(server) as sock:
            sock.sendall(UPGRADE.replace("GET ", "HEAD ").format(agent="head", extra="").encode())
            _bodiless(await asyncio.to_thread(_answer, sock), 503)
        # Past the reserve for plain HTTP too, a connection is refused before it is read:
        # with the kept-alive one, 63 more fill the 64 of the reserve.
        reserve = [_raw(server) for _ in range(63)]
        with _raw(server) as sock:
            assert _refusal(await asyncio.to_thread(_answer, sock), 503) == (
                "Service Unavailable: the gateway holds its 4 WebSocket connections (its"
                " maximum) and 64 more for plain HTTP requests; try again once one closes"
            )
        for held in reserve:
            held.close()
        # The @connections API and /admin still answer: the sweep and the operators
        # must reach a full gateway's clients.
        [row, *_] = server.rows()
        url = server.connection_url(row)
        assert await asyncio.to_thread(_status, url, "GET") == 200
        admin = f"http://127.0.0.1:{server.port}/admin/health"
        assert await asyncio.to_thread(_status, admin, "GET", signed=False) == 200
        for ws in clients:
            await ws.send(json.dumps({"action": "heartbeat"}))
            assert json.loads(await ws.recv())["action"] == "heartbeat"
            await ws.close()
        kept.close()

    run(scenario())
    assert len(server.rows()) == 4
    assert "Traceback" not in server.log.read_text()


def test_a_huge_post_to_connections_is_refused_before_it_is_read(
    start_dev: Callable[..., DevServer],
) -> None:
    server = start_dev()

    async def scenario() -> None:
        ws = await open_client(server)
        try:
            [row] = server.wait_for(lambda r: len(r) == 1)
            path = server.connection_path(row)
            # Declared too large: refused from the header alone, nothing is read.
            with _raw(server) as sock:
                sock.sendall(
                    f"POST {path} HTTP/1.1\r\n{HEAD}"
                    f"Content-Length: {200 * 1024 * 1024}\r\n\r\n".encode()
                    + b"x" * 1024
                )
                assert sock.recv(4096).startswith(b"HTTP/1.1 413")
            # Streamed without a length: refused once it passes 128 KB.
            chunks = (b"y" * 65536 for _ in range(8))
            assert await asyncio.to_thread(_streamed_status, server, path, chunks) == 413
            # The connection itself is untouched.
            await ws.send(json.dumps({"action": "heartbeat"}))
            assert json.loads(await ws.recv())["status"] in {"touched", "throttled"}
        finally:
            await ws.close()

    run(scenario())


def _closing_call(
    server: DevServer, path: str, body: bytes | Iterable[bytes], *, signed: bool = True
) -> int:
    """The status a POST asking to be closed (as urllib's do) answers, its whole body
    sent before the answer is read, as http.client sends it; a reset raises."""
    headers = {"Connection": "close", **({"Authorization": SIGNED} if signed else {})}
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
    try:
        conn.request(
            "POST", path, body=body, headers=headers, encode_chunked=not isinstance(body, bytes)
        )
        answer = conn.getresponse()
        answer.read()
        return answer.status
    finally:
        conn.close()


def test_a_client_still_sending_a_refused_body_reads_its_answer_not_a_reset(
    start_dev: Callable[..., DevServer],
) -> None:
    """A request asking to be closed (urllib's all do) was answered before its body was
    whole, and the connection closed at once under the client still sending: the kernel
    reset it, and the client met "connection reset" (or a broken pipe) instead of the
    413. The gateway now reads and drops the rest, within bounds, and the client reads
    its answer."""
    server = start_dev()
    path = "/local/@connections/AAAAAAAAAAAAAAA="
    body = b"x" * (8 * 1024 * 1024)
    assert _closing_call(server, path, body) == 413
    assert (
        _closing_call(server, path, (body[i : i + 65536] for i in range(0, len(body), 65536)))
        == 413
    )
    assert _closing_call(server, path, body, signed=False) == 403  # refused before any of it
    assert _closing_call(server, "/admin/sweep", body, signed=False) == 401  # the admin app's own
    # Bounded: a client that sends on and on is cut off, past the bytes or the time.
    declared = (
        f"POST {path} HTTP/1.1\r\n{HEAD}Connection: close\r\nContent-Length: {1 << 40}\r\n\r\n"
    ).encode()
    with _raw(server) as sock:
        sock.sendall(declared)
        _flood_until_cut_off(sock)
    with _raw(server) as sock:
        sock.sendall(declared)
        started = time.monotonic()
        with pytest.raises(CUT_OFF):
            while time.monotonic() - started < 30:
                sock.sendall(b"x" * 100)
                time.sleep(0.05)
        assert time.monotonic() - started < 10  # 5 s


def test_a_handshake_refused_for_its_body_reads_its_400_not_a_reset(
    start_dev: Callable[..., DevServer],
) -> None:
    """A handshake with a body is refused (400) before the body is read: the connection
    closed at once, and the client, still sending the body, met a reset instead of the
    400. What it still sends is read and dropped now, within bounds."""
    server = start_dev()
    body = b"x" * (8 * 1024 * 1024)
    handshake = UPGRADE.format(agent="body", extra=f"Content-Length: {len(body)}\r\n").encode()
    with _raw(server) as sock:
        sock.sendall(handshake)
        sock.sendall(body)
        assert _answer(sock).startswith(b"HTTP/1.1 400")
    with _raw(server) as sock:
        sock.sendall(handshake)
        _flood_until_cut_off(sock)
    assert server.rows() == []


def test_a_kept_alive_client_sending_on_past_its_413_is_cut_off(
    start_dev: Callable[..., DevServer],
) -> None:
    """Kept alive, the rest of a body refused before it was whole is read and dropped,
    so the next request can follow; that went on for the whole handshake timeout (10 s,
    up to 10 min) with no bound on what it came to, gigabytes from a client on the same
    machine. Now 16 MiB, as a linger."""
    server = start_dev()
    path = "/local/@connections/AAAAAAAAAAAAAAA="
    with _raw(server) as sock:
        sock.sendall(f"POST {path} HTTP/1.1\r\n{HEAD}Content-Length: {1 << 40}\r\n\r\n".encode())
        _flood_until_cut_off(sock)
    # Within the bound, the body is read to its end and the next request is answered.
    body = b"x" * (8 * 1024 * 1024)
    with _raw(server) as sock:
        sock.sendall(f"POST {path} HTTP/1.1\r\n{HEAD}Content-Length: {len(body)}\r\n\r\n".encode())
        sock.sendall(body)
        sock.sendall(f"GET {path} HTTP/1.1\r\n{HEAD}\r\n".encode())
        answers = b""
        while b'"Gone"}' not in answers:
            chunk = sock.recv(65536)
            assert chunk, answers
            answers += chunk
    assert answers.startswith(b"HTTP/1.1 413 ")
    assert b"HTTP/1.1 410 " in answers


def test_a_post_cut_off_before_its_body_is_whole_delivers_nothing(
    start_dev: Callable[..., DevServer],
) -> None:
    server = start_dev()

    async def scenario() -> None:
        ws = await open_client(server)
        [row] = server.wait_for(lambda r: len(r) == 1)
        path = server.connection_path(row)
        whole = b'{"order":"transfer 100 to alice"}'
        with _raw(server) as sock:  # says 34 bytes, sends 20, leaves
            sock.sendall(
                f"POST {path} HTTP/1.1\r\n{HEAD}Content-Length: {len(whole)}\r\n\r\n".encode()
                + whole[:20]
            )
        with _raw(server) as sock:  # chunked: one chunk, then gone before the last
            sock.sendall(
                f"POST {path} HTTP/1.1\r\n{HEAD}Transfer-Encoding: chunked\r\n\r\n".encode()
                + b"5\r\nhello\r\n"
            )
        assert await asyncio.to_thread(_status, server.connection_url(row), "POST", b"whole") == 200
        # The first message the client gets is the one that arrived whole.
        assert await asyncio.wait_for(ws.recv(), 10) == "whole"
        await ws.close()

    run(scenario())


def test_connections_calls_naming_another_stage_are_refused_and_deliver_nothing(
    start_dev: Callable[..., DevServer],
) -> None:
    """An application posting to the wrong stage finds out here, not once deployed."""
    server = start_dev()

    async def scenario() -> None:
        ws = await open_client(server)
        [row] = server.wait_for(lambda r: len(r) == 1)
        wrong = [
            server.connection_url(row).replace("/local/", "/prod/"),
            server.connection_url(row).replace("/local/", "/"),
        ]
        for url in wrong:
            for method in ("POST", "GET", "DELETE"):
                data = b"misrouted" if method == "POST" else None
                assert await asyncio.to_thread(_status, url, method, data) == 403, (url, method)
        assert (
            await asyncio.to_thread(_status, server.connection_url(row), "POST", b"routed") == 200
        )
        # Nothing misrouted arrived, and the DELETEs closed nothing.
        assert await asyncio.wait_for(ws.recv(), 10) == "routed"
        await ws.close()

    run(scenario())
    [row] = server.wait_for(lambda r: r[0]["end_reason"] is not None)
    assert row["end_reason"] == "client_disconnect"
    # The dev's output says why, at its default level: a bare 403 did not say that the
    # endpoint lacked /local (boto3 given http://127.0.0.1:3001) or named AWS's stage.
    refusals = {
        line["why"]
        for line in json_lines(server.log.read_text())
        if line.get("message") == "@connections call refused"
    }
    assert refusals == {
        "stage 'prod' is not this gateway's: its stage is 'local', its endpoint ending in /local",
        "the path names no stage: its stage is 'local', its endpoint ending in /local",
    }


def _call(
    url: str, method: str, headers: dict[str, str], data: bytes | None = None
) -> tuple[int, dict[str, str], bytes]:
    """Status, headers (lowercased) and body of an HTTP call to the gateway."""
    request = urllib.request.Request(url, data=data, method=method, headers=headers)  # noqa: S310
    try:
        with urllib.request.urlopen(request, timeout=10) as answer:  # noqa: S310
            return answer.status, {k.lower(): v for k, v in answer.headers.items()}, answer.read()
    except urllib.error.HTTPError as refused:
        with refused:
            return refused.code, {k.lower(): v for k, v in refused.headers.items()}, refused.read()


def test_a_page_on_another_site_cannot_reach_a_client_through_connections(
    start_dev: Callable[..., DevServer],
) -> None:
    """A page the developer visits may send a "simple" request to localhost without
    asking (fetch with mode no-cors, a form), but none signed; nor may it reach the
    gateway under a name of its own (DNS rebinding)."""
    server = start_dev()
    page = {"Origin": "https://elsewhere.example", "Content-Type": "text/plain"}

    async def scenario() -> None:
        ws = await open_client(server)
        [row] = server.wait_for(lambda r: len(r) == 1)
        url = server.connection_url(row)
        for method, data in (("POST", b'{"order":"pushed"}'), ("GET", None), ("DELETE", None)):
            status, headers, body = await asyncio.to_thread(_call, url, method, page, data)
            assert (status, json.loads(body)) == (403, {"message": "Missing Authentication Token"})
            assert headers["x-amzn-errortype"] == "MissingAuthenticationTokenException"
        # The preflight a page needs before it may add an Authorization header is never
        # approved.
        preflight = {
            **page,
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "authorization",
        }
        status, headers, _ = await asyncio.to_thread(_call, url, "OPTIONS", preflight)
        assert status == 403
        assert not any(name.startswith("access-control-allow") for name in headers)
        # Signed, but under another site's name: refused all the same.
        for host in ("elsewhere.example", f"elsewhere.example:{server.port}"):
            rebound = {"Host": host, "Authorization": SIGNED}
            for method, data in (("POST", b"rebound"), ("DELETE", None)):
                status, _, body = await asyncio.to_thread(_call, url, method, rebound, data)
                assert (status, json.loads(body)) == (403, {"message": "Forbidden"}), host
        # The developer's own caller under a name (a container calling the laptop) learns
        # from the dev's output why, which the 403 does not say.
        assert "call it by its --host, localhost or an IP address" in server.log.read_text()
        # boto3 unsigned (as a page is) is told why, in API Gateway's words.
        unsigned = boto3.client(
            "apigatewaymanagementapi",
            endpoint_url=server.endpoint,
            region_name="us-east-1",
            config=Config(signature_version=UNSIGNED),
        )
        with pytest.raises(ClientError) as refused:
            await asyncio.to_thread(
                unsigned.post_to_connection, ConnectionId=row["connection_id"], Data=b"x"
            )
        assert refused.value.response["Error"] == {
            "Code": "MissingAuthenticationTokenException",
            "Message": "Missing Authentication Token",
        }
        # boto3 signing, under the gateway's address or localhost, still gets through.
        for endpoint in (server.endpoint, server.endpoint.replace("127.0.0.1", "localhost")):
            signed = boto3.client(
                "apigatewaymanagementapi",
                endpoint_url=endpoint,
                region_name="us-east-1",
                aws_access_key_id="local",
                aws_secret_access_key="local",
            )
            await asyncio.to_thread(
                signed.post_to_connection, ConnectionId=row["connection_id"], Data=b"signed"
            )
        # Nothing refused reached the client, and the DELETEs closed nothing.
        assert [await asyncio.wait_for(ws.recv(), 10) for _ in range(2)] == ["signed"] * 2
        await ws.close()

    run(scenario())
    [row] = server.wait_for(lambda r: r[0]["end_reason"] is not None)
    assert row["end_reason"] == "client_disconnect"


def test_a_client_whose_session_ended_without_its_connection_is_closed_at_its_next_heartbeat(
    start_dev: Callable[..., DevServer],
) -> None:
    """A forced close whose DeleteConnection never reached the gateway (here: made in
    SQL alone) leaves the client connected without its row until it next speaks."""
    server = start_dev()

    async def scenario() -> None:
        ws = await open_client(server)
        [row] = server.wait_for(lambda r: len(r) == 1)
        with psycopg.connect(server.database_url, autocommit=True) as conn:
            conn.execute("select public.tether_force_close_v1(%s)", (row["session_id"],))
        await ws.send(json.dumps({"action": "heartbeat"}))
        await asyncio.wait_for(ws.wait_closed(), 10)
        assert ws.close_code == 1001

    run(scenario())
    [row] = server.rows()
    # Its $disconnect found the session ended: the operator's end stays.
    assert row["end_reason"] == "forced_close"
    # Said once the gateway's answer to the DELETE is read, which may follow the close.
    deadline = time.monotonic() + 10
    while "a connection without a session: closed" not in server.log.read_text():
        assert time.monotonic() < deadline, server.log.read_text()[-2000:]
        time.sleep(0.05)


def test_hostile_json_gets_an_error_frame_and_the_connection_stays(
    start_dev: Callable[..., DevServer],
) -> None:
    server = start_dev()

    async def scenario() -> None:
        ws = await open_client(server)
        await ws.send("[" * 1000 + "]" * 1000)
        error = json.loads(await ws.recv())
        assert error == {
            "error": "bad_request",
            "message": "message is not valid JSON: nested too deeply",
        }
        await ws.send('{"action": "heartbeat", "n": ' + "9" * 5000 + "}")
        assert "a number is too long" in json.loads(await ws.recv())["message"]
        # An empty frame, text or binary, is no JSON either (it was "must be a JSON object").
        for empty in ("", b""):
            await ws.send(empty)
            assert json.loads(await ws.recv()) == {
                "error": "bad_request",
                "message": "message is not valid JSON: it is empty",
            }
        await ws.send(json.dumps({"action": "heartbeat"}))
        assert json.loads(await ws.recv())["action"] == "heartbeat"
        await ws.close()

    run(scenario())
    [row] = server.wait_for(lambda r: len(r) == 1 and not r[0]["is_active"])
    assert row["end_reason"] == "client_disconnect"


def test_a_flooding_client_is_rate_limited_and_keeps_its_connection(
    start_dev: Callable[..., DevServer],
) -> None:
    server = start_dev("--message-rate", "20")

    async def scenario() -> tuple[int, int]:
        ws = await open_client(server)
        for _ in range(200):
            await ws.send(json.dumps({"action": "heartbeat"}))
        answers = [json.loads(await ws.recv()) for _ in range(200)]
        limited = sum(1 for a in answers if a.get("message") == "Too Many Requests")
        handled = sum(1 for a in answers if a.get("action") == "heartbeat")
        await asyncio.sleep(1.0)  # the bucket refills
        await ws.send(json.dumps({"action": "heartbeat"}))
        assert json.loads(await ws.recv())["action"] == "heartbeat"
        await ws.close()
        return limited, handled

    limited, handled = run(scenario())
    # A burst of 40 (twice the rate), a few more as the bucket refills; the rest refused.
    assert 40 <= handled < 100
    assert limited == 200 - handled


def _masked(opcode: int, payload: bytes, *, fin: bool = True) -> bytes:
    """One client frame (masked, FIN unless told), as RFC 6455 has a client send it."""
    mask = os.urandom(4)
    return (
        bytes([(0x80 if fin else 0) | opcode, 0x80 | len(payload)])
        + mask
        + bytes(byte ^ mask[i % 4] for i, byte in enumerate(payload))
    )


def test_a_client_that_pings_without_reading_its_pongs_is_read_no_more(
    start_dev: Callable[..., DevServer],
) -> None:
    server = start_dev("--route", "quiet=tests.routes:quiet")
    with _raw(server) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # its pongs back up soon
        sock.sendall(UPGRADE.format(agent="pinger", extra="").encode())
        assert sock.recv(4096).startswith(b"HTTP/1.1 101")
        # Pings with messages among them that get no answer (so no reply waits on the full
        # buffer): handling a message must not lift the pause.
        pings = (_masked(0x9, b"p" * 125) * 5 + _masked(0x1, b'{"action":"quiet"}')) * 100
        sock.settimeout(3)
        sent = 0
        with pytest.raises(TimeoutError):
            # Unchecked, the gateway read on and kept every pong: 130 MB in 8 s.
            while sent < 256 * 2**20:
                sock.sendall(pings)
                sent += len(pings)
        assert sent < 64 * 2**20
        # Meanwhile everyone else is served as before.

        async def heartbeat() -> dict[str, object]:
            async with await open_client(server) as ws:
                await ws.send(json.dumps({"action": "heartbeat"}))
                answer: dict[str, object] = json.loads(await ws.recv())
                return answer

        assert run(heartbeat())["action"] == "heartbeat"
        # Ctrl-C is not held up by it: the pongs it never reads are dropped with it.
        started = time.monotonic()
        assert server.stop(signal.SIGINT) == 0
        assert time.monotonic() - started < 20
    rows = server.rows()
    assert {row["end_reason"] for row in rows} == {"client_disconnect", "shutdown"}


def test_a_client_that_reads_nothing_is_still_ended_at_the_idle_timeout(
    start_dev: Callable[..., DevServer],
) -> None:
    server = start_dev("--idle-timeout", "2s", "--heartbeat-grace", "off")
    with _raw(server) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sock.sendall(UPGRADE.format(agent="deaf", extra="").encode())
        assert sock.recv(4096).startswith(b"HTTP/1.1 101")
        sock.settimeout(3)
        with contextlib.suppress(TimeoutError):
            while True:  # until the gateway reads no more: its pongs fill every buffer
                sock.sendall(_masked(0x9, b"p" * 125) * 500)
        # Pings are not activity: the idle timeout closes it, though the close frame
        # can never be delivered.
        [row] = server.wait_for(lambda r: len(r) == 1 and not r[0]["is_active"], timeout=30)
    assert row["end_reason"] == "idle_timeout"


def test_an_answer_that_cannot_be_sent_is_said_and_the_connection_carries_on(
    start_dev: Callable[..., DevServer],
) -> None:
    server = start_dev("--route", "unsendable=tests.routes:unsendable")

    async def scenario() -> None:
        ws = await open_client(server)
        await ws.send(json.dumps({"action": "unsendable"}))
        await ws.send(json.dumps({"action": "heartbeat"}))
        # The next answer arrives: the connection did not stall or end on the bad one.
        assert json.loads(await asyncio.wait_for(ws.recv(), 10))["action"] == "heartbeat"
        await ws.close()

    run(scenario())
    logged = [line for line in json_lines(server.log.read_text()) if line.get("level") == "ERROR"]
    assert [line["message"] for line in logged] == ["a message could not be sent"]


def test_a_client_that_reads_nothing_is_still_closed_by_a_delete(
    start_dev: Callable[..., DevServer],
) -> None:
    """Messages posted to a client that reads none back up; a DELETE (a forced close,
    the sweep's heartbeat timeout) must still close it, not wait behind them."""
    server = start_dev("--heartbeat-grace", "off")
    with _raw(server) as deaf:
        deaf.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        deaf.sendall(UPGRADE.format(agent="deaf", extra="").encode())
        assert deaf.recv(4096).startswith(b"HTTP/1.1 101")
        [row] = server.wait_for(lambda r: len(r) == 1)
        url = server.connection_url(row)
        for _ in range(200):  # 20 MB: more than the sockets' buffers and its outbox hold
            assert _status(url, "POST", b"z" * 100_000) in {200, 429}
        assert _status(url, "DELETE") == 204
        started = time.monotonic()
        [ended] = server.wait_for(lambda r: not r[0]["is_active"], timeout=30)
        # The queued messages and the close frame share one close frame's wait: 5 s.
        assert time.monotonic() - started < 15
        assert (ended["end_reason"], ended["disconnect_status_code"]) == (
            "server_disconnect",
            1001,
        )
        # Gone from the gateway too: its @connections answer is 410.
        assert _status(url, "GET") == 410


def test_posts_to_a_client_that_reads_nothing_are_refused_once_its_buffer_is_full(
    start_dev: Callable[..., DevServer],
) -> None:
    """A sender cannot make the gateway hold without bound what a client does not read:
    past what the sockets and the client's outbox hold, a POST gets 429
    (LimitExceededException, as API Gateway answers when "the WebSocket client side
    buffer is full"). Once the client reads, it gets every message that was taken, in
    order, and posts are taken again."""
    server = start_dev("--heartbeat-grace", "off")
    api = boto3.client(
        "apigatewaymanagementapi",
        endpoint_url=server.endpoint,
        region_name="us-east-1",
        aws_access_key_id="local",
        aws_secret_access_key="local",
        config=Config(retries={"total_max_attempts": 1}),  # the first refusal, not a retry's
    )

    async def scenario() -> None:
        # It stops reading from its socket while one message waits for recv(), and its
        # socket holds little.
        deaf = socket.socket()
        deaf.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # before the handshake
        deaf.connect(("127.0.0.1", server.port))
        ws = await connect(server.ws_url, ping_interval=None, max_queue=1, sock=deaf)
        [row] = server.wait_for(lambda r: len(r) == 1)
        taken = 0
        for sequence in range(400):  # 40 MB at most
            # Random, so compression (permessage-deflate) does not shrink it to nothing.
            message = json.dumps({"n": sequence, "pad": os.urandom(50_000).hex()}).encode()
            try:
                await asyncio.to_thread(
                    api.post_to_connection, ConnectionId=row["connection_id"], Data=message
                )
            except api.exceptions.LimitExceededException:
                break
            taken += 1
        else:
            raise AssertionError("every POST to a client that reads nothing was taken")
        received = [json.loads(await asyncio.wait_for(ws.recv(), 10))["n"] for _ in range(taken)]
        assert received == list(range(taken))
        await asyncio.to_thread(
            api.post_to_connection, ConnectionId=row["connection_id"], Data=b"again"
        )
        assert await asyncio.wait_for(ws.recv(), 10) == "again"
        await ws.close()

    run(scenario())
    [row] = server.wait_for(lambda r: r[0]["end_reason"] is not None)
    assert row["end_reason"] == "client_disconnect"


def test_ctrl_c_with_the_database_gone_says_which_sessions_stay_active(
    start_dev: Callable[..., DevServer], server_url: str
) -> None:
    server = start_dev("--sweep-interval", "1h")
    dbname = str(conninfo_to_dict(server.database_url)["dbname"])

    def stop_with_the_database_gone() -> int:
        with psycopg.connect(server_url, autocommit=True) as admin:
            admin.execute(
                sql.SQL("alter database {} allow_connections false").format(sql.Identifier(dbname))
            )
            admin.execute(
                "select pg_terminate_backend(pid) from pg_stat_activity"
                " where datname = %s and pid <> pg_backend_pid()",
                (dbname,),
            )
            try:
                return server.stop(signal.SIGINT)
            finally:
                admin.execute(
                    sql.SQL("alter database {} allow_connections true").format(
                        sql.Identifier(dbname)
                    )
                )

    async def scenario() -> int:
        clients = [await open_client(server) for _ in range(2)]
        await asyncio.to_thread(
            server.wait_for, lambda rows: sum(r["is_active"] for r in rows) == 2
        )
        stopped = await asyncio.to_thread(stop_with_the_database_gone)
        for ws in clients:
            await ws.close()
        return stopped

    assert run(scenario()) == 0
    log = server.log.read_text()
    assert "tether dev: stopped; 2 opened, 2 ended" in log
    assert "2 $disconnect(s) failed" in log
    assert (
        "stay active until a sweep ends them (this run's, if it came after, or the next"
        " `tether dev`'s first)\n" in log
    )
    assert "$disconnect failed" in log and "Traceback" not in log
    # Left for the sweep, as the line says: nothing was lost.
    assert sum(r["is_active"] for r in server.rows()) == 2


def test_a_text_message_that_is_not_utf8_is_closed_1007_with_one_log_line_and_no_traceback(
    start_dev: Callable[..., DevServer],
) -> None:
    """The client's close is right (1007), and the log says so in one line: it got
    uvicorn's ERROR line and a traceback of the UnicodeDecodeError, for each such client."""
    server = start_dev()
    body = b'{"action":"heartbeat","s":"\xff\xfe"}'
    sends = {
        "whole": _masked(0x1, body),
        "fragmented": _masked(0x1, body[:20], fin=False) + _masked(0x0, body[20:]),
    }
    for agent, frames in sends.items():
        with _raw(server) as sock:
            sock.sendall(UPGRADE.format(agent=agent, extra="").encode())
            assert sock.recv(4096).startswith(b"HTTP/1.1 101")
            sock.sendall(frames)
            close = _answer(sock)
        # An unmasked close frame, its code first.
        assert close[0] == 0x88, (agent, close)
        assert struct.unpack("!H", close[2:4]) == (1007,), agent
    rows = server.wait_for(lambda r: len(r) == 2 and not any(x["is_active"] for x in r))
    assert {row["disconnect_status_code"] for row in rows} == {1007}
    log = server.log.read_text()
    assert "Traceback" not in log, log[-3000:]
    assert [line for line in log.splitlines() if "UTF-8" in line] == [
        line for line in log.splitlines() if line.startswith("{") and "UTF-8" in line
    ]
    said = [line for line in json_lines(log) if "UTF-8" in line.get("message", "")]
    assert [line["level"] for line in said] == ["INFO", "INFO"], said


def test_a_route_that_exits_fails_its_own_invocation_not_the_dev(
    start_dev: Callable[..., DevServer],
) -> None:
    """A handler calling sys.exit() once stopped the whole `tether dev`, saying nothing,
    every client cut off; on AWS it fails that one invocation, and the client is told."""
    server = start_dev("--route", "exits=tests.routes:exits")

    async def scenario() -> None:
        ws = await open_client(server)
        await ws.send(json.dumps({"action": "exits"}))
        answer = json.loads(await asyncio.wait_for(ws.recv(), 10))
        assert answer["message"] == "Internal server error"
        await ws.send(json.dumps({"action": "heartbeat"}))
        assert json.loads(await asyncio.wait_for(ws.recv(), 10))["action"] == "heartbeat"
        await ws.close()

    run(scenario())
    assert server.process.poll() is None, server.log.read_text()[-2000:]
    [row] = server.wait_for(lambda r: len(r) == 1 and not r[0]["is_active"])
    assert row["end_reason"] == "client_disconnect"
    logged = [line for line in json_lines(server.log.read_text()) if line.get("level") == "ERROR"]
    assert [line["message"] for line in logged] == ["route handler raised"]
    assert "SystemExit" in logged[0]["exception"]
