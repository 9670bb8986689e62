"""What `tether dev`'s last line counts: a $disconnect cut short is a failed one unless
its thread went on to end the session."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import pytest

from tether.errors import DatabaseUnavailableError
from tether.local.gateway import LocalConnection, LocalGateway, RateLimit

Handler = Callable[[dict[str, Any], object], dict[str, Any]]


def _gateway(disconnect: Handler, *, handler_threads: int = 4) -> LocalGateway:
    return LocalGateway(
        connect=lambda event, context: {"statusCode": 200},
        disconnect=disconnect,
        routes={"$default": lambda event, context: {"statusCode": 200}},
        handler_threads=handler_threads,
    )


def _connection(connection_id: str) -> LocalConnection:
    now = datetime.now(UTC)
    return LocalConnection(
        connection_id=connection_id,
        connected_at=now,
        source_ip="127.0.0.1",
        user_agent="test",
        last_active_at=now,
        rate=RateLimit(rate=10, burst=10),
    )


def _cut_short(gateway: LocalGateway, connection_ids: list[str], release: threading.Event) -> None:
    """Each connection's $disconnect delivered, then cut short by a second Ctrl-C while
    its handler waits; the handlers are let go after the cut, and the gateway closed."""

    async def stop_while_they_wait() -> None:
        deliveries = [
            asyncio.create_task(gateway._deliver_disconnect(_connection(cid), 1012, "stop"))
            for cid in connection_ids
        ]
        await asyncio.sleep(0.2)
        for delivery in deliveries:
            delivery.cancel()
        for delivery in deliveries:
            with pytest.raises(asyncio.CancelledError):
                await delivery
        release.set()

    try:
        asyncio.run(stop_while_they_wait())
    finally:
        release.set()
    gateway.close()


def test_a_disconnect_cut_short_that_fails_is_counted_as_failed() -> None:
    """A second Ctrl-C while the database hangs cancels the $disconnects still waiting:
    they were counted neither as failed nor as anything, so the last line said every
    session had ended while one stayed active."""
    release = threading.Event()

    def hanging_disconnect(event: dict[str, Any], context: object) -> dict[str, Any]:
        release.wait(10)  # a database that does not answer, then gives up
        raise DatabaseUnavailableError("the database did not answer")

    gateway = _gateway(hanging_disconnect)
    _cut_short(gateway, ["cut-short="], release)

    assert gateway.stats.ended == 1
    assert gateway.stats.disconnects_failed == 1


def test_a_disconnect_cut_short_before_it_had_a_thread_is_counted_as_failed() -> None:
    """One still waiting for a thread when the stop comes never runs."""
    release = threading.Event()

    def slow_disconnect(event: dict[str, Any], context: object) -> dict[str, Any]:
        release.wait(10)
        return {"statusCode": 200}

    gateway = _gateway(slow_disconnect, handler_threads=1)
    _cut_short(gateway, ["running=", "waiting="], release)

    assert gateway.stats.ended == 2
    assert gateway.stats.disconnects_failed == 1  # the one that had no thread


def test_a_disconnect_cut_short_that_goes_on_to_end_its_session_is_not_a_failure() -> None:
    """A second Ctrl-C soon after the first, the database well: every handler already
    running went on and ended its session, while the last line said they had failed and
    their sessions stayed active for a sweep, with none active in the table."""
    release = threading.Event()

    def disconnect(event: dict[str, Any], context: object) -> dict[str, Any]:
        release.wait(10)  # the statement on its way
        return {"statusCode": 200}

    gateway = _gateway(disconnect)
    _cut_short(gateway, ["a=", "b=", "c="], release)

    assert gateway.stats.ended == 3
    assert gateway.stats.disconnects_failed == 0
