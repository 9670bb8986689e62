"""The SessionEnded subscriber: the finalizer runs once per session, however often
EventBridge delivers, and a failure is left to EventBridge's retries."""

from __future__ import annotations

import copy
import json
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any
from uuid import UUID, uuid4

import psycopg
import pytest

from functions import connect, disconnect, session_ended
from tests import finalizers
from tests.conftest import EventBus, SessionFactory
from tests.support import (
    HS256_SECRET,
    FakeLambdaContext,
    claims,
    json_lines,
    load_event,
    metrics,
    sign,
    with_query,
    ws_event,
)
from tether import runtime
from tether.drivers.postgres import PostgresStore
from tether.errors import ConfigurationError, FinalizerError, InvalidInputError, TetherError
from tether.handlers import session_ended as handler
from tether.models import FinalizeOutcome

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


def test_the_finalizer_gets_the_session_as_recorded_not_as_the_event_says(
    recording_finalizer: list[Any], event_bus: EventBus, capsys: pytest.CaptureFixture[str]
) -> None:
    genuine = _ended_event(event_bus, "forged=")
    forged = copy.deepcopy(genuine)
    forged["detail"].update(
        user_id=str(uuid4()),
        end_reason="forced_close",
        duration_seconds=1e9,
        connection_id="Z" * 500,
        session_end="1970-01-01T00:00:00+00:00",
        disconnect_status_code=4999,
    )
    capsys.readouterr()
    # Whichever comes first, the finalizer acts on what the database recorded.
    assert session_ended.lambda_handler(forged, FakeLambdaContext()) == {"outcome": "finalized"}
    assert session_ended.lambda_handler(genuine, FakeLambdaContext()) == {
        "outcome": "already_finalized"
    }
    [finalized] = recording_finalizer
    assert finalized.model_dump(mode="json") == genuine["detail"]
    out = capsys.readouterr().out
    assert ("FinalizeDetailMismatch", 1.0, {}) in metrics(out)
    [warning] = [line for line in json_lines(out) if line.get("differing_fields")]
    assert warning["differing_fields"] == [
        "connection_id",
        "disconnect_status_code",
        "duration_seconds",
        "end_reason",
        "session_end",
        "user_id",
    ]
    assert "Z" * 50 not in out and "forced_close" not in out


def test_a_genuine_event_differs_in_nothing(
    recording_finalizer: list[Any], event_bus: EventBus, capsys: pytest.CaptureFixture[str]
) -> None:
    event = _ended_event(event_bus, "genuine=")
    capsys.readouterr()
    assert session_ended.lambda_handler(event, FakeLambdaContext()) == {"outcome": "finalized"}
    assert "FinalizeDetailMismatch" not in capsys.readouterr().out


def test_a_finalizer_s_secrets_stay_out_of_the_error_and_the_log(
    lambda_env: pytest.MonkeyPatch, event_bus: EventBus, capsys: pytest.CaptureFixture[str]
) -> None:
    lambda_env.setenv("TETHER_FINALIZER", "tests.finalizers:leaky")
    runtime.reset()
    event = _ended_event(event_bus, "leaky=")
    with pytest.raises(FinalizerError, match="could not reach") as raised:
        session_ended.lambda_handler(event, FakeLambdaContext())
    said = str(raised.value) + capsys.readouterr().out
    assert "RuntimeError" in said  # the traceback is still logged
    assert '"exception_notes":["while calling https://memory.example.com/v1/save' in said
    assert finalizers.LEAKED_PASSWORD not in said
    assert finalizers.LEAKED_TOKEN not in said


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


def test_an_async_finalizer_is_run_to_its_end_before_the_session_is_finalized(
    lambda_env: pytest.MonkeyPatch, event_bus: EventBus, db: Conn
) -> None:
    """An ``async def`` finalizer returned a coroutine that was never awaited: it never
    ran, and the session was recorded as finalized, so no redelivery ran it either."""
    lambda_env.setenv("TETHER_FINALIZER", "tests.finalizers:recording_async")
    runtime.reset()
    finalizers.calls.clear()
    first = _ended_event(event_bus, "async=")
    assert session_ended.lambda_handler(first, FakeLambdaContext()) == {"outcome": "finalized"}
    # A warm container's next invocation: its client, kept, is on the same loop.
    second = _ended_event(event_bus, "async-warm=")
    assert session_ended.lambda_handler(second, FakeLambdaContext()) == {"outcome": "finalized"}
    assert [str(d.session_id) for d in finalizers.calls] == [
        first["detail"]["session_id"],
        second["detail"]["session_id"],
    ]
    finalizers.calls.clear()


def test_a_cancelled_async_finalizer_fails_as_any_failing_one_does(
    lambda_env: pytest.MonkeyPatch,
    event_bus: EventBus,
    db: Conn,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """CancelledError is no Exception: it passed the failure's handling by, uncounted,
    and the claim was held until its lease ran out."""
    lambda_env.setenv("TETHER_FINALIZER", "tests.finalizers:cancelled_async")
    runtime.reset()
    event = _ended_event(event_bus, "cancelled=")
    capsys.readouterr()
    with pytest.raises(FinalizerError):
        session_ended.lambda_handler(event, FakeLambdaContext())
    assert "FinalizeFailed" in capsys.readouterr().out
    row = db.execute(
        "select finalized_at, finalize_after from public.conversation_sessions"
    ).fetchone()
    assert row is not None and row["finalized_at"] is None
    # Released: a retry may claim it at once.
    released_until = row["finalize_after"]
    assert released_until is None or (
        isinstance(released_until, datetime) and released_until <= datetime.now(UTC)
    )


def test_a_finalizer_that_returns_a_generator_fails_whatever_its_body_did(
    lambda_env: pytest.MonkeyPatch,
    event_bus: EventBus,
    db: Conn,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """A generator returned is never iterated: one made after the work cannot be told
    from the body of a generator function a wrapper hides, whose work never ran, so it
    fails, said so, rather than being recorded as finalized for good."""
    lambda_env.setenv("TETHER_FINALIZER", "tests.finalizers:recording_then_returning_a_generator")
    runtime.reset()
    finalizers.calls.clear()
    event = _ended_event(event_bus, "returns-generator=")
    capsys.readouterr()
    with pytest.raises(FinalizerError, match="returned a generator, which is never iterated"):
        session_ended.lambda_handler(event, FakeLambdaContext())
    assert "FinalizeFailed" in capsys.readouterr().out
    row = db.execute("select finalized_at from public.conversation_sessions").fetchone()
    assert row == {"finalized_at": None}
    finalizers.calls.clear()


def test_a_finalizer_that_exits_fails_as_any_failing_one_does(
    lambda_env: pytest.MonkeyPatch,
    event_bus: EventBus,
    db: Conn,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """SystemExit is no Exception: it passed the failure's handling by, nothing said or
    counted, the claim held until its lease ran out, and the Lambda runtime ended."""
    lambda_env.setenv("TETHER_FINALIZER", "tests.finalizers:exits")
    runtime.reset()
    event = _ended_event(event_bus, "exits=")
    capsys.readouterr()
    with pytest.raises(FinalizerError, match="memory store not configured"):
        session_ended.lambda_handler(event, FakeLambdaContext())
    out = capsys.readouterr().out
    assert "FinalizeFailed" in out and "finalizer failed" in out
    row = db.execute(
        "select finalized_at, finalize_after from public.conversation_sessions"
    ).fetchone()
    assert row is not None and row["finalized_at"] is None
    released_until = row["finalize_after"]
    assert released_until is None or (
        isinstance(released_until, datetime) and released_until <= datetime.now(UTC)
    )


@pytest.mark.parametrize(
    "finalizer",
    [
        "recording_generator",
        "recording_async_generator",
        "recording_generator_object",
        "recording_generator_partial",
        # Behind wrappers without functools.wraps: told by what the call returns.
        "recording_generator_wrapped",
        "recording_async_generator_wrapped",
        "recording_generator_async_wrapped",
    ],
)
def test_a_generator_finalizer_fails_rather_than_being_recorded_as_run(
    lambda_env: pytest.MonkeyPatch,
    event_bus: EventBus,
    db: Conn,
    capsys: pytest.CaptureFixture[str],
    finalizer: str,
) -> None:
    """Calling a function with a ``yield`` in it runs none of its body: the session was
    recorded as finalized, and no redelivery ran the finalizer."""
    lambda_env.setenv("TETHER_FINALIZER", f"tests.finalizers:{finalizer}")
    runtime.reset()
    finalizers.calls.clear()
    event = _ended_event(event_bus, f"{finalizer}=")
    capsys.readouterr()
    with pytest.raises(FinalizerError, match="generator"):
        session_ended.lambda_handler(event, FakeLambdaContext())
    assert "FinalizeFailed" in capsys.readouterr().out
    row = db.execute("select finalized_at from public.conversation_sessions").fetchone()
    assert row == {"finalized_at": None}
    assert finalizers.calls == []


def test_whether_the_finalizer_yields_is_read_once_per_container(
    recording_finalizer: list[Any], event_bus: EventBus
) -> None:
    reference = "tests.finalizers:recording"
    handler._is_generator_function.cache_clear()
    for connection_id in ("once=", "twice="):
        event = _ended_event(event_bus, connection_id)
        assert session_ended.lambda_handler(event, FakeLambdaContext()) == {"outcome": "finalized"}
    assert len(recording_finalizer) == 2
    read = handler._is_generator_function.cache_info()
    assert (read.misses, read.hits) == (1, 1)
    assert handler._is_generator_function(reference) is False


@pytest.fixture
def row_locker(lambda_env: pytest.MonkeyPatch, database_url: str) -> Iterator[None]:
    finalizers.row_locker_url = database_url
    finalizers.calls.clear()
    yield
    for conn in finalizers.row_locker:
        conn.close()
    finalizers.row_locker.clear()
    finalizers.calls.clear()


@pytest.mark.usefixtures("row_locker")
def test_a_failing_finalizer_is_said_even_when_its_claim_cannot_be_released(
    lambda_env: pytest.MonkeyPatch, event_bus: EventBus, capsys: pytest.CaptureFixture[str]
) -> None:
    """The release came first: when it failed too (the row held past its lock timeout),
    the finalizer's own error, its log line and its metric were lost."""
    lambda_env.setenv("TETHER_FINALIZER", "tests.finalizers:lock_then_fail")
    runtime.reset()
    event = _ended_event(event_bus, "unreleased=")
    capsys.readouterr()
    with pytest.raises(FinalizerError, match="memory service said no"):
        session_ended.lambda_handler(event, FakeLambdaContext())
    out = capsys.readouterr().out
    assert "finalizer failed; EventBridge will retry" in out
    assert "FinalizeFailed" in out
    assert "could not release the claim" in out


@pytest.mark.usefixtures("row_locker")
def test_a_finalizer_done_but_not_recorded_is_said_and_counted(
    lambda_env: pytest.MonkeyPatch, event_bus: EventBus, capsys: pytest.CaptureFixture[str]
) -> None:
    """It ran, and recording that failed: the next delivery runs it again. That was
    said nowhere; a finalizer must be idempotent, and the operator told."""
    lambda_env.setenv("TETHER_FINALIZER", "tests.finalizers:lock_then_succeed")
    runtime.reset()
    event = _ended_event(event_bus, "unrecorded=")
    capsys.readouterr()
    with pytest.raises(TetherError):
        session_ended.lambda_handler(event, FakeLambdaContext())
    out = capsys.readouterr().out
    assert len(finalizers.calls) == 1
    assert "the finalizer succeeded but could not be recorded" in out
    assert "FinalizeUnrecorded" in out


def test_concurrent_delivery_while_finalizing_is_retried_later(
    recording_finalizer: list[Any], event_bus: EventBus, database_url: str
) -> None:
    event = _ended_event(event_bus, "busy=")

    store = PostgresStore(database_url)
    try:
        # Another delivery holds the claim.
        assert (
            store.begin_finalize(UUID(event["detail"]["session_id"]), lease_seconds=60).outcome
            == "claimed"
        )
    finally:
        store.close()
    with pytest.raises(FinalizerError, match="in_progress"):
        session_ended.lambda_handler(event, FakeLambdaContext())
    assert recording_finalizer == []


@pytest.mark.usefixtures("recording_finalizer")
def test_an_event_for_a_session_this_database_does_not_hold_fails_with_a_metric(
    capsys: pytest.CaptureFixture[str],
) -> None:
    # A subscriber pointed at the wrong database must not acknowledge (and so drop)
    # every finalization: it fails, EventBridge retries, the dead-letter queue keeps it.
    event = load_event("session_ended")
    with pytest.raises(FinalizerError, match="not in this database"):
        session_ended.lambda_handler(event, FakeLambdaContext())
    assert finalizers.calls == []
    assert ("FinalizeUnknownSession", 1.0, {}) in metrics(capsys.readouterr().out)


def test_a_stale_claim_holder_can_neither_release_nor_finish_a_newer_claim(
    store: PostgresStore, make_session: SessionFactory
) -> None:
    session_id = make_session(started_seconds_ago=60, ended_seconds_ago=1)["session_id"]
    assert isinstance(session_id, UUID)
    first = store.begin_finalize(session_id, lease_seconds=0.2)
    assert first.outcome is FinalizeOutcome.CLAIMED and first.token is not None
    # The first holder stalls past its lease; a retry claims the session.
    deadline = time.monotonic() + 10
    while (second := store.begin_finalize(session_id, lease_seconds=60)).outcome is not (
        FinalizeOutcome.CLAIMED
    ):
        assert time.monotonic() < deadline, second
    assert second.token is not None and second.token != first.token
    # The stale holder fails: its release must not free the newer claim...
    assert store.finish_finalize(session_id, first.token, succeeded=False) is False
    third = store.begin_finalize(session_id, lease_seconds=60)
    assert third.outcome is FinalizeOutcome.IN_PROGRESS
    # ...nor can it finish it; the holder in force can.
    assert store.finish_finalize(session_id, first.token, succeeded=True) is False
    assert store.finish_finalize(session_id, second.token, succeeded=True) is True
    assert store.begin_finalize(session_id, lease_seconds=60).outcome is (
        FinalizeOutcome.ALREADY_FINALIZED
    )


def test_the_claim_lasts_at_least_as_long_as_the_invocation(
    lambda_env: pytest.MonkeyPatch, event_bus: EventBus, database_url: str
) -> None:
    """TETHER_FINALIZE_LEASE_SECONDS is the claim of a delivery whose context cannot say
    how long it has left (the handler called outside Lambda); one whose context can
    holds the session for its own time left, however much shorter the setting."""
    lambda_env.setenv("TETHER_FINALIZER", "tests.finalizers:lease_probe")
    lambda_env.setenv("TETHER_FINALIZE_LEASE_SECONDS", "30")
    runtime.reset()
    finalizers.lease_probe_url = database_url
    finalizers.leases_seen.clear()
    # The setting is in force: without a context, the claim is what it says.
    unbounded = _ended_event(event_bus, "no-context=")
    assert session_ended.lambda_handler(unbounded, None) == {"outcome": "finalized"}
    event = _ended_event(event_bus, "lease=")
    context = FakeLambdaContext(time_limit_seconds=120)
    assert session_ended.lambda_handler(event, context) == {"outcome": "finalized"}
    without_context, with_context = finalizers.leases_seen
    assert 20 < without_context <= 30
    assert with_context > 115


def test_a_claim_outlives_its_invocation_by_the_margin_only(
    lambda_env: pytest.MonkeyPatch, event_bus: EventBus, database_url: str
) -> None:
    """An invocation killed at its timeout (a finalizer that hangs) holds the session no
    longer than its own time and the margin: Lambda retries a minute later, and a claim
    still in force then (the default lease, 300 s, outlasted both retries of a 120 s
    function) would send the event to the dead-letter queue without running it again."""
    lambda_env.setenv("TETHER_FINALIZER", "tests.finalizers:lease_probe")
    runtime.reset()
    finalizers.lease_probe_url = database_url
    finalizers.leases_seen.clear()
    event = _ended_event(event_bus, "killed=")
    context = FakeLambdaContext(time_limit_seconds=120)
    assert session_ended.lambda_handler(event, context) == {"outcome": "finalized"}
    assert finalizers.leases_seen
    assert 115 < finalizers.leases_seen[0] <= 125


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
        lambda e: e.update({"detail-type": "X" * 100_000}),
        lambda e: e.update({"id": "X" * 100_000}),
        lambda e: e["detail"].update(session_id="not-a-uuid"),
        lambda e: e["detail"].update(end_reason="exploded"),
    ],
)
def test_malformed_session_ended_events_are_refused(
    mutate: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    event = json.loads(json.dumps(load_event("session_ended")))
    mutate(event)
    with pytest.raises(InvalidInputError) as refused:
        session_ended.lambda_handler(event, FakeLambdaContext())
    # What the sender wrote is not repeated, in the error or the log.
    assert "X" * 100 not in str(refused.value) + capsys.readouterr().out


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
