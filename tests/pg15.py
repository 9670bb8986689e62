"""A Postgres 15 server (Supabase's production version) from Debian's packages, for
the tests that must run on it: the real Supabase CLI, and adoption. `make test`
installs the packages where it can; without them these tests skip and say why."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
from dataclasses import dataclass
from pathlib import Path

BIN = Path("/usr/lib/postgresql/15/bin")
SERVER_USER = "postgres"


@dataclass(frozen=True)
class Cluster:
    data_dir: Path
    port: int

    def url(self, dbname: str = "postgres") -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{dbname}?sslmode=disable"

    def stop(self) -> None:
        _as_server_user([str(BIN / "pg_ctl"), "-D", str(self.data_dir), "-m", "fast", "-w", "stop"])


def unavailable() -> str | None:
    """Why no Postgres 15 can be started here, or None."""
    if not (BIN / "initdb").exists():
        return (
            "Postgres 15 is not installed (Debian's postgresql-15; `make test` installs it as root)"
        )
    if os.geteuid() == 0:
        try:
            import pwd  # noqa: PLC0415

            pwd.getpwnam(SERVER_USER)
        except KeyError:
            return f"no {SERVER_USER!r} user to run Postgres 15 as"
    return None


def _as_server_user(command: list[str]) -> subprocess.CompletedProcess[str]:
    if os.geteuid() == 0:
        command = ["runuser", "-u", SERVER_USER, "--", *command]
    return subprocess.run(  # noqa: S603 - Postgres's own programs
        command, capture_output=True, text=True, timeout=120, check=True
    )


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def start(data_dir: Path) -> Cluster:
    """A fresh cluster in ``data_dir`` on a free loopback port (trust authentication)."""
    if data_dir.exists():
        shutil.rmtree(data_dir)
    data_dir.mkdir(parents=True)
    if os.geteuid() == 0:
        shutil.chown(data_dir, SERVER_USER, SERVER_USER)
    _as_server_user(
        [str(BIN / "initdb"), "-D", str(data_dir), "-U", "postgres", "-A", "trust", "--no-sync"]
    )
    port = _free_port()
    options = f"-c listen_addresses=127.0.0.1 -p {port} -k {data_dir} -c fsync=off"
    _as_server_user(
        [
            str(BIN / "pg_ctl"),
            "-D",
            str(data_dir),
            "-o",
            options,
            "-l",
            str(data_dir / "log"),
            "-w",
            "start",
        ]
    )
    return Cluster(data_dir, port)


def has_extension(cluster: Cluster, name: str) -> bool:
    import psycopg  # noqa: PLC0415

    with psycopg.connect(cluster.url()) as conn:
        row = conn.execute(
            "select count(*) from pg_available_extensions where name = %s", (name,)
        ).fetchone()
    return bool(row and row[0])
