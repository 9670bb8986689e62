"""``tether chaos``: the promise, checked under faults, on the local runtime.

A run starts its own embedded Postgres, a local EventBridge that keeps every
announcement, and ``tether dev`` (a process of its own, so it can be killed) with
shortened limits. Real clients connect, heartbeat, close cleanly, vanish without a
close frame, go silent, abort during the handshake, and reconnect, for the whole
run. Meanwhile, on a timeline: PutEvents fails for a while, Postgres stops (fast,
then immediate) and restarts, ``@connections`` throttles, a second sweep overlaps
the scheduled one, and the gateway is killed with SIGKILL and restarted.

Afterwards, once one bound has passed after the last fault and the last client, it
checks from the table and from every announcement received: no session left
active, none ended twice or before its start, each end announced, no accepted
connection without its row, every end reason one that fits what happened to its
client, no secret in any output; and how long each vanished client's row took to
end, against the bound.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import random
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC
from pathlib import Path
from typing import Any

import jwt
import psycopg
from psycopg.conninfo import conninfo_to_dict, make_conninfo
from psycopg.rows import dict_row
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import InvalidStatus, WebSocketException

from tether import limits, migrate
from tether.drivers.postgres import read_plainly
from tether.errors import EmbeddedPostgresError
from tether.folders import make_folder
from tether.local import embedded, eventbus, stopping
from tether.local.simulate import percentile

logger = logging.getLogger(__name__)

# The shortened limits the run's gateway and sweep use; the bound follows from them.
HEARTBEAT_SECONDS = 1.0
SUSPECT_AFTER_SECONDS = 2.0
GRACE_SECONDS = 4.0
CHECK_EVERY_SECONDS = 1.0
SETTLE_SECONDS = 0.5
BOUND_SECONDS = limits.vanished_within_seconds(
    suspect_after=SUSPECT_AFTER_SECONDS,
    check_every=CHECK_EVERY_SECONDS,
    settle=SETTLE_SECONDS,
    grace=GRACE_SECONDS,
)
SLACK_SECONDS = 3.0
"""Time for a check itself and this run's own polling, on a loaded machine."""
POLL_SECONDS = 0.5
ISSUER = "tether-chaos"
AUDIENCE = "authenticated"

OWN_SETTINGS = ("TETHER_", "DATABASE_URL")
"""Settings the run sets itself, never inherited from the caller's environment."""
PLANS = {"clean": 4, "vanish": 3, "silent": 2, "idle": 1, "handshake_abort": 1}
KINDS = {"vanish": "vanished", "silent": "silent", "idle": "silent"}
"""The clients the bound is about, by plan: a run passes only if it timed each kind."""


@dataclass
class Attempt:
    """One connection attempt by one client, as the client lived it."""

    agent: str
    plan: str
    started: float
    accepted: bool = False
    refused: str | None = None
    fate: str | None = None
    """closed, vanished, went_silent, server_closed, dropped, aborted_handshake,
    lost_in_handshake (no answer: the client cannot tell whether $connect ran)."""
    gone_at: float | None = None
    close_code: int | None = None
    muted_at: float | None = None
    """When a silent or idle client sent its last word: the heartbeat grace counts from
    there, not from the close the server sends once it has ended the row."""

    @property
    def went_away_at(self) -> float | None:
        """The moment the bound counts from: a mute client's last word, else its going."""
        return self.muted_at if self.muted_at is not None else self.gone_at


@dataclass
class Fault:
    name: str
    started: float
    ended: float | None = None
    not_injected: str | None = None
    """Why the fault could not be made (the database would not stop): the run then
    checked the promise without it, and does not pass."""


PROMISES = (
    "orphaned",
    "double_ends",
    "ends_before_start",
    "unannounced",
    "untracked_connections",
    "phantom_rows",
    "wrong_reasons",
    "secrets_leaked",
    "late_detections",
)
"""The report's counts of broken promises: a run passes when each is 0."""


@dataclass
class Report:
    clients: int
    attempts: int
    accepted: int
    faults: list[str]
    orphaned: int
    double_ends: int
    ends_before_start: int
    unannounced: int
    untracked_connections: int
    phantom_rows: int
    wrong_reasons: int
    secrets_leaked: int
    late_detections: int
    max_detection_latency_s: float | None
    detection_latency_p99_s: float | None
    bound_s: float
    ended_by_reason: dict[str, int]
    unmeasured: list[str] = field(default_factory=list)
    """The kinds of client (KINDS) whose end no run's timing could hold to the bound."""
    not_injected: list[str] = field(default_factory=list)
    """The faults that could not be made, each with why: the promise went untested there."""
    broken: str | None = None
    """Why the run ended early: a fault broke the system under test rather than testing
    it (Postgres stopped, then would not start again). No promise was checked then."""
    examples: dict[str, list[str]] = field(default_factory=dict)
    logs: str | None = None
    """Where a failed run left its gateway's logs (a passed run keeps nothing)."""

    @property
    def passed(self) -> bool:
        # A bound that was never timed was not kept, whatever else held.
        untested = self.unmeasured or self.not_injected or self.broken
        return not any(getattr(self, promise) for promise in PROMISES) and not untested

    def as_dict(self) -> dict[str, Any]:
        # A run a fault broke checked no promise: its counts are unknown, not 0.
        counts = {p: None if self.broken else getattr(self, p) for p in PROMISES}
        return {
            "clients": self.clients,
            "attempts": self.attempts,
            "accepted": self.accepted,
            "faults": self.faults,
            **counts,
            "max_detection_latency_s": self.max_detection_latency_s,
            "detection_latency_p99_s": self.detection_latency_p99_s,
            "bound_s": self.bound_s,
            "ended_by_reason": self.ended_by_reason,
            "unmeasured": self.unmeasured,
            "not_injected": self.not_injected,
            "broken": self.broken,
            "passed": self.passed,
            "examples": self.examples,
            "logs": self.logs,
        }


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _tether() -> list[str]:
    """tether's command line, run by this interpreter: the console script is not always
    beside it (``pip install --user`` puts it in ``~/.local/bin``)."""
    return [sys.executable, "-m", "tether"]


class Gateway:
    """``tether dev`` in a process of its own: started, killed, started again."""

    def __init__(self, workdir: Path, port: int, database_url: str, env: dict[str, str]) -> None:
        self.workdir = workdir
        self.port = port
        self.database_url = database_url
        self.env = env
        self.fault_file = workdir / "faults.json"
        self.fault_file.write_text("{}")
        self.logs: list[Path] = []
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        log = self.workdir / f"dev-{len(self.logs)}.log"
        self.logs.append(log)
        command = [
            *_tether(),
            "dev",
            "--port",
            str(self.port),
            "--sweep-interval",
            "10s",
            "--check-every",
            f"{CHECK_EVERY_SECONDS:g}s",
            "--suspect-after",
            f"{SUSPECT_AFTER_SECONDS:g}s",
            "--heartbeat-grace",
            f"{GRACE_SECONDS:g}s",
            "--idle-timeout",
            "30s",
            "--max-duration",
            "5m",
            "--disconnect-loss",
            "0.3",
            "--fault-file",
            str(self.fault_file),
        ]
        with log.open("wb") as handle:
            self.process = subprocess.Popen(  # noqa: S603 - our own command
                command,
                stdout=handle,
                stderr=subprocess.STDOUT,
                # The URL through the environment: on the command line, its password
                # would show in `ps` to every user of the machine.
                env={**self.env, "TETHER_DATABASE_URL": self.database_url},
                cwd=self.workdir,
            )
        deadline = time.monotonic() + 60
        while b"Ctrl-C closes every connection" not in log.read_bytes():
            if self.process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"tether dev did not start:\n{log.read_text()[-2000:]}")
            time.sleep(0.05)

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait(timeout=30)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.kill()

    def throttle(self, share: float) -> None:
        self.fault_file.write_text(json.dumps({"connections_throttle": share}))


class Table:
    """Watches the run's rows: when each was first seen ended (the database may be
    down for a while; the watch carries on after)."""

    def __init__(self, database_url: str, run_id: str) -> None:
        self._url = database_url
        self._pattern = f"tether-chaos/{run_id}/%"
        self.ended_seen: dict[str, float] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()

    def rows(self) -> list[dict[str, Any]]:
        with psycopg.connect(self._url, row_factory=dict_row, connect_timeout=5) as conn:
            read_plainly(conn)
            return conn.execute(
                "select session_id, user_agent, is_active, session_start, session_end,"
                " end_reason from public.conversation_sessions where user_agent like %s",
                (self._pattern,),
            ).fetchall()

    def _watch(self) -> None:
        while not self._stop.wait(POLL_SECONDS):
            try:
                rows = self.rows()
            except psycopg.Error:
                continue  # the database is down: a fault of this run
            now = time.time()
            for row in rows:
                if not row["is_active"]:
                    self.ended_seen.setdefault(str(row["user_agent"]), now)


@dataclass
class Run:
    clients: int
    seconds: float
    seed: int
    progress: Callable[[str], None]
    began: float = field(default_factory=time.time)
    attempts: list[Attempt] = field(default_factory=list)
    faults: list[Fault] = field(default_factory=list)
    stop_clients_at: float = 0.0
    outputs: list[str] = field(default_factory=list)
    """What the run's other commands printed, searched for secrets with the rest."""

    def fault(self, name: str) -> Fault:
        fault = Fault(name, time.time())
        self.faults.append(fault)
        self.progress(f"fault: {name}")
        return fault

    def active_faults(self) -> list[str]:
        return [f.name for f in self.faults if f.ended is None]


async def _heartbeats(ws: ClientConnection, seconds: float, reader: asyncio.Task[None]) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline and not reader.done():
        with contextlib.suppress(WebSocketException):
            await ws.send('{"action": "heartbeat"}')
        await asyncio.wait({reader}, timeout=min(HEARTBEAT_SECONDS, deadline - time.monotonic()))


async def _drain(ws: ClientConnection) -> None:
    with contextlib.suppress(WebSocketException):
        async for _ in ws:
            pass


async def _abort_handshake(port: int, attempt: Attempt) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(
        (
            "GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n"
            f"User-Agent: {attempt.agent}\r\n\r\n"
        ).encode()
    )
    await writer.drain()
    writer.transport.abort()
    attempt.fate = "aborted_handshake"
    attempt.gone_at = time.time()
    del reader


async def _one_attempt(
    run: Run, port: int, token: str, attempt: Attempt, rng: random.Random
) -> None:
    if attempt.plan == "handshake_abort":
        with contextlib.suppress(OSError):
            await _abort_handshake(port, attempt)
        return
    try:
        ws = await connect(
            f"ws://127.0.0.1:{port}/?token={token}",
            user_agent_header=attempt.agent,
            open_timeout=10,
            ping_interval=None,
        )
    except InvalidStatus as refused:
        attempt.refused = str(refused.response.status_code)
        return
    except (OSError, WebSocketException, TimeoutError):
        # No answer (the gateway killed, the socket reset): $connect may have run and
        # opened a row, which must then end like any connection gone without a word.
        attempt.fate = "lost_in_handshake"
        attempt.gone_at = time.time()
        return
    attempt.accepted = True
    reader = asyncio.create_task(_drain(ws))
    try:
        talking = 0.0 if attempt.plan == "idle" else rng.uniform(1.5, 6.0)
        await _heartbeats(ws, talking, reader)
        if not reader.done() and attempt.plan in {"silent", "idle"}:
            # Mute but connected: only the heartbeat grace can tell.
            attempt.muted_at = time.time()
            await asyncio.wait({reader}, timeout=GRACE_SECONDS + 3 * CHECK_EVERY_SECONDS + 2)
        if reader.done():
            attempt.fate = "server_closed" if ws.close_code not in {None, 1006} else "dropped"
            attempt.close_code = ws.close_code
        elif attempt.plan == "clean":
            with contextlib.suppress(WebSocketException):
                await ws.close(1000)
            attempt.fate = "closed"
        elif attempt.plan == "vanish":
            ws.transport.abort()
            attempt.fate = "vanished"
        else:
            ws.transport.abort()
            attempt.fate = "went_silent"
        attempt.gone_at = time.time()
    finally:
        reader.cancel()
        await asyncio.gather(reader, return_exceptions=True)


async def _measure_with_no_fault_near(run: Run, run_id: str, port: int, token: str) -> None:
    """One client that vanishes and one that goes silent, once the last fault is a bound
    behind: in a short run the faults' waits can cover every client's going, and the
    bound would go untimed."""
    last = max((f.ended or time.time() for f in run.faults), default=time.time())
    await asyncio.sleep(max(0.0, last + BOUND_SECONDS + SLACK_SECONDS - time.time()))
    run.progress("one client vanishing and one going silent, with no fault near")
    rng = random.Random(run.seed)  # noqa: S311 - a simulation
    attempts = [
        Attempt(agent=f"tether-chaos/{run_id}/unfaulted/{plan}", plan=plan, started=time.time())
        for plan in ("vanish", "silent")
    ]
    run.attempts.extend(attempts)
    await asyncio.gather(*(_one_attempt(run, port, token, a, rng) for a in attempts))


async def _client(run: Run, number: int, run_id: str, port: int, token: str) -> None:
    rng = random.Random(run.seed * 100_003 + number)  # noqa: S311 - a simulation
    plans, weights = zip(*PLANS.items(), strict=True)
    tries = 0
    await asyncio.sleep(rng.uniform(0, 2))
    while time.time() < run.stop_clients_at:
        attempt = Attempt(
            agent=f"tether-chaos/{run_id}/{number}/{tries}",
            plan=rng.choices(plans, weights)[0],
            started=time.time(),
        )
        run.attempts.append(attempt)
        tries += 1
        await _one_attempt(run, port, token, attempt, rng)
        await asyncio.sleep(rng.uniform(0.2, 1.0))  # and reconnect


async def _clients_to_their_end(
    run: Run, tasks: list[asyncio.Task[None]], timeline: asyncio.Task[None]
) -> None:
    """Wait for the clients, saying how they do; end them if the timeline failed."""
    while not all(t.done() for t in tasks):
        if timeline.done() and timeline.exception() is not None:
            # The database is lost: the clients would only test its absence.
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            return
        await asyncio.sleep(2)
        live = sum(1 for a in run.attempts if a.accepted and a.fate is None)
        faults = ", ".join(run.active_faults()) or "none"
        run.progress(f"{len(run.attempts)} attempts, {live} connected; faults: {faults}")
    await asyncio.gather(*tasks)


def _token(secret: str) -> str:
    now = int(time.time())
    claims = {
        "sub": str(uuid.uuid4()),
        "role": "authenticated",
        "aud": AUDIENCE,
        "iss": ISSUER,
        "iat": now,
        "exp": now + 3600,
    }
    return jwt.encode(claims, secret, algorithm="HS256")


async def _timeline(
    run: Run,
    gateway: Gateway,
    database: embedded.EmbeddedPostgres,
    bus: eventbus.LocalEventBus,
    sweep_env: dict[str, str],
) -> None:
    """The faults, at fixed shares of the run."""
    start = time.time()

    async def at(share: float) -> None:
        await asyncio.sleep(max(0.0, start + share * run.seconds - time.time()))

    async def window(
        name: str, on: Callable[[], None], off: Callable[[], None], span: float
    ) -> None:
        fault = run.fault(name)
        await asyncio.to_thread(on)
        await asyncio.sleep(span * run.seconds)
        await asyncio.to_thread(off)
        fault.ended = time.time()

    def set_failing(value: bool) -> Callable[[], None]:
        return lambda: setattr(bus, "failing", value)

    async def restart_database(mode: str) -> None:
        fault = run.fault(f"postgres stopped ({mode}), restarted after {DOWN_SECONDS:g} s")
        try:
            fault.not_injected = await asyncio.to_thread(_restart_database, database, mode)
        except EmbeddedPostgresError as failed:
            fault.ended = time.time()
            raise DatabaseLostError(f"{fault.name}: {failed}") from None
        if fault.not_injected:
            run.progress(f"fault not injected: {fault.not_injected}")
        fault.ended = time.time()

    await at(0.10)
    await window("eventbridge down", set_failing(True), set_failing(False), 0.15)
    await at(0.28)
    await restart_database("fast")
    await at(0.40)
    overlap = asyncio.create_task(asyncio.to_thread(_overlapping_sweep, run, sweep_env))
    await window(
        "@connections throttled (half the calls)",
        lambda: gateway.throttle(0.5),
        lambda: gateway.throttle(0.0),
        0.12,
    )
    await overlap
    await at(0.60)
    await restart_database("immediate")
    await at(0.72)
    fault = run.fault("gateway killed (SIGKILL), restarted")
    await asyncio.to_thread(gateway.kill)
    await asyncio.sleep(1.0)
    await asyncio.to_thread(gateway.start)
    fault.ended = time.time()


class DatabaseLostError(Exception):
    """A fault stopped the run's Postgres and it would not start again: the rest of the
    run would test a system without its database, not the promise."""


STOP_RETRY_SECONDS = 1.0
DOWN_SECONDS = 3.0


def _restart_database(database: embedded.EmbeddedPostgres, mode: str) -> str | None:
    """Stop the database, and start it again after a while; None when done, else why it
    could not be stopped (tried twice: a stop may fail on a passing cause). A database
    that would not stop is left running, and the run carries on without that fault; one
    that stopped but would not start again raises EmbeddedPostgresError."""
    try:
        database.stop(mode)
    except EmbeddedPostgresError:
        time.sleep(STOP_RETRY_SECONDS)
        try:
            database.stop(mode)
        except EmbeddedPostgresError as failed:
            return str(failed)
    time.sleep(DOWN_SECONDS)
    embedded.start(database.data_dir)
    return None


def _overlapping_sweep(run: Run, env: dict[str, str]) -> None:
    fault = run.fault("a second sweep overlapping the scheduled one")
    result = subprocess.run(  # noqa: S603 - our own command
        [*_tether(), "sweep", "--keep-checking", "--json", "--time-limit", "30s"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    run.outputs.extend([result.stdout, result.stderr])
    fault.ended = time.time()


def _allowed(attempt: Attempt, near_fault: bool) -> set[str]:
    """The end reasons that fit what the client lived (a fault nearby may turn a
    $disconnect into the sweep's end: gone)."""
    by_fate = {
        "closed": {"client_disconnect"},
        "vanished": {"connection_lost", "gone"},
        "went_silent": {"heartbeat_timeout", "connection_lost", "gone"},
        "server_closed": {"heartbeat_timeout", "idle_timeout", "max_duration", "shutdown"},
        "dropped": {"gone", "connection_lost"},
        "aborted_handshake": {"connection_lost", "gone"},
        "lost_in_handshake": {"connection_lost", "gone"},
    }
    allowed = set(by_fate.get(attempt.fate or "", set()))
    if near_fault:
        allowed |= {"gone", "connection_lost", "heartbeat_timeout"}
    return allowed


def _deadline(gone_at: float, faults: list[Fault]) -> float:
    """When the row of a client gone at ``gone_at`` must have ended: one bound
    later, or, where a fault overlaps that wait, one bound after the fault ends (the
    README's "recovery + bound")."""
    deadline = gone_at + BOUND_SECONDS
    extended = True
    while extended:
        extended = False
        for fault in faults:
            ended = fault.ended or time.time()
            overlaps = fault.started <= deadline and ended >= gone_at - SLACK_SECONDS
            if overlaps and ended + BOUND_SECONDS > deadline:
                deadline = ended + BOUND_SECONDS
                extended = True
    return deadline


def _check(
    run: Run,
    *,
    rows: list[dict[str, Any]],
    ended_seen: dict[str, float],
    announced: list[dict[str, Any]],
    outputs: str,
    secrets_to_hide: list[str],
) -> Report:
    by_agent = {str(row["user_agent"]): row for row in rows}
    examples: dict[str, list[str]] = {}

    def note(kind: str, text: str) -> None:
        examples.setdefault(kind, [])
        if len(examples[kind]) < 3:
            examples[kind].append(text)

    def near_fault(moment: float | None) -> bool:
        if moment is None:
            return True
        return any(
            f.started - 2 <= moment <= (f.ended or time.time()) + BOUND_SECONDS + SLACK_SECONDS
            for f in run.faults
        )

    orphaned = [row for row in rows if row["is_active"]]
    for row in orphaned:
        note("orphaned", str(row["user_agent"]))
    # In UTC: psycopg reads both in the server's zone, where two moments either side of
    # the clocks going back compare by their wall-clock readings.
    ends_before_start = [
        r
        for r in rows
        if r["session_end"] is not None
        and r["session_end"].astimezone(UTC) < r["session_start"].astimezone(UTC)
    ]
    versions: dict[str, set[tuple[str, str]]] = {}
    for detail in announced:
        versions.setdefault(str(detail["session_id"]), set()).add(
            (str(detail["end_reason"]), str(detail["session_end"]))
        )
    double_ends = [sid for sid, seen in versions.items() if len(seen) > 1]
    for sid in double_ends:
        note("double_ends", sid)
    unannounced = [r for r in rows if not r["is_active"] and str(r["session_id"]) not in versions]
    for row in unannounced:
        note("unannounced", str(row["user_agent"]))

    untracked = phantom = wrong = late = 0
    latencies: list[float] = []
    timed: set[str] = set()
    for attempt in run.attempts:
        found = by_agent.get(attempt.agent)
        if attempt.accepted and found is None:
            untracked += 1
            note("untracked_connections", attempt.agent)
        if attempt.refused is not None and found is not None:
            phantom += 1  # the gateway answered no, yet $connect wrote a row
            note("phantom_rows", f"{attempt.agent} refused {attempt.refused}")
        if found is None or found["is_active"] or attempt.fate is None:
            continue
        nearby = near_fault(attempt.gone_at)
        if found["end_reason"] not in _allowed(attempt, nearby):
            wrong += 1
            note("wrong_reasons", f"{attempt.agent} {attempt.fate} -> {found['end_reason']}")
        seen = ended_seen.get(attempt.agent)
        went = attempt.went_away_at
        if seen is None or went is None:
            continue
        latency = max(0.0, seen - went)
        deadline = _deadline(went, run.faults)
        if not near_fault(went) and deadline <= went + BOUND_SECONDS:
            latencies.append(latency)  # the figure for the bound: no fault in the wait
            timed.add(KINDS.get(attempt.plan, attempt.plan))
        if seen > deadline + SLACK_SECONDS:
            late += 1
            note(
                "late_detections",
                f"{attempt.agent} {attempt.fate} at {went - run.began:.0f}s,"
                f" ended {latency:.1f}s later",
            )

    leaked = sum(outputs.count(secret) for secret in secrets_to_hide if secret)
    return Report(
        clients=run.clients,
        attempts=len(run.attempts),
        accepted=sum(1 for a in run.attempts if a.accepted),
        faults=[f.name for f in run.faults],
        orphaned=len(orphaned),
        double_ends=len(double_ends),
        ends_before_start=len(ends_before_start),
        unannounced=len(unannounced),
        untracked_connections=untracked,
        phantom_rows=phantom,
        wrong_reasons=wrong,
        secrets_leaked=leaked,
        late_detections=late,
        max_detection_latency_s=round(max(latencies), 3) if latencies else None,
        detection_latency_p99_s=percentile(latencies, 0.99),
        bound_s=BOUND_SECONDS,
        ended_by_reason=dict(Counter(str(r["end_reason"]) for r in rows if not r["is_active"])),
        unmeasured=sorted(set(KINDS.values()) - timed),
        not_injected=_not_injected(run),
        examples=examples,
    )


def _not_injected(run: Run) -> list[str]:
    """The faults that could not be made, each with why."""
    return [f"{fault.name}: {fault.not_injected}" for fault in run.faults if fault.not_injected]


def _broken(run: Run, why: str, logs: Path) -> Report:
    """The report of a run a fault broke: what ran, and why it ended; no promise checked."""
    return Report(
        clients=run.clients,
        attempts=len(run.attempts),
        accepted=sum(1 for a in run.attempts if a.accepted),
        faults=[f.name for f in run.faults],
        orphaned=0,
        double_ends=0,
        ends_before_start=0,
        unannounced=0,
        untracked_connections=0,
        phantom_rows=0,
        wrong_reasons=0,
        secrets_leaked=0,
        late_detections=0,
        max_detection_latency_s=None,
        detection_latency_p99_s=None,
        bound_s=BOUND_SECONDS,
        ended_by_reason={},
        not_injected=_not_injected(run),
        broken=why,
        logs=str(logs),
    )


def _settle(run: Run, table: Table, bus: eventbus.LocalEventBus) -> None:
    """Wait one bound after the last fault and the last client, then (a little
    longer, if need be) for the last ends and announcements to show."""
    last = max(
        [a.gone_at or a.started for a in run.attempts]
        + [f.ended or time.time() for f in run.faults]
    )
    run.progress("waiting one bound after the last fault and the last client")
    time.sleep(max(0.0, last + BOUND_SECONDS + SLACK_SECONDS - time.time()))
    _wait_until(lambda: not any(r["is_active"] for r in table.rows()), 2 * BOUND_SECONDS)
    _wait_until(
        lambda: (
            {str(d["session_id"]) for d in bus.details()}
            >= {str(r["session_id"]) for r in table.rows() if not r["is_active"]}
        ),
        2 * BOUND_SECONDS,
    )
    table.stop()


def _keep_logs(logs: list[Path], place: Path) -> Path:
    place.mkdir(parents=True, exist_ok=True)
    for log in logs:
        shutil.copy2(log, place / log.name)
    return place


def _wait_until(condition: Callable[[], bool], seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        with contextlib.suppress(psycopg.Error):
            if condition():
                return True
        time.sleep(POLL_SECONDS)
    return False


def _gateway_environment(bus_url: str, jwt_secret: str) -> dict[str, str]:
    """What `tether dev` runs with: the shortened limits, tokens signed with the
    run's secret, and the run's own EventBridge."""
    return {
        **{k: v for k, v in os.environ.items() if not k.startswith(("TETHER_", "DATABASE_URL"))},
        "TETHER_ANNOUNCE_TO": "eventbridge",
        "TETHER_AWS_ENDPOINT_URL": bus_url,
        "TETHER_EVENT_BUS_NAME": "tether-chaos",
        "TETHER_JWT_SECRET": jwt_secret,
        "TETHER_JWT_ISSUER": ISSUER,
        "TETHER_ALLOW_ANONYMOUS": "false",
        "TETHER_HEARTBEAT_INTERVAL_SECONDS": f"{HEARTBEAT_SECONDS:g}",
        "TETHER_HEARTBEAT_THROTTLE_SECONDS": "0.5",
        "TETHER_GONE_SETTLE_SECONDS": f"{SETTLE_SECONDS:g}",
        "TETHER_SUSPECT_LEASE_SECONDS": "1",
        "TETHER_ANNOUNCE_LEASE_SECONDS": "5",
        "TETHER_SWEEP_TIME_MARGIN_SECONDS": "2",
        "AWS_ACCESS_KEY_ID": "chaos",
        "AWS_SECRET_ACCESS_KEY": "chaos",
        "AWS_DEFAULT_REGION": "us-east-1",
    }


def _sweep_environment(env: dict[str, str], url: str, port: int) -> dict[str, str]:
    """What an overlapping `tether sweep` runs with: the gateway's limits and its API."""
    return {
        **env,
        "TETHER_DATABASE_URL": url,
        "TETHER_CONNECTIONS_ENDPOINT": f"http://127.0.0.1:{port}/local",
        "TETHER_SWEEP_SCHEDULE_SECONDS": "10",
        "TETHER_SWEEP_CHECK_EVERY_SECONDS": f"{CHECK_EVERY_SECONDS:g}",
        "TETHER_SUSPECT_AFTER_SECONDS": f"{SUSPECT_AFTER_SECONDS:g}",
        "TETHER_HEARTBEAT_GRACE_SECONDS": f"{GRACE_SECONDS:g}",
    }


def run_chaos(
    *, clients: int, minutes: float, seed: int, progress: Callable[[str], None]
) -> Report:
    run = Run(clients=clients, seconds=minutes * 60, seed=seed, progress=progress)
    run_id = uuid.uuid4().hex[:8]
    jwt_secret = secrets.token_urlsafe(32)
    base = Path(".tether")
    make_folder(base)
    # Not a TemporaryDirectory: its removal would not wait for a server that would not stop.
    workdir = Path(tempfile.mkdtemp(prefix="chaos-", dir=base)).resolve()
    with contextlib.ExitStack() as cleanup:
        cleanup.callback(_clean_up, workdir)
        bus = cleanup.enter_context(eventbus.serve())
        workdir.chmod(0o755)  # the embedded server's own user must reach its data
        gateway: Gateway | None = None
        try:
            database = embedded.start(workdir / "pgdata")
            # Trust authentication ignores a password; the run checks it never shows.
            password = secrets.token_urlsafe(12)
            url = make_conninfo("", **conninfo_to_dict(database.url), password=password)
            migrate.migrate(url)
            port = _free_port()
            env = _gateway_environment(bus.url, jwt_secret)
            gateway = Gateway(workdir, port, url, env)
            sweep_env = _sweep_environment(env, url, port)
            gateway.start()
            table = Table(url, run_id)
            table.start()
            tokens = [_token(jwt_secret) for _ in range(clients)]
            run.stop_clients_at = time.time() + 0.85 * run.seconds
            progress(f"{clients} clients for {run.seconds:g} s on ws://127.0.0.1:{port}")

            async def scenario() -> None:
                tasks = [
                    asyncio.create_task(_client(run, n, run_id, port, tokens[n]))
                    for n in range(clients)
                ]
                timeline = asyncio.create_task(_timeline(run, gateway, database, bus, sweep_env))
                await _clients_to_their_end(run, tasks, timeline)
                await timeline
                await _measure_with_no_fault_near(run, run_id, port, tokens[0])

            try:
                stopping.run(scenario())
            except DatabaseLostError as lost:
                progress(f"the run ends here: {lost}")
                table.stop()
                gateway.stop()
                logs = _keep_logs(gateway.logs, base / "artifacts" / f"chaos-{run_id}")
                return _broken(run, str(lost), logs)
            _settle(run, table, bus)
            rows = table.rows()
            gateway.stop()
            outputs = "\n".join(
                [*(log.read_text(errors="replace") for log in gateway.logs), *run.outputs]
            )
            report = _check(
                run,
                rows=rows,
                ended_seen=table.ended_seen,
                announced=bus.details(),
                outputs=outputs,
                secrets_to_hide=[jwt_secret, password, *tokens],
            )
            if not report.passed:
                report.logs = str(_keep_logs(gateway.logs, base / "artifacts" / f"chaos-{run_id}"))
            return report
        finally:
            if gateway is not None:
                gateway.kill()


def _clean_up(workdir: Path) -> None:
    """Stop the run's database, whether or not its start had returned (stopped while
    starting, it may run), and remove the run's folder; a database that would not stop
    keeps its folder: removed under a running server, nothing would say what to stop."""
    data_dir = workdir / "pgdata"
    try:
        embedded.stop_if_running(data_dir, "immediate")
    except (OSError, EmbeddedPostgresError) as failed:
        pid = embedded.postmaster_pid(data_dir)
        if pid is not None:
            logger.warning(
                "%s; it is left running, its data kept in %s: stop it with `kill -INT %d`"
                " (or `pg_ctl -D %s stop -m immediate`), then remove %s",
                failed,
                data_dir,
                pid,
                data_dir,
                workdir,
                extra={"data_dir": str(data_dir), "pid": pid},
            )
            return
    shutil.rmtree(workdir, ignore_errors=True)
