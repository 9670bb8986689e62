"""The local gateway under load: connections per second with every connection
written to Postgres, against the database's own rate for the same write measured
by pgbench in the same run; and the memory each open connection holds.

Goal: at least API Gateway's default quota of 500 new connections per second.
"""

from __future__ import annotations

import asyncio
import os
import resource
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil
import psycopg
from psycopg.conninfo import conninfo_to_dict
from websockets.asyncio.client import ClientConnection, connect

from bench.common import Entry, Run, entry, report, size
from bench.database import BENCH_DATA_DIR, scratch_database
from tether.local import embedded

QUICK_CONNECTIONS = 1000
CONCURRENCY = 64
PGBENCH_SECONDS = 5

PGBENCH_SCRIPT = """\\set id random(1, 2000000000)
select * from public.tether_open_session_v1('pgbench-' || :client_id || '-' || :id);
"""


# Beyond the connections held: the interpreter's, Postgres clients', pgbench's pipes.
RESERVED_DESCRIPTORS = 256


def room_for(connections: int) -> None:
    """Let this process hold ``connections`` open sockets: raise its soft limit on open
    files as far as needed, within the hard one, as tether dev does for itself (a common
    soft limit is 1,024, and the full run holds 3,000). Refuse, saying what to change, if
    the hard limit is too low."""
    needed = connections + RESERVED_DESCRIPTORS
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and soft < needed:
        if hard != resource.RLIM_INFINITY and hard < needed:
            raise RuntimeError(
                f"holding {connections:,} connections needs about {needed:,} open files, and"
                f" this process may open at most {hard:,} (ulimit -Hn): raise that limit, or"
                " set TETHER_BENCH_CONNECTIONS lower"
            )
        resource.setrlimit(resource.RLIMIT_NOFILE, (needed, hard))


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _pgbench_tps(url: str) -> float:
    params = conninfo_to_dict(url)
    with tempfile.NamedTemporaryFile("w", suffix=".sql", delete=False) as script:
        script.write(PGBENCH_SCRIPT)
    os.chmod(script.name, 0o644)
    command = [
        str(embedded.binary("pgbench")),
        "-n",
        "-c",
        "8",
        "-j",
        "2",
        "-T",
        str(PGBENCH_SECONDS),
        "-f",
        script.name,
        "-h",
        str(params.get("host", "")),
        "-U",
        str(params.get("user", "postgres")),
        str(params["dbname"]),
    ]
    output = subprocess.run(command, capture_output=True, text=True, check=True).stdout
    Path(script.name).unlink()
    for line in output.splitlines():
        if line.startswith("tps ="):
            return float(line.split()[2])
    raise RuntimeError(f"pgbench printed no tps:\n{output}")


_LOG = tempfile.TemporaryFile()  # noqa: SIM115 - tether dev's log, kept for the process
# tether dev runs one per folder: this one's own, so the detection benchmark's, running
# beside it, is not taken for it.
_FOLDER = tempfile.TemporaryDirectory(prefix="tether-bench-gateway-")


def _start_dev(url: str, port: int) -> subprocess.Popen[bytes]:
    tether = str(Path(sys.executable).with_name("tether"))
    env = {
        **os.environ,
        "TETHER_ALLOW_ANONYMOUS": "true",
    }
    process = subprocess.Popen(
        [tether, "dev", "--port", str(port), "--database-url", url, "--sweep-interval", "3600"],
        stdout=subprocess.DEVNULL,
        stderr=_LOG,
        env=env,
        cwd=_FOLDER.name,
    )
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and process.poll() is None:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return process
        except OSError:
            time.sleep(0.1)
    process.kill()
    _LOG.seek(0)
    raise RuntimeError(f"tether dev did not start: {_LOG.read().decode()[-800:]}")


def _cpu_seconds(processes: list[psutil.Process]) -> float:
    total = 0.0
    for process in processes:
        try:
            times = process.cpu_times()
        except psutil.Error:  # a server process that ended meanwhile
            continue
        total += times.user + times.system
    return total


def _postgres_processes() -> list[psutil.Process]:
    """The benchmark server's processes: its postmaster and every child (backends,
    writers), not another cluster's on the same machine."""
    try:
        pid = int((BENCH_DATA_DIR / "postmaster.pid").read_text().split()[0])
        postmaster = psutil.Process(pid)
        return [postmaster, *postmaster.children()]
    except (OSError, ValueError, IndexError, psutil.Error):
        return []


async def _open_many(
    url: str, count: int, process: psutil.Process
) -> tuple[float, float, dict[str, float], list[ClientConnection]]:
    """Open ``count`` connections at once (``CONCURRENCY`` handshakes in flight) and
    hold them: new connections per second, the server's memory per connection, and
    the CPU time each connection cost the gateway, this client and Postgres."""
    gate = asyncio.Semaphore(CONCURRENCY)

    async def one() -> ClientConnection:
        async with gate:
            return await connect(url, ping_interval=None, open_timeout=60)

    before = process.memory_info().rss
    # The client is this thread's event loop: its own CPU time, not the process's
    # (a full run has another benchmark's thread in this process).
    cpu_before = {
        "gateway": _cpu_seconds([process]),
        "client": time.thread_time(),
        "postgres": _cpu_seconds(_postgres_processes()),
    }
    started = time.perf_counter()
    clients = await asyncio.gather(*(one() for _ in range(count)))
    rate = count / (time.perf_counter() - started)
    # Postgres backends started during the run count whole (they had no time before).
    cpu_after = {
        "gateway": _cpu_seconds([process]),
        "client": time.thread_time(),
        "postgres": _cpu_seconds(_postgres_processes()),
    }
    cpu_ms = {
        name: round((cpu_after[name] - cpu_before[name]) / count * 1000, 2) for name in cpu_before
    }
    await asyncio.sleep(1.0)
    per_connection = (process.memory_info().rss - before) / count
    return rate, per_connection, cpu_ms, list(clients)


def run(mode: Run) -> dict[str, Entry]:
    connections = mode.pick(size("TETHER_BENCH_CONNECTIONS"), QUICK_CONNECTIONS)
    room_for(connections)
    with scratch_database("gateway") as url:
        baseline = _pgbench_tps(url)
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute("truncate public.conversation_sessions cascade")
        port = _free_port()
        process = _start_dev(url, port)
        ws_url = f"ws://127.0.0.1:{port}"
        try:

            async def opened() -> tuple[float, float, dict[str, float], int, int]:
                server = psutil.Process(process.pid)
                rate, per_connection, cpu_ms, clients = await _open_many(
                    ws_url, connections, server
                )
                with psycopg.connect(url) as conn:
                    row = conn.execute(
                        "select count(*) from public.conversation_sessions where is_active"
                    ).fetchone()
                for client in clients:
                    await client.close()
                return rate, per_connection, cpu_ms, len(clients), int(row[0]) if row else 0

            rate, per_connection, cpu_ms, held, written = asyncio.run(opened())
        finally:
            process.send_signal(signal.SIGTERM)
            process.wait(timeout=120)
    report(
        f"gateway     {rate:.0f} new connections/s, each written ({written} active rows);"
        f" pgbench open_session {baseline:.0f}/s; {per_connection / 1024:.1f} KiB per"
        f" open connection ({held} held); CPU ms per connection: "
        + ", ".join(f"{name} {ms}" for name, ms in cpu_ms.items())
    )
    rate_entry = entry(
        f"{connections:,} WebSocket handshakes through tether dev's gateway ({CONCURRENCY} in"
        " flight), each invoking the real $connect handler and writing its row; against"
        " pgbench calling tether_open_session_v1 (8 clients)",
        measured={
            "connections_per_second": round(rate, 1),
            "rows_written": written,
            # Where the machine's CPUs went: the rate cannot exceed CPUs / their sum,
            # nor 1 / the gateway's share (one interpreter, one lock).
            "cpu_ms_per_connection": cpu_ms,
        },
        baseline={"pgbench_open_session_per_second": round(baseline, 1)},
        ratio=rate / baseline,
        goal=">= 500",
        goal_on="connections_per_second",
        value=rate,
        notes="the goal is API Gateway's default quota of new connections per second",
    )
    rate_entry["size"] = f"{connections:,} connections"
    memory_entry = entry(
        f"the gateway process's resident memory growth while holding {held:,} open"
        " connections, per connection",
        measured={"bytes_per_connection": round(per_connection), "held": held},
        goal_on="bytes_per_connection",
        value=per_connection,
    )
    return {"gateway_connect_rate": rate_entry, "gateway_memory_per_connection": memory_entry}
