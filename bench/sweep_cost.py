"""Sweep cost follows the live sessions, not the history.

1. The same sweep (2,000 stale among 2,000 live sessions) over 100k and over 5M
   ended rows of history: the ratio should stay near 1 (goal <= 1.3).
2. Ending 100k stale sessions with the sweep's batched, SKIP LOCKED function
   against one hand-written bulk UPDATE of the same rows (goal <= 1.5x).
"""

from __future__ import annotations

import os
import time
from collections.abc import Sequence

import psycopg

from bench.common import median, report, write_result
from bench.database import scratch_database
from tether.drivers.postgres import PostgresStore
from tether.models import SessionEnded
from tether.outbox import AnnounceResult
from tether.sweep import Sweep, SweepPolicy

LIVE = 2_000
STALE = 2_000
REPEATS = 5
SMALL_HISTORY = 100_000
LARGE_HISTORY = int(os.environ.get("TETHER_BENCH_HISTORY", "5000000"))
BULK = 100_000

POLICY = SweepPolicy(
    idle_limit_seconds=660,
    max_age_seconds=7260,
    suspect_after_seconds=120,
    heartbeat_grace_seconds=None,
    batch_size=500,
    concurrency=4,
    time_margin_seconds=0,
    announce_lease_seconds=60,
    suspect_lease_seconds=30,
    gone_settle_seconds=0,
    check_every_seconds=10,
    keep_checking_seconds=0,
)


class AcceptingAnnouncer:
    """EventBridge accepting everything: the benchmark measures the database."""

    def announce(self, sessions: Sequence[SessionEnded]) -> AnnounceResult:
        return AnnounceResult(announced=[session.session_id for session in sessions])


def _history(conn: psycopg.Connection[tuple[object, ...]], rows: int) -> None:
    conn.execute(
        """
        insert into public.conversation_sessions
          (connection_id, session_start, last_seen_at, session_end, end_reason, announced_at)
        select 'h' || g, now() - interval '30 days', now() - interval '30 days',
               now() - interval '29 days', 'client_disconnect', now() - interval '29 days'
        from generate_series(1, %s) g
        """,
        (rows,),
    )
    conn.execute(
        """
        insert into public.conversation_sessions (connection_id)
        select 'live' || g from generate_series(1, %s) g
        """,
        (LIVE,),
    )
    conn.execute("vacuum analyze public.conversation_sessions")


def _stale(conn: psycopg.Connection[tuple[object, ...]], rows: int, tag: str) -> None:
    conn.execute(
        """
        insert into public.conversation_sessions (connection_id, session_start, last_seen_at)
        select %s || g, now() - interval '30 minutes', now() - interval '20 minutes'
        from generate_series(1, %s) g
        """,
        (tag, rows),
    )


def _sweep_seconds(url: str, history: int) -> float:
    with psycopg.connect(url, autocommit=True) as conn:
        _history(conn, history)
        store = PostgresStore(url)
        timings = []
        try:
            for repeat in range(REPEATS + 1):
                _stale(conn, STALE, f"s{repeat}-")
                started = time.perf_counter()
                result = Sweep(
                    store=store,
                    announcer=AcceptingAnnouncer(),
                    policy=POLICY,
                    connections=None,
                    remaining_seconds=lambda: 600.0,
                ).run()
                elapsed = time.perf_counter() - started
                assert result.ended == STALE, result.as_dict()
                if repeat:  # the first run warms caches
                    timings.append(elapsed)
        finally:
            store.close()
    return median(timings)


def _bulk_update_seconds(url: str) -> float:
    with psycopg.connect(url, autocommit=True) as conn:
        _stale(conn, BULK, "bulk")
        conn.execute("vacuum analyze public.conversation_sessions")
        started = time.perf_counter()
        conn.execute(
            """
            update public.conversation_sessions
               set session_end = last_seen_at, end_reason = 'idle_timeout'
             where is_active and last_seen_at < now() - interval '11 minutes'
            """
        )
        return time.perf_counter() - started


def _close_stale_seconds(url: str) -> float:
    with psycopg.connect(url, autocommit=True) as conn:
        _stale(conn, BULK, "batched")
        conn.execute("vacuum analyze public.conversation_sessions")
    store = PostgresStore(url)
    ended = 0
    started = time.perf_counter()
    try:
        while batch := store.close_stale(idle_seconds=660, max_age_seconds=7260, limit=5000):
            ended += sum(batch.values())
    finally:
        store.close()
    elapsed = time.perf_counter() - started
    assert ended == BULK
    return elapsed


def main() -> dict[str, float]:
    with scratch_database("small") as url:
        small = _sweep_seconds(url, SMALL_HISTORY)
    report(
        f"sweep       {STALE} stale among {LIVE} live,"
        f" {SMALL_HISTORY:,} history: {small * 1000:.1f} ms"
    )
    with scratch_database("large") as url:
        large = _sweep_seconds(url, LARGE_HISTORY)
    history_ratio = large / small
    report(
        f"sweep       same, {LARGE_HISTORY:,} history: {large * 1000:.1f} ms"
        f"   ratio {history_ratio:.2f} (goal <= 1.3)"
    )

    bulk_runs, batched_runs = [], []
    for _ in range(3):
        with scratch_database("bulk") as url:
            bulk_runs.append(_bulk_update_seconds(url))
        with scratch_database("batched") as url:
            batched_runs.append(_close_stale_seconds(url))
    bulk, batched = median(bulk_runs), median(batched_runs)
    bulk_ratio = batched / bulk
    report(
        f"end 100k    batched close_stale {batched * 1000:.0f} ms vs one bulk UPDATE"
        f" {bulk * 1000:.0f} ms   ratio {bulk_ratio:.2f} (goal <= 1.5)"
    )
    write_result(
        "sweep_cost",
        {
            "history_ratio": history_ratio,
            "history_small_rows": SMALL_HISTORY,
            "history_large_rows": LARGE_HISTORY,
            "sweep_seconds_small_history": small,
            "sweep_seconds_large_history": large,
            "end_100k_ratio_to_bulk_update": bulk_ratio,
            "end_100k_batched_seconds": batched,
            "end_100k_bulk_update_seconds": bulk,
            "goals": {"history_ratio": 1.3, "end_100k_ratio_to_bulk_update": 1.5},
        },
    )
    return {"history_ratio": history_ratio, "bulk_ratio": bulk_ratio}


if __name__ == "__main__":
    main()
