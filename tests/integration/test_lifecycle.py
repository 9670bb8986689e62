"""The lifecycle SQL functions through PostgresStore, on a real Postgres.

The first seven tests are the original report's seven checks, now held by the
schema instead of by a careful disconnect()."""

from __future__ import annotations

import threading
import uuid
from datetime import UTC, datetime, timedelta

import psycopg
import pytest

from tests.conftest import SessionFactory
from tether.drivers.postgres import PostgresStore
from tether.errors import InvalidInputError
from tether.models import EndOutcome, EndReason, OpenSessionRequest, TouchOutcome

Conn = psycopg.Connection[dict[str, object]]


def _row(db: Conn, connection_id: str) -> dict[str, object]:
    row = db.execute(
        "select * from public.conversation_sessions where connection_id = %s", (connection_id,)
    ).fetchone()
    assert row is not None
    return row


def _count(db: Conn, where: str = "true") -> int:
    row = db.execute(
        f"select count(*) as n from public.conversation_sessions where {where}"
    ).fetchone()
    assert row is not None
    return int(str(row["n"]))


# --- the original report's seven checks ---------------------------------------


def test_open_sets_active(store: PostgresStore, db: Conn) -> None:
    user = uuid.uuid4()
    opened = store.open_session(OpenSessionRequest(connection_id="c-1=", user_id=user))
    assert opened.opened and opened.is_active
    row = _row(db, "c-1=")
    assert row["is_active"] is True
    assert row["user_id"] == user
    assert row["session_end"] is None
    assert row["duration_seconds"] is None


def test_end_sets_inactive(store: PostgresStore, db: Conn) -> None:
    store.open_session(OpenSessionRequest(connection_id="c-2="))
    result = store.end_session("c-2=", EndReason.CLIENT_DISCONNECT, status_code=1000)
    assert result.outcome is EndOutcome.ENDED
    row = _row(db, "c-2=")
    assert row["is_active"] is False
    assert row["end_reason"] == "client_disconnect"
    assert row["disconnect_status_code"] == 1000


def test_end_time_set(store: PostgresStore, db: Conn) -> None:
    store.open_session(OpenSessionRequest(connection_id="c-3="))
    before = datetime.now(UTC)
    result = store.end_session("c-3=", "client_disconnect")
    after = datetime.now(UTC)
    assert result.session is not None
    end = _row(db, "c-3=")["session_end"]
    assert isinstance(end, datetime)
    assert before - timedelta(seconds=1) <= end <= after + timedelta(seconds=1)
    assert result.session.session_end == end


def test_duration_right(store: PostgresStore, db: Conn) -> None:
    started = datetime.now(UTC) - timedelta(minutes=5, seconds=30)
    store.open_session(OpenSessionRequest(connection_id="c-4=", connected_at=started))
    result = store.end_session("c-4=", "client_disconnect")
    row = _row(db, "c-4=")
    assert isinstance(row["session_end"], datetime)
    expected = (row["session_end"] - started).total_seconds()
    assert float(str(row["duration_seconds"])) == pytest.approx(expected, abs=0.001)
    assert 329 < expected < 335
    assert result.session is not None
    assert result.session.duration_seconds == pytest.approx(expected, abs=0.001)


def test_bulk_close(store: PostgresStore, db: Conn, make_session: SessionFactory) -> None:
    for _ in range(5):
        make_session(started_seconds_ago=3 * 3600, seen_seconds_ago=60)
    for _ in range(3):
        make_session(started_seconds_ago=60, seen_seconds_ago=20 * 60)
    fresh = make_session(started_seconds_ago=30)
    closed = store.close_stale(idle_seconds=600, max_age_seconds=7200, limit=100)
    assert closed == {EndReason.IDLE_TIMEOUT: 3, EndReason.MAX_DURATION: 5}
    assert _count(db, "is_active") == 1
    assert _row(db, str(fresh["connection_id"]))["is_active"] is True
    # Every end waits in the outbox for its announcement.
    queued = store.claim_unannounced(limit=100)
    assert sorted(s.end_reason.value for s in queued) == ["idle_timeout"] * 3 + ["max_duration"] * 5


def test_no_orphan_after_bulk_close(
    store: PostgresStore, db: Conn, make_session: SessionFactory
) -> None:
    for hours in (9, 50, 444):  # the ages the original operators found
        make_session(started_seconds_ago=hours * 3600)
    orphans = db.execute("select count(*) as n from public.conversation_session_orphans")
    assert orphans.fetchone() == {"n": 3}
    store.close_stale(idle_seconds=600, max_age_seconds=7200)
    assert db.execute(
        "select count(*) as n from public.conversation_session_orphans"
    ).fetchone() == {"n": 0}
    assert _count(db, "is_active") == 0


def test_errors_handled(store: PostgresStore, db: Conn) -> None:
    store.open_session(OpenSessionRequest(connection_id="c-7="))
    with pytest.raises(InvalidInputError, match="unknown end reason 'exploded'"):
        store.end_session("c-7=", "exploded")
    with pytest.raises(InvalidInputError, match="throttle must be between 0 and 300"):
        store.touch_session("c-7=", -1)
    with pytest.raises(InvalidInputError, match="throttle"):
        store.touch_session("c-7=", float("nan"))
    with pytest.raises(InvalidInputError, match="idle limit"):
        store.close_stale(idle_seconds=0, max_age_seconds=7200)
    with pytest.raises(InvalidInputError, match="batch size"):
        store.close_stale(idle_seconds=600, max_age_seconds=7200, limit=10**6)
    # Nothing of that was written.
    row = _row(db, "c-7=")
    assert row["is_active"] is True
    assert row["end_reason"] is None
    # The store stays usable after refusing.
    assert store.end_session("c-7=", "client_disconnect").outcome is EndOutcome.ENDED


# --- idempotence and races -----------------------------------------------------


def test_repeated_open_returns_the_existing_row(store: PostgresStore, db: Conn) -> None:
    first = store.open_session(OpenSessionRequest(connection_id="dup="))
    second = store.open_session(OpenSessionRequest(connection_id="dup=", user_id=uuid.uuid4()))
    assert first.opened is True
    assert second.opened is False
    assert second.session_id == first.session_id
    assert second.user_id is None  # the second call changed nothing
    assert _count(db) == 1


def test_end_is_idempotent_and_first_reason_wins(store: PostgresStore, db: Conn) -> None:
    store.open_session(OpenSessionRequest(connection_id="twice="))
    first = store.end_session("twice=", "client_disconnect", status_code=1000)
    second = store.end_session("twice=", "gone")
    assert first.outcome is EndOutcome.ENDED
    assert second.outcome is EndOutcome.ALREADY_ENDED
    assert second.session is not None and first.session is not None
    assert second.session.end_reason is EndReason.CLIENT_DISCONNECT
    assert second.session.session_end == first.session.session_end
    row = _row(db, "twice=")
    assert row["end_reason"] == "client_disconnect"
    assert row["disconnect_status_code"] == 1000


def test_end_of_unknown_connection_is_a_no_op_that_says_so(store: PostgresStore, db: Conn) -> None:
    result = store.end_session("never-opened=", "client_disconnect")
    assert result.outcome is EndOutcome.UNKNOWN
    assert result.session is None
    assert _count(db) == 0


def test_concurrent_ends_exactly_one_wins(store: PostgresStore, database_url: str) -> None:
    store.open_session(OpenSessionRequest(connection_id="race="))
    workers = 8
    barrier = threading.Barrier(workers)
    outcomes: list[EndOutcome] = []
    lock = threading.Lock()
    reasons = [
        EndReason.CLIENT_DISCONNECT,
        EndReason.GONE,
        EndReason.IDLE_TIMEOUT,
        EndReason.SHUTDOWN,
    ]

    def end(index: int) -> None:
        own_store = PostgresStore(database_url)
        try:
            barrier.wait()
            result = own_store.end_session("race=", reasons[index % len(reasons)])
            with lock:
                outcomes.append(result.outcome)
        finally:
            own_store.close()

    threads = [threading.Thread(target=end, args=(i,)) for i in range(workers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert outcomes.count(EndOutcome.ENDED) == 1
    assert outcomes.count(EndOutcome.ALREADY_ENDED) == workers - 1


def test_overlapping_stale_sweeps_close_each_session_once(
    database_url: str, make_session: SessionFactory, db: Conn
) -> None:
    for _ in range(300):
        make_session(started_seconds_ago=3 * 3600)
    closed: list[int] = []
    lock = threading.Lock()
    barrier = threading.Barrier(2)

    def sweep() -> None:
        store = PostgresStore(database_url)
        try:
            barrier.wait()
            while batch := store.close_stale(idle_seconds=600, max_age_seconds=7200, limit=25):
                with lock:
                    closed.append(sum(batch.values()))
        finally:
            store.close()

    threads = [threading.Thread(target=sweep) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    # A session ended twice would count twice; and each is queued exactly once.
    assert sum(closed) == 300
    assert len(closed) > 1
    assert _count(db, "is_active") == 0
    queued = db.execute(
        "select count(*) as n, count(distinct session_id) as d"
        " from public.conversation_session_announcements"
    ).fetchone()
    assert queued == {"n": 300, "d": 300}


# --- heartbeat ------------------------------------------------------------------


def test_touch_is_throttled(store: PostgresStore, db: Conn, make_session: SessionFactory) -> None:
    make_session(connection_id="hb=", started_seconds_ago=120)
    before = _row(db, "hb=")["last_seen_at"]
    first = store.touch_session("hb=", throttle_seconds=30)
    assert first.outcome is TouchOutcome.TOUCHED
    after_first = _row(db, "hb=")["last_seen_at"]
    assert isinstance(after_first, datetime) and isinstance(before, datetime)
    assert after_first > before
    second = store.touch_session("hb=", throttle_seconds=30)
    assert second.outcome is TouchOutcome.THROTTLED
    assert _row(db, "hb=")["last_seen_at"] == after_first


def test_touch_of_ended_or_unknown_session_writes_nothing(
    store: PostgresStore, db: Conn, make_session: SessionFactory
) -> None:
    ended = make_session(connection_id="gone=", started_seconds_ago=100, ended_seconds_ago=50)
    assert store.touch_session("gone=", 0).outcome is TouchOutcome.UNKNOWN
    assert store.touch_session("nobody=", 0).outcome is TouchOutcome.UNKNOWN
    assert _row(db, "gone=")["last_seen_at"] == ended["last_seen_at"]


# --- the announcement queue ----------------------------------------------------


def test_announcement_queue_claims_marks_and_leases(
    store: PostgresStore, make_session: SessionFactory
) -> None:
    make_session(started_seconds_ago=100, ended_seconds_ago=50)
    make_session(started_seconds_ago=100, ended_seconds_ago=40)
    make_session(started_seconds_ago=100, ended_seconds_ago=30, announced=True)
    make_session(started_seconds_ago=100)  # still active: not in the queue
    claimed = store.claim_unannounced(limit=10, lease_seconds=60)
    assert len(claimed) == 2
    # Leased: a second announcer sees nothing while the first is at work.
    assert store.claim_unannounced(limit=10, lease_seconds=60) == []
    assert store.mark_announced([claimed[0].session_id]) == 1
    assert store.mark_announced([claimed[0].session_id]) == 0


def test_expired_lease_is_claimed_again(store: PostgresStore, make_session: SessionFactory) -> None:
    make_session(started_seconds_ago=100, ended_seconds_ago=50)
    first = store.claim_unannounced(limit=10, lease_seconds=0.001)
    assert len(first) == 1
    again = store.claim_unannounced(limit=10, lease_seconds=60)
    assert [s.session_id for s in again] == [first[0].session_id]


def test_fresh_end_is_kept_off_the_queue_while_its_announcer_works(store: PostgresStore) -> None:
    store.open_session(OpenSessionRequest(connection_id="lease="))
    store.end_session("lease=", "client_disconnect", announce_lease_seconds=60)
    assert store.claim_unannounced(limit=10) == []
    store.open_session(OpenSessionRequest(connection_id="nolease="))
    store.end_session("nolease=", "client_disconnect", announce_lease_seconds=0)
    assert [s.connection_id for s in store.claim_unannounced(limit=10)] == ["nolease="]


def test_a_connection_dropped_by_the_server_is_reopened_once(
    store: PostgresStore, database_url: str, db: Conn
) -> None:
    store.open_session(OpenSessionRequest(connection_id="warm="))
    # The pooler or the server drops the connection while the container is frozen.
    db.execute(
        "select pg_terminate_backend(pid) from pg_stat_activity"
        " where application_name = 'tether' and datname = current_database()"
    )
    assert store.end_session("warm=", "client_disconnect").outcome is EndOutcome.ENDED
    assert _row(db, "warm=")["is_active"] is False
