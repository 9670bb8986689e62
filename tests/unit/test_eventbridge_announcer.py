"""The EventBridge announcer against a bus that takes calls and never answers."""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator
from datetime import UTC, datetime
from uuid import uuid4

import pytest

from tether.aws import eventbridge
from tether.aws.eventbridge import EventBridgeAnnouncer
from tether.models import EndReason, SessionEnded


@pytest.fixture
def silent_bus() -> Iterator[tuple[str, list[socket.socket]]]:
    """An endpoint that accepts every connection, reads nothing and answers nothing;
    the connections it took, to count the calls made."""
    taken: list[socket.socket] = []
    server = socket.create_server(("127.0.0.1", 0))
    server.settimeout(0.2)
    stop = threading.Event()

    def accept() -> None:
        while not stop.is_set():
            try:
                conn, _ = server.accept()
            except TimeoutError:
                continue
            taken.append(conn)

    acceptor = threading.Thread(target=accept, daemon=True)
    acceptor.start()
    try:
        yield f"http://127.0.0.1:{server.getsockname()[1]}", taken
    finally:
        stop.set()
        acceptor.join()
        for conn in taken:
            conn.close()
        server.close()


def _ended(count: int) -> list[SessionEnded]:
    now = datetime.now(UTC)
    return [
        SessionEnded(
            session_id=uuid4(),
            connection_id=f"c{n}=",
            user_id=None,
            session_start=now,
            session_end=now,
            duration_seconds=0.0,
            end_reason=EndReason.GONE,
        )
        for n in range(count)
    ]


@pytest.fixture
def local_credentials(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")


@pytest.mark.usefixtures("local_credentials")
def test_put_events_is_tried_as_many_times_as_it_says(
    silent_bus: tuple[str, list[socket.socket]],
) -> None:
    """botocore's ``max_attempts`` counts the retries after the first call, so two
    attempts were three: every worst case reckoned from them ($disconnect's, a forced
    close's inside API Gateway's 29 s) was a third short."""
    endpoint, taken = silent_bus
    result = EventBridgeAnnouncer("bus", endpoint_url=endpoint).announce(_ended(1))
    assert result.announced == [] and len(result.failed) == 1
    assert len(taken) == eventbridge.CALL_ATTEMPTS
