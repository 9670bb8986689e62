"""`tether dev` end to end: real WebSocket clients, the local gateway, the real
handlers, a real Postgres, and the sweep on its schedule."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import subprocess
import time
import urllib.request
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import boto3
import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

from tests.conftest import ROOT
from tests.e2e.conftest import SIGNED, TETHER, DevServer, open_client, run, token
from tests.e2e.slow_routes import SLOW_SECONDS, SLOWER_SECONDS
from tests.support import HS256_SECRET, claims, json_lines, sign
from tether import migrate
from tether.local.gateway import HANDLER_THREADS, Limits


def test_connection_becomes_a_row_and_clean_close_ends_it(
    start_dev: Callable[..., DevServer],
) -> None:
    server = start_dev()

    async def scenario() -> None:
        # A client cannot name its own address, as on AWS: X-Forwarded-For is ignored.
        ws = await open_client(
            server,
            user_agent_header="e2e-client/1",
            additional_headers={"X-Forwarded-For": "203.0.113.99"},
        )
        rows = server.wait_for(lambda r: len(r) == 1)
        assert rows[0]["is_active"] is True
        assert rows[0]["user_agent"] == "e2e-client/1"
        assert (rows[0]["source_ip"], rows[0]["api_id"], rows[0]["stage"]) == (
            "127.0.0.1",
            "local",
            "local",
        )
        await ws.close(code=4001, reason="bye")

    run(scenario())
    [row] = server.wait_for(lambda r: len(r) == 1 and not r[0]["is_active"])
    assert (row["end_reason"], row["disconnect_status_code"]) == ("client_disconnect", 4001)


def test_a_client_cannot_name_the_gateway_s_reasons_for_its_own_close(
    start_dev: Callable[..., DevServer],
) -> None:
    server = start_dev()

    closes = [
        (1001, "Idle timeout exceeded"),
        (1001, "max duration reached"),
        (1001, ""),  # a browser tab closing
        (1012, "Service restart"),
        (1009, "Message too big"),
    ]

    async def scenario() -> None:
        for code, words in closes:
            ws = await open_client(server)
            await ws.close(code=code, reason=words)

    run(scenario())
    rows = server.wait_for(
        lambda r: len(r) == len(closes) and not any(row["is_active"] for row in r)
    )
    # A client going away is not the gateway's idle or age limit, nor its shutdown, nor
    # its message limit: the client closed, whatever code it chose.
    assert sorted((row["end_reason"], row["disconnect_status_code"]) for row in rows) == sorted(
        ("client_disconnect", code) for code, _ in closes
    )


def test_refused_token_gets_401_at_the_handshake_and_no_row(
    start_dev: Callable[..., DevServer],
) -> None:
    server = start_dev()

    async def scenario() -> None:
        with pytest.raises(InvalidStatus) as refused:
            await connect(f"{server.ws_url}/?token=not-a-jwt", ping_interval=None)
        assert refused.value.response.status_code == 401
        expired = sign(claims(expires_in=-60), HS256_SECRET, "HS256")
        with pytest.raises(InvalidStatus) as refused_again:
            await connect(f"{server.ws_url}/?token={expired}", ping_interval=None)
        assert refused_again.value.response.status_code == 401
        # A good token connects, and the offered sub-protocol is echoed.
        ws = await connect(server.ws_url, subprotocols=["tether.v1", token()], ping_interval=None)  # type: ignore[list-item]
        assert ws.subprotocol == "tether.v1"
        await ws.close()

    run(scenario())
    rows = server.wait_for(lambda r: len(r) == 1 and not r[0]["is_active"])
    assert rows[0]["user_id"] is not None
    # A refusal is the gateway's answer, not an error of the server under it: no log
    # line, JSON or the server's own, is an ERROR.
    log = server.log.read_text()
    assert "without completing handshake" not in log, log[-2000:]
    logged = json_lines(log)
    assert logged
    assert [line for line in logged if line.get("level") == "ERROR"] == []
    assert "ERROR" not in "\n".join(x for x in log.splitlines() if not x.startswith("{"))


def test_heartbeats_move_last_seen_and_routes_are_selected(
    start_dev: Callable[..., DevServer],
) -> None:
    server = start_dev("--route", "echo=tests.routes:echo")

    async def scenario() -> None:
        async with await open_client(server) as ws:
            [first] = server.wait_for(lambda r: len(r) == 1)
            await asyncio.sleep(0.05)
            await ws.send(json.dumps({"action": "heartbeat"}))
            assert json.loads(await ws.recv()) == {
                "action": "heartbeat",
                "status": "touched",
                "heartbeat_seconds": 15,
            }
            [after] = server.rows()
            assert after["last_seen_at"] > first["last_seen_at"]

            await ws.send(json.dumps({"action": "echo", "n": 7}))
            assert json.loads(await ws.recv()) == {
                "echo": {"action": "echo", "n": 7},
                "route": "echo",
            }

            await ws.send(json.dumps({"action": "sendmessage"}))
            unknown = json.loads(await ws.recv())
            assert unknown["error"] == "bad_request"
            assert "known actions: heartbeat" in unknown["message"]

            await ws.send("plain text, not JSON")
            assert json.loads(await ws.recv())["error"] == "bad_request"

    run(scenario())


def test_oversized_frame_closes_1009_and_ends_the_row(start_dev: Callable[..., DevServer]) -> None:
    server = start_dev()

    async def scenario() -> int | None:
        ws = await open_client(server, max_size=None)
        server.wait_for(lambda r: len(r) == 1)
        await ws.send("x" * (32 * 1024 + 1))
        with pytest.raises(ConnectionClosed) as closed:
            await ws.recv()
        return closed.value.rcvd.code if closed.value.rcvd else None

    assert run(scenario()) == 1009
    [row] = server.wait_for(lambda r: len(r) == 1 and not r[0]["is_active"])
    assert (row["end_reason"], row["disconnect_status_code"]) == ("message_too_big", 1009)


def test_a_message_over_128_kb_in_fragments_always_reaches_its_client_as_1009(
    start_dev: Callable[..., DevServer],
) -> None:
    """The client is still sending when the gateway refuses the message: closing the
    socket over its unread data made the kernel reset the connection, and the close
    frame was lost to the client (1006) one time in three."""
    server = start_dev()
    parts = ['{"action":"heartbeat","pad":"', *(["x" * 30_000] * 5), '"}']

    async def one() -> int | None:
        ws = await open_client(server, max_size=None)
        with contextlib.suppress(ConnectionClosed):
            await ws.send(iter(parts))
        with pytest.raises(ConnectionClosed) as closed:
            await asyncio.wait_for(ws.recv(), timeout=10)
        return closed.value.rcvd.code if closed.value.rcvd else None

    assert [run(one()) for _ in range(10)] == [1009] * 10
    rows = server.wait_for(lambda r: len(r) == 10 and not any(x["is_active"] for x in r))
    assert {(r["end_reason"], r["disconnect_status_code"]) for r in rows} == {
        ("message_too_big", 1009)
    }


def test_idle_and_duration_limits_end_with_their_reasons(
    start_dev: Callable[..., DevServer],
) -> None:
    server = start_dev("--idle-timeout", "1", "--max-duration", "2.5")

    async def idle() -> int | None:
        ws = await open_client(server, user_agent_header="idle")
        with pytest.raises(ConnectionClosed) as closed:
            await asyncio.wait_for(ws.recv(), timeout=5)
        return closed.value.rcvd.code if closed.value.rcvd else None

    async def chatty() -> int | None:
        ws = await open_client(server, user_agent_header="chatty")
        try:
            while True:
                await ws.send(json.dumps({"action": "heartbeat"}))
                await asyncio.wait_for(ws.recv(), timeout=5)
                await asyncio.sleep(0.3)
        except ConnectionClosed as closed:
            return closed.rcvd.code if closed.rcvd else None

    assert run(idle()) == 1001
    assert run(chatty()) == 1001
    rows = server.wait_for(lambda r: len(r) == 2 and not any(x["is_active"] for x in r))
    reasons = {row["user_agent"]: row["end_reason"] for row in rows}
    assert reasons == {"idle": "idle_timeout", "chatty": "max_duration"}


def test_a_client_that_keeps_sending_is_not_closed_as_idle_while_its_handler_is_slow(
    start_dev: Callable[..., DevServer],
) -> None:
    """Its heartbeats are activity however slow the handler of an earlier message is, as
    on AWS: they sat unread behind it, and the client was closed as idle (1001) the
    moment it returned, its @connections lastActiveAt stale all the while."""
    server = start_dev(
        "--route",
        "slow=tests.e2e.slow_routes:slow",
        "--idle-timeout",
        "2s",
        "--heartbeat-grace",
        "off",
    )

    async def scenario() -> tuple[list[dict[str, object]], float]:
        async with await open_client(server) as ws:
            [row] = server.wait_for(lambda r: len(r) == 1)
            url = server.connection_url(row)
            await ws.send(json.dumps({"action": "slow"}))
            started = time.monotonic()
            staleness = 0.0
            answers: list[dict[str, object]] = []
            # Twice the idle timeout and more, sending all the while.
            while time.monotonic() - started < SLOW_SECONDS + 1:
                await ws.send(json.dumps({"action": "heartbeat"}))
                answers.append(json.loads(await asyncio.wait_for(ws.recv(), 5)))
                request = urllib.request.Request(url, headers={"Authorization": SIGNED})  # noqa: S310
                with urllib.request.urlopen(request, timeout=5) as answer:  # noqa: S310
                    last_active = json.loads(answer.read())["lastActiveAt"]
                seen = datetime.fromisoformat(last_active.replace("Z", "+00:00"))
                staleness = max(staleness, (datetime.now(UTC) - seen).total_seconds())
                await asyncio.sleep(0.5)
            return answers, staleness

    answers, staleness = run(scenario())
    # Heartbeats were answered while the slow handler ran, not after it.
    assert answers.index({"route": "slow"}) >= 2, answers
    # Read as each message arrives: never a handler's time behind, nor idle by the
    # gateway's own measure.
    assert staleness < 2.0
    [row] = server.wait_for(lambda r: len(r) == 1 and not r[0]["is_active"])
    assert row["end_reason"] == "client_disconnect"


def test_slow_handlers_of_other_clients_do_not_hold_up_a_new_client(
    start_dev: Callable[..., DevServer],
) -> None:
    """Each invocation has a thread, as each has a Lambda on AWS: they shared the loop's
    default pool (cpus + 4 threads), and a handshake waited behind other clients' slow
    handlers until it timed out."""
    server = start_dev("--route", "slow=tests.e2e.slow_routes:slow")
    # More than the loop's default pool holds, on any machine.
    busy = min(32, (os.cpu_count() or 1) + 4) + 4

    async def scenario() -> float:
        clients = [await open_client(server) for _ in range(busy)]
        for ws in clients:
            await ws.send(json.dumps({"action": "slow"}))
        await asyncio.sleep(0.5)  # every slow handler is running
        started = time.monotonic()
        async with await open_client(server, open_timeout=SLOW_SECONDS + 5) as newcomer:
            await newcomer.send(json.dumps({"action": "heartbeat"}))
            assert json.loads(await newcomer.recv())["action"] == "heartbeat"
        served_in = time.monotonic() - started
        for ws in clients:
            assert json.loads(await ws.recv()) == {"route": "slow"}
            await ws.close()
        return served_in

    assert run(scenario()) < SLOW_SECONDS / 2


def test_the_sweep_runs_while_every_handler_thread_is_busy(
    start_dev: Callable[..., DevServer],
) -> None:
    """The sweep has a thread of its own: it waited on the handlers' pool, and ended
    nothing while clients' slow handlers held every thread."""
    server = start_dev(
        "--route",
        "slower=tests.e2e.slow_routes:slower",
        "--disconnect-loss",
        "1",
        "--sweep-interval",
        "1",
        "--suspect-after",
        "0",
        env_extra={"TETHER_GONE_SETTLE_SECONDS": "1"},
    )
    per_client = Limits().messages_in_flight

    async def scenario() -> float:
        dropped = await open_client(server)
        server.wait_for(lambda r: len(r) == 1)
        clients = [await open_client(server) for _ in range(HANDLER_THREADS // per_client + 1)]
        for ws in clients:
            for _ in range(per_client):
                await ws.send(json.dumps({"action": "slower"}))
        await asyncio.sleep(0.5)  # every handler thread is taken
        dropped.transport.abort()  # its $disconnect is lost: only the sweep ends it
        dropped_at = time.monotonic()
        await asyncio.to_thread(
            server.wait_for,
            lambda rows: any(not row["is_active"] for row in rows),
            SLOWER_SECONDS - 2,
        )
        detected_after = time.monotonic() - dropped_at
        for ws in clients:
            await ws.close()
        return detected_after

    assert run(scenario()) < SLOWER_SECONDS - 2
    [ended] = [row for row in server.rows() if not row["is_active"]]
    assert ended["end_reason"] == "gone"


def test_connections_api_through_boto3(start_dev: Callable[..., DevServer]) -> None:
    server = start_dev()
    api = boto3.client(
        "apigatewaymanagementapi",
        endpoint_url=server.endpoint,
        region_name="us-east-1",
        aws_access_key_id="local",
        aws_secret_access_key="local",
    )

    async def scenario() -> None:
        ws = await open_client(server, user_agent_header="boto3-peer")
        [row] = server.wait_for(lambda r: len(r) == 1)
        connection_id = str(row["connection_id"])
        info = await asyncio.to_thread(api.get_connection, ConnectionId=connection_id)
        assert info["Identity"]["UserAgent"] == "boto3-peer"
        assert info["ConnectedAt"] <= info["LastActiveAt"]
        await asyncio.to_thread(
            api.post_to_connection, ConnectionId=connection_id, Data=b'{"hello":1}'
        )
        assert json.loads(await ws.recv()) == {"hello": 1}
        with pytest.raises(api.exceptions.PayloadTooLargeException):
            await asyncio.to_thread(
                api.post_to_connection, ConnectionId=connection_id, Data=b"x" * (128 * 1024 + 1)
            )
        await asyncio.to_thread(api.delete_connection, ConnectionId=connection_id)
        with pytest.raises(ConnectionClosed):
            await asyncio.wait_for(ws.recv(), timeout=5)
        server.wait_for(lambda r: not r[0]["is_active"])
        for call in (api.get_connection, api.delete_connection):
            with pytest.raises(api.exceptions.GoneException):
                await asyncio.to_thread(call, ConnectionId=connection_id)
        with pytest.raises(api.exceptions.GoneException):
            await asyncio.to_thread(api.post_to_connection, ConnectionId=connection_id, Data=b"x")

    run(scenario())
    [row] = server.rows()
    assert (row["end_reason"], row["disconnect_status_code"]) == ("server_disconnect", 1001)


def test_dropped_clients_are_ended_by_the_sweep_within_the_bound(
    start_dev: Callable[..., DevServer],
) -> None:
    sweep_period, suspect_after, settle = 1.0, 0.0, 1.0
    server = start_dev(
        "--disconnect-loss",
        "1",
        "--sweep-interval",
        str(sweep_period),
        "--suspect-after",
        str(suspect_after),
        env_extra={"TETHER_GONE_SETTLE_SECONDS": str(settle)},
    )

    async def scenario() -> float:
        ws = await open_client(server)
        server.wait_for(lambda r: len(r) == 1)
        ws.transport.abort()  # no close frame; and the gateway loses the $disconnect
        return time.monotonic()

    dropped_at = run(scenario())
    [row] = server.wait_for(lambda r: not r[0]["is_active"], timeout=15)
    detected_after = time.monotonic() - dropped_at
    assert row["end_reason"] == "gone"
    # The README's bound for a lost $disconnect: suspect_after + the settle time + two
    # check periods (+ slack for this test's polling and a loaded machine).
    assert detected_after <= suspect_after + settle + 2 * sweep_period + 2.0, detected_after
    assert row["session_end"] == row["last_seen_at"]


def test_graceful_shutdown_leaves_no_active_session(start_dev: Callable[..., DevServer]) -> None:
    server = start_dev()

    async def scenario() -> int:
        clients = [await open_client(server) for _ in range(5)]
        server.wait_for(lambda r: len(r) == 5)
        exit_code: int = await asyncio.to_thread(server.stop, signal.SIGTERM)
        for ws in clients:
            with pytest.raises(ConnectionClosed) as closed:
                await ws.recv()
            assert closed.value.rcvd is not None and closed.value.rcvd.code == 1012
        return exit_code

    assert run(scenario()) == 0
    rows = server.rows()
    assert len(rows) == 5
    assert [r["is_active"] for r in rows] == [False] * 5
    assert {r["end_reason"] for r in rows} == {"shutdown"}
    assert "5 opened, 5 ended" in server.log.read_text()


def test_kill_9_leaves_rows_that_the_next_start_sweeps(start_dev: Callable[..., DevServer]) -> None:
    first = start_dev()

    async def scenario() -> None:
        clients = [await open_client(first) for _ in range(3)]
        first.wait_for(lambda r: len(r) == 3)
        await asyncio.to_thread(first.stop, signal.SIGKILL)
        for ws in clients:
            ws.transport.abort()

    run(scenario())
    assert [r["is_active"] for r in first.rows()] == [True] * 3
    second = start_dev("--sweep-interval", "0.5", "--suspect-after", "0")
    rows = second.wait_for(lambda r: not any(x["is_active"] for x in r), timeout=15)
    assert {r["end_reason"] for r in rows} == {"gone"}


def test_simulate_reading_another_database_than_the_gateway_s_fails(
    start_dev: Callable[..., DevServer], empty_database_url: str
) -> None:
    """Clients connected, no session anywhere it looks: untracked connections, which a
    clean-looking run must not hide."""
    migrate.migrate(empty_database_url)
    server = start_dev()
    result = subprocess.run(  # noqa: S603
        [TETHER, "simulate", "--url", server.ws_url, "--database-url", empty_database_url,
         "--clients", "3", "--duration", "1", "--settle", "0", "--json"],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert result.returncode == 1, result.stderr
    report = json.loads(result.stdout)
    assert (report["connected"], report["opened"], report["untracked"]) == (3, 0, 3)
    assert "3 client(s) connected with no session in the table" in result.stderr


def test_simulate_with_drops_leaves_no_orphan(start_dev: Callable[..., DevServer]) -> None:
    server = start_dev("--disconnect-loss", "1", "--sweep-interval", "0.5", "--suspect-after", "0")
    result = subprocess.run(  # noqa: S603
        [
            TETHER,
            "simulate",
            "--url",
            server.ws_url,
            "--database-url",
            server.database_url,
            "--clients",
            "12",
            "--duration",
            "1.5",
            "--drop-rate",
            "0.5",
            "--heartbeat",
            "0.3",
            "--settle",
            "10",
            "--json",
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["opened"] == 12
    assert report["orphaned"] == 0
    assert report["active"] == 0
    assert report["untracked"] == 0
    assert report["ended_by_reason"] == {"client_disconnect": 6, "gone": 6}
    latency = report["detection_latency_s"]
    assert latency["max"] is not None and latency["p50"] <= latency["p95"] <= latency["max"] < 10


def test_a_route_module_in_the_folder_the_dev_runs_in_is_found(
    start_dev: Callable[..., DevServer], tmp_path: Path
) -> None:
    """A team's routes live in its project, where it runs tether dev: found there as
    `python -m` finds a module, with no PYTHONPATH naming the folder (it was refused:
    "No module named 'team_routes'")."""
    (tmp_path / "team_routes.py").write_text(
        "import json\n"
        "from tether import counts_as_sign_of_life\n\n\n"
        "@counts_as_sign_of_life\n"
        "def chat(event, context):\n"
        "    return {'statusCode': 200, 'body': json.dumps({'said': event['body']})}\n"
    )
    server = start_dev("--route", "chat=team_routes:chat")

    async def scenario() -> dict[str, object]:
        async with await open_client(server) as ws:
            await ws.send(json.dumps({"action": "chat"}))
            answer: dict[str, object] = json.loads(await ws.recv())
            return answer

    assert run(scenario()) == {"said": json.dumps({"action": "chat"})}


def test_route_selection_expression_is_configurable(start_dev: Callable[..., DevServer]) -> None:
    server = start_dev(
        "--route", "echo=tests.routes:echo", "--route-selection", "$request.body.type"
    )

    async def scenario() -> None:
        async with await open_client(server) as ws:
            await ws.send(json.dumps({"type": "echo"}))
            assert json.loads(await ws.recv())["route"] == "echo"
            # "action" is no longer the selector: this goes to $default.
            await ws.send(json.dumps({"action": "echo"}))
            assert json.loads(await ws.recv())["error"] == "bad_request"

    run(scenario())


@pytest.mark.parametrize(
    ("flags", "fragment", "status"),
    [
        # 2: the command line is wrong, or names a module or function that is not there
        # (a module that fails as it imports is the module's failure: 1, below).
        (("--route", "echo"), "NAME=module:function", 2),
        (("--route", "echo=tests.nowhere:echo"), "cannot import 'tests.nowhere'", 2),
        (("--route", "echo=nowhere.deeper:echo"), "cannot import 'nowhere.deeper'", 2),
        (("--route", "echo=tests.routes:nowhere"), "'nowhere' is not a callable", 2),
        (("--route", "echo=:echo"), "NAME=module:function", 2),
        (("--route", "echo=tests.routes:echo:again"), "NAME=module:function", 2),
        (("--route", "echo=tests/routes.py:echo"), "NAME=module:function", 2),
        # A message could select it; the handshake and the close would not.
        (("--route", "$connect=tests.routes:echo"), "tether's own handler", 2),
        # The last one won, and the first was dropped without a word.
        (("--route", "echo=tests.routes:echo", "--route", "echo=tests.routes:quiet"), "twice", 2),
        (("--route-selection", "$request.header.x"), "route selection must look like", 2),
        (("--disconnect-loss", "2"), "between 0 and 1", 2),
        (("--idle-timeout", "soon"), "not a duration", 2),
        (("--port", "\uff13\uff10\uff10\uff11"), "not a port", 2),
        # No address of this machine: one another machine has (TEST-NET-1), a name that
        # does not resolve. It exited 1, as if the dev had failed.
        (("--host", "192.0.2.1"), "cannot listen on 192.0.2.1:", 2),
        (("--host", "nowhere.invalid"), "cannot listen on nowhere.invalid:", 2),
    ],
)
def test_bad_dev_flags_are_refused_clearly(
    flags: tuple[str, ...], fragment: str, status: int
) -> None:
    result = subprocess.run(  # noqa: S603
        [TETHER, "dev", "--database-url", "postgresql:///unused", *flags],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    assert result.returncode == status, result.stderr
    assert fragment in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize(
    ("name", "value"),
    [
        # Each left blank, as an .env template leaves them: every token would be refused,
        # or every announcement or finalizer fail, with nothing said at the start.
        ("TETHER_JWT_AUDIENCE", ""),
        ("TETHER_ALLOWED_ROLES", " , "),
        ("TETHER_EVENT_BUS_NAME", " "),
        ("TETHER_FINALIZER", ""),
        # Taken as off, it dropped the bound on silent clients without a word.
        ("TETHER_HEARTBEAT_GRACE_SECONDS", ""),
    ],
    ids=["audience", "roles", "event-bus", "finalizer", "heartbeat-grace"],
)
def test_a_blank_setting_stops_the_dev_naming_it(name: str, value: str) -> None:
    result = subprocess.run(  # noqa: S603
        [TETHER, "dev", "--database-url", "postgresql:///unused"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env={**os.environ, "PYTHONPATH": str(ROOT), "TETHER_JWT_SECRET": HS256_SECRET, name: value},
    )
    assert result.returncode == 1, result.stderr
    assert f"{name}: " in result.stderr
    assert "listening" not in result.stdout
    assert "Traceback" not in result.stderr


def _dev_routing_to(source: str, folder: Path) -> subprocess.CompletedProcess[str]:
    """`tether dev --route x=my_routes:echo`, my_routes.py holding ``source``; it stops
    before it needs the database it is given."""
    (folder / "my_routes.py").write_text(source)
    return subprocess.run(  # noqa: S603
        [TETHER, "dev", "--database-url", "postgresql:///unused", "--route", "x=my_routes:echo"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env={**os.environ, "PYTHONPATH": f"{ROOT}{os.pathsep}{folder}"},
    )


@pytest.mark.parametrize(
    ("source", "fragment"),
    [
        ("def echo(:\n", "SyntaxError: invalid syntax"),
        ("raise RuntimeError('no API_URL set')\n", "RuntimeError: no API_URL set"),
        # A script's habit: it would end tether dev with the module's status and nothing said.
        ("import sys\nsys.exit('no API_URL set')\n", "SystemExit: no API_URL set"),
        # Found, and failing inside: not the flag's fault, whatever is missing.
        ("import no_such_dependency\n", "No module named 'no_such_dependency'"),
    ],
    ids=["syntax-error", "raises-on-import", "exits-on-import", "imports-what-is-missing"],
)
def test_a_route_module_that_fails_to_import_is_named_in_one_line(
    source: str, fragment: str, tmp_path: Path
) -> None:
    result = _dev_routing_to(source, tmp_path)
    assert result.returncode == 1, result.stderr
    assert "Traceback" not in result.stderr
    assert result.stderr.startswith("tether dev: cannot load handler 'my_routes:echo'")
    assert fragment in result.stderr


@pytest.mark.parametrize(
    "source",
    [
        "async def echo(event, context):\n    return {'statusCode': 200, 'body': 'hi'}\n",
        "async def echo(event, context):\n    yield {'statusCode': 200}\n",
        "class Echo:\n    async def __call__(self, event, context):\n        return None\n"
        "echo = Echo()\n",
    ],
    ids=["coroutine", "async-generator", "async-call"],
)
def test_an_async_route_handler_is_refused_before_anything_starts(
    source: str, tmp_path: Path
) -> None:
    """An async def handler started the dev, and each message to it logged only that
    its answer, a coroutine, was not sent: Lambda's Python runtime awaits nothing, so
    its work never ran, locally as on AWS, and nothing said why."""
    result = _dev_routing_to(source, tmp_path)
    assert result.returncode == 2, result.stderr
    assert result.stderr == (
        "tether dev: --route my_routes:echo: the handler is an async def, which Lambda's"
        " Python runtime calls without awaiting (its work would never run): define it with"
        " def, and asyncio.run what it awaits\n"
    )
    assert "listening" not in result.stdout


def test_a_stop_that_waits_for_a_running_handler_says_so(
    start_dev: Callable[..., DevServer],
) -> None:
    """Stopped while a route's handler ran, the dev waited for it, as long as it took,
    saying nothing: a Ctrl-C that seemed not to be heard."""
    server = start_dev("--route", "slower=tests.e2e.slow_routes:slower")

    async def scenario() -> None:
        ws = await open_client(server)
        await ws.send(json.dumps({"action": "slower"}))
        await asyncio.sleep(0.5)  # the handler is running
        await ws.close()  # it runs on, as a Lambda would

    run(scenario())
    server.process.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + SLOWER_SECONDS / 2
    said: list[dict[str, object]] = []
    while not said and time.monotonic() < deadline:
        time.sleep(0.1)
        said = [
            line
            for line in json_lines(server.log.read_text())
            if line.get("message", "").startswith("stopping: waiting for the invocations")
        ]
    assert said, server.log.read_text()[-2000:]
    assert said[0]["running"] == ["slower"]
    assert server.process.poll() is None  # said while it waits, not after
    assert server.process.wait(timeout=SLOWER_SECONDS + 20) == 0
