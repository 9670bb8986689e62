"""Adopting a 1M-row table without stopping its writers.

The origin's table with a million rows of history (inconsistent ones among them)
is adopted by ``tether adopt --apply`` while writers keep going, as they would in
production during the cut-over:

- the old server: its $connect insert and its $disconnect update, verbatim;
- tether: ``tether_open_session_v1`` and ``tether_end_session_v1`` through the
  store the handlers use, from the moment the adoption has created them.

Every write is timed. The figure is the longest any of them took while --apply
ran (goal: about a second, the lock timeout: no statement may block them longer).
Then ``--finish``: its estimate, said beforehand, against the time it held the
table (writes wait for all of it, by design).

``python -m bench adoption_blocking`` (``--quick``: 100k rows).
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import psycopg

from bench.common import Entry, Run, entry, report, size
from bench.database import indexes_rebuilt_after, scratch_database
from tether.adopt.apply import apply as adopt_apply
from tether.adopt.finish import finish as adopt_finish
from tether.adopt.finish import plan_finish
from tether.adopt.inspect import inspect as adopt_inspect
from tether.drivers.postgres import PostgresStore
from tether.errors import TetherError
from tether.models import EndReason, OpenSessionRequest

QUICK_ROWS = 100_000
GOAL_SECONDS = 1.0
"""The lock timeout (1 s): no statement of the adoption may hold a write longer."""
PAUSE_SECONDS = 0.01

ORIGIN_TABLE = """
create table public.conversation_sessions (
  session_id uuid primary key default gen_random_uuid(),
  user_id uuid,
  is_active boolean default true,
  session_start timestamptz default now(),
  session_end timestamptz,
  ended_at timestamptz,
  duration_seconds double precision,
  agent_id text,
  metadata jsonb
)
"""

# History as the old server left it: mostly clean ends, 2% orphans, and a sprinkle
# of each inconsistency (no end, an end while active, an end before the start,
# durations from the wrong end).
HISTORY = """
insert into public.conversation_sessions (session_id, user_id, is_active, session_start,
                                          session_end, ended_at, duration_seconds, agent_id,
                                          metadata)
select md5('s' || g)::uuid, md5('u' || g)::uuid,
       g %% 50 = 0 or g %% 89 = 0,
       t.start,
       case when g %% 50 = 0 or g %% 97 = 0 then null
            when g %% 83 = 0 then t.start - interval '1 hour'
            else t.start + interval '5 minutes' end,
       case when g %% 50 = 0 or g %% 89 = 0 then null else t.start + interval '5 minutes' end,
       case when g %% 50 = 0 then null when g %% 71 = 0 then 86400 else 300 end,
       'agent-' || g %% 7,
       jsonb_build_object('n', g)
from generate_series(%s::bigint, %s::bigint) g
cross join lateral (select now() - make_interval(hours => 3 + (g %% 4000)::int) as start) t
"""

OLD_INSERT = (
    "insert into conversation_sessions (user_id, is_active, session_start)"
    " values (%s, true, now()) returning session_id"
)
OLD_END = (
    "update conversation_sessions set is_active = false, session_end = now(), ended_at = now(),"
    " duration_seconds = extract(epoch from (now() - session_start)) where session_id = %s"
)


@dataclass
class Timings:
    name: str
    seconds: list[float] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)

    def summary(self) -> dict[str, Any]:
        ordered = sorted(self.seconds)
        count = len(ordered)
        return {
            "writes": count,
            "failures": len(self.failures),
            "first_failure": self.failures[0] if self.failures else None,
            "max_seconds": round(ordered[-1], 3) if ordered else None,
            "p99_seconds": round(ordered[int(count * 0.99) - 1], 3) if count >= 100 else None,
            "median_seconds": round(ordered[count // 2], 4) if ordered else None,
            "over_one_second": sum(1 for s in ordered if s > 1.0),
        }


class Writers:
    """The old server's and tether's writes, in two threads, each one timed."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.stop = threading.Event()
        self.old_connect = Timings("old server $connect (insert)")
        self.old_disconnect = Timings("old server $disconnect (update)")
        self.connect = Timings("tether $connect (tether_open_session_v1)")
        self.disconnect = Timings("tether $disconnect (tether_end_session_v3)")
        self.threads = [
            threading.Thread(target=self._old_server, daemon=True),
            threading.Thread(target=self._tether, daemon=True),
        ]

    def _old_server(self) -> None:
        with psycopg.connect(self.url, autocommit=True) as conn:
            while not self.stop.is_set():
                started = time.perf_counter()
                try:
                    row = conn.execute(OLD_INSERT, (uuid.uuid4(),)).fetchone()
                except psycopg.Error as exc:
                    self.old_connect.failures.append(str(exc).splitlines()[0])
                    continue
                self.old_connect.seconds.append(time.perf_counter() - started)
                started = time.perf_counter()
                try:
                    conn.execute(OLD_END, (row[0] if row else None,))
                except psycopg.Error as exc:
                    self.old_disconnect.failures.append(str(exc).splitlines()[0])
                    continue
                self.old_disconnect.seconds.append(time.perf_counter() - started)
                time.sleep(PAUSE_SECONDS)

    def _tether_ready(self, conn: psycopg.Connection[tuple[Any, ...]]) -> bool:
        row = conn.execute(
            "select to_regprocedure('public.tether_end_session_v3"
            "(text, text, integer, timestamptz, double precision)') is not null"
        ).fetchone()
        return bool(row and row[0])

    def _tether(self) -> None:
        store = PostgresStore(self.url)
        with psycopg.connect(self.url, autocommit=True) as probe:
            while not self.stop.is_set() and not self._tether_ready(probe):
                time.sleep(0.05)
        try:
            while not self.stop.is_set():
                connection_id = f"bench{uuid.uuid4().hex[:16]}="
                started = time.perf_counter()
                try:
                    store.open_session(OpenSessionRequest(connection_id=connection_id))
                except TetherError as exc:
                    self.connect.failures.append(str(exc))
                    continue
                self.connect.seconds.append(time.perf_counter() - started)
                started = time.perf_counter()
                try:
                    store.end_session(connection_id, EndReason.CLIENT_DISCONNECT)
                except TetherError as exc:
                    self.disconnect.failures.append(str(exc))
                    continue
                self.disconnect.seconds.append(time.perf_counter() - started)
                time.sleep(PAUSE_SECONDS)
        finally:
            store.close()

    def all(self) -> list[Timings]:
        return [self.old_connect, self.old_disconnect, self.connect, self.disconnect]

    def reset(self) -> None:
        for timings in self.all():
            timings.seconds.clear()
            timings.failures.clear()

    @contextmanager
    def running(self) -> Iterator[Writers]:
        for thread in self.threads:
            thread.start()
        try:
            yield self
        finally:
            self.stop.set()
            for thread in self.threads:
                thread.join(timeout=30)


def _fill(url: str, rows: int) -> None:
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(ORIGIN_TABLE)
        with indexes_rebuilt_after(conn):
            done = 0
            while done < rows:
                count = min(200_000, rows - done)
                conn.execute(HISTORY, (done + 1, done + count))
                done += count
        conn.execute(
            "create view public.team_session_stats as select date(session_start) as date,"
            " count(*) as total, avg(duration_seconds) as avg_duration,"
            " count(*) filter (where is_active) as still_active"
            " from public.conversation_sessions group by 1"
        )
        conn.execute("vacuum (analyze) public.conversation_sessions")


def _worst(timings: list[Timings]) -> float:
    return max((max(t.seconds) for t in timings if t.seconds), default=0.0)


def run(mode: Run) -> dict[str, Entry]:
    rows = mode.pick(size("TETHER_BENCH_ADOPT_ROWS"), QUICK_ROWS)
    with scratch_database("adopt", migrated=False) as url:
        started = time.perf_counter()
        _fill(url, rows)
        built = time.perf_counter() - started
        report(f"adoption    built the origin's table: {rows:,} rows in {built:.0f}s")
        started = time.perf_counter()
        checked = adopt_inspect(url)
        check_seconds = time.perf_counter() - started
        estimate = sum(step.estimate_seconds for step in checked.steps)
        report(
            f"adoption    --check {check_seconds:.1f}s: {checked.active} active,"
            f" {checked.corrected} to correct; --apply estimated at {estimate:.0f}s"
        )
        writers = Writers(url)
        with writers.running():
            time.sleep(1.0)
            started = time.perf_counter()
            applied = adopt_apply(url, progress=lambda _: None)
            apply_seconds = time.perf_counter() - started
            time.sleep(1.0)
        apply_writes = {t.name: t.summary() for t in writers.all()}
        apply_worst = _worst(writers.all())
        failures = sum(len(t.failures) for t in writers.all())
        steps = ", ".join(f"{k} {v:.1f}s" for k, v in applied.seconds.items())
        report(f"adoption    --apply {apply_seconds:.0f}s ({steps})")
        for name, summary in apply_writes.items():
            longest, p99 = summary["max_seconds"], summary["p99_seconds"]
            report(
                f"            {name}: {summary['writes']} writes,"
                f" longest {'-' if longest is None else f'{longest}s'},"
                f" p99 {'(under 100 writes)' if p99 is None else f'{p99}s'},"
                f" {summary['failures']} failed"
            )
        report(
            f"adoption    longest wait of a concurrent write during --apply: {apply_worst:.3f}s"
            f" (goal <= {GOAL_SECONDS}s), {failures} failed"
        )

        plan = plan_finish(url)
        finish_estimate = plan.step.estimate_seconds if plan.step else 0.0
        finish_writers = Writers(url)
        with finish_writers.running():
            time.sleep(1.0)
            finished = adopt_finish(url)
            time.sleep(0.5)
        finish_worst = _worst(finish_writers.all())
        report(
            f"adoption    --finish held the table {finished.lock_held_seconds:.2f}s"
            f" (estimated {finish_estimate:.2f}s beforehand); longest write wait"
            f" {finish_worst:.2f}s"
        )
    result = {
        "rows": rows,
        "check_seconds": round(check_seconds, 2),
        "apply_seconds": round(apply_seconds, 2),
        "apply_estimate_seconds": round(estimate, 2),
        "apply_steps_seconds": applied.seconds,
        "apply_longest_write_wait_seconds": round(apply_worst, 3),
        "apply_write_failures": failures,
        "apply_writes": apply_writes,
        "goal_seconds": GOAL_SECONDS,
        "finish_lock_held_seconds": finished.lock_held_seconds,
        "finish_estimate_seconds": round(finish_estimate, 2),
        "finish_longest_write_wait_seconds": round(finish_worst, 3),
        "finish_writes": {t.name: t.summary() for t in finish_writers.all()},
    }
    adoption = entry(
        f"tether adopt --apply on the origin's table with {rows:,} rows of history while the"
        " old server's insert and update and tether's open and end run without pause, every"
        " write timed; then --finish",
        measured=result,
        goal=f"<= {GOAL_SECONDS:g}",
        goal_on="longest_write_wait_seconds",
        value=apply_worst,
    )
    adoption["size"] = f"{rows:,} rows"
    return {"adoption_blocking": adoption}
