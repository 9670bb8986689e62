"""``heartbeat_cost``: what a heartbeat costs the database.

Workload. 10,000 live sessions among 100,000 rows. pgbench (one client, 5 s per run,
3 interleaved runs) sends heartbeats to random live sessions:

- tether: ``tether_touch_session_v1(connection_id, throttle 0)``, the call the
  heartbeat route makes (at the defaults every heartbeat writes: the throttle, 10 s,
  is under the interval, 15 s);
- the same on tether's table without its idle index (the partial index on
  ``last_seen_at where is_active`` the sweep's silence checks read): the index's own
  cost;
- naive: ``update ... set last_seen_at = now() where connection_id = ...`` on a table
  with only its primary key and a unique ``connection_id``.

Reported: heartbeats per second and WAL bytes per heartbeat for each; the ratio is
tether's WAL bytes per heartbeat over the naive table's (the write amplification).
"""

from __future__ import annotations

import re
import subprocess
import tempfile
from pathlib import Path
from typing import Any

import psycopg
from psycopg.conninfo import conninfo_to_dict

from bench.common import Entry, Run, entry, report, spread
from bench.database import scratch_database
from tether.local import embedded

LIVE = 10_000
HISTORY = 90_000
SCRIPTS = {
    "tether": "\\set n random(1, {live})\n"
    "select * from public.tether_touch_session_v1(p_connection_id => 'live' || :n,"
    " p_throttle_seconds => 0);\n",
    "naive": "\\set n random(1, {live})\n"
    "update public.naive_sessions set last_seen_at = now() where connection_id = 'live' || :n;\n",
}
SETUP = """
insert into public.conversation_sessions
  (connection_id, session_start, last_seen_at, session_end, end_reason, announced_at)
select 'h' || g, now() - interval '3 days', now() - interval '3 days',
       now() - interval '2 days', 'client_disconnect', now() - interval '2 days'
from generate_series(1, {history}) g;
insert into public.conversation_sessions (connection_id) select 'live' || g
from generate_series(1, {live}) g;
create table public.naive_sessions (
  session_id uuid primary key default gen_random_uuid(),
  connection_id text unique, user_id uuid, is_active boolean default true,
  session_start timestamptz default now(), last_seen_at timestamptz default now(),
  session_end timestamptz, duration_seconds double precision);
insert into public.naive_sessions (connection_id, is_active, session_start, session_end)
select connection_id, is_active, session_start, session_end from public.conversation_sessions;
"""


def _pgbench(url: str, script: Path, seconds: int) -> tuple[float, int]:
    params = conninfo_to_dict(url)
    with psycopg.connect(url, autocommit=True) as conn:
        before = conn.execute("select pg_current_wal_insert_lsn()").fetchone()
        command = [str(embedded.binary("pgbench")), "-n", "-M", "extended", "-c", "1"]
        command += ["-T", str(seconds), "-f", str(script), "-h", str(params.get("host", ""))]
        command += ["-U", str(params.get("user", "postgres")), str(params["dbname"])]
        output = subprocess.run(command, capture_output=True, text=True, check=True).stdout
        after = conn.execute(
            "select pg_wal_lsn_diff(pg_current_wal_insert_lsn(), %s)",
            (before[0] if before else None,),
        ).fetchone()
    tps = float(re.search(r"^tps = ([\d.]+)", output, re.MULTILINE).group(1))  # type: ignore[union-attr]
    done = int(re.search(r"transactions actually processed: (\d+)", output).group(1))  # type: ignore[union-attr]
    return tps, int(after[0]) // max(done, 1) if after else 0


def run(mode: Run) -> dict[str, Entry]:
    seconds, repeats = mode.pick((5, 3), (2, 1))
    results: dict[str, dict[str, list[float]]] = {}
    with scratch_database("heartbeat") as url, tempfile.TemporaryDirectory() as folder:
        Path(folder).chmod(0o755)
        scripts = {}
        for name, text in SCRIPTS.items():
            scripts[name] = Path(folder) / f"{name}.sql"
            scripts[name].write_text(text.format(live=LIVE))
            scripts[name].chmod(0o644)
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute(SETUP.format(history=HISTORY, live=LIVE))
            conn.execute("vacuum analyze")
        variants: list[tuple[str, str]] = [("tether", "tether"), ("naive", "naive")]
        for _ in range(repeats):
            for label, script in variants:
                tps, wal = _pgbench(url, scripts[script], seconds)
                results.setdefault(label, {"tps": [], "wal": []})
                results[label]["tps"].append(tps)
                results[label]["wal"].append(wal)
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute("drop index public.conversation_sessions_last_seen_at_active_idx")
        for _ in range(repeats):
            tps, wal = _pgbench(url, scripts["tether"], seconds)
            results.setdefault("tether_without_idle_index", {"tps": [], "wal": []})
            results["tether_without_idle_index"]["tps"].append(tps)
            results["tether_without_idle_index"]["wal"].append(wal)
    summary: dict[str, Any] = {
        label: {
            "heartbeats_per_second": spread(r["tps"], 1),
            "wal_bytes_per_heartbeat": spread(r["wal"], 0),
        }
        for label, r in results.items()
    }
    wal_of: dict[str, float] = {
        label: s["wal_bytes_per_heartbeat"]["median"] for label, s in summary.items()
    }
    tps_of: dict[str, float] = {
        label: s["heartbeats_per_second"]["median"] for label, s in summary.items()
    }
    for label in summary:
        report(f"heartbeat   {label}: {tps_of[label]:.0f}/s, {wal_of[label]:.0f} WAL bytes each")
    result = entry(
        f"pgbench heartbeats to random sessions among {LIVE:,} live ({LIVE + HISTORY:,} rows),"
        f" one client, {seconds} s x {repeats}: tether's touch function, the same without the"
        " idle index, and a plain update on the naive table",
        measured={k: v for k, v in summary.items() if k != "naive"},
        baseline={"naive": summary["naive"]},
        ratio=wal_of["tether"] / wal_of["naive"],
        notes="ratio: WAL bytes per heartbeat, tether over naive (no goal)",
    )
    result["idle_index_wal_bytes_per_heartbeat"] = (
        wal_of["tether"] - wal_of["tether_without_idle_index"]
    )
    result["spread_note"] = (
        f"WAL/heartbeat tether {wal_of['tether']:.0f}, no idle index"
        f" {wal_of['tether_without_idle_index']:.0f}, naive {wal_of['naive']:.0f}"
    )
    return {"heartbeat_cost": result}
