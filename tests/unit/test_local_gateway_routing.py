"""How the local gateway routes a connection's messages: each on its own, as API
Gateway invokes a Lambda per message, and at most so many at once."""

from __future__ import annotations

import asyncio
import logging
import threading
from datetime import UTC, datetime
from typing import Any

import pytest

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


def test_a_route_s_answer_that_is_no_body_string_is_said_not_sent(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A handler returning its answer as a dict body, bytes or a bare string sent its
    client nothing, and nothing said why."""
    answers: list[Any] = [
        {"statusCode": 200, "body": {"ok": True}},
        b"bytes",
        "a bare string",
        {"statusCode": 200, "body": "sent"},
        {"statusCode": 200},  # no answer, and nothing wrong
        None,
    ]

    def route(event: dict[str, Any], context: object) -> Any:
        return answers.pop(0)

    gateway = LocalGateway(
        connect=lambda event, context: {"statusCode": 200},
        disconnect=lambda event, context: {"statusCode": 200},
        routes={"$default": route},
    )
    sent: list[dict[str, Any]] = []
    reads = 0

    async def receive() -> dict[str, Any]:
        nonlocal reads
        reads += 1
        if reads > 6:
            while answers:  # each message's answer handled before the close
                await asyncio.sleep(0.01)
            await asyncio.sleep(0.1)
            return {"type": "websocket.disconnect", "code": 1000}
        return {"type": "websocket.receive", "text": "{}"}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    with caplog.at_level(logging.WARNING, logger="tether"):
        asyncio.run(gateway._serve(_connection(), {}, receive, send))
    gateway.close()
    assert [m.get("text") for m in sent if m["type"] == "websocket.send"] == ["sent"]
    said = [r for r in caplog.records if "route's answer was not sent" in r.getMessage()]
    assert sorted(getattr(r, "returned", "") for r in said) == [
        "a body of type dict",
        "a bytes, not a dict",
        "a str, not a dict",
    ]
