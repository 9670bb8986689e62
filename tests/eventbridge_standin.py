"""An EventBridge endpoint over real HTTP for boto3 to call, answering each PutEvents
as a test says: for the failures moto does not make (entries refused one by one)."""

from __future__ import annotations

import http.server
import json
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

Entries = list[dict[str, Any]]


@contextmanager
def serve(answer: Callable[[Entries], Entries]) -> Iterator[str]:
    """The endpoint's URL; ``answer`` gives each call's entries their answers, in
    order (``{"EventId": ...}`` taken, ``{"ErrorCode": ...}`` refused)."""

    class PutEvents(http.server.BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            entries = json.loads(self.rfile.read(int(self.headers["Content-Length"])))["Entries"]
            answers = answer(entries)
            failed = sum(1 for each in answers if "ErrorCode" in each)
            body = json.dumps({"FailedEntryCount": failed, "Entries": answers}).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/x-amz-json-1.1")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            """Quiet."""

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), PutEvents)
    serving = threading.Thread(target=server.serve_forever, daemon=True)
    serving.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
