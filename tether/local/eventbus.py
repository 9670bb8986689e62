"""A local stand-in for EventBridge's PutEvents, for `tether chaos`.

It keeps every entry it accepts, so a run can check that each ended session was
announced at least once, and it can be told to refuse for a while (an outage) as
EventBridge does: HTTP 500 with ``InternalException``, which the announcer treats
as a failed delivery and leaves in the outbox.
"""

from __future__ import annotations

import json
import threading
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

PUT_EVENTS = "AWSEvents.PutEvents"


@dataclass
class LocalEventBus:
    url: str = ""
    failing: bool = False
    entries: list[dict[str, Any]] = field(default_factory=list)
    refused: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)

    def details(self) -> list[dict[str, Any]]:
        """Every accepted SessionEnded detail, in the order received."""
        with self.lock:
            return [json.loads(entry["Detail"]) for entry in self.entries]

    def _put(self, payload: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        entries = payload.get("Entries")
        if not isinstance(entries, list):
            return 400, {"__type": "ValidationException", "message": "Entries is required"}
        with self.lock:
            if self.failing:
                self.refused += len(entries)
                return 500, {"__type": "InternalException", "message": "local outage"}
            self.entries.extend(entries)
        return 200, {
            "FailedEntryCount": 0,
            "Entries": [{"EventId": str(uuid.uuid4())} for _ in entries],
        }


@contextmanager
def serve() -> Iterator[LocalEventBus]:
    bus = LocalEventBus()

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: Any) -> None:
            """Quiet: the run reports what matters."""

        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length)
            if self.headers.get("X-Amz-Target") != PUT_EVENTS:
                status, answer = 400, {"__type": "UnknownOperationException", "message": ""}
            else:
                try:
                    status, answer = bus._put(json.loads(body or b"{}"))
                except json.JSONDecodeError:
                    status, answer = 400, {"__type": "SerializationException", "message": ""}
            data = json.dumps(answer).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/x-amz-json-1.1")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    bus.url = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield bus
    finally:
        server.shutdown()
        server.server_close()
        thread.join()
