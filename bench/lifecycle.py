"""``lifecycle_throughput``: connect + disconnect pairs per second through the real
handlers, against pgbench sending the same statements on the same server.

Workload. Each worker is a process of its own, as each Lambda container is: it
imports ``functions.connect`` and ``functions.disconnect``, warms up (its first
invocations open the database connection), and then invokes them back to back with
API Gateway-shaped events (a ``$connect`` with its headers, identity and
``connectedAt``; a ``$disconnect`` with status 1000), a new connection id per pair.
Anonymous connections (no token to verify), the psycopg driver, and announcements to
the log (``TETHER_ANNOUNCE_TO=log``, as ``tether dev`` runs): EventBridge's PutEvents
is a network call outside this comparison. Logs and metrics go to /dev/null, written
as on Lambda (one JSON line each).

Baseline. pgbench (the embedded server's own), extended protocol like psycopg's, runs
the statement sequence the handlers sent: captured from the driver while real
handler invocations ran, with each parameter passed as a parameter (the pair's
connection id a pgbench variable, the session id taken from the end's row with
``\\gset``, every other value as captured). Same database, same concurrency (1 and
2: pgbench clients, handler processes), interleaved: each repeat runs pgbench, then
the handlers, and the ratio is taken per repeat. The median ratio of the repeats is
the figure.

The floor. Each repeat also runs psycopg alone: processes connected as the driver
connects, sending the captured statements back to back with the same parameters and
types (checked before the clock starts) and nothing else. Its own ratio to pgbench is
the most any client written on psycopg could reach here, so the handlers' distance to
the goal splits into psycopg's share and tether's.
"""

from __future__ import annotations

import base64
import json
import os
import re
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

from psycopg.conninfo import conninfo_to_dict

from bench.common import UNSETTLED_BASELINE_SPREAD, Entry, Run, entry, report, spread, unsettled
from bench.database import scratch_database
from tether.local import embedded

GOAL = ">= 0.8"
WARM_PAIRS = 300


def _connection_id() -> str:
    return base64.b64encode(os.urandom(12)).decode()[:15] + "="


CONNECT_EVENT = {
    "headers": {
        "Host": "abcdef1234.execute-api.us-east-1.amazonaws.com",
        "Sec-WebSocket-Extensions": "permessage-deflate; client_max_window_bits",
        "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ==",
        "Sec-WebSocket-Version": "13",
        "User-Agent": "Mozilla/5.0 (X11; Linux x86_64) tether-bench",
        "X-Amzn-Trace-Id": "Root=1-6745a1b2-0f1e2d3c4b5a69788796a5b4",
        "X-Forwarded-For": "203.0.113.10",
        "X-Forwarded-Port": "443",
        "X-Forwarded-Proto": "https",
    },
    "multiValueHeaders": {
        "Host": ["abcdef1234.execute-api.us-east-1.amazonaws.com"],
        "User-Agent": ["Mozilla/5.0 (X11; Linux x86_64) tether-bench"],
        "X-Forwarded-For": ["203.0.113.10"],
    },
    "requestContext": {
        "routeKey": "$connect",
        "eventType": "CONNECT",
        "extendedRequestId": "CeWqPHYpoAMFfSQ=",
        "requestTime": "26/Nov/2026:05:31:52 +0000",
        "messageDirection": "IN",
        "stage": "prod",
        "connectedAt": 0,
        "requestTimeEpoch": 0,
        "identity": {
            "userAgent": "Mozilla/5.0 (X11; Linux x86_64) tether-bench",
            "sourceIp": "203.0.113.10",
        },
        "requestId": "CeWqPHYpoAMFfSQ=",
        "domainName": "abcdef1234.execute-api.us-east-1.amazonaws.com",
        "connectionId": "",
        "apiId": "abcdef1234",
    },
    "isBase64Encoded": False,
}
DISCONNECT_EVENT = {
    "headers": {"Host": "abcdef1234.execute-api.us-east-1.amazonaws.com"},
    "multiValueHeaders": {"Host": ["abcdef1234.execute-api.us-east-1.amazonaws.com"]},
    "requestContext": {
        "routeKey": "$disconnect",
        "disconnectStatusCode": 1000,
        "eventType": "DISCONNECT",
        "extendedRequestId": "CeWqxGW8oAMFdWA=",
        "requestTime": "26/Nov/2026:05:41:07 +0000",
        "messageDirection": "IN",
        "disconnectReason": "Client-side close frame status code",
        "stage": "prod",
        "connectedAt": 0,
        "requestTimeEpoch": 0,
        "identity": {
            "userAgent": "Mozilla/5.0 (X11; Linux x86_64) tether-bench",
            "sourceIp": "203.0.113.10",
        },
        "requestId": "CeWqxGW8oAMFdWA=",
        "domainName": "abcdef1234.execute-api.us-east-1.amazonaws.com",
        "connectionId": "",
        "apiId": "abcdef1234",
    },
    "isBase64Encoded": False,
}
HEARTBEAT_EVENT = {
    "requestContext": {
        "routeKey": "heartbeat",
        "eventType": "MESSAGE",
        "messageDirection": "IN",
        "stage": "prod",
        "connectedAt": 0,
        "requestTimeEpoch": 0,
        "requestId": "CeWqyGW8oAMFdWB=",
        "domainName": "abcdef1234.execute-api.us-east-1.amazonaws.com",
        "connectionId": "",
        "apiId": "abcdef1234",
    },
    "body": '{"action": "heartbeat"}',
    "isBase64Encoded": False,
}
_TEMPLATES = {
    name: json.dumps(event)
    for name, event in (
        ("connect", CONNECT_EVENT),
        ("disconnect", DISCONNECT_EVENT),
        ("heartbeat", HEARTBEAT_EVENT),
    )
}


def event(kind: str, connection_id: str) -> dict[str, Any]:
    """A fresh event, as the Lambda runtime hands one over: decoded from JSON."""
    decoded: dict[str, Any] = json.loads(_TEMPLATES[kind])
    now_ms = int(time.time() * 1000)
    context = decoded["requestContext"]
    context.update(connectionId=connection_id, connectedAt=now_ms, requestTimeEpoch=now_ms)
    return decoded


class _Context:
    function_name = "tether-bench"
    memory_limit_in_mb = 256
    invoked_function_arn = "arn:aws:lambda:us-east-1:123456789012:function:tether-bench"
    aws_request_id = "c6af9ac6-7b61-11e6-9a41-93e812345678"

    def get_remaining_time_in_millis(self) -> int:
        return 30_000


def _worker_environment(url: str) -> None:
    os.environ.update(
        TETHER_DATABASE_URL=url,
        TETHER_ALLOW_ANONYMOUS="true",
        TETHER_ANNOUNCE_TO="log",
        POWERTOOLS_SERVICE_NAME="tether",
    )
    # Logs and metrics are written as on Lambda, to a stream nobody reads here.
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 1)


def _pair(connect: Any, disconnect: Any, context: _Context, events: tuple[Any, Any]) -> None:
    if connect.lambda_handler(events[0], context)["statusCode"] != 200:
        raise RuntimeError("$connect refused")
    if disconnect.lambda_handler(events[1], context)["statusCode"] != 200:
        raise RuntimeError("$disconnect failed")


def _timed(folder: str, index: int, seconds: float, pair: Callable[[], object]) -> None:
    """Say this worker is ready, wait for the word, run pairs for ``seconds``, and write
    how many ran."""
    (Path(folder) / f"ready-{index}").touch()
    go = Path(folder) / "go"
    while not go.exists():
        time.sleep(0.002)
    done = 0
    started = time.perf_counter()
    deadline = started + seconds
    while time.perf_counter() < deadline:
        pair()
        done += 1
    elapsed = time.perf_counter() - started
    (Path(folder) / f"result-{index}.json").write_text(
        json.dumps({"pairs": done, "seconds": elapsed})
    )


def worker(url: str, seconds: float, folder: str, index: int) -> None:
    """One warm container: invoke pairs for ``seconds`` once told to go."""
    _worker_environment(url)
    from functions import connect, disconnect  # noqa: PLC0415

    context = _Context()

    def batch(count: int) -> list[tuple[Any, Any]]:
        ids = [_connection_id() for _ in range(count)]
        return [(event("connect", cid), event("disconnect", cid)) for cid in ids]

    for pair in batch(WARM_PAIRS):
        _pair(connect, disconnect, context, pair)
    ready = batch(int(seconds * 1500))
    _timed(
        folder,
        index,
        seconds,
        lambda: _pair(connect, disconnect, context, ready.pop() if ready else batch(1)[0]),
    )


def _types_sent(connection: Any, params: Sequence[Any]) -> list[int]:
    """The type of each parameter as psycopg sends it (0: untyped, as a str goes)."""
    from psycopg.adapt import PyFormat, Transformer  # noqa: PLC0415

    sent = Transformer(connection)
    sent.dump_sequence(params, [PyFormat.AUTO] * len(params))
    return [int(t) for t in (sent.types or [0] * len(params))]


def capture(url: str, out: str) -> None:
    """Run real handler invocations and record every statement the driver sends:
    the query, each parameter as psycopg dumps it (its text and type), and the rows."""
    _worker_environment(url)
    from psycopg.adapt import PyFormat, Transformer  # noqa: PLC0415

    from functions import connect, disconnect, message  # noqa: PLC0415
    from tether.drivers import postgres  # noqa: PLC0415

    statements: list[dict[str, Any]] = []
    original = postgres.PostgresStore.call

    def recording(
        self: postgres.PostgresStore, function: str, args: Mapping[str, object]
    ) -> list[Any]:
        rows = original(self, function, args)
        query, params = postgres.PostgresStore.statement(function, args)
        connection = self._connection
        text = Transformer(connection).dump_sequence(params, [PyFormat.TEXT] * len(params))
        numbered = iter(range(1, len(params) + 1))
        statements.append(
            {
                "query": re.sub("%s", lambda _: f"${next(numbered)}", query),
                "values": [None if v is None else bytes(v).decode() for v in text],
                "types": _types_sent(connection, params),
                "rows": [
                    {k: None if v is None else str(v) for k, v in row.items()} for row in rows
                ],
            }
        )
        return rows

    postgres.PostgresStore.call = recording  # type: ignore[method-assign]
    context = _Context()
    invocations: list[dict[str, Any]] = []
    for _ in range(3):  # the first is cold; the last two are what a warm pair sends
        cid = _connection_id()
        pair: dict[str, Any] = {"connection_id": cid}
        for kind, handler in (
            ("connect", connect),
            ("heartbeat", message),
            ("disconnect", disconnect),
        ):
            before = len(statements)
            response = handler.lambda_handler(event(kind, cid), context)
            pair[kind] = {"status": response["statusCode"], "statements": statements[before:]}
        invocations.append(pair)
    Path(out).write_text(json.dumps(invocations))


def _substitute(query: str, expressions: list[str]) -> str:
    """The query with each ``$n`` replaced by its expression."""
    return re.sub(r"\$(\d+)\b", lambda match: expressions[int(match.group(1)) - 1], query)


# Where each parameter of a captured pair comes from: the pair's connection id, a
# column of an earlier statement's first row (as itself or as a one-element array),
# a constant (its captured text), or null.
Source = tuple[str, ...]


def parameter_sources(pair: dict[str, Any]) -> list[list[Source]]:
    """For each statement a connect + disconnect pair sent, its parameters' sources."""
    statements = pair["connect"]["statements"] + pair["disconnect"]["statements"]
    produced: list[tuple[int, str, str]] = []  # (statement, column, value)
    sources: list[list[Source]] = []
    for k, statement in enumerate(statements):
        found: list[Source] = []
        for value in statement["values"]:
            if value is None:
                found.append(("null",))
                continue
            if value == pair["connection_id"]:
                found.append(("cid",))
                continue
            # The latest statement's row first: where the handler took it from.
            # (psycopg writes a uuid without its dashes, Postgres with them.)
            bare = value.replace("-", "")
            source: Source = ("constant", value)
            for j, column, earlier in reversed(produced):
                if bare == earlier.replace("-", ""):
                    source = ("row", str(j), column, "")
                elif bare == "{" + earlier.replace("-", "") + "}":
                    source = ("row", str(j), column, "array")
                if source[0] == "row":
                    break
            found.append(source)
        sources.append(found)
        for row in statement["rows"][:1]:
            produced += [(k, column, str(v)) for column, v in row.items() if v is not None]
    return sources


def pgbench_script(pair: dict[str, Any]) -> tuple[str, dict[str, str]]:
    """A pgbench script sending what one connect + disconnect pair sent, and its -D
    variables (every constant stays a bind parameter, as psycopg sent it)."""
    from psycopg import postgres  # noqa: PLC0415

    statements = pair["connect"]["statements"] + pair["disconnect"]["statements"]
    constants: dict[str, str] = {}
    referenced: set[int] = set()
    lines = ["\\set cid random(1, 9223372036854775806)"]
    bodies: list[str] = []
    for k, (statement, sources) in enumerate(zip(statements, parameter_sources(pair), strict=True)):
        expressions: list[str] = []
        for n, (source, oid) in enumerate(zip(sources, statement["types"], strict=True)):
            cast = ""
            if oid:
                info = postgres.types.get(oid)
                # psycopg's registry finds a type by its array's oid too.
                cast = f"::{info.name}{'[]' if info.oid != oid else ''}" if info else ""
            if source[0] == "null":
                expression = "null"
            elif source[0] == "cid":
                expression = ":cid"
            elif source[0] == "row":
                j, column, shape = int(source[1]), source[2], source[3]
                referenced.add(j)
                expression = f"('{{' || :s{j}_{column} || '}}')" if shape else f":s{j}_{column}"
            else:
                name = f"c{k}_{n + 1}"
                constants[name] = source[1]
                expression = f":{name}"
            expressions.append(f"{expression}{cast}")
        bodies.append(_substitute(statement["query"], expressions))
    for k, query in enumerate(bodies):
        lines.append(f"{query} \\gset s{k}_" if k in referenced else f"{query};")
    return "\n".join(lines) + "\n", constants


def _rebuilders() -> dict[int, Callable[[str], object]]:
    """From a captured constant's text back to the Python value psycopg dumps with the
    captured type (0: a str, which psycopg sends untyped)."""
    from psycopg.types.json import Jsonb  # noqa: PLC0415

    return {
        0: str,
        16: lambda text: text == "t",
        20: int,
        21: int,
        23: int,
        700: float,
        701: float,
        1184: datetime.fromisoformat,
        1700: Decimal,
        2950: uuid.UUID,
        3802: lambda text: Jsonb(json.loads(text)),
    }


def psycopg_worker(url: str, seconds: float, folder: str, index: int, captured: str) -> None:
    """psycopg alone, connected as the driver connects, sending a captured pair's
    statements back to back with the same parameters: the most any client written on
    psycopg can reach, since it does nothing else."""
    from tether.drivers.postgres import PostgresStore, results_cursor  # noqa: PLC0415

    pair = json.loads(Path(captured).read_text())[-1]
    statements = pair["connect"]["statements"] + pair["disconnect"]["statements"]
    sources = parameter_sources(pair)
    rebuild = _rebuilders()
    queries = [re.sub(r"\$\d+\b", "%s", statement["query"]) for statement in statements]
    constants: list[dict[int, object]] = []
    for statement, found in zip(statements, sources, strict=True):
        values: dict[int, object] = {}
        for n, (source, oid) in enumerate(zip(found, statement["types"], strict=True)):
            if source[0] == "constant":
                if oid not in rebuild:
                    raise RuntimeError(f"a captured parameter has type {oid}, not rebuilt here")
                values[n] = rebuild[oid](source[1])
        constants.append(values)
    connection = PostgresStore(url)._connect()  # as the driver connects, options and all
    cursor = results_cursor(connection)  # and reads, results in binary

    def send_pair() -> list[list[Any]]:
        cid = _connection_id()
        rows: list[list[Any]] = []
        sent: list[list[Any]] = []
        for query, found, values in zip(queries, sources, constants, strict=True):
            params: list[Any] = []
            for n, source in enumerate(found):
                if source[0] == "cid":
                    params.append(cid)
                elif source[0] == "row":
                    value = rows[int(source[1])][0][source[2]]
                    params.append([value] if source[3] else value)
                else:
                    params.append(values.get(n))
            cursor.execute(query, params)
            rows.append(cursor.fetchall())
            sent.append(params)
        return sent

    # The same statements as the handlers', parameter types included.
    for statement, params in zip(statements, send_pair(), strict=True):
        if _types_sent(connection, params) != statement["types"]:
            raise RuntimeError(f"psycopg alone would send other types than {statement['query']}")
    for _ in range(WARM_PAIRS):
        send_pair()
    _timed(folder, index, seconds, send_pair)


def _pgbench(
    url: str, script: Path, constants: dict[str, str], clients: int, seconds: float
) -> float:
    params = conninfo_to_dict(url)
    command = [str(embedded.binary("pgbench")), "-n", "-M", "extended"]
    command += ["-c", str(clients), "-j", str(clients), "-T", str(int(seconds)), "-f", str(script)]
    for name, value in constants.items():
        command += ["-D", f"{name}={value}"]
    command += ["-h", str(params.get("host", "")), "-U", str(params.get("user", "postgres"))]
    command.append(str(params["dbname"]))
    result = subprocess.run(command, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise RuntimeError(f"pgbench failed: {result.stderr.strip()[-500:]}")
    if " 0 failed" not in result.stdout and "failed transactions: 0 " not in result.stdout:
        raise RuntimeError(f"pgbench had failed transactions:\n{result.stdout}")
    found = re.search(r"^tps = ([\d.]+)", result.stdout, re.MULTILINE)
    if not found:
        raise RuntimeError(f"pgbench printed no tps:\n{result.stdout}")
    return float(found.group(1))


def _pairs_per_second(kind: str, url: str, clients: int, seconds: float, *more: str) -> float:
    """Pairs per second from ``clients`` worker processes of ``kind`` (``worker``: the
    handlers; ``psycopg``: psycopg alone) started together."""
    with tempfile.TemporaryDirectory() as folder:
        workers = [
            subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "bench.lifecycle",
                    kind,
                    url,
                    str(seconds),
                    folder,
                    str(i),
                    *more,
                ]
            )
            for i in range(clients)
        ]
        try:
            deadline = time.monotonic() + 120
            while not all((Path(folder) / f"ready-{i}").exists() for i in range(clients)):
                if any(w.poll() not in (None, 0) for w in workers) or time.monotonic() > deadline:
                    raise RuntimeError(f"a {kind} worker failed to start")
                time.sleep(0.01)
            (Path(folder) / "go").touch()
            for w in workers:
                if w.wait(timeout=seconds + 120) != 0:
                    raise RuntimeError(f"a {kind} worker failed")
            results = [
                json.loads((Path(folder) / f"result-{i}.json").read_text()) for i in range(clients)
            ]
        finally:
            for w in workers:
                if w.poll() is None:
                    w.kill()
    return float(sum(r["pairs"] for r in results) / max(r["seconds"] for r in results))


def _disturbed(by_concurrency: Mapping[str, Any]) -> str | None:
    """Why pgbench's own figures say the machine disturbed the run, or None. The ratio
    divides by pgbench's rate, so a pgbench turn slowed by other work made the handlers
    look faster than they are (ratios above 1 on a busy machine): its repeats at one
    concurrency must agree within UNSETTLED_BASELINE_SPREAD, and two clients on the
    machine's CPUs must not run slower than one."""
    for clients, figures in by_concurrency.items():
        rates = figures["pgbench_pairs_per_second"]
        if rates["min"] <= 0 or rates["max"] / rates["min"] > UNSETTLED_BASELINE_SPREAD:
            return (
                f"pgbench's own pairs at c={clients} ranged from {rates['min']:.0f} to"
                f" {rates['max']:.0f} per second: other work on the machine moved the baseline"
            )
    one, two = by_concurrency.get("1"), by_concurrency.get("2")
    if one and two:
        alone, pair = (
            one["pgbench_pairs_per_second"]["median"],
            two["pgbench_pairs_per_second"]["median"],
        )
        if pair < alone:
            return (
                f"pgbench's own pairs ran slower at c=2 ({pair:.0f}/s) than at c=1"
                f" ({alone:.0f}/s): other work on the machine took its turns"
            )
    return None


def run(mode: Run) -> dict[str, Entry]:
    seconds = mode.pick(3.0, 2.0)
    repeats = mode.pick(5, 2)
    with scratch_database("lifecycle") as url, tempfile.TemporaryDirectory() as folder:
        captured_path = Path(folder) / "captured.json"
        subprocess.run(
            [sys.executable, "-m", "bench.lifecycle", "capture", url, str(captured_path)],
            check=True,
        )
        invocations = json.loads(captured_path.read_text())
        warm = invocations[-1]
        round_trips = {
            "$connect": len(warm["connect"]["statements"]),
            "$disconnect": len(warm["disconnect"]["statements"]),
            "heartbeat": len(warm["heartbeat"]["statements"]),
        }
        script_text, constants = pgbench_script(warm)
        script = Path(folder) / "pair.sql"
        script.write_text(script_text)
        script.chmod(0o644)
        Path(folder).chmod(0o755)
        by_concurrency: dict[str, Any] = {}
        for clients in (1, 2):
            baseline, measured, alone, ratios, floors = [], [], [], [], []
            for _ in range(repeats):
                pg = _pgbench(url, script, constants, clients, seconds)
                ours = _pairs_per_second("worker", url, clients, seconds)
                bare = _pairs_per_second("psycopg", url, clients, seconds, str(captured_path))
                baseline.append(pg)
                measured.append(ours)
                alone.append(bare)
                ratios.append(ours / pg)
                floors.append(bare / pg)
            ratio, floor = spread(ratios, 3), spread(floors, 3)
            by_concurrency[str(clients)] = {
                "handler_pairs_per_second": spread(measured, 1),
                "pgbench_pairs_per_second": spread(baseline, 1),
                "psycopg_alone_pairs_per_second": spread(alone, 1),
                "ratio": ratio,
                "psycopg_alone_ratio": floor,
            }
            report(
                f"lifecycle   c={clients}: handlers {spread(measured, 1)['median']:.0f} pairs/s,"
                f" pgbench {spread(baseline, 1)['median']:.0f}/s, ratio {ratio['median']:.2f}"
                f" (runs {', '.join(f'{r:.2f}' for r in ratios)}); psycopg alone"
                f" {spread(alone, 1)['median']:.0f}/s, ratio {floor['median']:.2f}"
                f" (runs {', '.join(f'{r:.2f}' for r in floors)})"
            )
    worst = min(c["ratio"]["median"] for c in by_concurrency.values())
    result = entry(
        f"connect + disconnect pairs through the warm handlers, {seconds:g} s per run,"
        f" {repeats} interleaved repeats per concurrency (1 and 2), against pgbench"
        " running the captured statements; psycopg alone sending them, connected as the"
        " driver connects, measured beside them as the floor of any client on psycopg",
        measured={c: v["handler_pairs_per_second"] for c, v in by_concurrency.items()}
        | {"round_trips_per_invocation": round_trips},
        baseline={c: v["pgbench_pairs_per_second"] for c, v in by_concurrency.items()}
        | {"pgbench_script": script_text}
        | {
            f"psycopg_alone_{c}": v["psycopg_alone_pairs_per_second"]
            for c, v in by_concurrency.items()
        },
        ratio=worst,
        goal=GOAL,
        notes="ratio is the lower of the two concurrencies' median ratios",
    )
    result["ratios_by_concurrency"] = {c: v["ratio"] for c, v in by_concurrency.items()}
    # What psycopg itself reaches against pgbench: no handler on it can pass this.
    result["psycopg_alone_ratios_by_concurrency"] = {
        c: v["psycopg_alone_ratio"] for c, v in by_concurrency.items()
    }
    disturbed = _disturbed(by_concurrency)
    if disturbed:
        unsettled(result, disturbed)
        report(f"lifecycle   unsettled: {disturbed}")
    result["spread_note"] = " ".join(
        f"c={c}: {v['ratio']['min']:.2f}-{v['ratio']['max']:.2f}"
        f" (psycopg alone {v['psycopg_alone_ratio']['median']:.2f})"
        for c, v in by_concurrency.items()
    )
    return {"lifecycle_throughput": result}


if __name__ == "__main__":
    if sys.argv[1] == "worker":
        worker(sys.argv[2], float(sys.argv[3]), sys.argv[4], int(sys.argv[5]))
    elif sys.argv[1] == "psycopg":
        psycopg_worker(sys.argv[2], float(sys.argv[3]), sys.argv[4], int(sys.argv[5]), sys.argv[6])
    elif sys.argv[1] == "capture":
        capture(sys.argv[2], sys.argv[3])
