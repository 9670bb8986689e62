"""A `tether sweep` killed with SIGKILL between closing silent clients at `tether dev`'s
gateway and ending their sessions: the $disconnect each close caused ends it."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

from tests.e2e.conftest import DevServer, open_client, run
from tests.integration.test_sweep_killed import STALLED_SWEEP
from tests.support import json_lines

HEARTBEATS = {
    "TETHER_HEARTBEAT_INTERVAL_SECONDS": "1",
    "TETHER_HEARTBEAT_GRACE_SECONDS": "2",
    "TETHER_HEARTBEAT_THROTTLE_SECONDS": "0",
}


def test_a_sweep_killed_after_closing_silent_clients_leaves_their_ends_to_the_disconnect(
    start_dev: Callable[..., DevServer], tmp_path: Path
) -> None:
    """Each ends once, as a heartbeat timeout at its last sign of life (the intent the
    killed run recorded), and is announced."""
    server = start_dev("--sweep-interval", "1h", "--suspect-after", "0", env_extra=HEARTBEATS)
    marker = tmp_path / "ending"

    async def silent_clients() -> None:
        clients = [await open_client(server) for _ in range(3)]
        await asyncio.to_thread(server.wait_for, lambda rows: len(rows) == 3)
        await asyncio.sleep(2.5)  # silent past the grace
        env = {
            **{k: v for k, v in os.environ.items() if k not in {"DATABASE_URL"}},
            **HEARTBEATS,
            "TETHER_DATABASE_URL": server.database_url,
            "TETHER_CONNECTIONS_ENDPOINT": server.endpoint,
            "TETHER_SUSPECT_AFTER_SECONDS": "0",
        }
        killed = subprocess.Popen(  # noqa: S603 - the tether under test
            [sys.executable, "-c", STALLED_SWEEP, str(marker), "sweep", "--announce-to", "log"],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        try:
            deadline = time.monotonic() + 60
            while not marker.exists():
                assert killed.poll() is None, killed.communicate()
                assert time.monotonic() < deadline, "the sweep never came to end the sessions"
                await asyncio.sleep(0.05)
            killed.kill()
        finally:
            if killed.poll() is None:
                killed.kill()
            await asyncio.to_thread(killed.communicate)
        for client in clients:
            await client.wait_closed()

    run(silent_clients())
    assert marker.read_text() == "3"
    rows = server.wait_for(
        lambda rows: all(r["announced_at"] is not None for r in rows), timeout=20
    )
    for row in rows:
        assert row["is_active"] is False
        assert row["end_reason"] == "heartbeat_timeout"
        assert row["session_end"] == row["end_intent_at"] == row["last_seen_at"]
    announced = [
        line["session_id"]
        for line in json_lines(server.log.read_text())
        if line.get("message") == "SessionEnded"
    ]
    assert sorted(announced) == sorted(str(row["session_id"]) for row in rows)
