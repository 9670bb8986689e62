"""`tether dev` and `tether simulate` as a newcomer meets them: what they say, and
that what they say is true."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import os
import re
import select
import shlex
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jwt
import psutil
import psycopg
import pytest
from psycopg.conninfo import conninfo_to_dict, make_conninfo
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from tests.conftest import SessionFactory, set_for_database
from tests.e2e.conftest import TETHER, DevServer, free_port, open_client, run
from tests.support import HS256_SECRET, ISSUER, claims, json_lines, run_tether, sign
from tether.local import embedded
from tether.local.dev import CLAIM_CHECK_SECONDS, DEV_LOCK_KEY

README = Path(__file__).resolve().parents[2] / "README.md"


def test_a_taken_port_is_said_before_anything_claims_to_be_ready(
    database_url: str, tmp_path: Path
) -> None:
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        result = run_tether(
            "dev", "--port", str(port), "--database-url", database_url, cwd=tmp_path, timeout=60
        )
    assert result.returncode == 1
    assert f"port {port} on 127.0.0.1 is already in use" in result.stderr
    assert f"--port {port + 1}" in result.stderr
    assert "listening" not in result.stdout
    assert "Traceback" not in result.stderr


def _dev_with_its_streams_apart(
    database_url: str, tmp_path: Path, port: int, **settings: str
) -> subprocess.Popen[str]:
    """tether dev as a terminal runs it, stdout and stderr each read apart (the start_dev
    fixture joins them), once its banner is out; only the settings given."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("TETHER_", "DATABASE_URL"))}
    process = subprocess.Popen(  # noqa: S603 - our own console script
        [TETHER, "dev", "--port", str(port), "--database-url", database_url],
        cwd=tmp_path,
        env={**env, **settings},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=_ctrl_c_as_at_a_terminal,  # noqa: PLW1509 - one thread starts it
    )
    assert process.stdout is not None
    for line in process.stdout:
        if "Ctrl-C closes every connection" in line:
            break
    return process


def test_tether_dev_s_log_is_its_output_on_stdout(database_url: str, tmp_path: Path) -> None:
    """As the README says: the banner, then the log of what it runs, one stream to pipe
    (`tether dev | tee dev.log`); nothing on stderr for a run that went well."""
    port = free_port()
    process = _dev_with_its_streams_apart(
        database_url, tmp_path, port, TETHER_ALLOW_ANONYMOUS="true"
    )

    async def one_session() -> None:
        async with connect(f"ws://127.0.0.1:{port}", ping_interval=None) as ws:
            await ws.send('{"action": "heartbeat"}')
            await ws.recv()

    run(one_session())
    time.sleep(1)  # the $disconnect's log line
    process.send_signal(signal.SIGINT)
    stdout, stderr = process.communicate(timeout=60)
    assert process.returncode == 0, stderr
    assert stderr == ""
    assert any(line.get("message") == "session ended" for line in json_lines(stdout)), stdout
    assert "tether dev: stopped; 1 opened, 1 ended" in stdout


def test_a_request_the_gateway_cannot_read_is_logged_as_json_on_stdout(
    database_url: str, tmp_path: Path
) -> None:
    """Each bad request (a scanner, a TLS hello to the plain port) wrote uvicorn's bare
    "WARNING:  Invalid HTTP request received." to stderr, which a run that went well
    leaves empty; it is one log line among the others now."""
    port = free_port()
    process = _dev_with_its_streams_apart(database_url, tmp_path, port)
    for unreadable in (b"GARBAGE\r\n\r\n", b"\x16\x03\x01\x00\x05hello"):
        with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
            sock.sendall(unreadable)
            assert sock.recv(4096).startswith(b"HTTP/1.1 400")
    time.sleep(0.5)
    process.send_signal(signal.SIGINT)
    stdout, stderr = process.communicate(timeout=60)
    assert process.returncode == 0, stderr
    assert stderr == ""
    said = [line for line in json_lines(stdout) if "Invalid HTTP" in line.get("message", "")]
    assert [line["level"] for line in said] == ["WARNING", "WARNING"], stdout[-3000:]


def _ipv6_loopback() -> bool:
    try:
        with socket.socket(socket.AF_INET6) as probe:
            probe.bind(("::1", 0))
    except OSError:
        return False
    return True


def test_an_ipv6_host_serves_and_its_endpoint_works(
    start_dev: Callable[..., DevServer], tmp_path: Path
) -> None:
    if not _ipv6_loopback():
        pytest.skip("this machine has no IPv6 loopback (::1)")
    server = start_dev("--host", "::1", "--sweep-interval", "1h")
    assert f"ws://[::1]:{server.port}" in server.log.read_text()

    async def heartbeat() -> dict[str, Any]:
        async with connect(f"ws://[::1]:{server.port}", ping_interval=None) as ws:
            await ws.send(json.dumps({"action": "heartbeat"}))
            answer: dict[str, Any] = json.loads(await ws.recv())
            return answer

    assert run(heartbeat())["action"] == "heartbeat"
    note = json.loads((tmp_path / ".tether" / "dev.json").read_text())
    assert note["connections_endpoint"] == f"http://[::1]:{server.port}/local"


def test_what_the_dev_keeps_in_a_team_s_project_stays_out_of_its_git(
    start_dev: Callable[..., DevServer], tmp_path: Path
) -> None:
    """tether dev, run in a project with git, makes .tether there (its note and lock; the
    embedded Postgres when it runs one): `git add -A` took all of it in, a database
    included, since only this repository's own .gitignore named it."""
    initialised = subprocess.run(  # noqa: S603 - git, from PATH
        ["git", "init", "-q", str(tmp_path)],  # noqa: S607
        capture_output=True,
        text=True,
        check=False,
    )
    assert initialised.returncode == 0, initialised.stderr
    (tmp_path / "app.py").write_text("")
    server = start_dev()
    assert (tmp_path / ".tether" / "dev.json").is_file()
    status = subprocess.run(
        ["git", "status", "--porcelain", "--untracked-files=all"],  # noqa: S607
        capture_output=True,
        text=True,
        check=True,
        cwd=tmp_path,
    )
    assert "?? app.py" in status.stdout
    assert ".tether" not in status.stdout
    assert server.stop() == 0


def test_a_note_left_by_a_crash_does_not_stop_the_next_start(
    start_dev: Callable[..., DevServer], tmp_path: Path
) -> None:
    """The note of a killed run names a pid the system may have given to any process
    since (here, this test's own): only a run that holds the folder stops another."""
    (tmp_path / ".tether").mkdir()
    note = tmp_path / ".tether" / "dev.json"
    note.write_text(json.dumps({"pid": os.getpid(), "ws_url": "ws://127.0.0.1:1"}))
    server = start_dev("--sweep-interval", "1h")
    assert json.loads(note.read_text())["pid"] == server.process.pid


def test_a_second_dev_in_the_same_folder_or_on_the_same_database_is_refused(
    start_dev: Callable[..., DevServer], database_url: str, tmp_path: Path
) -> None:
    """Its sweep, asking its own gateway about the first one's clients, would end their
    live sessions as gone; the first goes on untouched."""
    first = start_dev("--sweep-interval", "1h")
    note = json.loads((tmp_path / ".tether" / "dev.json").read_text())

    async def connected() -> None:
        async with await open_client(first) as ws:
            first.wait_for(lambda rows: len(rows) == 1)
            second = await asyncio.to_thread(
                run_tether,
                "dev", "--port", str(free_port()), "--database-url", database_url,
                "--suspect-after", "0", cwd=tmp_path, timeout=60,
            )  # fmt: skip
            assert second.returncode == 1
            assert "another tether dev is running in this folder" in second.stderr
            assert f"pid {first.process.pid}" in second.stderr
            elsewhere = tmp_path / "elsewhere"
            elsewhere.mkdir()
            third = await asyncio.to_thread(
                run_tether,
                "dev", "--port", str(free_port()), "--database-url", database_url,
                "--suspect-after", "0", "--sweep-interval", "0.5", cwd=elsewhere, timeout=60,
            )  # fmt: skip
            assert third.returncode == 1
            assert "another tether dev is running on this database" in third.stderr
            assert not (elsewhere / ".tether" / "dev.json").exists()
            # The first one's lock keeps no row from vacuum.
            with psycopg.connect(database_url) as conn:
                assert conn.execute(
                    "select backend_xmin from pg_stat_activity"
                    " where application_name = 'tether dev' and datname = current_database()"
                ).fetchall() == [(None,)]
            # The first one's note and sessions are as they were.
            assert json.loads((tmp_path / ".tether" / "dev.json").read_text()) == note
            await ws.send(json.dumps({"action": "heartbeat"}))
            assert json.loads(await ws.recv())["status"] in ("touched", "throttled")
            assert [r["is_active"] for r in first.rows()] == [True]

    run(connected())


def _end_the_dev_s_lock_connection(database_url: str) -> None:
    """What a database restart (or a server's idle-transaction timeout) does to it."""
    with psycopg.connect(database_url, autocommit=True) as conn:
        ended = conn.execute(
            "select pg_terminate_backend(pid, 5000) from pg_stat_activity"
            " where application_name = 'tether dev' and datname = current_database()"
        ).fetchall()
    assert ended == [(True,)]


def test_a_dev_whose_lock_went_to_another_stands_its_sweep_down_until_it_is_back(
    start_dev: Callable[..., DevServer], database_url: str, make_session: SessionFactory
) -> None:
    server = start_dev("--sweep-interval", "0.5", "--suspect-after", "0")
    # Another dev (this test's transaction) takes the database while the first one's
    # lock connection is gone.
    with psycopg.connect(database_url) as other:
        _end_the_dev_s_lock_connection(database_url)
        taken = other.execute(f"select pg_try_advisory_xact_lock({DEV_LOCK_KEY})").fetchone()
        assert taken == (True,)
        # A session of the other dev's: the first one's gateway has never heard of it.
        theirs = make_session(started_seconds_ago=120)
        # Long enough for a sweep that did not stand down to have ended it: the
        # settle time (5 s by default), a check and a sweep run.
        time.sleep(5 + 2 * CLAIM_CHECK_SECONDS + 1)
        assert "this one's sweep stands down" in server.log.read_text()
        assert [r["is_active"] for r in server.rows()] == [True]
    # The other one is gone: the first takes the database back, and its sweep goes on.
    rows = server.wait_for(lambda r: not r[0]["is_active"], timeout=20)
    assert (rows[0]["session_id"], rows[0]["end_reason"]) == (theirs["session_id"], "gone")
    assert "holds its database again" in server.log.read_text()


def test_a_dev_takes_its_lock_back_after_losing_its_connection(
    start_dev: Callable[..., DevServer], database_url: str, tmp_path: Path
) -> None:
    start_dev("--sweep-interval", "1h")
    _end_the_dev_s_lock_connection(database_url)
    deadline = time.monotonic() + 5 * CLAIM_CHECK_SECONDS
    with psycopg.connect(database_url, autocommit=True) as conn:
        while conn.execute(f"select pg_try_advisory_lock({DEV_LOCK_KEY})").fetchone() == (True,):
            conn.execute("select pg_advisory_unlock_all()")
            assert time.monotonic() < deadline, "the dev did not take its lock back"
            time.sleep(0.2)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    second = run_tether(
        "dev", "--port", str(free_port()), "--database-url", database_url, cwd=elsewhere,
        timeout=60,
    )  # fmt: skip
    assert second.returncode == 1
    assert "another tether dev is running on this database" in second.stderr


@pytest.mark.parametrize(
    ("flags", "said", "status"),
    [
        # 2: flags the settings refuse, and a file named that cannot be read (it exited 1
        # with a bare "[Errno 2] ...").
        (("--idle-timeout", "20m"), "--idle-timeout", 2),
        (
            ("--heartbeat-grace", "10s"),
            "--heartbeat-grace (10) must be more than TETHER_HEARTBEAT_INTERVAL_SECONDS (15)",
            2,
        ),
        (("--sweep-interval", "2h"), "--sweep-interval", 2),
        (
            ("--fault-file", "missing.json"),
            "--fault-file missing.json: cannot be read: no such file or directory",
            2,
        ),
    ],
)
def test_a_bad_setting_is_refused_before_a_database_starts(
    flags: tuple[str, ...], said: str, status: int, tmp_path: Path
) -> None:
    result = run_tether("dev", *flags, cwd=tmp_path, timeout=60)
    assert result.returncode == status
    assert result.stderr.startswith("tether dev: ") and said in result.stderr
    # In the command's words: its flags, not the settings' names.
    assert "_seconds" not in result.stderr
    # No embedded database was created, let alone left running.
    assert not (tmp_path / ".tether").exists()


@pytest.mark.parametrize(
    ("content", "said"),
    [
        ("connections_throttle: 0.5", "not JSON (Expecting value"),
        ("[0.5]", 'not a JSON object, such as {"connections_throttle": 0.5}'),
        # Read as no fault at all, and the run looked like a run under faults.
        (
            '{"connection_throttle": 0.5}',
            "no fault named 'connection_throttle'; the faults are connections_throttle",
        ),
        ('{"connections_throttle": "0.5"}', "connections_throttle must be a number from 0 to 1"),
        ('{"connections_throttle": 50}', "connections_throttle must be a number from 0 to 1"),
        ('{"connections_throttle": NaN}', "connections_throttle must be a number from 0 to 1"),
    ],
    ids=["not-json", "not-an-object", "misspelt", "text", "percent", "nan"],
)
def test_a_fault_file_it_cannot_use_is_refused_by_its_flag(
    content: str, said: str, tmp_path: Path
) -> None:
    (tmp_path / "faults.json").write_text(content)
    result = run_tether("dev", "--fault-file", "faults.json", cwd=tmp_path, timeout=60)
    assert result.returncode == 2
    assert result.stderr.startswith(f"tether dev: --fault-file faults.json: {said}")
    assert not (tmp_path / ".tether").exists()


def test_a_bad_setting_from_the_environment_is_named_as_the_environment_names_it(
    tmp_path: Path,
) -> None:
    result = run_tether(
        "dev", cwd=tmp_path, env={"TETHER_HEARTBEAT_GRACE_SECONDS": "abc"}, timeout=60
    )
    assert result.returncode == 1
    assert "TETHER_HEARTBEAT_GRACE_SECONDS: a number of seconds, or off; got 'abc'" in (
        result.stderr
    )
    assert "--heartbeat-grace" not in result.stderr  # a flag nobody passed
    assert not (tmp_path / ".tether").exists()


@pytest.mark.parametrize(
    ("env", "said"),
    [
        # The grace nobody set is named by the flag that changes it, not by its field.
        (
            {"TETHER_HEARTBEAT_INTERVAL_SECONDS": "9999"},
            "--heartbeat-grace (30) must be more than TETHER_HEARTBEAT_INTERVAL_SECONDS (9999)",
        ),
        (
            {"TETHER_HEARTBEAT_INTERVAL_SECONDS": "25", "TETHER_HEARTBEAT_GRACE_SECONDS": "20"},
            "TETHER_HEARTBEAT_GRACE_SECONDS (20) must be more than"
            " TETHER_HEARTBEAT_INTERVAL_SECONDS (25)",
        ),
        # Settings read the environment's names in any case; so does the message.
        (
            {"TETHER_HEARTBEAT_INTERVAL_SECONDS": "25", "tether_heartbeat_grace_seconds": "20"},
            "TETHER_HEARTBEAT_GRACE_SECONDS (20) must be more than"
            " TETHER_HEARTBEAT_INTERVAL_SECONDS (25)",
        ),
    ],
)
def test_settings_that_disagree_are_named_as_the_user_can_change_them(
    env: dict[str, str], said: str, tmp_path: Path
) -> None:
    result = run_tether("dev", cwd=tmp_path, env=env, timeout=60)
    assert result.returncode == 1  # the environment's, not refused flags
    assert said in result.stderr
    assert "_seconds" not in result.stderr
    assert not (tmp_path / ".tether").exists()


def test_an_operator_key_no_client_could_send_is_refused_before_a_database_starts(
    tmp_path: Path,
) -> None:
    # Too short, it used to start and answer every operator request 500; not ASCII,
    # no client could ever send it as typed.
    for key in ("short", "\u043a\u043b\u044e\u0447-" * 5):
        result = run_tether("dev", cwd=tmp_path, env={"TETHER_OPERATOR_KEY": key}, timeout=60)
        assert result.returncode == 1
        assert result.stderr.startswith("tether dev: ") and "TETHER_OPERATOR_KEY" in result.stderr
        assert key not in result.stderr + result.stdout
        assert not (tmp_path / ".tether").exists()


def test_secrets_named_by_reference_are_read_before_anything_starts(
    tmp_path: Path, aws: str, start_dev: Callable[..., DevServer]
) -> None:
    """A TETHER_JWT_SECRET naming a secret this machine could not read started all the
    same, its banner saying tokens were checked with it, and refused every connection
    (500), saying why only in the log; a TETHER_OPERATOR_KEY alike answered every
    operator request 500."""
    import boto3  # noqa: PLC0415 - the test's own AWS client, on moto

    at = {"TETHER_AWS_ENDPOINT_URL": aws}
    missing = "arn:aws:secretsmanager:us-east-1:123456789012:secret:tether-jwt-AbCdEf"
    for name, reference, why in (
        ("TETHER_JWT_SECRET", missing, f"cannot read secret {missing}: ResourceNotFoundException"),
        ("TETHER_OPERATOR_KEY", "ssm:/tether/no-such-key", "ParameterNotFound"),
    ):
        result = run_tether("dev", cwd=tmp_path, env={**at, name: reference}, timeout=60)
        assert result.returncode == 1, result.stdout + result.stderr
        assert result.stderr.startswith(f"tether dev: {name}: "), result.stderr
        assert why in result.stderr, result.stderr
        assert "listening" not in result.stdout
        assert not (tmp_path / ".tether").exists()

    # Kept where this machine can read it: read, and the tokens it signs are taken.
    secrets = boto3.client("secretsmanager", endpoint_url=aws)
    arn = secrets.create_secret(Name="tether-jwt", SecretString=HS256_SECRET)["ARN"]
    server = start_dev(env_extra={**at, "TETHER_JWT_SECRET": arn})

    async def opens() -> None:
        async with connect(f"{server.ws_url}/?token={sign(claims(), HS256_SECRET, 'HS256')}"):
            pass

    run(opens())
    server.wait_for(lambda rows: [r["end_reason"] for r in rows] == ["client_disconnect"])


@pytest.mark.parametrize(
    "flag", ["--check-every", "--handshake-timeout", "--sweep-interval", "--heartbeat-grace"]
)
def test_a_duration_of_nothing_is_refused_with_the_usage(flag: str, tmp_path: Path) -> None:
    result = run_tether("dev", flag, "0", cwd=tmp_path, timeout=60)
    assert result.returncode == 2
    assert f"argument {flag}: '0': a duration must be more than 0" in result.stderr
    if flag == "--heartbeat-grace":
        assert "or off, for no heartbeats" in result.stderr
    assert not (tmp_path / ".tether").exists()


def test_a_gateway_limit_beyond_api_gateway_s_is_refused_in_durations(tmp_path: Path) -> None:
    result = run_tether("dev", "--idle-timeout", "3h", cwd=tmp_path, timeout=60)
    assert result.returncode == 2
    assert "--idle-timeout: at most 10m (600 s)" in result.stderr
    assert not (tmp_path / ".tether").exists()


def test_a_check_every_longer_than_the_sweep_interval_is_refused_not_shortened(
    tmp_path: Path,
) -> None:
    # It used to run with the checks silently every 5s, not the 30s asked for.
    result = run_tether(
        "dev", "--sweep-interval", "5s", "--check-every", "30s", cwd=tmp_path, timeout=60
    )
    assert result.returncode == 2
    assert "--check-every (30s) must not be longer than --sweep-interval (5s)" in result.stderr
    assert not (tmp_path / ".tether").exists()


def test_the_banner_shows_every_effective_setting_and_hides_the_password(
    start_dev: Callable[..., DevServer], database_url: str, tmp_path: Path
) -> None:
    # Trust authentication ignores the password; the banner must not show it anyway.
    params = conninfo_to_dict(database_url)
    with_password = make_conninfo("", **params, password="s3cret-pw")
    server = start_dev("--sweep-interval", "30s", "--heartbeat-grace", "45s")
    server.stop()
    second = start_dev("--database-url", with_password, port=free_port())
    banner = second.log.read_text()
    first = server.log.read_text()
    assert f"listening on ws://127.0.0.1:{server.port}" in first
    assert "a run every 30s, checking every 10s" in first
    assert "clients silent 45s are disconnected" in first
    # A grace under the suspect age is checked only from that age: the banner says so.
    second.stop()
    third = start_dev("--heartbeat-grace", "20s", "--suspect-after", "30s", port=free_port())
    assert (
        "clients silent 30s are disconnected (a suspect's age; the grace alone is 20s)"
        in third.log.read_text()
    )
    assert (
        "routes        chosen by $request.body.action: heartbeat and $default -> tether's own"
        in first
    )
    assert f"-m websockets ws://127.0.0.1:{server.port}" in first
    assert f"iss '{ISSUER}'" in first and "HS256" in first
    assert "s3cret-pw" not in banner
    assert "password=***" in banner
    third.stop()
    # The application's routes, and the expression choosing among them.
    routed = start_dev(
        "--route",
        "echo=tests.routes:echo",
        "--route",
        "$default=tests.routes:quiet",
        "--route-selection",
        "$request.body.type",
        port=free_port(),
    )
    assert (
        "routes        chosen by $request.body.type: echo -> tests.routes:echo,"
        " $default -> tests.routes:quiet, heartbeat -> tether's own"
    ) in routed.log.read_text()
    routed.stop()
    # Anonymous clients refused: the lines to try carry a token, or both would get 401.
    closed = start_dev(port=free_port(), env_extra={"TETHER_ALLOW_ANONYMOUS": "false"})
    said = closed.log.read_text()
    assert "no token: refused" in said
    # Double quotes: the shell puts the token in.
    assert f'-m websockets "ws://127.0.0.1:{closed.port}/?token=$ACCESS_TOKEN"' in said
    assert 'tether simulate --token "$ACCESS_TOKEN"' in said
    assert f"-m websockets ws://127.0.0.1:{closed.port} " not in said

    # The address as a shell gives it to the client, with the token in the environment.
    token = sign(claims(sub=str(uuid.uuid4())), HS256_SECRET, "HS256")
    [quoted] = re.findall(r"-m websockets (\"[^\"]*\")", said)
    address = subprocess.run(  # noqa: S603 - the banner's own line, as a user runs it
        ["sh", "-c", f"printf %s {quoted}"],  # noqa: S607 - the user's shell
        capture_output=True, text=True, check=True, env={"ACCESS_TOKEN": token},
    ).stdout  # fmt: skip
    assert address == f"{closed.ws_url}/?token={token}"
    # The banner's whole line, run as the user would: a client this machine has.
    line = next(each for each in said.splitlines() if "-m websockets" in each)
    command = line.split("try:", 1)[1].split("   (then send", 1)[0].strip()
    assert _answer_through(command, {"ACCESS_TOKEN": token}) is True

    async def as_the_banner_says() -> None:
        async with connect(address) as ws:
            await ws.send(json.dumps({"action": "heartbeat"}))
            assert json.loads(await ws.recv())["action"] == "heartbeat"

    run(as_the_banner_says())


def _answer_through(command: str, env: dict[str, str]) -> bool:
    """Whether ``command`` (an interactive WebSocket client) printed the answer to a
    heartbeat typed into it within 20 s."""
    seen = b""
    with subprocess.Popen(  # noqa: S603 - the banner's own line, as a user runs it
        ["sh", "-c", command],  # noqa: S607 - the user's shell
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        env={**os.environ, **env},
    ) as client:  # fmt: skip
        assert client.stdin is not None and client.stdout is not None
        try:
            client.stdin.write(b'{"action": "heartbeat"}\n')
            client.stdin.flush()
            deadline = time.monotonic() + 20
            while b'"action":"heartbeat"' not in seen and time.monotonic() < deadline:
                ready, _, _ = select.select([client.stdout], [], [], 0.2)
                if ready:
                    chunk = os.read(client.stdout.fileno(), 4096)
                    if not chunk:
                        break
                    seen += chunk
        finally:
            client.kill()
    return b'"action":"heartbeat"' in seen


def test_a_restart_after_a_crash_says_what_it_left_and_when_it_ends(
    start_dev: Callable[..., DevServer],
) -> None:
    server = start_dev()

    async def crash_under_two() -> None:
        clients = [await open_client(server), await open_client(server)]
        server.wait_for(lambda r: len(r) == 2)
        server.stop(signal.SIGKILL)
        for ws in clients:
            ws.transport.abort()

    run(crash_under_two())
    # Short timings, so that the promised bound is seconds, and is kept.
    again = start_dev(
        *("--suspect-after", "1s", "--check-every", "1s", "--sweep-interval", "2s"),
        port=free_port(),
    )
    started = time.monotonic()
    text = again.log.read_text()
    match = re.search(r"(\d+) session\(s\) are still marked active\b.* within about (\d+)s", text)
    assert match is not None, text
    assert match.group(1) == "2"
    bound = int(match.group(2))
    assert 0 < bound <= 10
    ended = again.wait_for(lambda r: len(r) == 2 and not any(x["is_active"] for x in r), 30)
    assert time.monotonic() - started <= bound + 5
    assert {row["end_reason"] for row in ended} == {"gone"}


def test_every_log_line_is_whole_and_names_its_own_connection(
    start_dev: Callable[..., DevServer],
) -> None:
    server = start_dev()

    async def burst() -> None:
        opened = await asyncio.gather(
            *(open_client(server) for _ in range(40)), return_exceptions=True
        )
        clients = [ws for ws in opened if not isinstance(ws, BaseException)]
        await asyncio.gather(*(ws.close() for ws in clients))
        assert len(clients) == 40, [e for e in opened if isinstance(e, BaseException)][:3]

    run(burst())
    rows = server.wait_for(lambda r: len(r) == 40 and not any(x["is_active"] for x in r))
    server.stop()
    truth = {str(r["session_id"]): str(r["connection_id"]) for r in rows}
    lines = [line for line in server.log.read_text().splitlines() if line.startswith("{")]
    parsed = json_lines("\n".join(lines))
    assert len(parsed) == len(lines), "some lines were glued together or cut"
    named = [p for p in parsed if p.get("message") in {"session opened", "session ended"}]
    assert len(named) >= 80
    for line in named:
        assert truth[line["session_id"]] == line["connection_id"], line


def _simulate(server: DevServer, *args: str, cwd: Path) -> dict[str, Any]:
    result = run_tether("simulate", "--json", *args, cwd=cwd)
    assert result.returncode == 0, result.stderr
    report: dict[str, Any] = json.loads(result.stdout)
    # The keys the README names, no more, no fewer.
    readme = " ".join(README.read_text().split())
    begin = readme.index("`--json` prints one object with the keys `opened`")
    named = readme[begin : readme.index("; a token given with `--token`", begin)]
    assert set(report) == set(re.findall(r"`([a-z_]+)`", named))
    return report


def test_simulate_finds_tether_dev_and_reports_what_it_cost(
    start_dev: Callable[..., DevServer], tmp_path: Path
) -> None:
    server = start_dev("--sweep-interval", "1s", "--suspect-after", "1s")
    assert "closed as idle too" not in server.log.read_text()  # the defaults agree
    # Run from where tether dev runs: no --url, no --database-url.
    report = _simulate(
        server,
        "--clients",
        "6",
        "--duration",
        "3s",
        "--heartbeat",
        "1s",
        "--drop-rate",
        "0.5",
        "--settle",
        "20s",
        cwd=tmp_path,
    )
    assert report["opened"] == 6 and report["connected"] == 6
    assert report["orphaned"] == 0 and report["active"] == 0
    assert report["closed_by_server"] == 0 and report["failed"] == 0
    cost = report["cost_per_connection_minute"]
    assert cost["heartbeat_writes"] > 0  # throttle 0 here: every heartbeat is a write
    assert cost["get_connection_calls"] is not None


def test_a_simulation_shorter_than_a_sweep_run_does_not_say_it_cost_no_calls(
    start_dev: Callable[..., DevServer], tmp_path: Path
) -> None:
    """A run's report is written as it ends, a minute in at the defaults: a shorter
    simulation counted no run and said 0 GetConnection calls, whatever the sweep did."""
    server = start_dev()
    report = _simulate(server, "--clients", "2", "--duration", "1s", "--settle", "1s", cwd=tmp_path)
    assert report["opened"] == 2
    assert report["cost_per_connection_minute"]["get_connection_calls"] is None


def test_dev_and_simulate_serve_a_database_that_writes_dates_its_own_way(
    start_dev: Callable[..., DevServer], database_url: str, tmp_path: Path
) -> None:
    """psycopg reads a moment sent as text only in the ISO DateStyle: pointed at a
    database set to another, `tether dev` stopped at start with a NotImplementedError,
    and so did `tether simulate`."""
    set_for_database(database_url, "datestyle", "SQL, DMY")
    server = start_dev()
    report = _simulate(server, "--clients", "3", "--duration", "2s", cwd=tmp_path)
    assert report["opened"] == 3 and report["active"] == 0 and report["failed"] == 0


def test_simulate_counts_clients_the_server_closed_and_measures_from_then(
    start_dev: Callable[..., DevServer], tmp_path: Path
) -> None:
    server = start_dev("--idle-timeout", "2s")
    report = _simulate(
        server,
        "--clients",
        "4",
        "--duration",
        "8s",
        "--heartbeat",
        "0",
        "--settle",
        "5s",
        cwd=tmp_path,
    )
    assert report["closed_by_server"] == 4
    assert report["failed"] == 0
    assert report["ended_by_reason"] == {"idle_timeout": 4}
    # Allowed, and said: at 2 s, a client heartbeating every 15 s is idle too.
    assert (
        "idle 2s is not more than the heartbeat interval (15s): clients that heartbeat on"
        " time are closed as idle too"
    ) in server.log.read_text()
    # Measured from the close, not from the end the client had planned (8 s).
    assert report["detection_latency_s"]["max"] < 3


def test_simulate_with_a_token_never_logs_it(
    start_dev: Callable[..., DevServer], tmp_path: Path
) -> None:
    server = start_dev()
    user = str(uuid.uuid4())
    secret = sign(claims(sub=user), HS256_SECRET, "HS256")
    result = run_tether(
        "-v",
        "simulate",
        "--clients",
        "2",
        "--duration",
        "1s",
        "--settle",
        "3s",
        "--token",
        secret,
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr
    assert "DEBUG" in result.stderr  # verbose indeed
    assert secret not in result.stderr + result.stdout
    assert secret.split(".")[2] not in result.stderr
    # Both clients connected with the token: their sessions are its user's.
    with psycopg.connect(server.database_url) as conn:
        users = conn.execute("select user_id::text from public.conversation_sessions").fetchall()
    assert users == [(user,), (user,)]


def test_simulate_tells_silent_clients_from_dropped_ones_and_times_each(
    start_dev: Callable[..., DevServer], tmp_path: Path
) -> None:
    # Silent clients keep their connection open: only the heartbeat grace ends them
    # (the gateway still answers for them); dropped ones are gone (410).
    server = start_dev(
        "--disconnect-loss",
        "1",
        "--sweep-interval",
        "1s",
        "--check-every",
        "0.5s",
        "--suspect-after",
        "1s",
        "--heartbeat-grace",
        "3s",
        env_extra={"TETHER_HEARTBEAT_INTERVAL_SECONDS": "1"},
    )
    report = _simulate(
        server,
        "--clients",
        "6",
        "--duration",
        "2s",
        "--heartbeat",
        "0.5s",
        "--drop-rate",
        "0.34",
        "--silent-rate",
        "0.34",
        "--settle",
        "20s",
        cwd=tmp_path,
    )
    assert report["dropped"] == 2 and report["silent"] == 2
    assert report["active"] == 0 and report["orphaned"] == 0 and report["failed"] == 0
    assert report["ended_by_reason"] == {"client_disconnect": 2, "gone": 2, "heartbeat_timeout": 2}
    kinds = report["detection_latency_by_kind_s"]
    assert set(kinds) == {"closed", "dropped", "silent"}
    # A silent client outlasts the grace (3 s) before its end; a closed one does not wait.
    assert kinds["silent"]["p50"] >= 2.5
    assert kinds["closed"]["max"] < kinds["silent"]["p50"]


def test_simulate_reports_silent_clients_the_server_has_not_ended_as_orphaned(
    start_dev: Callable[..., DevServer], tmp_path: Path
) -> None:
    # The grace (30 s) outlasts the settle: nothing on the server ends them in the run.
    # Their connections stay open until the table is read, so their ends are not the
    # simulation's own hanging up, counted as the server's detection.
    server = start_dev()
    report = _simulate(
        server,
        "--clients",
        "2",
        "--duration",
        "1s",
        "--heartbeat",
        "0.5s",
        "--silent-rate",
        "1",
        "--settle",
        "2s",
        cwd=tmp_path,
    )
    assert report["silent"] == 2
    assert report["active"] == 2 and report["orphaned"] == 2
    assert report["ended_by_reason"] == {}
    assert report["detection_latency_by_kind_s"] == {}


def _more_than(count: int, rows: list[dict[str, Any]]) -> bool:
    return len(rows) > count


def test_simulate_stopped_by_sigterm_while_busy_stops_as_on_ctrl_c(
    start_dev: Callable[..., DevServer], tmp_path: Path
) -> None:
    """`timeout` or a cancelled job stops it with SIGTERM while its clients connect: it
    stops at once and says so, as on Ctrl-C. Raised inside its event loop, the
    interruption was lost (a weakref callback swallowed it: the run went on to its
    end), came out as a traceback, or left a task its shutdown waited for, for ever."""
    server = start_dev()
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "TETHER_DATABASE_URL")}
    for attempt in range(8):
        opened = len(server.rows())
        process = subprocess.Popen(  # noqa: S603 - our own console script
            [TETHER, "simulate", "--clients", "300", "--duration", "30s"],
            cwd=tmp_path,  # where tether dev runs: simulate finds it
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        try:
            # While the clients connect: the loop is at its busiest.
            server.wait_for(functools.partial(_more_than, opened), timeout=30)
            time.sleep(0.1 * attempt)
            process.send_signal(signal.SIGTERM)
            sent = time.monotonic()
            _, stderr = process.communicate(timeout=20)
            took = time.monotonic() - sent
        finally:
            _ended(process)
        assert process.returncode == 130, (attempt, stderr[-3000:])
        assert stderr.endswith("tether simulate: interrupted; what it had done is kept\n"), (
            attempt,
            stderr[-3000:],
        )
        assert "Traceback" not in stderr and "KeyboardInterrupt" not in stderr, stderr[-3000:]
        assert took < 10, (attempt, took)


def _ctrl_c_as_at_a_terminal() -> None:
    signal.signal(signal.SIGINT, signal.SIG_DFL)


@pytest.mark.parametrize("after", [0.0, 0.01, 0.03, 0.06, 0.1, 0.2])
def test_ctrl_c_while_tether_dev_loads_ends_it_quietly(
    database_url: str, tmp_path: Path, after: float
) -> None:
    """Ctrl-C in its first fraction of a second, while its imports load: it printed a
    traceback of whichever import it interrupted, where a later one says it was
    interrupted and exits 130."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("TETHER_", "DATABASE_URL"))}
    process = subprocess.Popen(  # noqa: S603 - our own console script
        [TETHER, "dev", "--port", str(free_port()), "--database-url", database_url],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        # As at a terminal: a job started in the background inherits SIGINT ignored.
        preexec_fn=_ctrl_c_as_at_a_terminal,  # noqa: PLW1509 - one thread starts it
    )
    try:
        # Once the interpreter's own start is over (a Ctrl-C there is Python's to say):
        # `select` is the first extension module the command line loads.
        loading = psutil.Process(process.pid)
        deadline = time.monotonic() + 30
        while not any("select." in m.path for m in loading.memory_maps()):
            assert process.poll() is None and time.monotonic() < deadline
        time.sleep(after)
        process.send_signal(signal.SIGINT)
        _, stderr = process.communicate(timeout=30)
    finally:
        _ended(process)
    assert process.returncode == 130, stderr
    assert "Traceback" not in stderr
    assert "KeyboardInterrupt" not in stderr
    assert "interrupted" in stderr


def test_simulate_refuses_more_drops_and_silences_than_clients(tmp_path: Path) -> None:
    result = run_tether(
        "simulate",
        "--url",
        "ws://127.0.0.1:9",
        "--database-url",
        "postgresql://x@/y",
        "--drop-rate",
        "0.6",
        "--silent-rate",
        "0.6",
        cwd=tmp_path,
    )
    assert result.returncode == 2
    assert "add up to more than 1" in result.stderr


@pytest.mark.parametrize("url", ["foo", "http://127.0.0.1:9", "ws://"])
def test_simulate_refuses_a_url_that_is_no_gateway_s(url: str, tmp_path: Path) -> None:
    result = run_tether(
        "simulate", "--url", url, "--database-url", "postgresql://x@/y", cwd=tmp_path
    )
    assert result.returncode == 2
    assert "--url" in result.stderr and "ws:// or wss://" in result.stderr


def test_simulate_fails_when_no_client_could_connect(database_url: str, tmp_path: Path) -> None:
    for output in ([], ["--json"]):
        result = run_tether(
            "simulate", "--url", f"ws://127.0.0.1:{free_port()}", "--database-url", database_url,
            "--clients", "2", "--duration", "1s", "--settle", "0", *output, cwd=tmp_path,
        )  # fmt: skip
        assert result.returncode == 1, result.stdout + result.stderr
        if not output:
            # Nothing measured: nothing on stdout (it printed a report of "None s").
            assert result.stdout == ""
        # Why, with --json too: it exited 1 with a report of failed clients and no word
        # of what refused them.
        assert "no client could connect: nothing was measured" in result.stderr
        assert "client error:" in result.stderr
    assert json.loads(result.stdout)["failed"] == 2
    assert "Traceback" not in result.stderr


def _plain(*args: str, cwd: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """A command run with only the environment given (no TETHER_* of the test run's)."""
    return subprocess.run(  # noqa: S603 - our own console script
        [TETHER, *args], capture_output=True, text=True, timeout=120, check=False, cwd=cwd, env=env
    )


def _start_embedded_dev(
    folder: Path, env: dict[str, str], *flags: str, port: int | None = None
) -> tuple[subprocess.Popen[str], Path]:
    """`make dev`'s stack, in ``folder``: `tether dev` on its embedded Postgres."""
    port = port or free_port()
    log = folder / f"dev-{port}.log"
    with log.open("w") as handle:
        process = subprocess.Popen(  # noqa: S603 - our own console script
            [TETHER, "dev", "--port", str(port), *flags],
            stdout=handle,
            stderr=subprocess.STDOUT,
            text=True,
            env=env,
            cwd=folder,
        )
    deadline = time.monotonic() + 90
    while "Ctrl-C closes every connection" not in log.read_text():
        if process.poll() is not None or time.monotonic() > deadline:
            process.kill()
            raise AssertionError(f"tether dev did not start:\n{log.read_text()}")
        time.sleep(0.05)
    return process, log


def test_a_dev_after_a_kill_9_stops_the_database_the_killed_one_left(tmp_path: Path) -> None:
    """`make dev` after a crash: the embedded Postgres the killed dev left is reused,
    and Ctrl-C stops it as if this dev had started it (it used to run on for good)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("TETHER_")}
    env.pop("DATABASE_URL", None)
    killed, _ = _start_embedded_dev(tmp_path, env, "--sweep-interval", "1h")
    killed.kill()
    killed.wait(timeout=30)
    data = tmp_path / ".tether" / "pgdata"
    postmaster = psutil.Process(int((data / "postmaster.pid").read_text().split()[0]))
    try:
        again, _ = _start_embedded_dev(tmp_path, env, "--sweep-interval", "1h")
        again.send_signal(signal.SIGINT)
        assert again.wait(timeout=30) == 0
        postmaster.wait(timeout=30)
        assert not embedded.is_running(data)
    finally:
        embedded.stop_if_running(data)


def test_a_dev_on_another_database_leaves_the_folder_s_embedded_one_to_the_commands(
    start_dev: Callable[..., DevServer], tmp_path: Path
) -> None:
    """An embedded database an earlier dev left here, stopped, and a dev running on a
    --database-url: a command with --embedded starts the embedded one for itself, and
    stops it after, as with no dev running."""
    data = tmp_path / ".tether" / "pgdata"
    embedded.start(data)
    assert embedded.stop_if_running(data)
    start_dev("--sweep-interval", "1h")
    env = {k: v for k, v in os.environ.items() if not k.startswith("TETHER_")}
    env.pop("DATABASE_URL", None)
    result = _plain("migrate", "--status", "--embedded", cwd=tmp_path, env=env)
    assert "lost its database" not in result.stderr
    assert result.returncode == 0, result.stderr
    assert not embedded.is_running(data)


def _migrated_embedded_folder(folder: Path) -> dict[str, str]:
    """``folder`` as `tether dev` leaves it (its embedded Postgres made, migrated and
    stopped); returns an environment that names no database, so --embedded decides."""
    data = folder / ".tether" / "pgdata"
    embedded.start(data)
    assert embedded.stop_if_running(data)
    env = {k: v for k, v in os.environ.items() if not k.startswith("TETHER_")}
    env.pop("DATABASE_URL", None)
    migrated = _plain("migrate", "--embedded", cwd=folder, env=env)
    assert migrated.returncode == 0, migrated.stderr
    assert not embedded.is_running(data)
    return env


def _embedded_sweep(folder: Path, env: dict[str, str]) -> subprocess.Popen[str]:
    """A long --embedded command: `tether sweep --keep-checking`."""
    return subprocess.Popen(  # noqa: S603 - our own console script
        [TETHER, "sweep", "--embedded", "--keep-checking"],
        cwd=folder,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _until(process: subprocess.Popen[str], ready: Callable[[], bool]) -> None:
    deadline = time.monotonic() + 30
    while not ready():
        assert process.poll() is None, process.communicate()
        assert time.monotonic() < deadline, "the command never got the database going"
        time.sleep(0.1)


def _ended(process: subprocess.Popen[str]) -> None:
    """Killed if it still runs, and reaped, its pipes closed (left to the garbage
    collector, they fail whichever test runs then)."""
    if process.poll() is None:
        process.kill()
    process.communicate()


@pytest.mark.parametrize(
    ("how", "after", "times"),
    [
        # (Not SIGINT: a test runner's worker may ignore it, and its children with it.)
        (signal.SIGTERM, 0.5, 1),
        # As the database starts: the stop was registered only once it had started.
        (signal.SIGTERM, 0.0, 1),
        # CI sends more than one: the second must not cut the database's stop short.
        (signal.SIGTERM, 0.5, 2),
    ],
)
def test_an_embedded_command_stopped_by_a_signal_stops_the_database_it_started(
    tmp_path: Path, how: signal.Signals, after: float, times: int
) -> None:
    """`timeout`, `kill` or a cancelled job stops a long command with SIGTERM: the
    embedded Postgres it started for itself is stopped too, as on Ctrl-C. Python's
    default for SIGTERM ran no clean-up, and the database kept running after it."""
    data = tmp_path / ".tether" / "pgdata"
    env = _migrated_embedded_folder(tmp_path)
    process = _embedded_sweep(tmp_path, env)
    try:
        _until(process, lambda: embedded.is_running(data))
        time.sleep(after)
        for _ in range(times):
            process.send_signal(how)
            time.sleep(0.05)
        _, stderr = process.communicate(timeout=30)
        assert process.returncode == 130, stderr
        assert "interrupted" in stderr
        assert "Traceback" not in stderr
        assert not embedded.is_running(data)
    finally:
        _ended(process)
        embedded.stop_if_running(data)


def test_the_database_a_killed_command_left_running_is_stopped_by_the_next(
    tmp_path: Path,
) -> None:
    """kill -9 stops a command before it can stop the embedded Postgres it started: the
    next --embedded command, which finds it running for nobody, stops it after its
    work (it left it running, as every later one did)."""
    data = tmp_path / ".tether" / "pgdata"
    env = _migrated_embedded_folder(tmp_path)

    def started_for_it() -> bool:
        return embedded.is_running(data) and data.with_name("pgdata.started-by").exists()

    killed = _embedded_sweep(tmp_path, env)
    holder = None
    try:
        _until(killed, started_for_it)
        killed.kill()
        killed.wait(timeout=10)
        assert embedded.is_running(data)  # left behind
        listed = _plain("sessions", "--embedded", "--json", cwd=tmp_path, env=env)
        assert listed.returncode == 0, listed.stderr
        assert not embedded.is_running(data)
        # One it did not start, while the one that did still runs, it leaves alone.
        holder = _embedded_sweep(tmp_path, env)
        _until(holder, started_for_it)
        beside = _plain("sessions", "--embedded", "--json", cwd=tmp_path, env=env)
        assert beside.returncode == 0, beside.stderr
        assert embedded.is_running(data)
        holder.terminate()
        holder.communicate(timeout=30)
        assert not embedded.is_running(data)
    finally:
        for process in (killed, holder):
            if process is not None:
                _ended(process)
        embedded.stop_if_running(data)


@pytest.mark.parametrize("command", [("sessions", "--json"), ("sweep",)], ids=["sessions", "sweep"])
def test_the_database_a_killed_dev_left_running_is_stopped_by_the_next_command(
    tmp_path: Path, command: tuple[str, ...]
) -> None:
    """kill -9 of `tether dev` left its embedded Postgres running: every later
    --embedded command used it and left it so, until the next dev. The next command now
    stops it after its work; one beside a live dev leaves the dev's database alone."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("TETHER_")}
    env.pop("DATABASE_URL", None)
    data = tmp_path / ".tether" / "pgdata"
    killed, _ = _start_embedded_dev(tmp_path, env, "--sweep-interval", "1h")
    again = None
    try:
        killed.kill()
        killed.wait(timeout=30)
        assert embedded.is_running(data)  # left behind
        after = _plain(command[0], "--embedded", *command[1:], cwd=tmp_path, env=env)
        assert after.returncode == 0, after.stderr
        assert not embedded.is_running(data)
        again, _ = _start_embedded_dev(tmp_path, env, "--sweep-interval", "1h")
        beside = _plain(command[0], "--embedded", *command[1:], cwd=tmp_path, env=env)
        assert beside.returncode == 0, beside.stderr
        assert embedded.is_running(data)  # the live dev's
        again.send_signal(signal.SIGINT)
        assert again.wait(timeout=30) == 0
        assert not embedded.is_running(data)
        assert not data.with_name("pgdata.started-by").exists()
    finally:
        for process in (killed, again):
            if process is not None and process.poll() is None:
                process.kill()
                process.wait(timeout=30)
        embedded.stop_if_running(data)


def _tether_clients(data: Path) -> int:
    """How many of tether's own connections the embedded server in ``data`` has (none
    when it is not running: it is not started to be asked)."""
    if not embedded.is_running(data):
        return 0
    with psycopg.connect(embedded.start(data).url, autocommit=True) as conn:
        row = conn.execute(
            "select count(*) from pg_stat_activity where application_name = 'tether'"
        ).fetchone()
    return int(row[0]) if row else 0


def test_the_last_of_two_commands_stops_the_database_the_first_started(
    tmp_path: Path,
) -> None:
    """Two long --embedded commands, and the one that started the database ends first:
    it leaves the database to the other, which stops it as it ends. It used to stay
    running until some later command came."""
    data = tmp_path / ".tether" / "pgdata"
    env = _migrated_embedded_folder(tmp_path)
    starter = _embedded_sweep(tmp_path, env)
    joiner = None
    try:
        _until(starter, lambda: data.with_name("pgdata.started-by").exists())
        joiner = _embedded_sweep(tmp_path, env)
        _until(joiner, lambda: _tether_clients(data) >= 2)
        starter.terminate()
        starter.communicate(timeout=30)
        assert embedded.is_running(data)  # the other still uses it
        joiner.terminate()
        _, stderr = joiner.communicate(timeout=30)
        assert joiner.returncode == 130, stderr
        assert not embedded.is_running(data)
        assert not data.with_name("pgdata.started-by").exists()
    finally:
        for process in (starter, joiner):
            if process is not None:
                _ended(process)
        embedded.stop_if_running(data)


def test_commands_with_embedded_act_on_the_running_stack_as_it_is(tmp_path: Path) -> None:
    """`make dev`'s stack (an embedded Postgres in .tether/pgdata), then `tether kick
    --embedded` from the same folder with nothing else said: it finds the database, the
    gateway's @connections endpoint and the log announcer that `tether dev` uses."""
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("TETHER_")}
    env.pop("DATABASE_URL", None)
    process, log = _start_embedded_dev(tmp_path, env, port=port)
    try:
        state = json.loads((tmp_path / ".tether" / "dev.json").read_text())
        assert state["connections_endpoint"] == f"http://127.0.0.1:{port}/local"

        async def kicked() -> tuple[subprocess.CompletedProcess[str], int | None]:
            client = await connect(f"ws://127.0.0.1:{port}", ping_interval=None)
            listed = await asyncio.to_thread(
                _plain, "sessions", "--embedded", "--active", "--json", cwd=tmp_path, env=env
            )
            assert listed.returncode == 0, listed.stderr
            (session,) = json.loads(listed.stdout)["sessions"]
            result = await asyncio.to_thread(
                _plain, "kick", "--embedded", "--session", session["session_id"], "--yes",
                cwd=tmp_path, env=env,
            )  # fmt: skip
            with contextlib.suppress(ConnectionClosed):
                await asyncio.wait_for(client.recv(), timeout=10)
            return result, client.close_code

        result, close_code = run(kicked())
        assert result.returncode == 0, result.stderr
        assert "the gateway closed the connection" in result.stdout
        assert close_code is not None  # the client was really disconnected
        assert "SessionEnded" in result.stderr  # announced to the log, as tether dev does
        assert "no AWS region" not in result.stderr
        # The dev's database stopped under it: a command does not start it behind its back.
        data = tmp_path / ".tether" / "pgdata"
        assert embedded.stop_if_running(data)
        refused = _plain("sessions", "--embedded", "--json", cwd=tmp_path, env=env)
        assert refused.returncode == 1
        assert "has lost its database" in refused.stderr
        assert not embedded.is_running(data)
        # The dev says so too, once: its checks failing as "unavailable" did not say
        # that nothing would start it again.
        deadline = time.monotonic() + 10
        while "the embedded Postgres has stopped" not in log.read_text():
            assert time.monotonic() < deadline, log.read_text()[-2000:]
            time.sleep(0.1)
    finally:
        process.send_signal(signal.SIGINT)
        assert process.wait(timeout=30) == 0, log.read_text()[-2000:]
    said = log.read_text()
    assert said.count("the embedded Postgres has stopped") == 1
    # Its stop at Ctrl-C finds nothing to stop, and says nothing of it.
    assert "Failed postgres command" not in said
    # With tether dev stopped, a command starts the database for itself alone, and says
    # nothing of it unless asked (-v).
    alone = _plain("sessions", "--embedded", "--json", cwd=tmp_path, env=env)
    assert alone.returncode == 0, alone.stderr
    assert json.loads(alone.stdout)["sessions"]
    assert alone.stderr == ""


def test_a_flag_that_settles_a_disagreement_is_taken(start_dev: Callable[..., DevServer]) -> None:
    """The grace given as a flag is the one checked against the environment's interval,
    whatever other flags are given (it was checked as its default of 30 s)."""
    server = start_dev(
        "--heartbeat-grace", "3h", env_extra={"TETHER_HEARTBEAT_INTERVAL_SECONDS": "9999"}
    )
    assert "heartbeats    every 9999s, clients silent 10800s are disconnected" in (
        server.log.read_text()
    )


def test_a_dev_listening_on_every_interface_is_reached_by_its_own_commands(
    start_dev: Callable[..., DevServer], tmp_path: Path
) -> None:
    """`tether dev --host 0.0.0.0` (phones on the LAN, containers): the URLs it hands out
    named 0.0.0.0, no place to connect to, which AWS clients took for a remote host, so
    `tether kick --embedded` asked for an AWS region, and the gateway's own sweep too."""
    server = start_dev("--host", "0.0.0.0")  # noqa: S104 - what is under test
    env = {k: v for k, v in os.environ.items() if not k.startswith(("TETHER_", "AWS_"))}
    env.pop("DATABASE_URL", None)
    state = json.loads((tmp_path / ".tether" / "dev.json").read_text())
    assert state["connections_endpoint"] == f"http://127.0.0.1:{server.port}/local"
    assert state["ws_url"] == f"ws://127.0.0.1:{server.port}"
    # The banner names loopback as the URL, and says the rest of the network reaches it.
    assert (
        f"tether dev: listening on ws://127.0.0.1:{server.port}, and on every interface"
        " (--host 0.0.0.0): other devices call it by this machine's IP address"
    ) in server.log.read_text()

    async def kicked() -> tuple[subprocess.CompletedProcess[str], int | None]:
        client = await open_client(server)
        (row,) = server.wait_for(lambda rows: len(rows) == 1)
        result = await asyncio.to_thread(
            _plain, "kick", "--session", str(row["session_id"]), "--yes",
            "--database-url", server.database_url, "--announce-to", "log",
            "--endpoint-url", state["connections_endpoint"], cwd=tmp_path, env=env,
        )  # fmt: skip
        if result.returncode == 0:  # else said below, without waiting on the client
            with contextlib.suppress(ConnectionClosed):
                await asyncio.wait_for(client.recv(), timeout=10)
        return result, client.close_code

    result, close_code = run(kicked())
    assert result.returncode == 0, result.stderr
    assert "the gateway closed the connection" in result.stdout
    assert close_code is not None


def test_a_dev_whose_functions_row_level_security_refuses_says_so_as_it_starts(
    start_dev: Callable[..., DevServer], plain_owner_url: str
) -> None:
    """A session table forcing row level security on its owner (no superuser, no
    BYPASSRLS): tether migrate exits 1 over it and /health says degraded, but tether dev
    started with its usual banner, and every connection then failed (500), its log
    naming no statement to mend it."""
    migrated = run_tether("migrate", "--database-url", plain_owner_url)
    assert migrated.returncode == 0, migrated.stderr
    with psycopg.connect(plain_owner_url, autocommit=True) as owner:
        owner.execute("alter table public.conversation_sessions force row level security")
    server = start_dev("--database-url", plain_owner_url)
    (said,) = [line for line in server.log.read_text().splitlines() if "PROBLEM" in line]
    assert said.startswith(
        "  PROBLEM       every connection will fail: public.conversation_sessions forces row"
        " level security on its owner"
    )
    assert said.endswith("alter table public.conversation_sessions no force row level security")


def test_a_dev_in_a_deep_folder_is_still_seen_serving_its_embedded_database(
    tmp_path: Path,
) -> None:
    """A folder too deep for a socket beside the data (over about 107 characters): the
    embedded server keeps its socket elsewhere, and commands took the dev's database for
    one of its own: with its Postgres stopped under it, `tether sessions --embedded`
    started it again behind the dev's back instead of saying it was lost."""
    deep = tmp_path / ("project-" + "d" * 60) / ("checkout-" + "e" * 30)
    deep.mkdir(parents=True)
    assert len(str(deep / ".tether" / "pgdata" / ".s.PGSQL.5432")) > 107
    env = {k: v for k, v in os.environ.items() if not k.startswith("TETHER_")}
    env.pop("DATABASE_URL", None)
    process, log = _start_embedded_dev(deep, env, "--sweep-interval", "1h")
    data = deep / ".tether" / "pgdata"
    try:
        assert embedded.stop_if_running(data)
        refused = _plain("sessions", "--embedded", "--json", cwd=deep, env=env)
        assert refused.returncode == 1, refused.stdout
        assert "has lost its database" in refused.stderr
        assert not embedded.is_running(data)
    finally:
        process.send_signal(signal.SIGINT)
        process.wait(timeout=30)
        embedded.stop_if_running(data)
    assert "Traceback" not in log.read_text()


def test_a_folder_with_no_room_for_a_socket_is_told_what_to_do(tmp_path: Path) -> None:
    """Too deep for a socket beside the data, and the runtime folder too: the wheel's
    RuntimeError came out as a traceback."""
    deep = tmp_path / ("project-" + "d" * 60) / ("checkout-" + "e" * 30)
    runtime = tmp_path / ("runtime-" + "r" * 100)
    deep.mkdir(parents=True)
    runtime.mkdir(mode=0o700)
    env = {k: v for k, v in os.environ.items() if not k.startswith("TETHER_")}
    env.pop("DATABASE_URL", None)
    env["XDG_RUNTIME_DIR"] = str(runtime)
    result = _plain("dev", "--port", str(free_port()), cwd=deep, env=env)
    assert result.returncode == 1, result.stdout
    assert "Traceback" not in result.stderr
    assert "has no place for its socket" in result.stderr
    assert "set XDG_RUNTIME_DIR to a short folder" in result.stderr


def test_the_readme_s_token_signs_a_user_in_to_a_dev_on_a_port_of_its_own(
    start_dev: Callable[..., DevServer], tmp_path: Path
) -> None:
    """The README's snippet signs a token for a dev started with only a secret set, on
    the port given in PORT, and prints the client's command: the snippet ran as written
    once (its issuer fixed at port 3001, and the command naming a $TOKEN it never set)."""
    readme = README.read_text()
    snippet = re.search(r"```python\n(import os, time, uuid\n.*?)```", readme, re.S)
    named = re.search(r"Saved as `([^`]+)`", readme)
    assert snippet is not None and named is not None, "the README's token snippet"
    # Saved under the name the README gives, and run as a script from its folder, which
    # Python puts first on its path: named token.py, it hid Python's own token module.
    script = tmp_path / named.group(1)
    script.write_text(snippet.group(1))
    secret = "a-secret-of-the-readme-s-own-at-least-32-bytes-long"
    server = start_dev(env_extra={"TETHER_JWT_SECRET": secret, "TETHER_JWT_ISSUER": None})
    printed = subprocess.run(  # noqa: S603 - the README's own code, in this Python
        [sys.executable, script.name],
        env={**os.environ, "TETHER_JWT_SECRET": secret, "PORT": str(server.port)},
        cwd=tmp_path,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    command = shlex.split(printed)
    assert command[:3] == [".venv/bin/python", "-m", "websockets"], printed
    url = command[3]
    user = jwt.decode(url.split("token=", 1)[1], options={"verify_signature": False})["sub"]

    async def signed_in() -> None:
        async with connect(url, ping_interval=None):
            server.wait_for(lambda rows: len(rows) == 1)

    run(signed_in())
    [row] = server.rows()
    assert str(row["user_id"]) == user
