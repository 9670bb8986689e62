"""How the local gateway routes a connection's messages: each on its own, as API
Gateway invokes a Lambda per message, and at most so many at once."""

from __future__ import annotations

import asyncio
import threading
from datetime import UTC, datetime
from typing import Any

from tether.local.gateway import Limits, LocalConnection, LocalGateway, RateLimit


def _connection() -> LocalConnection:
    now = datetime.now(UTC)
    return LocalConnection(
        connection_id="routing=",
        connected_at=now,
        source_ip="127.0.0.1",
        user_agent="test",
        last_active_at=now,
        rate=RateLimit(rate=100, burst=100),
    )


def test_a_client_whose_handlers_are_all_busy_is_read_no_more_and_not_closed_as_idle() -> None:
    """Past its messages in flight, the next one waits unread (its answers cannot pile up
    without bound), and the idle timeout stands still: the wait is the gateway's."""
    release = threading.Event()
    running = 0
    most = 0
    count = threading.Lock()

    def slow(event: dict[str, Any], context: object) -> dict[str, Any]:
        nonlocal running, most
        with count:
            running += 1
            most = max(most, running)
        release.wait(10)
        with count:
            running -= 1
        return {"statusCode": 200, "body": "done"}

    gateway = LocalGateway(
        connect=lambda event, context: {"statusCode": 200},
        disconnect=lambda event, context: {"statusCode": 200},
        routes={"$default": slow},
        limits=Limits(idle_timeout_seconds=1.0, messages_in_flight=3),
    )
    sent: list[dict[str, Any]] = []
    reads = 0
    closing = asyncio.Event()

    async def receive() -> dict[str, Any]:
        nonlocal reads
        reads += 1
        if reads > 5:
            await closing.wait()
            return {"type": "websocket.disconnect", "code": 1000}
        return {"type": "websocket.receive", "text": "{}"}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    async def scenario() -> tuple[int, str]:
        serving = asyncio.create_task(gateway._serve(_connection(), {}, receive, send))
        await asyncio.sleep(2.5)  # past the idle timeout, twice over
        assert not serving.done(), sent
        assert (reads, most) == (3, 3)
        release.set()
        while len(sent) < 5 and not serving.done():
            await asyncio.sleep(0.02)
        closing.set()
        return await serving

    try:
        code, _ = asyncio.run(scenario())
    finally:
        release.set()
    assert code == 1000
    assert sent == [{"type": "websocket.send", "text": "done"}] * 5
    assert most == 3
