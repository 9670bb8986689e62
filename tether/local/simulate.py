"""``tether simulate``: real WebSocket clients against any gateway, then the truth
from the session table.

Each client identifies itself by its User-Agent (``tether-simulate/<run>/<n>``),
which ``$connect`` stores, so its row can be found afterwards. Clients send
heartbeats at the interval tether asks for. A fraction of them vanish without a
close frame (the socket is torn down), and a fraction go silent: they stop sending
but keep their connection open (half-open, as behind a dead NAT or a frozen laptop:
the gateway cannot tell), until the server closes it. A client the server closes is counted as
such, and its end is the moment it was closed. After the run the table is polled
for ``--settle`` seconds (time for the sweep to work), and the report says how
many sessions opened, how they ended, what is still active, what is orphaned
(active, though its client is certainly gone), how long each row took to end after
its client went away, and what the run cost: heartbeat writes and the sweep's
GetConnection calls, per connection per minute.
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
from datetime import datetime
from typing import Any

import psycopg
from psycopg import sql
from psycopg.rows import dict_row
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import WebSocketException

from tether.dburl import hide_secrets, unreachable
from tether.drivers.postgres import read_plainly
from tether.errors import DatabaseError, DatabaseUnavailableError

CONNECT_CONCURRENCY = 32
POLL_SECONDS = 0.2


@dataclass
class ClientOutcome:
    index: int
    dropped: bool
    silent: bool = False
    """Stops sending after its duration, its connection left open."""
    connected: bool = False
    connected_at: float | None = None
    ended_at: float | None = None
    """time.time() when the client went away: it closed, vanished, went silent, or was
    closed."""
    closed_by_server: bool = False
    heartbeat_writes: int = 0
    """Heartbeats the server answered "touched" (a write to the table)."""
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
    closed_by_server: int
    failed: int
    cost_per_connection_minute: dict[str, float | None]
    silent: int = 0
    untracked: int = 0
    """Clients that connected and whose session never appeared in the table: the
    connections tether exists to keep track of (or a --database-url that is not the
    gateway's)."""
    detection_latency_by_kind_s: dict[str, dict[str, float | None]] = field(default_factory=dict)
    """The latencies of clients that closed, were dropped, or went silent, apart."""
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
            "silent": self.silent,
            "closed_by_server": self.closed_by_server,
            "failed": self.failed,
            "untracked": self.untracked,
            "cost_per_connection_minute": self.cost_per_connection_minute,
            "detection_latency_by_kind_s": self.detection_latency_by_kind_s,
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


async def _read(ws: ClientConnection, outcome: ClientOutcome) -> None:
    """Consume what the server sends (heartbeat replies) until the connection ends."""
    with contextlib.suppress(WebSocketException):
        async for message in ws:
            with contextlib.suppress(ValueError, AttributeError):
                if json.loads(message).get("status") == "touched":
                    outcome.heartbeat_writes += 1


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
    held_open: list[ClientConnection],
) -> None:
    agent = f"tether-simulate/{run_id}/{outcome.index}"
    target = url if token is None else f"{url}{'&' if '?' in url else '?'}token={token}"
    try:
        async with gate:
            ws: ClientConnection = await connect(
                target, user_agent_header=agent, open_timeout=15, ping_interval=None
            )
    except (OSError, WebSocketException, TimeoutError) as exc:
        # websockets may say the URL it was given, ?token= and all (a redirect it cannot
        # follow): the report is printed, and the token must not be.
        outcome.error = hide_secrets(f"{type(exc).__name__}: {exc}")
        return
    outcome.connected = True
    outcome.connected_at = time.time()
    connected.append(outcome.index)
    reader = asyncio.create_task(_read(ws, outcome))
    deadline = time.monotonic() + duration
    try:
        while (left := deadline - time.monotonic()) > 0 and not reader.done():
            if heartbeat > 0:
                with contextlib.suppress(WebSocketException):
                    await ws.send(json.dumps({"action": "heartbeat"}))
            pause = min(heartbeat, left) if heartbeat > 0 else left
            # Wake early if the server closes the connection meanwhile.
            await asyncio.wait({reader}, timeout=pause)
        if reader.done():
            outcome.closed_by_server = True
        elif outcome.dropped:
            # No close frame: the socket is torn down, as when a laptop lid closes.
            ws.transport.abort()
        elif outcome.silent:
            # Mute from now on, its connection left open until the table has been read:
            # only the server can end it, and the run hanging up is no detection.
            outcome.ended_at = time.time()
            held_open.append(ws)
            return
        else:
            await ws.close(code=1000)
        outcome.ended_at = time.time()
    finally:
        reader.cancel()
        await asyncio.gather(reader, return_exceptions=True)


# What the run reads of each client's session (_rows), checked before the run (_database_now).
COLUMNS_READ = ("user_agent", "is_active", "end_reason", "session_end")


def _connect(database_url: str) -> psycopg.Connection[dict[str, Any]]:
    try:
        conn = psycopg.connect(database_url, row_factory=dict_row, connect_timeout=10)
    except psycopg.OperationalError as exc:
        # Said as every command says it: libpq's words alone ("failed to resolve host")
        # do not tell the database from the gateway --url names.
        raise unreachable(exc, database_url) from None
    read_plainly(conn)
    return conn


def _rows(database_url: str, run_id: str) -> dict[int, dict[str, Any]]:
    with _connect(database_url) as conn:
        rows = conn.execute(
            sql.SQL("select {} from public.conversation_sessions where user_agent like %s").format(
                sql.SQL(", ").join(map(sql.Identifier, COLUMNS_READ))
            ),
            (f"tether-simulate/{run_id}/%",),
        ).fetchall()
    return {int(str(row["user_agent"]).rsplit("/", 1)[1]): row for row in rows}


def _seen(rows: dict[int, dict[str, Any]], detected: dict[int, float]) -> None:
    now = time.time()
    for index, row in rows.items():
        if not row["is_active"] and index not in detected:
            detected[index] = now


def _gateway_checks(database_url: str, since: datetime) -> int | None:
    """GetConnection calls of the sweep runs that started since ``since``; None where
    none has finished (a run's report is written as it ends, and a scheduled run lasts
    most of its period: a shorter simulation has none to count, which is not 0 calls),
    or where the sweep's history cannot be read."""
    try:
        with _connect(database_url) as conn:
            row = conn.execute(
                "select count(*) as runs,"
                " coalesce(sum((report->>'checked')::bigint), 0) as checked"
                " from tether.sweep_runs where started_at >= %s",
                (since,),
            ).fetchone()
    except (psycopg.Error, DatabaseUnavailableError):
        return None
    if row is None or not row["runs"]:
        return None
    return int(row["checked"])


def _database_now(database_url: str) -> datetime:
    """The database's clock, once the database is known to hold tether's session table:
    checked before any client connects, so a wrong or unmigrated database is said at
    once, not as a bare SQL error when the run is over."""
    with _connect(database_url) as conn:
        row = conn.execute(
            "select now() as now, array(select column_name::text"
            " from information_schema.columns where table_schema = 'public'"
            " and table_name = 'conversation_sessions' and column_name = any(%s)) as found",
            (list(COLUMNS_READ),),
        ).fetchall()[0]
    missing = [column for column in COLUMNS_READ if column not in row["found"]]
    if missing:
        what = (
            "no public.conversation_sessions table"
            if len(missing) == len(COLUMNS_READ)
            else f"a conversation_sessions table without tether's {', '.join(missing)}"
        )
        raise DatabaseError(
            f"the database has {what}: is --database-url the gateway's database? (tether's"
            " migrations create the table: `tether migrate` applies them, `tether adopt`"
            " takes an existing one over)"
        )
    moment: datetime = row["now"]
    return moment


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
    silent_rate: float = 0.0,
) -> SimulationReport:
    run_id = uuid.uuid4().hex[:10]
    if drop_rate + silent_rate > 1:
        raise ValueError("the drop rate and the silent rate add up to more than 1")
    chosen = random.sample(
        range(clients), round(clients * drop_rate) + round(clients * silent_rate)
    )
    dropped = set(chosen[: round(clients * drop_rate)])
    silent = set(chosen[round(clients * drop_rate) :])
    outcomes = [
        ClientOutcome(index=i, dropped=i in dropped, silent=i in silent) for i in range(clients)
    ]
    bar = Progress(progress)
    gate = asyncio.Semaphore(CONNECT_CONCURRENCY)
    connected: list[int] = []
    began = await asyncio.to_thread(_database_now, database_url)
    held_open: list[ClientConnection] = []
    try:
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
                    held_open=held_open,
                )
            )
            for outcome in outcomes
        ]
        started = time.monotonic()
        detected: dict[int, float] = {}
        while not all(task.done() for task in tasks):
            if len(connected) < clients and not all(o.connected or o.error for o in outcomes):
                bar.show("connecting", len(connected), clients)
            else:
                bar.show("running", round(min(time.monotonic() - started, duration), 1), duration)
            if any(o.ended_at is not None for o in outcomes):
                # Ends are seen as they happen, while other clients still run (or stay silent).
                _seen(await asyncio.to_thread(_rows, database_url, run_id), detected)
            await asyncio.sleep(POLL_SECONDS)
        await asyncio.gather(*tasks)
        bar.done()

        settle_started = time.monotonic()
        rows: dict[int, dict[str, Any]] = {}
        while True:
            rows = await asyncio.to_thread(_rows, database_url, run_id)
            _seen(rows, detected)
            waited = time.monotonic() - settle_started
            bar.show("settling", round(min(waited, settle), 1), settle)
            if waited >= settle or (rows and all(not r["is_active"] for r in rows.values())):
                break
            await asyncio.sleep(POLL_SECONDS)
        bar.done()
    finally:
        # The silent clients hang up only once the table has been read (or the run
        # stopped): their sessions' ends until then are the server's alone.
        for ws in held_open:
            ws.transport.abort()
    checks = await asyncio.to_thread(_gateway_checks, database_url, began)
    return _report(outcomes, rows, detected, clients=clients, dropped=dropped, checks=checks)


def _latency_summary(latencies: list[float]) -> dict[str, float | None]:
    return {
        "p50": percentile(latencies, 0.50),
        "p95": percentile(latencies, 0.95),
        "p99": percentile(latencies, 0.99),
        "max": round(max(latencies), 3) if latencies else None,
    }


def _report(
    outcomes: list[ClientOutcome],
    rows: dict[int, dict[str, Any]],
    detected: dict[int, float],
    *,
    clients: int,
    dropped: set[int],
    checks: int | None,
) -> SimulationReport:
    # From the moment each client actually went away to when its row was seen ended.
    latency_of = {
        o.index: max(0.0, detected[o.index] - o.ended_at)
        for o in outcomes
        if o.index in detected and o.ended_at is not None and o.connected
    }
    latencies = list(latency_of.values())

    def kind(o: ClientOutcome) -> str:
        if o.closed_by_server:
            return "closed_by_server"
        return "dropped" if o.dropped else "silent" if o.silent else "closed"

    by_kind: dict[str, list[float]] = {}
    for o in outcomes:
        if o.index in latency_of:
            by_kind.setdefault(kind(o), []).append(latency_of[o.index])
    active = [index for index, row in rows.items() if row["is_active"]]
    gone = {o.index for o in outcomes if o.ended_at is not None}
    reasons = Counter(str(row["end_reason"]) for row in rows.values() if not row["is_active"])
    minutes = sum(
        (o.ended_at - o.connected_at) / 60
        for o in outcomes
        if o.connected_at is not None and o.ended_at is not None
    )
    writes = sum(o.heartbeat_writes for o in outcomes)
    return SimulationReport(
        opened=len(rows),
        ended_by_reason=dict(sorted(reasons.items())),
        active=len(active),
        orphaned=len([index for index in active if index in gone]),
        detection_latency_s=_latency_summary(latencies),
        detection_latency_by_kind_s={k: _latency_summary(v) for k, v in sorted(by_kind.items())},
        silent=sum(1 for o in outcomes if o.silent),
        clients=clients,
        connected=sum(1 for o in outcomes if o.connected),
        dropped=len(dropped),
        closed_by_server=sum(1 for o in outcomes if o.closed_by_server),
        failed=sum(1 for o in outcomes if o.error),
        untracked=sum(1 for o in outcomes if o.connected and o.index not in rows),
        cost_per_connection_minute={
            "heartbeat_writes": round(writes / minutes, 3) if minutes else None,
            "get_connection_calls": (
                round(checks / minutes, 3) if minutes and checks is not None else None
            ),
        },
        errors=[o.error for o in outcomes if o.error][:5],
    )
