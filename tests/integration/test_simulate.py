"""`tether simulate` against a database that is not the gateway's, on a real Postgres."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import psycopg
import pytest

from tests.support import ORIGIN_TABLE, run_tether


@pytest.mark.parametrize(
    ("table", "said"),
    [
        (None, "the database has no public.conversation_sessions table"),
        (ORIGIN_TABLE, "a conversation_sessions table without tether's user_agent, end_reason"),
    ],
)
def test_simulate_on_a_database_without_tethers_table_says_so_before_it_runs(
    empty_database_url: str, table: str | None, said: str
) -> None:
    """Said before a client connects, with what to do; it was a bare SQL error (42P01,
    42703) once the whole run was over."""
    if table is not None:
        with psycopg.connect(empty_database_url, autocommit=True) as conn:
            conn.execute(table)
    started = time.monotonic()
    result = run_tether(
        *("simulate", "--url", "ws://127.0.0.1:9", "--database-url", empty_database_url),
        *("--clients", "2", "--duration", "30s", "--settle", "30s"),
    )
    assert result.returncode == 1, result.stderr
    assert said in result.stderr
    assert "is --database-url the gateway's database?" in result.stderr
    assert "`tether migrate`" in result.stderr
    assert "42P01" not in result.stderr
    assert "42703" not in result.stderr
    assert time.monotonic() - started < 20  # not after the run's 30 s


def test_simulate_that_cannot_reach_its_database_says_it_is_the_database() -> None:
    """It said libpq's words alone ("connection failed: ...", "failed to resolve host
    ..."), which do not tell the database from the gateway --url names; every other
    command says "cannot connect to the database"."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    result = run_tether(
        *("simulate", "--url", "ws://127.0.0.1:9", "--clients", "1", "--duration", "1s"),
        *("--database-url", f"postgresql://app:hunter2pass@127.0.0.1:{port}/db"),
        timeout=60,
    )
    assert result.returncode == 1, result.stderr
    assert result.stdout == ""
    assert result.stderr.startswith("tether simulate: cannot connect to the database: "), (
        result.stderr
    )
    assert f"port {port}" in result.stderr
    assert "hunter2pass" not in result.stderr


@pytest.fixture
def redirecting_gateway() -> Iterator[str]:
    """A gateway that answers every handshake with a redirect websockets cannot follow
    (to a #fragment of the same URL, its query kept)."""

    class Redirect(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_GET(self) -> None:
            self.send_response(302)
            self.send_header("Location", "#moved")
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, format: str, *args: object) -> None:
            """Quiet."""

    server = ThreadingHTTPServer(("127.0.0.1", 0), Redirect)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"ws://127.0.0.1:{server.server_address[1]}/"
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def test_a_client_error_never_shows_the_token(database_url: str, redirecting_gateway: str) -> None:
    """websockets said the URL it could not follow, with the ?token= the clients present:
    the report printed the access token in full."""
    token = "opaque-access-token-0123456789"
    result = run_tether(
        *("simulate", "--url", redirecting_gateway, "--database-url", database_url),
        *("--clients", "1", "--duration", "1s", "--settle", "1s", "--token", token),
    )
    said = result.stdout + result.stderr
    assert "client error: InvalidURI" in said, said
    assert token not in said
    assert "token=***" in said
