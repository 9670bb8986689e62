"""A stand-in for API Gateway's ``@connections`` API, over real HTTP, whose answers
the test sets: alive (with any LastActiveAt), gone (410), or throttled (429).

moto's @connections mock answers for any id and never says 410, so the sweep's
gone path cannot be tested against it. The local gateway (``tether dev``) serves
the same API for real connections; this stand-in exists for states a real
connection cannot be put in on demand (alive but silent for an hour).
"""

from __future__ import annotations

import contextlib
import json
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import unquote

PREFIX = "/@connections/"


@dataclass
class Connection:
    connected_at: datetime
    last_active_at: datetime


@dataclass
class ConnectionsStandIn:
    alive: dict[str, Connection] = field(default_factory=dict)
    throttle: dict[str, int] = field(default_factory=dict)
    """connection id -> how many more requests answer 429."""
    calls: list[tuple[str, str]] = field(default_factory=list)
    on_request: Callable[[str, str], None] | None = None
    deletes_meet: threading.Barrier | None = None
    """When set, each DELETE waits (outside the lock) until as many DELETEs as the
    barrier's parties are in flight at once; a wait that times out breaks it."""
    silent: set[str] = field(default_factory=set)
    """Connection ids whose requests are taken and never answered (until the stand-in
    stops): a gateway gone quiet."""
    malformed: set[str] = field(default_factory=set)
    """Connection ids whose GetConnection answer names no time but "yesterday": an
    answer tether cannot read, whose call raises what it does not expect."""
    released: threading.Event = field(default_factory=threading.Event)
    url: str = ""
    lock: threading.Lock = field(default_factory=threading.Lock)

    def set_alive(
        self, connection_id: str, *, idle_seconds: float = 0.0, age_seconds: float = 60.0
    ) -> None:
        now = datetime.now(UTC)
        self.alive[connection_id] = Connection(
            connected_at=now - timedelta(seconds=age_seconds),
            last_active_at=now - timedelta(seconds=idle_seconds),
        )

    def _answer(self, method: str, connection_id: str) -> tuple[int, dict[str, str], Any]:
        with self.lock:
            self.calls.append((method, connection_id))
            if self.on_request is not None:
                self.on_request(method, connection_id)
            if self.throttle.get(connection_id, 0) > 0:
                self.throttle[connection_id] -= 1
                return (
                    429,
                    {"x-amzn-ErrorType": "LimitExceededException"},
                    {"message": "Limit exceeded"},
                )
            connection = self.alive.get(connection_id)
            if connection is None:
                return 410, {"x-amzn-ErrorType": "GoneException"}, {"message": "Gone"}
            if method == "DELETE":
                del self.alive[connection_id]
                return 204, {}, None
            if connection_id in self.malformed:
                return 200, {}, {"connectedAt": "yesterday", "lastActiveAt": "yesterday"}
            return (
                200,
                {},
                {
                    "connectedAt": connection.connected_at.isoformat().replace("+00:00", "Z"),
                    "lastActiveAt": connection.last_active_at.isoformat().replace("+00:00", "Z"),
                    "identity": {"sourceIp": "203.0.113.10", "userAgent": "stand-in"},
                },
            )


@contextmanager
def serve() -> Iterator[ConnectionsStandIn]:
    state = ConnectionsStandIn()

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: Any) -> None:
            """Quiet."""

        def _handle(self, method: str) -> None:
            path = self.path.split("?")[0]
            if PREFIX not in path:
                self.send_response(404)
                self.end_headers()
                return
            connection_id = unquote(path.split(PREFIX, 1)[1])
            if connection_id in state.silent:
                with state.lock:
                    state.calls.append((method, connection_id))
                state.released.wait(60)
                self.close_connection = True
                return
            if method == "DELETE" and state.deletes_meet is not None:
                # A wait that times out breaks the barrier: the test reads .broken.
                with contextlib.suppress(threading.BrokenBarrierError):
                    state.deletes_meet.wait()
            status, headers, body = state._answer(method, connection_id)
            data = b"" if body is None else json.dumps(body).encode()
            self.send_response(status)
            for name, value in headers.items():
                self.send_header(name, value)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_GET(self) -> None:
            self._handle("GET")

        def do_DELETE(self) -> None:
            self._handle("DELETE")

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    state.url = f"http://127.0.0.1:{server.server_address[1]}/prod"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield state
    finally:
        state.released.set()
        server.shutdown()
        server.server_close()
        thread.join()
