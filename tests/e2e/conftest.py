"""The end-to-end harness: `tether dev` as a subprocess, real clients, the real table."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg.rows import dict_row
from websockets.asyncio.client import ClientConnection, connect

from tests.conftest import ROOT
from tests.support import HS256_SECRET, ISSUER, claims, sign

TETHER = str(Path(sys.executable).with_name("tether"))
SIGNED = (
    "AWS4-HMAC-SHA256 Credential=local/20260101/us-east-1/execute-api/aws4_request,"
    " SignedHeaders=host;x-amz-date, Signature=" + "0" * 64
)
"""An Authorization header as boto3 signs a call to @connections: a raw request needs
one (the gateway checks it is there, not what it signs)."""


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@dataclass
class DevServer:
    process: subprocess.Popen[str]
    port: int
    database_url: str
    log: Path

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}"

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}/local"

    def connection_path(self, row: dict[str, Any]) -> str:
        """The @connections path of a session's connection, as a raw request names it."""
        return f"/local/@connections/{row['connection_id']}"

    def connection_url(self, row: dict[str, Any]) -> str:
        return f"http://127.0.0.1:{self.port}{self.connection_path(row)}"

    def rows(self) -> list[dict[str, Any]]:
        with psycopg.connect(self.database_url, row_factory=dict_row) as conn:
            return conn.execute(
                "select * from public.conversation_sessions order by session_start"
            ).fetchall()

    def wait_for(
        self, check: Callable[[list[dict[str, Any]]], bool], timeout: float = 10.0
    ) -> list[dict[str, Any]]:
        deadline = time.monotonic() + timeout
        rows = self.rows()
        while not check(rows):
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"timed out; rows: {rows}\nlog:\n{self.log.read_text()[-3000:]}"
                )
            time.sleep(0.1)
            rows = self.rows()
        return rows

    def stop(self, sig: int = signal.SIGTERM) -> int:
        if self.process.poll() is None:
            self.process.send_signal(sig)
        return self.process.wait(timeout=30)


@pytest.fixture
def start_dev(database_url: str, tmp_path: Path) -> Iterator[Callable[..., DevServer]]:
    started: list[DevServer] = []

    def start(
        *flags: str, port: int | None = None, env_extra: dict[str, str | None] | None = None
    ) -> DevServer:
        port = port or free_port()
        log = tmp_path / f"dev-{port}-{len(started)}.log"
        chosen = {
            **os.environ,
            "TETHER_JWT_SECRET": HS256_SECRET,
            "TETHER_JWT_ISSUER": ISSUER,
            "TETHER_HEARTBEAT_THROTTLE_SECONDS": "0",
            **(env_extra or {}),
        }
        # A variable given as None is unset: the dev's own default is what is tested.
        env = {name: value for name, value in chosen.items() if value is not None}
        env.pop("DATABASE_URL", None)
        env["PYTHONPATH"] = str(ROOT)
        # The test's own database unless it names one (a flag is given once).
        database = [] if "--database-url" in flags else ["--database-url", database_url]
        with log.open("w") as handle:
            process = subprocess.Popen(  # noqa: S603 - our own console script
                [TETHER, "dev", "--port", str(port), *database, *flags],
                stdout=handle,
                stderr=subprocess.STDOUT,
                text=True,
                env=env,
                cwd=tmp_path,  # its .tether/dev.json note lands here
            )
        server = DevServer(process, port, database_url, log)
        started.append(server)
        # Ready when it says so: the banner comes once the gateway serves (its last
        # line, so every line of it can be read).
        deadline = time.monotonic() + 60
        while "Ctrl-C closes every connection" not in log.read_text():
            if process.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(f"tether dev did not start:\n{log.read_text()}")
            time.sleep(0.05)
        return server

    yield start
    for server in started:
        if server.process.poll() is None:
            server.process.kill()
            server.process.wait(timeout=10)


def run(coroutine: Any) -> Any:
    return asyncio.run(coroutine)


def token() -> str:
    return sign(claims(), HS256_SECRET, "HS256")


async def open_client(server: DevServer, **kwargs: Any) -> ClientConnection:
    return await connect(server.ws_url, ping_interval=None, **kwargs)
