"""What `tether dev`'s last line counts: a $disconnect cut short is a failed one."""

from __future__ import annotations

import asyncio
import threading
from datetime import UTC, datetime
from typing import Any

import pytest

from tether.local.gateway import LocalConnection, LocalGateway, RateLimit


def test_a_disconnect_cut_short_by_the_stop_is_counted_as_failed() -> None:
    """A second Ctrl-C while the database hangs cancels the $disconnects still waiting:
    they were counted neither as failed nor as anything, so the last line said every
    session had ended while one stayed active."""
    release = threading.Event()

    def hanging_disconnect(event: dict[str, Any], context: object) -> dict[str, Any]:
        release.wait(10)  # a database that does not answer
        return {"statusCode": 200}

    gateway = LocalGateway(
        connect=lambda event, context: {"statusCode": 200},
        disconnect=hanging_disconnect,
        routes={"$default": lambda event, context: {"statusCode": 200}},
    )
    now = datetime.now(UTC)
    connection = LocalConnection(
        connection_id="cut-short=",
        connected_at=now,
        source_ip="127.0.0.1",
        user_agent="test",
        last_active_at=now,
        rate=RateLimit(rate=10, burst=10),
    )

    async def stop_while_it_waits() -> None:
        delivery = asyncio.create_task(gateway._deliver_disconnect(connection, 1012, "stop"))
        await asyncio.sleep(0.2)
        delivery.cancel()
        with pytest.raises(asyncio.CancelledError):
            await delivery
        release.set()  # the worker thread ends; asyncio.run waits for it

    try:
        asyncio.run(stop_while_it_waits())
    finally:
        release.set()
    assert gateway.stats.ended == 1
    assert gateway.stats.disconnects_failed == 1
