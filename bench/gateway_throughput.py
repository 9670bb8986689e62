"""The local gateway under load: connections per second with every connection
written to Postgres, against the database's own rate for the same write measured
by pgbench in the same run; and the memory each open connection holds.

Goal: at least API Gateway's default quota of 500 new connections per second.
"""

from __future__ import annotations

import asyncio
import os
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

from bench.common import report, write_result
from bench.database import scratch_database
from tether.local import embedded

CONNECTIONS = int(os.environ.get("TETHER_BENCH_CONNECTIONS", "3000"))
CONCURRENCY = 64
PGBENCH_SECONDS = 5

PGBENCH_SCRIPT = """\\set id random(1, 2000000000)
select * from public.tether_open_session_v1('pgbench-' || :client_id || '-' || :id);
"""


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


def _start_dev(url: str, port: int) -> subprocess.Popen[bytes]:
    tether = str(Path(sys.executable).with_name("tether"))
    env = {
        **os.environ,
        "TETHER_ALLOW_ANONYMOUS": "true",
        "TETHER_HEARTBEAT_THROTTLE_SECONDS": "60",
    }
    process = subprocess.Popen(
        [tether, "dev", "--port", str(port), "--database-url", url, "--sweep-interval", "3600"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env=env,
    )
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return process
        except OSError:
            time.sleep(0.1)
    process.kill()
    raise RuntimeError("tether dev did not start")


async def _open_many(
    url: str, count: int, process: psutil.Process
) -> tuple[float, float, list[ClientConnection]]:
    """Open ``count`` connections at once (``CONCURRENCY`` handshakes in flight) and
    hold them: new connections per second, and the server's memory per connection."""
    gate = asyncio.Semaphore(CONCURRENCY)

    async def one() -> ClientConnection:
        async with gate:
            return await connect(url, ping_interval=None, open_timeout=60)

    before = process.memory_info().rss
    started = time.perf_counter()
    clients = await asyncio.gather(*(one() for _ in range(count)))
    rate = count / (time.perf_counter() - started)
    await asyncio.sleep(1.0)
    per_connection = (process.memory_info().rss - before) / count
    return rate, per_connection, list(clients)


def main() -> dict[str, float]:
    with scratch_database("gateway") as url:
        baseline = _pgbench_tps(url)
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute("truncate public.conversation_sessions cascade")
        port = _free_port()
        process = _start_dev(url, port)
        ws_url = f"ws://127.0.0.1:{port}"
        try:

            async def run() -> tuple[float, float, int, int]:
                server = psutil.Process(process.pid)
                rate, per_connection, clients = await _open_many(ws_url, CONNECTIONS, server)
                with psycopg.connect(url) as conn:
                    row = conn.execute(
                        "select count(*) from public.conversation_sessions where is_active"
                    ).fetchone()
                for client in clients:
                    await client.close()
                return rate, per_connection, len(clients), int(row[0]) if row else 0

            rate, per_connection, held, written = asyncio.run(run())
        finally:
            process.send_signal(signal.SIGTERM)
            process.wait(timeout=120)
    ratio = rate / baseline
    report(
        f"gateway     {rate:.0f} new connections/s, each written ({written} active rows);"
        f" pgbench open_session {baseline:.0f} tps   ratio {ratio:.2f}; goal >= 500/s"
    )
    report(f"gateway     {held} open connections held, {per_connection / 1024:.1f} KiB each")
    write_result(
        "gateway_throughput",
        {
            "connections_per_second": rate,
            "rows_written": written,
            "pgbench_open_session_tps": baseline,
            "ratio_to_pgbench": ratio,
            "goal_connections_per_second": 500,
            "held_connections": held,
            "bytes_per_connection": per_connection,
        },
    )
    return {"connections_per_second": rate, "ratio_to_pgbench": ratio}


if __name__ == "__main__":
    main()
