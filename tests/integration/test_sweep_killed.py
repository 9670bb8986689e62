"""A `tether sweep` killed with SIGKILL between closing its silent clients at the
gateway and ending their sessions: what it had recorded is enough for the next run."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import psycopg
import pytest

from tests import connections_standin
from tests.conftest import SessionFactory
from tests.support import json_lines, run_tether

Conn = psycopg.Connection[dict[str, object]]

# The sweep, run as `tether sweep` is, with one thing added: its one call ending the
# closed clients' sessions says so and never returns, so that the kill lands there.
STALLED_SWEEP = """
import sys, time
from pathlib import Path
from tether.store import SessionStore
from tether.__main__ import main

marker = Path(sys.argv[1])

def stall(self, reason, ended_at):
    marker.write_text(str(len(ended_at)))
    time.sleep(3600)

SessionStore.end_sessions = stall
sys.argv = ["tether", *sys.argv[2:]]
sys.exit(main())
"""

SILENT = ("silent-a=", "silent-b=", "silent-c=")


def _sweep_env(gateway_url: str) -> dict[str, str]:
    dropped = {"DATABASE_URL", "TETHER_DATABASE_URL"}
    return {
        **{name: value for name, value in os.environ.items() if name not in dropped},
        "TETHER_CONNECTIONS_ENDPOINT": gateway_url,
        "TETHER_HEARTBEAT_GRACE_SECONDS": "200",
        "TETHER_GONE_SETTLE_SECONDS": "0",
        "TETHER_SUSPECT_LEASE_SECONDS": "1",
        "TETHER_SWEEP_CHECK_EVERY_SECONDS": "60",
    }


@pytest.mark.parametrize("late", [False, True], ids=["next-check", "past-the-idle-limit"])
def test_a_sweep_killed_after_closing_silent_clients_loses_none_of_their_ends(
    database_url: str, db: Conn, make_session: SessionFactory, tmp_path: Path, late: bool
) -> None:
    """Their $disconnect never came (best-effort, as on AWS): the next sweep finds the
    connections gone, and ends each session once, as a heartbeat timeout at its last
    sign of life (the intent the killed run recorded), announced. Also when that sweep
    comes only once they are past the gateway's idle limit (sweeps down for a while, a
    killed `tether dev` restarted later): they were closed for their silence, not by
    the gateway's idle timeout."""
    for connection_id in SILENT:
        make_session(connection_id=connection_id, started_seconds_ago=3600, seen_seconds_ago=300)
    marker = tmp_path / "ending"
    with connections_standin.serve() as gateway:
        for connection_id in SILENT:
            gateway.set_alive(connection_id, idle_seconds=400)  # connected, no heartbeat
        env = _sweep_env(gateway.url)
        sweep = ("sweep", "--database-url", database_url, "--announce-to", "log")
        killed = subprocess.Popen(  # noqa: S603 - the tether under test
            [sys.executable, "-c", STALLED_SWEEP, str(marker), *sweep],
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
                time.sleep(0.05)
            killed.kill()
            killed.wait(timeout=30)
        finally:
            if killed.poll() is None:
                killed.kill()
            killed.communicate()
        assert marker.read_text() == "3"
        assert sorted(c for m, c in gateway.calls if m == "DELETE") == sorted(SILENT)
        intents = db.execute(
            "select connection_id, is_active, end_intent_reason::text as reason,"
            " end_intent_at, last_seen_at from public.conversation_sessions"
        ).fetchall()
        assert all(row["is_active"] and row["reason"] == "heartbeat_timeout" for row in intents)
        if late:  # 20 minutes on: each moment of theirs 20 minutes further back
            db.execute(
                "update public.conversation_sessions set"
                " session_start = session_start - interval '20 minutes',"
                " last_seen_at = last_seen_at - interval '20 minutes',"
                " end_intent_at = end_intent_at - interval '20 minutes'"
            )
        last_seen = {
            str(row["connection_id"]): row["last_seen_at"]
            for row in db.execute(
                "select connection_id, last_seen_at from public.conversation_sessions"
            ).fetchall()
        }

        time.sleep(1.2)  # the killed run's leases on them run out
        again = run_tether(
            "sweep", "--database-url", database_url, "--announce-to", "log", "--json", env=env
        )
    assert again.returncode == 0, again.stderr
    rows = db.execute(
        "select connection_id, is_active, end_reason::text as reason, session_end,"
        " announced_at from public.conversation_sessions"
    ).fetchall()
    assert {str(r["connection_id"]): r["reason"] for r in rows} == dict.fromkeys(
        SILENT, "heartbeat_timeout"
    )
    for row in rows:
        assert row["is_active"] is False
        assert row["session_end"] == last_seen[str(row["connection_id"])]
        assert row["announced_at"] is not None
    announced = [line for line in json_lines(again.stderr) if line.get("message") == "SessionEnded"]
    assert len(announced) == 3, again.stderr
    report = json.loads(again.stdout)
    assert report["announced"] == 3, report
    stats = run_tether("stats", "--database-url", database_url, "--json", env=env)
    assert stats.returncode == 0, stats.stderr
    assert json.loads(stats.stdout)["live"]["unannounced"] == 0  # as /health says it
