"""A database that stops answering with its connections up (a server stopped or
stalled on its disk, a frozen pooler or VM): its kernel still acknowledges every byte,
so no TCP timeout fires. A real Postgres of its own, frozen with SIGSTOP: the shared
one serves the other tests."""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from functions import connect, message
from tests.support import FakeLambdaContext, frozen, thaw, ws_event
from tether import migrate, runtime
from tether.drivers.postgres import ANSWER_WITHIN_SECONDS, PostgresStore
from tether.errors import DatabaseUnavailableError
from tether.local import embedded
from tether.models import OpenSessionRequest


@dataclass(frozen=True)
class Server:
    url: str
    data_dir: Path


@pytest.fixture(scope="module")
def own_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    server = embedded.start(tmp_path_factory.mktemp("frozen") / "pgdata")
    try:
        migrate.migrate(server.url)
        yield Server(server.url, server.data_dir)
    finally:
        thaw(server.data_dir)
        server.stop("immediate")


def test_a_call_to_a_frozen_server_gives_up_then_the_next_reconnects(own_server: Server) -> None:
    store = PostgresStore(own_server.url, answer_within=1.0)
    try:
        opened = store.open_session(OpenSessionRequest(connection_id="warm="))  # kept open
        with frozen(own_server.data_dir):
            started = time.monotonic()
            with pytest.raises(DatabaseUnavailableError) as unanswered:
                store.touch_session("warm=", 0)
            waited = time.monotonic() - started
        assert "did not answer tether_touch_session_v1 within 1s" in str(unanswered.value)
        assert waited < 8, waited  # it waited as long as the server was frozen
        # Thawed: the next call opens a new connection and is answered.
        assert store.open_session(OpenSessionRequest(connection_id="after=")).opened
        assert store.touch_session("warm=", 0).outcome.value in {"touched", "throttled"}
        assert opened.session_id
    finally:
        store.close()


def test_a_handler_answers_503_within_its_timeout_while_the_server_is_frozen(
    own_server: Server, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A warm container's $connect and heartbeat answer 503 (retry later) within the
    Lambda's 10 s, not after the server thaws."""
    for name in ("DATABASE_URL", "SUPABASE_URL", "SUPABASE_JWT_SECRET"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("TETHER_DATABASE_URL", own_server.url)
    monkeypatch.setenv("TETHER_ALLOW_ANONYMOUS", "true")
    monkeypatch.setenv("TETHER_ANNOUNCE_TO", "log")
    runtime.reset()
    try:
        warm = connect.lambda_handler(ws_event("connect", "frozen-warm="), FakeLambdaContext())
        assert warm["statusCode"] == 200
        with frozen(own_server.data_dir):
            started = time.monotonic()
            refused = connect.lambda_handler(
                ws_event("connect", "frozen-new="), FakeLambdaContext()
            )
            beat = message.lambda_handler(
                ws_event("message_heartbeat", "frozen-warm="), FakeLambdaContext()
            )
            waited = time.monotonic() - started
        assert refused["statusCode"] == 503
        assert waited < 2 * ANSWER_WITHIN_SECONDS + 4, waited
        assert beat["statusCode"] == 503, beat
    finally:
        runtime.reset()
