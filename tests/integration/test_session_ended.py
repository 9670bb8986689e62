"""The SessionEnded subscriber: the finalizer runs once per session, however often
EventBridge delivers, and a failure is left to EventBridge's retries."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any
from uuid import UUID

import psycopg
import pytest

from functions import connect, disconnect, session_ended
from tests import finalizers
from tests.conftest import EventBus
from tests.support import (
    HS256_SECRET,
    FakeLambdaContext,
    claims,
    json_lines,
    load_event,
    sign,
    with_query,
    ws_event,
)
from tether import runtime
from tether.drivers.postgres import PostgresStore
from tether.errors import ConfigurationError, FinalizerError, InvalidInputError

Conn = psycopg.Connection[dict[str, object]]


@pytest.fixture
def recording_finalizer(lambda_env: pytest.MonkeyPatch) -> Iterator[list[Any]]:
    lambda_env.setenv("TETHER_FINALIZER", "tests.finalizers:recording")
    runtime.reset()
    finalizers.calls.clear()
    finalizers.failures_left = 0
    yield finalizers.calls
    finalizers.calls.clear()
    finalizers.failures_left = 0


def _ended_event(event_bus: EventBus, connection_id: str) -> dict[str, Any]:
    """Run a real connect and disconnect, and take the event EventBridge delivered."""
    token = sign(claims(), HS256_SECRET, "HS256")
    connect.lambda_handler(
        with_query(ws_event("connect", connection_id), token=token), FakeLambdaContext()
    )
    disconnect.lambda_handler(ws_event("disconnect", connection_id), FakeLambdaContext())
    [event] = event_bus.received()
    return event


def test_finalizer_runs_once_however_often_the_event_comes(
    recording_finalizer: list[Any], event_bus: EventBus, db: Conn
) -> None:
    event = _ended_event(event_bus, "fin=")
    assert session_ended.lambda_handler(event, FakeLambdaContext()) == {"outcome": "finalized"}
    assert session_ended.lambda_handler(event, FakeLambdaContext()) == {
        "outcome": "already_finalized"
    }
    assert [str(d.session_id) for d in recording_finalizer] == [event["detail"]["session_id"]]
    row = db.execute("select finalized_at from public.conversation_sessions").fetchone()
    assert row is not None and row["finalized_at"] is not None


def test_failing_finalizer_raises_then_the_retry_succeeds(
    recording_finalizer: list[Any], event_bus: EventBus, db: Conn
) -> None:
    event = _ended_event(event_bus, "retry=")
    finalizers.failures_left = 1
    with pytest.raises(FinalizerError, match="memory store unavailable"):
        session_ended.lambda_handler(event, FakeLambdaContext())
    row = db.execute("select finalized_at from public.conversation_sessions").fetchone()
    assert row == {"finalized_at": None}
    # EventBridge retries; the claim was released, so the retry runs at once.
    assert session_ended.lambda_handler(event, FakeLambdaContext()) == {"outcome": "finalized"}
    assert len(recording_finalizer) == 1


def test_concurrent_delivery_while_finalizing_is_retried_later(
    recording_finalizer: list[Any], event_bus: EventBus, database_url: str
) -> None:
    event = _ended_event(event_bus, "busy=")

    store = PostgresStore(database_url)
    try:
        # Another delivery holds the claim.
        assert (
            store.begin_finalize(UUID(event["detail"]["session_id"]), lease_seconds=60).value
            == "claimed"
        )
    finally:
        store.close()
    with pytest.raises(FinalizerError, match="in_progress"):
        session_ended.lambda_handler(event, FakeLambdaContext())
    assert recording_finalizer == []


@pytest.mark.usefixtures("recording_finalizer")
def test_event_for_an_unknown_session_does_not_retry_forever() -> None:
    event = load_event("session_ended")
    assert session_ended.lambda_handler(event, FakeLambdaContext()) == {"outcome": "unknown"}
    assert finalizers.calls == []


@pytest.mark.usefixtures("lambda_env")
@pytest.mark.parametrize(
    ("reference", "fragment"),
    [
        ("no_colon_here", "must look like"),
        ("tests.no_such_module:run", "cannot import"),
        ("tests.finalizers:not_callable", "is not a callable"),
    ],
)
def test_bad_finalizer_setting_names_itself(
    lambda_env: pytest.MonkeyPatch, reference: str, fragment: str
) -> None:
    lambda_env.setenv("TETHER_FINALIZER", reference)
    runtime.reset()
    with pytest.raises(ConfigurationError, match=fragment):
        session_ended.lambda_handler(load_event("session_ended"), FakeLambdaContext())


@pytest.mark.usefixtures("lambda_env")
@pytest.mark.parametrize(
    "mutate",
    [
        lambda e: e.pop("detail"),
        lambda e: e.update({"detail-type": "Scheduled Event"}),
        lambda e: e["detail"].update(session_id="not-a-uuid"),
        lambda e: e["detail"].update(end_reason="exploded"),
    ],
)
def test_malformed_session_ended_events_are_refused(mutate: Any) -> None:
    event = json.loads(json.dumps(load_event("session_ended")))
    mutate(event)
    with pytest.raises(InvalidInputError):
        session_ended.lambda_handler(event, FakeLambdaContext())


def test_default_finalizer_logs(
    lambda_env: pytest.MonkeyPatch, event_bus: EventBus, capsys: pytest.CaptureFixture[str]
) -> None:
    event = _ended_event(event_bus, "deflog=")
    capsys.readouterr()
    assert session_ended.lambda_handler(event, FakeLambdaContext()) == {"outcome": "finalized"}
    logged = json_lines(capsys.readouterr().out)
    assert any(
        line.get("message") == "session finalized"
        and line.get("session_id") == event["detail"]["session_id"]
        for line in logged
    )
