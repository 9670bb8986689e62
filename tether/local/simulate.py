"""``tether simulate``: real WebSocket clients against any gateway, then the truth
from the session table.

Each client identifies itself by its User-Agent (``tether-simulate/<run>/<n>``),
which ``$connect`` stores, so its row can be found afterwards. A fraction of the
clients vanish without a close frame (the socket is torn down). After the run the
table is polled for ``--settle`` seconds (time for the sweep to work), and the
report says how many sessions opened, how they ended, what is still active, what
is orphaned (active, though its client is certainly gone), and how long it took
for each row to end after its client did.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import random
import sys
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import psycopg
from psycopg.rows import dict_row
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import WebSocketException

CONNECT_CONCURRENCY = 32
POLL_SECONDS = 0.2


@dataclass
class ClientOutcome:
    index: int
    dropped: bool
    connected: bool = False
    ended_at: float | None = None
    """time.time() when the client closed or vanished."""
    error: str | None = None


@dataclass
class SimulationReport:
    opened: int
    ended_by_reason: dict[str, int]
    active: int
    orphaned: int
    detection_latency_s: dict[str, float | None]
    clients: int
    connected: int
    dropped: int
    failed: int
    errors: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {
            "opened": self.opened,
            "ended_by_reason": self.ended_by_reason,
            "active": self.active,
            "orphaned": self.orphaned,
            "detection_latency_s": self.detection_latency_s,
            "clients": self.clients,
            "connected": self.connected,
            "dropped": self.dropped,
            "failed": self.failed,
        }


def percentile(values: list[float], fraction: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    position = max(0, math.ceil(fraction * len(ordered)) - 1)
    return round(ordered[position], 3)


class Progress:
    def __init__(self, enabled: bool) -> None:
        self.enabled = enabled

    def show(self, label: str, done: float, total: float) -> None:
        if not self.enabled:
            return
        width = 30
        filled = int(width * min(done / total, 1.0)) if total else width
        bar = "#" * filled + "." * (width - filled)
        sys.stderr.write(f"\r{label:<10} [{bar}] {done:g}/{total:g}")
        sys.stderr.flush()

    def done(self) -> None:
        if self.enabled:
            sys.stderr.write("\n")
            sys.stderr.flush()


async def _client(
    url: str,
    run_id: str,
    outcome: ClientOutcome,
    *,
    duration: float,
    heartbeat: float,
    token: str | None,
    gate: asyncio.Semaphore,
    connected: list[int],
) -> None:
    agent = f"tether-simulate/{run_id}/{outcome.index}"
    target = url if token is None else f"{url}{'&' if '?' in url else '?'}token={token}"
    try:
        async with gate:
            ws: ClientConnection = await connect(
                target, user_agent_header=agent, open_timeout=15, ping_interval=None
            )
        outcome.connected = True
        connected.append(outcome.index)
        deadline = time.monotonic() + duration
        while (left := deadline - time.monotonic()) > 0:
            if heartbeat > 0:
                await ws.send(json.dumps({"action": "heartbeat"}))
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(ws.recv(), timeout=min(heartbeat, left))
            pause = heartbeat if heartbeat > 0 else left
            await asyncio.sleep(max(0.0, min(pause, deadline - time.monotonic())))
        if outcome.dropped:
            # No close frame: the socket is torn down, as when a laptop lid closes.
            ws.transport.abort()
        else:
            await ws.close(code=1000)
        outcome.ended_at = time.time()
    except (OSError, WebSocketException, TimeoutError) as exc:
        outcome.error = f"{type(exc).__name__}: {exc}"
        outcome.ended_at = outcome.ended_at or time.time()


def _rows(database_url: str, run_id: str) -> dict[int, dict[str, Any]]:
    with psycopg.connect(database_url, row_factory=dict_row, connect_timeout=10) as conn:
        rows = conn.execute(
            "select user_agent, is_active, end_reason from public.conversation_sessions"
            " where user_agent like %s",
            (f"tether-simulate/{run_id}/%",),
        ).fetchall()
    return {int(str(row["user_agent"]).rsplit("/", 1)[1]): row for row in rows}


async def simulate(
    *,
    url: str,
    database_url: str,
    clients: int,
    duration: float,
    drop_rate: float,
    heartbeat: float,
    settle: float,
    token: str | None = None,
    progress: bool = True,
) -> SimulationReport:
    run_id = uuid.uuid4().hex[:10]
    dropped = set(random.sample(range(clients), round(clients * drop_rate)))
    outcomes = [ClientOutcome(index=i, dropped=i in dropped) for i in range(clients)]
    bar = Progress(progress)
    gate = asyncio.Semaphore(CONNECT_CONCURRENCY)
    connected: list[int] = []
    tasks = [
        asyncio.create_task(
            _client(
                url,
                run_id,
                outcome,
                duration=duration,
                heartbeat=heartbeat,
                token=token,
                gate=gate,
                connected=connected,
            )
        )
        for outcome in outcomes
    ]
    started = time.monotonic()
    while not all(task.done() for task in tasks):
        if len(connected) < clients:
            bar.show("connecting", len(connected), clients)
        else:
            bar.show("running", round(min(time.monotonic() - started, duration), 1), duration)
        await asyncio.sleep(0.2)
    await asyncio.gather(*tasks)
    bar.done()

    detected: dict[int, float] = {}
    settle_started = time.monotonic()
    rows: dict[int, dict[str, Any]] = {}
    while True:
        rows = await asyncio.to_thread(_rows, database_url, run_id)
        now = time.time()
        for index, row in rows.items():
            if not row["is_active"] and index not in detected:
                detected[index] = now
        waited = time.monotonic() - settle_started
        bar.show("settling", round(min(waited, settle), 1), settle)
        if waited >= settle or (rows and all(not r["is_active"] for r in rows.values())):
            break
        await asyncio.sleep(POLL_SECONDS)
    bar.done()

    latencies = [
        max(0.0, detected[o.index] - o.ended_at)
        for o in outcomes
        if o.index in detected and o.ended_at is not None and o.connected
    ]
    active = [index for index, row in rows.items() if row["is_active"]]
    gone = {o.index for o in outcomes if o.ended_at is not None}
    reasons = Counter(str(row["end_reason"]) for row in rows.values() if not row["is_active"])
    return SimulationReport(
        opened=len(rows),
        ended_by_reason=dict(sorted(reasons.items())),
        active=len(active),
        orphaned=len([index for index in active if index in gone]),
        detection_latency_s={
            "p50": percentile(latencies, 0.50),
            "p95": percentile(latencies, 0.95),
            "max": round(max(latencies), 3) if latencies else None,
        },
        clients=clients,
        connected=sum(1 for o in outcomes if o.connected),
        dropped=len(dropped),
        failed=sum(1 for o in outcomes if o.error),
        errors=[o.error for o in outcomes if o.error][:5],
    )
