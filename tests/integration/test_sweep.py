"""The sweep: every gone connection's session ends, with its reason, once, and is
announced at least once; overlapping, time-bounded and fault-tolerant."""

from __future__ import annotations

import functools
import json
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from types import SimpleNamespace
from typing import Any, cast
from uuid import UUID

import psycopg
import pytest

from functions import connect, disconnect, sweep
from tests import connections_standin
from tests.conftest import EventBus, SessionFactory, allow_connections, with_database
from tests.connections_standin import ConnectionsStandIn
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
from tether import store as store_module
from tether.aws.connections import ConnectionsApi
from tether.drivers.postgres import PostgresStore
from tether.errors import ConfigurationError, DatabaseUnavailableError
from tether.models import EndReason, SessionEnded
from tether.outbox import AnnounceResult
from tether.store import Row, SessionStore
from tether.sweep import Sweep, SweepPolicy, SweepReport

Conn = psycopg.Connection[dict[str, object]]


class ScriptedContext(FakeLambdaContext):
    """A Lambda context whose remaining time follows a script: a way to say
    "time for exactly N batches" without racing the clock."""

    def __init__(self, remaining_seconds: Sequence[float]) -> None:
        super().__init__()
        self._script = list(remaining_seconds)

    def get_remaining_time_in_millis(self) -> int:
        value = self._script.pop(0) if len(self._script) > 1 else self._script[0]
        return int(value * 1000)


class RecordingAnnouncer:
    """Counts announcements (stands in for EventBridge in the 100k backlog test,
    where 10,000 PutEvents through moto would measure moto, not tether)."""

    def __init__(self) -> None:
        self.counts: Counter[UUID] = Counter()

    def announce(self, sessions: Sequence[SessionEnded]) -> AnnounceResult:
        self.counts.update(session.session_id for session in sessions)
        return AnnounceResult(announced=[session.session_id for session in sessions])


@pytest.fixture
def gateway(lambda_env: pytest.MonkeyPatch) -> Iterator[ConnectionsStandIn]:
    with connections_standin.serve() as state:
        lambda_env.setenv("TETHER_CONNECTIONS_ENDPOINT", state.url)
        lambda_env.setenv("TETHER_ANNOUNCE_LEASE_SECONDS", "0")
        # One check per run, and a 410 ends at once, unless a test says otherwise.
        lambda_env.setenv("TETHER_SWEEP_CHECK_EVERY_SECONDS", "60")
        lambda_env.setenv("TETHER_GONE_SETTLE_SECONDS", "0")
        runtime.reset()
        yield state


ONE_CHECK = SweepPolicy(
    idle_limit_seconds=660,
    max_age_seconds=7260,
    suspect_after_seconds=120,
    heartbeat_grace_seconds=None,
    batch_size=500,
    concurrency=1,
    time_margin_seconds=5,
    announce_lease_seconds=60,
    suspect_lease_seconds=30,
    gone_settle_seconds=0,
    check_every_seconds=60,
    keep_checking_seconds=0,
)
"""A run of one check at the production limits; each test changes what it is about."""


def _run(context: FakeLambdaContext | None = None) -> dict[str, Any]:
    return sweep.lambda_handler(load_event("scheduled"), context or FakeLambdaContext())


def _by_connection(db: Conn) -> dict[str, dict[str, object]]:
    rows = db.execute("select * from public.conversation_sessions").fetchall()
    return {str(row["connection_id"]): row for row in rows}


def test_each_state_ends_with_its_reason_at_its_last_sign_of_life(
    lambda_env: pytest.MonkeyPatch,
    gateway: ConnectionsStandIn,
    db: Conn,
    make_session: SessionFactory,
    event_bus: EventBus,
    capsys: pytest.CaptureFixture[str],
) -> None:
    lambda_env.setenv("TETHER_HEARTBEAT_GRACE_SECONDS", "200")
    runtime.reset()
    make_session(connection_id="fresh=", started_seconds_ago=10)
    make_session(connection_id="idle=", started_seconds_ago=1800, seen_seconds_ago=1200)
    make_session(connection_id="old=", started_seconds_ago=3 * 3600, seen_seconds_ago=60)
    make_session(connection_id="gone=", started_seconds_ago=600, seen_seconds_ago=300)
    make_session(connection_id="alive=", started_seconds_ago=600, seen_seconds_ago=300)
    gateway.set_alive("alive=", idle_seconds=5)
    make_session(connection_id="silent=", started_seconds_ago=3600, seen_seconds_ago=300)
    gateway.set_alive("silent=", idle_seconds=400)  # connected, but no heartbeat for 5 minutes
    make_session(
        connection_id="unannounced=",
        started_seconds_ago=900,
        ended_seconds_ago=600,
        failed_announcements=1,
    )

    report = _run()

    rows = _by_connection(db)
    assert rows["fresh="]["is_active"] is True
    assert rows["alive="]["is_active"] is True
    assert {c: rows[c]["end_reason"] for c in ("idle=", "old=", "gone=", "silent=")} == {
        "idle=": "idle_timeout",
        "old=": "max_duration",
        "gone=": "gone",
        "silent=": "heartbeat_timeout",
    }
    # Honest end times: the last sign of life, not the moment the sweep ran.
    for connection in ("idle=", "gone=", "silent="):
        assert rows[connection]["session_end"] == rows[connection]["last_seen_at"], connection
    # Past the age limit the connection cannot have outlived it, whatever it said last.
    old = rows["old="]
    assert old["session_end"] == old["session_start"] + timedelta(seconds=7200 + 60)  # type: ignore[operator]
    # The live connection's last sign of life came from the gateway's LastActiveAt.
    seen = rows["alive="]["last_seen_at"]
    assert isinstance(seen, datetime)
    assert abs((datetime.now(UTC) - seen).total_seconds() - 5) < 3
    assert ("DELETE", "silent=") in gateway.calls  # gateway and table agree
    assert "silent=" not in gateway.alive

    assert report["ended_by_reason"] == {
        "idle_timeout": 1,
        "max_duration": 1,
        "gone": 1,
        "heartbeat_timeout": 1,
    }
    assert report["redelivered"] == 1
    delivered = Counter(e["detail"]["connection_id"] for e in event_bus.received())
    assert delivered == Counter(["idle=", "old=", "gone=", "silent=", "unannounced="])
    assert db.execute(
        "select count(*) as n from public.conversation_sessions"
        " where not is_active and announced_at is null"
    ).fetchone() == {"n": 0}

    out = capsys.readouterr().out
    emitted = {(name, dims.get("Reason")): value for name, value, dims in metrics(out)}
    assert emitted[("SessionsEnded", "gone")] == 1
    assert emitted[("SessionsEnded", "heartbeat_timeout")] == 1
    assert emitted[("ActiveSessions", None)] == 2
    assert emitted[("AnnouncementsRedelivered", None)] == 1
    assert emitted[("OrphanedSessions", None)] == 0
    assert 0 <= emitted[("OldestActiveSessionAgeSeconds", None)] < 700
    summary = [line for line in out.splitlines() if '"sweep finished"' in line]
    assert len(summary) == 1 and json.loads(summary[0])["ended"] == 4


def test_a_session_past_both_limits_is_ended_for_the_one_it_reached_first(
    store: PostgresStore, db: Conn, make_session: SessionFactory
) -> None:
    """Found long after (a sweep down overnight): a session silent from its first
    minute reached the idle limit first, and API Gateway closed it then; it was ended
    max_duration, with a duration of a minute."""
    idle, max_age = 660.0, 7260.0  # the sweep's limits, grace included
    # Silent from its first minute, found 3 hours later.
    make_session(
        connection_id="idle-first=", started_seconds_ago=3 * 3600, seen_seconds_ago=3 * 3600 - 60
    )
    # Chatty until the sweep: the age limit came first.
    make_session(connection_id="age-first=", started_seconds_ago=3 * 3600, seen_seconds_ago=60)
    # Silent 5 minutes before the age limit: the idle limit (11 min later) would have
    # come after it.
    make_session(
        connection_id="age-just-first=",
        started_seconds_ago=3 * 3600,
        seen_seconds_ago=3 * 3600 - (max_age - 300),
    )
    make_session(connection_id="idle=", started_seconds_ago=3600, seen_seconds_ago=1800)
    preview = store.sweep_preview(idle_seconds=idle, max_age_seconds=max_age, silent_seconds=20)
    ended = store.close_stale(idle_seconds=idle, max_age_seconds=max_age)
    rows = _by_connection(db)
    assert {c: rows[c]["end_reason"] for c in rows} == {
        "idle-first=": "idle_timeout",
        "age-first=": "max_duration",
        "age-just-first=": "max_duration",
        "idle=": "idle_timeout",
    }
    assert {reason.value: n for reason, n in ended.items()} == {
        "idle_timeout": 2,
        "max_duration": 2,
    }
    # What the dry run says is what the sweep did.
    assert (preview.past_idle, preview.past_max_age) == (2, 2)
    # The ends are the last sign of life, never past the age limit.
    for connection in ("idle-first=", "idle=", "age-just-first="):
        assert rows[connection]["session_end"] == rows[connection]["last_seen_at"], connection
    age_first = rows["age-first="]
    assert age_first["session_end"] == age_first["session_start"] + timedelta(seconds=max_age)  # type: ignore[operator]


def test_silent_clients_are_closed_at_once_not_one_after_another(
    lambda_env: pytest.MonkeyPatch,
    gateway: ConnectionsStandIn,
    db: Conn,
    make_session: SessionFactory,
    event_bus: EventBus,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Mass silence (a network partition, a client bug): the DELETEs go out together,
    as the questions do. The stand-in holds each DELETE until all twelve are in flight;
    one at a time, the first would wait alone until the barrier gave up. Twelve is more
    than botocore's default pool of 10 HTTP connections, which would overflow."""
    lambda_env.setenv("TETHER_HEARTBEAT_GRACE_SECONDS", "200")
    runtime.reset()
    silent = [f"silent-{n:02d}=" for n in range(12)]
    for connection_id in silent:
        make_session(connection_id=connection_id, started_seconds_ago=3600, seen_seconds_ago=300)
        gateway.set_alive(connection_id, idle_seconds=400)
    gateway.deletes_meet = threading.Barrier(len(silent), timeout=10)

    report = _run()

    assert not gateway.deletes_meet.broken, "the DELETEs were not in flight together"
    assert sorted(c for m, c in gateway.calls if m == "DELETE") == silent
    assert report["ended_by_reason"] == {"heartbeat_timeout": len(silent)}
    assert not [r for r in caplog.records if "pool is full" in r.getMessage()]
    rows = _by_connection(db)
    assert {rows[c]["end_reason"] for c in silent} == {"heartbeat_timeout"}
    for connection_id in silent:
        assert rows[connection_id]["session_end"] == rows[connection_id]["last_seen_at"]
    delivered = Counter(e["detail"]["connection_id"] for e in event_bus.received())
    assert delivered == Counter(silent)


class CountingStore(SessionStore):
    """The real store, its calls to the database counted by SQL function."""

    def __init__(self, inner: SessionStore) -> None:
        self._inner = inner
        self.calls: Counter[str] = Counter()

    @property
    def longest_call_seconds(self) -> float:
        return self._inner.longest_call_seconds

    def call(self, function: str, args: Mapping[str, object]) -> list[Row]:
        self.calls[function] += 1
        return self._inner.call(function, args)

    def close(self) -> None:
        self._inner.close()


def _sweep_counted(
    database_url: str, gateway: ConnectionsStandIn
) -> tuple[SweepReport, Counter[str]]:
    """One run, its calls to the database counted."""
    store = CountingStore(PostgresStore(database_url))
    try:
        report = Sweep(
            store=store,
            announcer=RecordingAnnouncer(),
            policy=replace(ONE_CHECK, heartbeat_grace_seconds=200, batch_size=500, concurrency=8),
            connections=ConnectionsApi(gateway.url),
            remaining_seconds=lambda: 60.0,
        ).run()
    finally:
        store.close()
    return report, store.calls


def test_a_batch_of_silent_clients_costs_the_database_calls_one_does(
    database_url: str, gateway: ConnectionsStandIn, db: Conn, make_session: SessionFactory
) -> None:
    """Each silent client closed at the gateway was ended with a call of its own: with
    the database 100 ms away, 500 of them took 50 s and outlasted the run, its report
    lost. The batch's ends are now one call, whatever the number of clients."""
    calls: dict[int, Counter[str]] = {}
    for clients in (1, 40):
        silent = [f"silent-{clients}-{n:02d}=" for n in range(clients)]
        for connection_id in silent:
            make_session(
                connection_id=connection_id, started_seconds_ago=3600, seen_seconds_ago=300
            )
            gateway.set_alive(connection_id, idle_seconds=400)

        report, calls[clients] = _sweep_counted(database_url, gateway)

        assert report.closed_silent == clients
        assert report.ended_by_reason == {"heartbeat_timeout": clients}
        assert report.announced == clients
        rows = _by_connection(db)
        for connection_id in silent:
            row = rows[connection_id]
            assert row["end_reason"] == "heartbeat_timeout", connection_id
            assert row["session_end"] == row["last_seen_at"], connection_id
            assert row["announced_at"] is not None, connection_id
    # Forty ends cost the run the calls one does: one for the batch's ends.
    assert calls[40] == calls[1]
    assert calls[40][store_module.END_SESSIONS] == 1
    assert store_module.END_SESSION not in calls[40]


def test_without_heartbeats_a_silent_but_connected_client_is_kept(
    lambda_env: pytest.MonkeyPatch,
    gateway: ConnectionsStandIn,
    db: Conn,
    make_session: SessionFactory,
) -> None:
    lambda_env.setenv("TETHER_HEARTBEAT_GRACE_SECONDS", "off")
    runtime.reset()
    make_session(connection_id="quiet=", started_seconds_ago=3600, seen_seconds_ago=550)
    gateway.set_alive("quiet=", idle_seconds=500)
    _run()
    row = _by_connection(db)["quiet="]
    assert row["is_active"] is True
    assert ("DELETE", "quiet=") not in gateway.calls


def test_throttled_gateway_is_retried_with_backoff(
    gateway: ConnectionsStandIn, db: Conn, make_session: SessionFactory
) -> None:
    make_session(connection_id="busy=", started_seconds_ago=600, seen_seconds_ago=300)
    gateway.throttle["busy="] = 2
    report = _run()
    assert report["gateway_errors"] == 0
    assert gateway.calls.count(("GET", "busy=")) == 3
    assert _by_connection(db)["busy="]["end_reason"] == "gone"


def test_gateway_that_keeps_refusing_leaves_the_suspect_for_the_next_run(
    lambda_env: pytest.MonkeyPatch,
    gateway: ConnectionsStandIn,
    db: Conn,
    make_session: SessionFactory,
) -> None:
    make_session(connection_id="refused=", started_seconds_ago=600, seen_seconds_ago=300)
    gateway.throttle["refused="] = 100
    report = _run()
    assert report["gateway_errors"] == 1
    assert _by_connection(db)["refused="]["is_active"] is True
    gateway.throttle.clear()
    # The unanswered suspect's lease ended with the run: the very next one asks again.
    _run()
    assert _by_connection(db)["refused="]["end_reason"] == "gone"


def test_a_call_that_raises_is_counted_as_a_bug_not_as_the_gateways_error(
    gateway: ConnectionsStandIn,
    db: Conn,
    make_session: SessionFactory,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """An answer tether cannot read raises what it does not expect: a bug, counted as
    one. It was counted as the gateway's silence (GatewayErrors, or time run out): an
    alarm on the gateway, for tether's own fault."""
    make_session(connection_id="unreadable=", started_seconds_ago=600, seen_seconds_ago=300)
    gateway.set_alive("unreadable=", idle_seconds=5)
    gateway.malformed.add("unreadable=")
    report = _run()
    assert report["bugs"] == 1
    assert report["gateway_errors"] == 0
    assert report["stopped_for_time"] is False
    emitted = {name: value for name, value, _ in metrics(capsys.readouterr().out)}
    assert emitted["SweepBugs"] == 1
    assert emitted["GatewayErrors"] == 0
    # Neither ended nor held: the very next run asks about it again.
    assert _by_connection(db)["unreadable="]["is_active"] is True
    gateway.malformed.clear()
    del gateway.alive["unreadable="]
    report = _run()
    assert report["bugs"] == 0
    assert _by_connection(db)["unreadable="]["end_reason"] == "gone"


def test_two_sweeps_at_once_end_and_announce_each_session_once(
    lambda_env: pytest.MonkeyPatch,
    gateway: ConnectionsStandIn,
    db: Conn,
    make_session: SessionFactory,
    event_bus: EventBus,
) -> None:
    lambda_env.setenv("TETHER_SWEEP_BATCH_SIZE", "20")
    # The lease keeps the other sweep's redelivery off an end its ender is announcing.
    lambda_env.setenv("TETHER_ANNOUNCE_LEASE_SECONDS", "60")
    runtime.reset()
    for index in range(150):
        make_session(
            connection_id=f"stale{index}=", started_seconds_ago=3 * 3600, seen_seconds_ago=60
        )
    for index in range(60):
        make_session(connection_id=f"gone{index}=", started_seconds_ago=900, seen_seconds_ago=300)
    config = runtime.settings()
    barrier = threading.Barrier(2)
    reports: list[dict[str, Any]] = []

    def one_sweep() -> None:
        store = PostgresStore(config.database_url or "")
        try:
            barrier.wait()
            job = Sweep(
                store=store,
                announcer=runtime.announcer(),
                policy=SweepPolicy.from_settings(config),
                connections=runtime.connections(),
                remaining_seconds=lambda: 60.0,
            )
            reports.append(job.run().as_dict())
        finally:
            store.close()

    threads = [threading.Thread(target=one_sweep) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sum(r["ended"] for r in reports) == 210
    assert db.execute(
        "select count(*) as n from public.conversation_sessions where is_active"
    ).fetchone() == {"n": 0}
    delivered = Counter(e["detail"]["session_id"] for e in event_bus.received())
    assert len(delivered) == 210
    assert set(delivered.values()) == {1}
    # The leased suspects were asked about once, not once per sweep.
    assert len([c for c in gateway.calls if c[0] == "GET"]) == 60
    # Nothing failed: the other sweep's first announcements are not redeliveries.
    assert sum(r["redelivered"] for r in reports) == 0


def test_stops_taking_batches_when_time_runs_short(
    lambda_env: pytest.MonkeyPatch, db: Conn, make_session: SessionFactory
) -> None:
    lambda_env.setenv("TETHER_SWEEP_BATCH_SIZE", "10")
    runtime.reset()
    for _ in range(35):
        make_session(started_seconds_ago=3 * 3600, seen_seconds_ago=60)
    # Time for two batches, then less than the 10-second margin.
    report = _run(ScriptedContext([30, 30, 5]))
    assert report["stopped_for_time"] is True
    assert report["ended"] == 20
    active = db.execute("select count(*) as n from public.conversation_sessions where is_active")
    assert active.fetchone() == {"n": 15}
    # The next run carries on.
    assert _run()["ended"] == 15


def test_a_gateway_that_never_answers_does_not_keep_the_run_past_its_time(
    lambda_env: pytest.MonkeyPatch,
    gateway: ConnectionsStandIn,
    db: Conn,
    make_session: SessionFactory,
    event_bus: EventBus,
) -> None:
    """GetConnection taken and never answered (each call would wait through its
    timeouts and retries, about 25 s): each check waits for the gateway no longer than
    its suspects' leases and still announces, the run ends within its time and
    reports, and the suspects it could not ask are left, unleased, for the next check."""
    lambda_env.setenv("TETHER_SWEEP_TIME_MARGIN_SECONDS", "2")
    lambda_env.setenv("TETHER_SWEEP_CHECK_EVERY_SECONDS", "2")
    lambda_env.setenv("TETHER_SWEEP_CONCURRENCY", "4")
    runtime.reset()
    hung = [f"hung{index}=" for index in range(12)]
    for connection_id in hung:
        make_session(connection_id=connection_id, started_seconds_ago=120)
    gateway.silent.update(hung)
    make_session(connection_id="ended=", started_seconds_ago=60, ended_seconds_ago=30)
    started = time.monotonic()
    report = _run(FakeLambdaContext(time_limit_seconds=7))
    assert time.monotonic() - started < 7
    # Each check waited as long as its leases last, and called the calls it made (4 at a
    # time) gateway failures, the suspects it never got to ask left unasked; the last
    # one waited until the run's margin, and said it stopped for time.
    assert report["stopped_for_time"] is True
    assert report["gateway_errors"] >= 4
    assert report["gateway_errors"] + report["left_unasked"] >= 12
    assert report["checked"] == 0
    assert report["checks"] >= 2
    assert [e["detail"]["connection_id"] for e in event_bus.received()] == ["ended="]
    # Still active, and free for the next check to ask at once (no lease left running).
    left = db.execute(
        "select count(*) filter (where is_active and check_after <= now()) as n"
        " from public.conversation_sessions where connection_id like 'hung%'"
    ).fetchone()
    assert left == {"n": len(hung)}
    # The run recorded its report: it was not cut off before the end.
    recorded = db.execute("select count(*) as n from tether.sweep_runs").fetchone()
    assert recorded == {"n": 1}


def test_silent_connections_found_while_other_questions_hang_are_closed_in_that_check(
    lambda_env: pytest.MonkeyPatch,
    gateway: ConnectionsStandIn,
    db: Conn,
    make_session: SessionFactory,
) -> None:
    """Questions the gateway is slow to answer (throttled, retried with backoff) took
    the whole of a check's wait, and the silent connections the answered ones found
    were never closed: none of their DELETEs could start after it. Check after check
    the same, until API Gateway's idle timeout closed them, 10 minutes, not the 40 s of
    the heartbeat grace. The questions now leave the deletes part of the wait."""
    lambda_env.setenv("TETHER_HEARTBEAT_GRACE_SECONDS", "200")
    lambda_env.setenv("TETHER_SWEEP_CHECK_EVERY_SECONDS", "5")
    lambda_env.setenv("TETHER_SWEEP_TIME_MARGIN_SECONDS", "1")
    runtime.reset()
    slow = [f"slow{index}=" for index in range(4)]
    silent = [f"silent{index}=" for index in range(4)]
    for connection_id in [*slow, *silent]:
        make_session(connection_id=connection_id, started_seconds_ago=3600, seen_seconds_ago=300)
    gateway.silent.update(slow)
    for connection_id in silent:
        gateway.set_alive(connection_id, idle_seconds=400)

    report = _run(FakeLambdaContext(time_limit_seconds=6))

    rows = _by_connection(db)
    assert {c: rows[c]["end_reason"] for c in silent} == dict.fromkeys(silent, "heartbeat_timeout")
    assert all(("DELETE", c) in gateway.calls for c in silent)
    assert report["closed_silent"] == 4
    assert all(rows[c]["is_active"] for c in slow)


def test_suspects_a_cut_short_check_never_asked_about_are_not_counted_as_failed_calls(
    lambda_env: pytest.MonkeyPatch,
    gateway: ConnectionsStandIn,
    db: Conn,
    make_session: SessionFactory,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Once a check's questions have had their share of its wait and found a silent
    connection, no more start: the suspects never asked were counted as calls to the
    gateway that failed (GatewayErrors), though no call was made for them. They are
    counted apart, as left unasked, and the call still in flight as the failure."""
    lambda_env.setenv("TETHER_HEARTBEAT_GRACE_SECONDS", "200")
    lambda_env.setenv("TETHER_SWEEP_CHECK_EVERY_SECONDS", "5")
    lambda_env.setenv("TETHER_SWEEP_TIME_MARGIN_SECONDS", "1")
    lambda_env.setenv("TETHER_SWEEP_CONCURRENCY", "1")
    runtime.reset()
    # Asked oldest first, one at a time: the silent one, then the one that hangs.
    make_session(connection_id="silent=", started_seconds_ago=3600, seen_seconds_ago=500)
    make_session(connection_id="slow=", started_seconds_ago=3600, seen_seconds_ago=400)
    later = [f"later{index}=" for index in range(3)]
    for connection_id in later:
        make_session(connection_id=connection_id, started_seconds_ago=3600, seen_seconds_ago=300)
        gateway.set_alive(connection_id, idle_seconds=0)
    gateway.set_alive("silent=", idle_seconds=400)
    gateway.silent.add("slow=")

    report = _run(FakeLambdaContext(time_limit_seconds=6))

    asked = {c for method, c in gateway.calls if method == "GET"}
    assert asked == {"silent=", "slow="}
    assert report["closed_silent"] == 1
    assert report["gateway_errors"] == 1
    assert report["left_unasked"] == 3
    assert report["left_unclosed"] == 0
    assert report["unchecked"] == 4
    assert report["unchecked_for_time"] == 3
    emitted = {name: value for name, value, _ in metrics(capsys.readouterr().out)}
    assert emitted["GatewayErrors"] == 1
    assert emitted["SuspectsLeftForTime"] == 3
    rows = _by_connection(db)
    assert all(rows[c]["is_active"] for c in [*later, "slow="])


def test_a_silent_connection_found_after_the_questions_share_of_the_wait_is_closed(
    lambda_env: pytest.MonkeyPatch,
    gateway: ConnectionsStandIn,
    db: Conn,
    make_session: SessionFactory,
) -> None:
    """The questions were judged enough once only, when their share of the check's wait
    was over: a silent connection whose answer came later (throttled, retried) waited
    with the questions still hanging until the wait ran out, and its delete never
    started, check after check. It is closed in the check that found it."""
    lambda_env.setenv("TETHER_HEARTBEAT_GRACE_SECONDS", "200")
    lambda_env.setenv("TETHER_SWEEP_CHECK_EVERY_SECONDS", "5")
    lambda_env.setenv("TETHER_SWEEP_TIME_MARGIN_SECONDS", "1")
    lambda_env.setenv("TETHER_SWEEP_CONCURRENCY", "2")
    runtime.reset()
    # The check waits 4 s for the gateway; its questions have 2 s of it to themselves.
    make_session(connection_id="late=", started_seconds_ago=3600, seen_seconds_ago=500)
    make_session(connection_id="slow=", started_seconds_ago=3600, seen_seconds_ago=400)
    gateway.set_alive("late=", idle_seconds=400)
    gateway.silent.add("slow=")

    def answer_late(method: str, connection_id: str) -> None:
        if (method, connection_id) == ("GET", "late="):
            time.sleep(2.5)

    gateway.on_request = answer_late

    report = _run(FakeLambdaContext(time_limit_seconds=6))

    assert _by_connection(db)["late="]["end_reason"] == "heartbeat_timeout"
    assert ("DELETE", "late=") in gateway.calls
    assert (report["closed_silent"], report["left_unclosed"]) == (1, 0)


def test_silent_connections_whose_delete_never_started_are_not_counted_as_failed_calls(
    lambda_env: pytest.MonkeyPatch,
    gateway: ConnectionsStandIn,
    db: Conn,
    make_session: SessionFactory,
) -> None:
    """The deletes of a check's silent connections, one at a time, the first never
    answered: the others, never started, were counted as calls to the gateway that
    failed. They are counted apart, as left unclosed, for the next check to close."""
    lambda_env.setenv("TETHER_HEARTBEAT_GRACE_SECONDS", "200")
    # One check, whose wait for the gateway is its leases' (1.6 s), not the run's time.
    lambda_env.setenv("TETHER_SWEEP_CHECK_EVERY_SECONDS", "2")
    lambda_env.setenv("TETHER_SWEEP_SCHEDULE_SECONDS", "2")
    lambda_env.setenv("TETHER_SWEEP_TIME_MARGIN_SECONDS", "1")
    lambda_env.setenv("TETHER_SWEEP_CONCURRENCY", "1")
    runtime.reset()
    silent = [f"silent{index}=" for index in range(3)]
    for connection_id in silent:
        make_session(connection_id=connection_id, started_seconds_ago=3600, seen_seconds_ago=500)
        gateway.set_alive(connection_id, idle_seconds=400)

    def hang_deletes(method: str, connection_id: str) -> None:
        # Answered, its DeleteConnection is taken and never answered.
        gateway.silent.add(connection_id)

    gateway.on_request = hang_deletes

    report = _run(FakeLambdaContext(time_limit_seconds=30))

    deletes = [c for method, c in gateway.calls if method == "DELETE"]
    assert len(deletes) == 1
    assert report["checked"] == 3
    assert report["closed_silent"] == 0
    assert report["gateway_errors"] == 1
    assert report["left_unclosed"] == 2
    assert report["left_unasked"] == 0
    assert report["unchecked"] == 3
    assert report["unchecked_for_time"] == 2
    rows = _by_connection(db)
    assert all(rows[c]["is_active"] for c in silent)


def test_backlog_of_100k_drains_across_runs_with_nothing_ended_twice(
    database_url: str, db: Conn
) -> None:
    db.execute(
        """
        insert into public.conversation_sessions (connection_id, session_start, last_seen_at)
        select 'backlog' || g, now() - interval '3 hours', now() - interval '1 minute'
        from generate_series(1, 100000) g
        """
    )
    store = PostgresStore(database_url)
    announcer = RecordingAnnouncer()
    policy = replace(
        ONE_CHECK, batch_size=5000, concurrency=4, time_margin_seconds=10, check_every_seconds=10
    )
    runs = 0
    try:
        while True:
            runs += 1
            # Each run has time for six batches: no single run can take it all.
            script = iter([30.0] * 6 + [1.0] * 100)
            report = Sweep(
                store=store,
                announcer=announcer,
                policy=policy,
                connections=None,
                remaining_seconds=functools.partial(next, script),
            ).run()
            if not report.stopped_for_time:
                break
            assert runs < 20
    finally:
        store.close()
    assert runs >= 4
    assert len(announcer.counts) == 100000
    assert set(announcer.counts.values()) == {1}
    row = db.execute(
        "select count(*) filter (where is_active) as active,"
        " count(*) filter (where end_reason = 'max_duration') as ended,"
        " count(*) filter (where announced_at is null) as unannounced"
        " from public.conversation_sessions"
    ).fetchone()
    assert row == {"active": 0, "ended": 100000, "unannounced": 0}


def test_database_down_mid_sweep_fails_cleanly_and_the_next_run_finishes(
    lambda_env: pytest.MonkeyPatch,
    gateway: ConnectionsStandIn,
    database_switch: Callable[[bool], None],
    database_url: str,
    db: Conn,
    make_session: SessionFactory,
    event_bus: EventBus,
    capsys: pytest.CaptureFixture[str],
) -> None:
    # The stated bound: recovery + one check period (here 1 s), whatever the failed
    # run left leased.
    period = 1.0
    lambda_env.setenv("TETHER_SWEEP_CHECK_EVERY_SECONDS", str(period))
    lambda_env.setenv("TETHER_SWEEP_SCHEDULE_SECONDS", str(period))
    runtime.reset()
    for index in range(5):
        make_session(
            connection_id=f"old{index}=", started_seconds_ago=3 * 3600, seen_seconds_ago=60
        )
        make_session(connection_id=f"gone{index}=", started_seconds_ago=900, seen_seconds_ago=300)
    went_down = threading.Event()

    def database_goes_down(method: str, connection_id: str) -> None:
        if not went_down.is_set():
            went_down.set()
            database_switch(False)

    gateway.on_request = database_goes_down
    with pytest.raises(DatabaseUnavailableError):
        _run()
    database_switch(True)
    emitted = {name: value for name, value, _ in metrics(capsys.readouterr().out)}
    # The failed run still says what it could not do.
    assert emitted["SweepFailed"] == 1
    assert emitted["SweepChecksFailed"] == 1
    assert emitted["AnnouncementsUnrecorded"] == 0
    gateway.on_request = None
    recovered = time.monotonic()
    with psycopg.connect(database_url) as plain:
        left_leased = plain.execute(
            "select extract(epoch from max(check_after) - now())::float8"
            " from public.conversation_sessions where is_active"
        ).fetchone()
    assert left_leased is not None and left_leased[0] is not None
    assert left_leased[0] < period  # nothing the dead run held outlives one period
    time.sleep(max(0.0, period - (time.monotonic() - recovered)))  # the next scheduled check
    runtime.reset()

    report = _run()
    with psycopg.connect(database_url, row_factory=psycopg.rows.dict_row) as conn:
        row = conn.execute(
            "select count(*) filter (where is_active) as active,"
            " count(*) filter (where announced_at is null) as unannounced"
            " from public.conversation_sessions"
        ).fetchone()
    assert row == {"active": 0, "unannounced": 0}
    assert report["ended_by_reason"].get("gone") == 5
    delivered = Counter(e["detail"]["connection_id"] for e in event_bus.received())
    assert len(delivered) == 10 and set(delivered.values()) == {1}


@pytest.fixture
def database_switch(server_url: str, database_url: str) -> Iterator[Callable[[bool], None]]:
    """Turns the test database away (False) or lets it back (True); back, whatever the
    test did, once it ends."""
    switch = functools.partial(allow_connections, server_url, database_url)
    yield switch
    switch(True)


@pytest.fixture
def quick_checks(lambda_env: pytest.MonkeyPatch, gateway: ConnectionsStandIn) -> None:
    """A run of 4 s checking every 0.5 s: an outage of a second costs it checks."""
    lambda_env.setenv("TETHER_SWEEP_CHECK_EVERY_SECONDS", "0.5")
    lambda_env.setenv("TETHER_SWEEP_SCHEDULE_SECONDS", "4")
    lambda_env.setenv("TETHER_SWEEP_TIME_MARGIN_SECONDS", "1")
    runtime.reset()


def _too_old(make_session: SessionFactory, count: int) -> None:
    """Sessions past the age limit, old0= onwards: the sweep ends them (max_duration)."""
    for index in range(count):
        make_session(
            connection_id=f"old{index}=", started_seconds_ago=3 * 3600, seen_seconds_ago=60
        )


def test_a_run_carries_on_through_a_short_outage_and_ends_what_it_must_after_it(
    quick_checks: None,
    database_switch: Callable[[bool], None],
    database_url: str,
    make_session: SessionFactory,
    event_bus: EventBus,
    capsys: pytest.CaptureFixture[str],
) -> None:
    # The database away for its first checks: the run does not give up its period
    # (on AWS, a minute), so the bound after recovery stays one check, not a schedule.
    _too_old(make_session, 5)
    database_switch(False)
    back = threading.Timer(1.2, database_switch, args=(True,))
    back.start()
    try:
        report = _run(FakeLambdaContext(time_limit_seconds=10))
    finally:
        back.join()
    assert report["failed_checks"] >= 2
    emitted = {name: value for name, value, _ in metrics(capsys.readouterr().out)}
    assert emitted["SweepChecksFailed"] == report["failed_checks"]
    assert report["ended_by_reason"] == {"max_duration": 5}
    assert report["announced"] == 5
    with psycopg.connect(database_url) as conn:
        active = conn.execute(
            "select count(*) from public.conversation_sessions where is_active"
        ).fetchone()
    assert active == (0,)


def test_ends_announced_while_the_database_went_away_are_counted_and_announced_again(
    lambda_env: pytest.MonkeyPatch,
    quick_checks: None,
    database_switch: Callable[[bool], None],
    database_url: str,
    make_session: SessionFactory,
    event_bus: EventBus,
    capsys: pytest.CaptureFixture[str],
) -> None:
    # EventBridge takes the ends, then the database is gone before they are marked:
    # nothing records that they went out, so they are announced again after the lease.
    _too_old(make_session, 3)
    event_bridge = runtime.announcer()
    outages: list[threading.Timer] = []

    class AwayAfterTheFirstAnnouncement:
        def announce(self, sessions: Sequence[SessionEnded]) -> AnnounceResult:
            result = event_bridge.announce(sessions)
            if not outages:
                database_switch(False)
                outages.append(threading.Timer(1.0, database_switch, args=(True,)))
                outages[0].start()
            return result

    # Cached, as runtime's own is (runtime.reset clears it).
    lambda_env.setattr(runtime, "announcer", functools.cache(AwayAfterTheFirstAnnouncement))
    try:
        report = _run(FakeLambdaContext(time_limit_seconds=10))
    finally:
        for outage in outages:
            outage.join()
    assert report["ended_by_reason"] == {"max_duration": 3}
    assert report["announced_unrecorded"] == 3
    assert report["redelivered"] == 3
    emitted = {name: value for name, value, _ in metrics(capsys.readouterr().out)}
    assert emitted["AnnouncementsUnrecorded"] == 3
    delivered = Counter(e["detail"]["connection_id"] for e in event_bus.received())
    assert delivered == Counter({f"old{index}=": 2 for index in range(3)})
    with psycopg.connect(database_url) as conn:
        unannounced = conn.execute(
            "select count(*) from public.conversation_sessions where announced_at is null"
        ).fetchone()
    assert unannounced == (0,)


def test_put_events_down_then_up_announces_every_end(
    lambda_env: pytest.MonkeyPatch,
    db: Conn,
    make_session: SessionFactory,
    event_bus: EventBus,
    capsys: pytest.CaptureFixture[str],
) -> None:
    for _ in range(12):
        make_session(started_seconds_ago=3 * 3600, seen_seconds_ago=60)
    lambda_env.setenv("TETHER_EVENT_BUS_NAME", "no-such-bus")
    lambda_env.setenv("TETHER_ANNOUNCE_LEASE_SECONDS", "0")
    lambda_env.setenv("TETHER_SWEEP_CHECK_EVERY_SECONDS", "60")
    runtime.reset()
    first = _run()
    assert first["ended"] == 12
    assert first["announce_failed"] >= 12
    # An outage is one log line per kind of refusal, not one per session.
    refused = [
        line
        for line in json_lines(capsys.readouterr().out)
        if line.get("message", "").startswith("EventBridge did not accept")
    ]
    assert len(refused) == 1
    assert refused[0]["sessions"] == 12
    assert db.execute(
        "select count(*) as n from public.conversation_sessions where announced_at is null"
    ).fetchone() == {"n": 12}

    lambda_env.setenv("TETHER_EVENT_BUS_NAME", event_bus.name)
    runtime.reset()
    second = _run()
    assert second["ended"] == 0
    assert second["redelivered"] == 12
    delivered = Counter(e["detail"]["session_id"] for e in event_bus.received())
    assert len(delivered) == 12 and set(delivered.values()) == {1}


def test_sweep_ends_what_connect_opened_and_disconnect_missed(
    lambda_env: pytest.MonkeyPatch, gateway: ConnectionsStandIn, db: Conn, event_bus: EventBus
) -> None:
    """The whole story with the real handlers: the row is opened by $connect, the
    $disconnect is lost (database down), the client is gone; the sweep ends it."""
    lambda_env.setenv("TETHER_SUSPECT_AFTER_SECONDS", "0")
    runtime.reset()
    token = sign(claims(), HS256_SECRET, "HS256")
    assert (
        connect.lambda_handler(
            with_query(ws_event("connect", "lost="), token=token), FakeLambdaContext()
        )["statusCode"]
        == 200
    )
    good_url = runtime.settings().database_url or ""
    lambda_env.setenv("TETHER_DATABASE_URL", with_database(good_url, "tether_is_down"))
    runtime.reset()
    with pytest.raises(DatabaseUnavailableError):
        disconnect.lambda_handler(ws_event("disconnect", "lost="), FakeLambdaContext())
    assert _by_connection(db)["lost="]["is_active"] is True  # the lost $disconnect wrote nothing
    lambda_env.setenv("TETHER_DATABASE_URL", good_url)
    runtime.reset()
    report = _run()  # the stand-in does not know "lost=": 410
    assert report["ended_by_reason"] == {"gone": 1}
    row = _by_connection(db)["lost="]
    assert row["end_reason"] == "gone"
    assert [e["detail"]["connection_id"] for e in event_bus.received()] == ["lost="]
    assert timedelta(0) <= row["session_end"] - row["session_start"] < timedelta(seconds=5)  # type: ignore[operator]


def test_each_live_suspect_is_asked_about_once_per_run(
    lambda_env: pytest.MonkeyPatch, gateway: ConnectionsStandIn, make_session: SessionFactory
) -> None:
    lambda_env.setenv("TETHER_SWEEP_BATCH_SIZE", "2")
    lambda_env.setenv("TETHER_SUSPECT_AFTER_SECONDS", "0")
    lambda_env.setenv("TETHER_HEARTBEAT_GRACE_SECONDS", "off")
    runtime.reset()
    for index in range(5):
        make_session(connection_id=f"idle{index}=", started_seconds_ago=300, seen_seconds_ago=200)
        gateway.set_alive(f"idle{index}=", idle_seconds=200)  # connected, idle, still a suspect
    first = _run()
    assert first["checked"] == 5
    assert first["stopped_for_time"] is False
    assert sorted(c for m, c in gateway.calls if m == "GET") == [f"idle{i}=" for i in range(5)]
    # And every run asks again (the run's clock is the database's: no skew can hide them).
    assert _run()["checked"] == 5


def test_a_database_url_libpq_cannot_parse_never_reaches_the_sweep_s_logs(
    lambda_env: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    lambda_env.setenv("TETHER_DATABASE_URL", "postgress://tether:hunter2-pass@db.example.com/db")
    runtime.reset()
    with pytest.raises(ConfigurationError) as failure:
        _run()
    captured = capsys.readouterr()
    assert "hunter2-pass" not in captured.out + captured.err + str(failure.value)
    assert "postgress://" in captured.out  # it still says what is wrong


def test_each_announcement_claim_ends_with_the_run_s_time_however_late_it_is_taken(
    database_url: str, db: Conn, make_session: SessionFactory
) -> None:
    """A run's later batches were claimed for as long as its first, from the time it had
    when it began announcing: killed with one (its Lambda timeout while PutEvents hangs),
    those ends waited past the run's end for the rest of that lease."""
    for index in range(3):
        make_session(connection_id=f"queued{index}=", started_seconds_ago=60, ended_seconds_ago=30)
    remaining = [50.0]  # the invocation's time left, as its context says it
    held_for: list[tuple[float, float]] = []  # (time left at the claim, lease the outbox holds)

    class SlowAnnouncer:
        """Each PutEvents takes 15 s of the invocation's time."""

        def announce(self, sessions: Sequence[SessionEnded]) -> AnnounceResult:
            for session in sessions:
                row = db.execute(
                    "select extract(epoch from announce_after - now())::float8 as lease"
                    " from public.conversation_session_announcements where session_id = %s",
                    (session.session_id,),
                ).fetchone()
                assert row is not None
                held_for.append((remaining[0], float(str(row["lease"]))))
            remaining[0] -= 15
            return AnnounceResult(announced=[session.session_id for session in sessions])

    store = PostgresStore(database_url)
    try:
        report = Sweep(
            store=store,
            announcer=SlowAnnouncer(),
            policy=replace(ONE_CHECK, batch_size=1, concurrency=1, check_every_seconds=10),
            connections=None,
            remaining_seconds=lambda: remaining[0],
        ).run()
    finally:
        store.close()
    assert report.announced == 3
    assert [left for left, _ in held_for] == [50.0, 35.0, 20.0]
    # Each claim ends when the run's time does, not later (a second for the clocks).
    assert all(lease <= left + 1 for left, lease in held_for), held_for


def test_a_tether_dev_run_cut_short_by_its_stopping_says_so_not_stopped_for_time(
    lambda_env: pytest.MonkeyPatch, database_url: str, db: Conn, make_session: SessionFactory
) -> None:
    """Ctrl-C in `tether dev` ended its sweep's run as its time's end would: the report
    it recorded, which the live page shows, said `stopped_for_time`, "(stopped for time)"
    on the page, for a run no time limit had cut short."""
    from tether.local.dev import DatabaseClaim, _Schedule  # noqa: PLC0415

    make_session(started_seconds_ago=3 * 3600, seen_seconds_ago=60)
    schedule = _Schedule(60.0, 10.0, cast(DatabaseClaim, SimpleNamespace(held=True)))
    schedule.stop()
    schedule._one_run()
    recorded = db.execute(
        "select report from tether.sweep_runs order by started_at desc limit 1"
    ).fetchone()
    assert recorded is not None
    report = cast(dict[str, Any], recorded["report"])
    assert (report["interrupted"], report["stopped_for_time"]) == (True, False)
    # A run whose own time ran out still says so, and not that it was interrupted.
    store = PostgresStore(database_url)
    try:
        timed = Sweep(
            store=store,
            announcer=RecordingAnnouncer(),
            policy=ONE_CHECK,
            connections=None,
            remaining_seconds=lambda: 0.0,
        ).run()
    finally:
        store.close()
    assert (timed.interrupted, timed.stopped_for_time) == (False, True)


def test_a_backlog_of_announcements_waits_for_the_next_check_not_the_other_way_round(
    database_url: str, make_session: SessionFactory
) -> None:
    """A backlog of ends (an EventBridge outage's, answered again but slowly) was drained
    by the check that found it, batch after batch, for as long as the run had: the checks
    after it (the hard limits, the suspects) waited, and the bounds they keep with them.
    A check announces until the next one is due; the next goes on where it stopped."""
    for index in range(40):
        make_session(
            connection_id=f"backlog{index}=", started_seconds_ago=120, ended_seconds_ago=60
        )

    class SlowBus:
        def announce(self, sessions: Sequence[SessionEnded]) -> AnnounceResult:
            time.sleep(0.2)
            return AnnounceResult(announced=[session.session_id for session in sessions])

    checked_at: list[float] = []

    class Timed(PostgresStore):
        def close_stale(self, **limits: Any) -> dict[EndReason, int]:
            checked_at.append(time.monotonic() - started)
            return super().close_stale(**limits)

    store = Timed(database_url)
    started = time.monotonic()
    try:
        report = Sweep(
            store=store,
            announcer=SlowBus(),
            policy=replace(
                ONE_CHECK,
                batch_size=1,
                check_every_seconds=1,
                keep_checking_seconds=4,
                time_margin_seconds=1,
            ),
            connections=None,
            remaining_seconds=lambda: 60 - (time.monotonic() - started),
        ).run()
    finally:
        store.close()
    # Five checks, each on time (a check's first step, a second apart), sharing the
    # backlog (a fifth of a second a batch).
    assert report.checks == 5, report.as_dict()
    assert [round(at) for at in checked_at] == [0, 1, 2, 3, 4], checked_at
    assert report.announced >= 20
    assert not report.stopped_for_time
