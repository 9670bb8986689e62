"""``active_query_vs_naive``: the operators' standing queries on tether's schema
against the same questions on the naive one.

Workload. The same rows in two tables: tether's ``conversation_sessions`` (generated
``is_active``, partial indexes ``where is_active``) and the naive one of the origin
(a plain ``is_active boolean``, its primary key and a unique ``connection_id``, no
partial index), each with 2M sessions spread over a year of history and 1% active
(a few of those orphans). The rows lie in both tables in the order of their start, as
``$connect`` inserts them: the live ones among the newest pages, each orphan among the
sessions of its day. Each table's indexes are built once it is filled (the same
indexes; a fill through them would take minutes longer). Three queries: the origin's
orphan alert, its daily statistics (last 7 days), and "who is online" (every active
session's user, connection and start). Each is timed by the server (``EXPLAIN ANALYZE``'s execution
time, so the rows' transfer to the client, equal on both sides, does not blur the
plans' difference), median of 5 runs after a warm-up. The figure is the worst of the
three ratios.
"""

from __future__ import annotations

import json
from typing import Any

import psycopg

from bench.common import Entry, Run, entry, report, spread
from bench.database import indexes_rebuilt_after, scratch_database, uuid_v7_at

NAIVE_TABLE = """
create table public.naive_sessions (
  session_id uuid not null default gen_random_uuid(),
  connection_id text,
  user_id uuid,
  is_active boolean default true,
  session_start timestamptz default now(),
  last_seen_at timestamptz default now(),
  session_end timestamptz,
  ended_at timestamptz,
  duration_seconds double precision
)
"""
# Its keys, added once it is filled (the same indexes, built by one sort each).
NAIVE_KEYS = (
    "alter table public.naive_sessions add primary key (session_id), add unique (connection_id)"
)
# Session g: ended 5 minutes after its start, spread over a year; 1 in 100 active
# (started within the last 2 hours), of which 1 in 50 is an orphan (a day old).
# Inserted in order of start, as $connect writes them, each with the time-ordered id
# $connect gives it.
FILL_TETHER = f"""
insert into public.conversation_sessions
  (session_id, connection_id, user_id, session_start, last_seen_at, session_end, end_reason,
   announced_at)
select {uuid_v7_at("t.start", "g")}, 'c' || g, md5(g::text)::uuid, t.start,
       coalesce(t.ended, t.start), t.ended,
       case when t.ended is null then null else 'client_disconnect' end,
       case when t.ended is null then null else t.ended end
from generate_series(1, %(rows)s::bigint) g
cross join lateral (
  select s.start, case when g %% 100 = 0 then null else s.start + interval '5 minutes' end as ended
  from (select case when g %% 5000 = 0 then now() - interval '1 day'
                    when g %% 100 = 0 then now() - make_interval(secs => g %% 7000)
                    else now() - make_interval(secs => (g * 7919) %% 31536000) end as start) s
) t
order by t.start
"""
FILL_NAIVE = """
insert into public.naive_sessions
  (connection_id, user_id, is_active, session_start, last_seen_at, session_end, ended_at,
   duration_seconds)
select connection_id, user_id, is_active, session_start, last_seen_at, session_end, session_end,
       duration_seconds
from public.conversation_sessions
order by session_start
"""
QUERIES: dict[str, tuple[str, str]] = {
    "orphan_alert": (
        "select count(*) from public.conversation_sessions"
        " where is_active and session_start < now() - interval '2 hours'",
        "select count(*) from public.naive_sessions"
        " where is_active = true and session_start < now() - interval '2 hours'",
    ),
    "daily_stats": (
        "select date(session_start) as date, count(*) as total_sessions,"
        " avg(duration_seconds) as avg_duration, count(*) filter (where is_active) as still_active"
        " from public.conversation_sessions where session_start > now() - interval '7 days'"
        " group by date(session_start) order by date desc",
        "select date(session_start) as date, count(*) as total_sessions,"
        " avg(duration_seconds) as avg_duration, count(*) filter (where is_active) as still_active"
        " from public.naive_sessions where session_start > now() - interval '7 days'"
        " group by date(session_start) order by date desc",
    ),
    "who_is_online": (
        "select user_id, connection_id, session_start from public.conversation_sessions"
        " where is_active",
        "select user_id, connection_id, session_start from public.naive_sessions"
        " where is_active = true",
    ),
}


def _execution_ms(conn: psycopg.Connection[Any], query: str) -> float:
    row = conn.execute(f"explain (analyze, timing off, format json) {query}").fetchone()
    assert row is not None
    plan = row[0] if isinstance(row[0], list) else json.loads(row[0])
    return float(plan[0]["Execution Time"])


def run(mode: Run) -> dict[str, Entry]:
    rows = mode.pick(2_000_000, 400_000)
    per_query: dict[str, Any] = {}
    with scratch_database("active") as url, psycopg.connect(url, autocommit=True) as conn:
        with indexes_rebuilt_after(conn):
            conn.execute(FILL_TETHER, {"rows": rows})
        conn.execute(NAIVE_TABLE)
        conn.execute(FILL_NAIVE)
        conn.execute(NAIVE_KEYS)
        conn.execute("vacuum analyze public.conversation_sessions")
        conn.execute("vacuum analyze public.naive_sessions")
        for name, (ours, naive) in QUERIES.items():
            timings: dict[str, list[float]] = {"tether": [], "naive": []}
            for side, query in (("tether", ours), ("naive", naive)):
                _execution_ms(conn, query)
                timings[side] = [_execution_ms(conn, query) for _ in range(5)]
            tether_ms, naive_ms = spread(timings["tether"], 3), spread(timings["naive"], 3)
            per_query[name] = {
                "tether_ms": tether_ms,
                "naive_ms": naive_ms,
                "ratio": round(tether_ms["median"] / naive_ms["median"], 4),
            }
            report(
                f"queries     {name}: {tether_ms['median']:.2f} ms vs naive"
                f" {naive_ms['median']:.2f} ms, ratio {per_query[name]['ratio']:.3f}"
            )
    worst = max(q["ratio"] for q in per_query.values())
    result = entry(
        f"the origin's orphan alert and daily stats, and who is online, on {rows:,} sessions"
        " (a year of history, 1% active) in tether's table and in the naive one; server"
        " execution time, median of 5",
        measured={name: q["tether_ms"] for name, q in per_query.items()},
        baseline={name: q["naive_ms"] for name, q in per_query.items()},
        ratio=worst,
        goal="<= 0.05",
        notes="ratio: the worst of the three queries' ratios",
    )
    result["ratios_by_query"] = {name: q["ratio"] for name, q in per_query.items()}
    result["size"] = f"{rows:,} sessions"
    result["spread_note"] = ", ".join(f"{n} {q['ratio']:.3f}" for n, q in per_query.items())
    return {"active_query_vs_naive": result}
