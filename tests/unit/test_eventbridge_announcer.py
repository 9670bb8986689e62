"""The announcers: EventBridge against buses that do not answer or refuse, and the log."""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator
from datetime import UTC, datetime
from uuid import uuid4

import pytest

from tests import eventbridge_standin
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


@pytest.mark.usefixtures("local_credentials")
def test_a_bus_that_never_answers_is_not_called_again_for_the_rest_of_a_backlog(
    silent_bus: tuple[str, list[socket.socket]],
) -> None:
    """A sweep's batch of 500 ends is 50 PutEvents calls: against a bus that hangs, each
    waited through its timeouts, 8 at a time, for about 20 s, and the check's next one
    started that late (the 40 s bound with it). Once a call has failed, the calls not
    started yet are not made: those ends stay queued, as the failed ones do."""
    endpoint, taken = silent_bus
    concurrency = 4
    announcer = EventBridgeAnnouncer("bus", endpoint_url=endpoint, concurrency=concurrency)
    sessions = _ended(eventbridge.PUT_EVENTS_BATCH * concurrency * 4)
    result = announcer.announce(sessions)
    assert result.announced == []
    assert sorted(map(str, result.failed)) == sorted(str(s.session_id) for s in sessions)
    # The first calls, each with its tries; none of the rest.
    assert len(taken) <= concurrency * eventbridge.CALL_ATTEMPTS, len(taken)


@pytest.fixture
def refusing_bus() -> Iterator[tuple[str, list[int]]]:
    """An endpoint that answers every PutEvents with each entry refused in the answer
    (InternalFailure, one by one): the number of entries of each call it took."""
    calls: list[int] = []

    def answer(entries: eventbridge_standin.Entries) -> eventbridge_standin.Entries:
        calls.append(len(entries))
        return [{"ErrorCode": "InternalFailure", "ErrorMessage": "try again"}] * len(entries)

    with eventbridge_standin.serve(answer) as url:
        yield url, calls


@pytest.mark.usefixtures("local_credentials")
def test_entries_refused_one_by_one_do_not_stop_the_calls_after_them(
    refusing_bus: tuple[str, list[int]], caplog: pytest.LogCaptureFixture
) -> None:
    """Entries refused in an answer are no failure of the call: the rest of a backlog
    is still sent (it was skipped, as after a bus that does not answer, and logged as
    refused though never sent)."""
    endpoint, calls = refusing_bus
    announcer = EventBridgeAnnouncer("bus", endpoint_url=endpoint, concurrency=4)
    sessions = _ended(eventbridge.PUT_EVENTS_BATCH * 8)
    with caplog.at_level("WARNING", logger="tether.eventbridge"):
        result = announcer.announce(sessions)
    assert result.announced == [] and len(result.failed) == len(sessions)
    assert calls == [eventbridge.PUT_EVENTS_BATCH] * 8
    (said,) = [r for r in caplog.records if r.name == "tether.eventbridge"]
    assert (said.__dict__["error_code"], said.__dict__["sessions"]) == (
        "InternalFailure",
        len(sessions),
    )


def test_the_log_announcer_writes_the_event_s_fields_alone(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """An end the sweep redelivered from the outbox was logged with the outbox's
    bookkeeping (claim_count, enqueued_at), which a first delivery has not: the same
    event, two shapes. (The EventBridge announcer's detail was mended alike.)"""
    from tether.models import QueuedSession  # noqa: PLC0415
    from tether.outbox import LogAnnouncer  # noqa: PLC0415

    (first,) = _ended(1)
    queued = QueuedSession(**first.model_dump(), enqueued_at=datetime.now(UTC), claim_count=3)
    with caplog.at_level("INFO", logger="tether.outbox"):
        LogAnnouncer().announce([first, queued])
    fields = set(SessionEnded.model_fields)
    said = [r.__dict__ for r in caplog.records if r.getMessage() == "SessionEnded"]
    assert len(said) == 2
    for record in said:
        assert fields <= set(record)
        assert not {"claim_count", "enqueued_at"} & set(record)
