"""Sweep cost follows the live sessions, not the history.

1. The same sweep (2,000 stale among 2,000 live sessions) over 100k and over 5M
   ended rows of history: the ratio should stay near 1 (goal <= 1.3).
2. Ending 100k stale sessions with the sweep's batched, SKIP LOCKED function
   against one hand-written bulk UPDATE of the same rows (goal <= 1.5x).

The history is written with the table's indexes dropped and built again after it (the
same indexes, by one sort each), which saves minutes at 5M rows.
"""

from __future__ import annotations

import time
from collections.abc import Sequence

import psycopg

from bench.common import Entry, Run, entry, report, size, spread
from bench.database import indexes_rebuilt_after, scratch_database, uuid_v7_at
from tether.drivers.postgres import PostgresStore
from tether.models import SessionEnded
from tether.outbox import AnnounceResult
from tether.store import CLOSE_STALE
from tether.sweep import Sweep, SweepPolicy

LIVE = 2_000
STALE = 2_000
REPEATS = 5
SMALL_HISTORY = 100_000
QUICK_LARGE_HISTORY = 500_000
BULK = 100_000
QUICK_BULK = 20_000
BULK_REPEATS = 5
QUICK_BULK_REPEATS = 3

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
    with indexes_rebuilt_after(conn):
        conn.execute(
            f"""
            insert into public.conversation_sessions
              (session_id, connection_id, session_start, last_seen_at, session_end, end_reason,
               announced_at)
            select {uuid_v7_at("now() - interval '30 days'", "g")}, 'h' || g,
                   now() - interval '30 days', now() - interval '30 days',
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


def _sweep_seconds(url: str, history: int) -> list[float]:
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
    return timings


def _settled(conn: psycopg.Connection[tuple[object, ...]]) -> None:
    """Vacuumed, analyzed and checkpointed: the fill's dirty pages are written before
    the clock starts, not during whichever timed run comes next."""
    conn.execute("vacuum analyze public.conversation_sessions")
    conn.execute("checkpoint")


def _bulk_update_seconds(url: str, rows: int) -> float:
    with psycopg.connect(url, autocommit=True) as conn:
        _stale(conn, rows, "bulk")
        # The alternative is the UPDATE alone: tether's trigger would queue each end it
        # wrote for its announcement, the work the batches are measured doing.
        conn.execute(
            "alter table public.conversation_sessions"
            " disable trigger conversation_sessions_queue_direct_end"
        )
        _settled(conn)
        started = time.perf_counter()
        conn.execute(
            """
            update public.conversation_sessions
               set session_end = last_seen_at, end_reason = 'idle_timeout'
             where is_active and last_seen_at < now() - interval '11 minutes'
            """
        )
        return time.perf_counter() - started


def _close_stale_seconds(url: str, rows: int) -> float:
    with psycopg.connect(url, autocommit=True) as conn:
        _stale(conn, rows, "batched")
        _settled(conn)
    store = PostgresStore(url)
    ended = 0
    started = time.perf_counter()
    try:
        while batch := store.close_stale(idle_seconds=660, max_age_seconds=7260, limit=5000):
            ended += sum(batch.values())
    finally:
        store.close()
    elapsed = time.perf_counter() - started
    assert ended == rows
    return elapsed


def run(mode: Run) -> dict[str, Entry]:
    large_history = mode.pick(size("TETHER_BENCH_HISTORY"), QUICK_LARGE_HISTORY)
    bulk_rows = mode.pick(BULK, QUICK_BULK)
    with scratch_database("small") as url:
        small = _sweep_seconds(url, SMALL_HISTORY)
    with scratch_database("large") as url:
        large = _sweep_seconds(url, large_history)
    # Each repeat's ratio against the small history's median (the runs are not paired).
    small_median = spread(small)["median"]
    history = spread([t / small_median for t in large], 3)
    report(
        f"sweep       {STALE} stale among {LIVE} live: {small_median * 1000:.1f} ms over"
        f" {SMALL_HISTORY:,} rows of history, {spread(large)['median'] * 1000:.1f} ms over"
        f" {large_history:,}: ratio {history['median']:.2f} (goal <= 1.3)"
    )
    bulk_runs, batched_runs = [], []
    bulk_repeats = mode.pick(BULK_REPEATS, QUICK_BULK_REPEATS)
    for repeat in range(bulk_repeats):
        # Each goes first in turn: whatever the previous run left the server doing
        # (writing its pages out) falls on both sides alike.
        for side in ("bulk", "batched") if repeat % 2 == 0 else ("batched", "bulk"):
            with scratch_database(side) as url:
                if side == "bulk":
                    bulk_runs.append(_bulk_update_seconds(url, bulk_rows))
                else:
                    batched_runs.append(_close_stale_seconds(url, bulk_rows))
    ratios = spread([b / u for b, u in zip(batched_runs, bulk_runs, strict=True)], 3)
    report(
        f"end stale   {bulk_rows:,}: batched close_stale {spread(batched_runs)['median']:.2f} s vs"
        f" one bulk UPDATE {spread(bulk_runs)['median']:.2f} s: ratio {ratios['median']:.2f}"
        " (goal <= 1.5)"
    )
    history_entry = entry(
        f"one sweep check ({STALE} stale among {LIVE} live sessions, EventBridge accepting"
        f" everything) over {SMALL_HISTORY:,} and over {large_history:,} ended rows of"
        f" history; {REPEATS} timed runs each after a warm-up",
        measured={"seconds_large_history": spread(large), "history_rows": large_history},
        baseline={"seconds_small_history": spread(small), "history_rows": SMALL_HISTORY},
        ratio=history["median"],
        goal="<= 1.3",
    )
    history_entry["size"] = f"{large_history:,} rows of history"
    history_entry["spread_note"] = f"{history['min']:.2f}-{history['max']:.2f}"
    bulk_entry = entry(
        f"ending {bulk_rows:,} stale sessions with {CLOSE_STALE} in batches of 5,000"
        " (FOR UPDATE SKIP LOCKED, outbox entries) against one UPDATE of the same rows;"
        f" {bulk_repeats} interleaved runs, each on a fresh, checkpointed database",
        measured={"batched_seconds": spread(batched_runs), "rows": bulk_rows},
        baseline={"bulk_update_seconds": spread(bulk_runs)},
        ratio=ratios["median"],
        goal="<= 1.5",
    )
    bulk_entry["size"] = f"{bulk_rows:,} stale sessions"
    bulk_entry["spread_note"] = f"{ratios['min']:.2f}-{ratios['max']:.2f}"
    return {"sweep_history_independence": history_entry, "sweep_vs_bulk_update": bulk_entry}
