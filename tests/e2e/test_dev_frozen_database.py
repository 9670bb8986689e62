"""`tether dev` stopped while its database hangs: a Postgres of its own, frozen with
SIGSTOP (the shared one serves the other tests)."""

from __future__ import annotations

import asyncio
import signal
import time
from collections.abc import Callable, Iterator

import pytest

from tests.e2e.conftest import DevServer, open_client
from tests.support import frozen, thaw
from tether import migrate
from tether.drivers.postgres import ANSWER_WITHIN_SECONDS
from tether.local import embedded
from tether.local.dev import CLAIM_CHECK_SECONDS


@pytest.fixture(scope="module")
def own_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[embedded.EmbeddedPostgres]:
    server = embedded.start(tmp_path_factory.mktemp("frozen-dev") / "pgdata")
    try:
        migrate.migrate(server.url)
        yield server
    finally:
        thaw(server.data_dir)
        server.stop("immediate")


@pytest.fixture
def database_url(own_server: embedded.EmbeddedPostgres) -> str:
    """`start_dev` runs the dev on this module's own server."""
    return own_server.url


def test_a_second_stop_while_the_database_hangs_says_what_it_cut_short_without_tracebacks(
    start_dev: Callable[..., DevServer], own_server: embedded.EmbeddedPostgres
) -> None:
    """Ctrl-C with clients connected runs each one's $disconnect; with the database
    hung, they wait. A second Ctrl-C stops at once: the log says which
    $disconnects it cut short and the last lines say a sweep ends their sessions. It
    printed a traceback for every cut connection and one for the server's lifespan.
    (SIGINT reaches the dev even where a test runner ignores it: the server installs
    its own handler as it serves.)"""
    server = start_dev("--sweep-interval", "1h")

    async def connected_then_stopped() -> float:
        clients = [await open_client(server) for _ in range(3)]
        try:
            server.wait_for(lambda rows: sum(row["is_active"] for row in rows) == 3)
            with frozen(own_server.data_dir):  # thawed after 20 s at the latest
                await asyncio.sleep(3 * CLAIM_CHECK_SECONDS)  # its lock's check waits too
                server.process.send_signal(signal.SIGINT)
                await asyncio.sleep(1.0)  # the $disconnects are waiting on the database now
                server.process.send_signal(signal.SIGINT)
                started = time.monotonic()
                while server.process.poll() is None and time.monotonic() - started < 30:
                    await asyncio.sleep(0.1)
                return time.monotonic() - started
        finally:
            # Closed however the test goes: left open, a later test of this worker
            # would fail on their unclosed sockets as the collector finds them.
            for client in clients:
                await client.close()

    stopped_after = asyncio.run(connected_then_stopped())
    log = server.log.read_text()
    assert server.process.wait(timeout=5) == 0, log
    # Every wait on the database is bounded, the check of its lock included: that
    # one held the stop until the server thawed.
    assert stopped_after < 2 * ANSWER_WITHIN_SECONDS, log
    assert "Traceback" not in log, log
    assert "Exception in" not in log, log
    assert "$disconnect cut short by the stop; a sweep ends the session" in log
    assert "stay active until a sweep ends them" in log
    # Nothing was lost: each session waits, active, for the sweep, unless its
    # $disconnect's statement reached the server before the stop (a handler's thread
    # kept a connection from an earlier invocation) and the thawed server ran it.
    rows = server.rows()
    assert len(rows) == 3
    assert all(row["is_active"] or row["end_reason"] == "shutdown" for row in rows), rows
