"""The ``tether`` command: the operator's and developer's entry point.

This module is the user interface, so it writes results to stdout; everything
below it logs instead.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime

from functions.core import runtime
from functions.core.durations import describe_seconds, parse_duration
from functions.core.errors import TetherError
from functions.core.settings import Settings, load_settings

logger = logging.getLogger("tether")

Command = Callable[[argparse.Namespace], int]


def _say(text: str = "") -> None:
    sys.stdout.write(text + "\n")
    sys.stdout.flush()


def _database_url(args: argparse.Namespace) -> str:
    from functions.devtools.embedded import resolve_database_url  # noqa: PLC0415

    explicit: str | None = getattr(args, "database_url", None)
    return resolve_database_url(explicit)


def cmd_migrate(args: argparse.Namespace) -> int:
    from functions.devtools import migrate  # noqa: PLC0415

    url = _database_url(args)
    if args.status:
        state = migrate.status(url)
        for record in state.applied:
            applied_at = f"{record.applied_at:%Y-%m-%d %H:%M:%S%z}"
            _say(f"applied  {record.version}_{record.name}.sql  {applied_at}")
        for migration in state.pending:
            _say(f"pending  {migration.filename}")
        _say(f"{len(state.applied)} applied, {len(state.pending)} pending")
        return 0
    applied = migrate.migrate(url)
    for migration in applied:
        _say(f"applied  {migration.filename}")
    _say(f"{len(applied)} migration(s) applied" if applied else "database is up to date")
    return 0


def _sweep_settings(args: argparse.Namespace) -> Settings:
    overrides: dict[str, object] = {"database_url": _database_url(args)}
    endpoint = getattr(args, "endpoint_url", None)
    if endpoint:
        overrides["connections_endpoint"] = endpoint
    return load_settings(**overrides)


def cmd_sweep(args: argparse.Namespace) -> int:
    from functions.core.observability import emit_metric  # noqa: PLC0415
    from functions.core.sweeper import Sweep, SweepPolicy, emit_sweep_metrics  # noqa: PLC0415

    config = _sweep_settings(args)
    policy = SweepPolicy.from_settings(config)
    runtime.install(config)
    store = runtime.store()
    if args.dry_run:
        preview = store.sweep_preview(
            idle_seconds=policy.idle_limit_seconds,
            max_age_seconds=policy.max_age_seconds,
            silent_seconds=policy.suspect_after_seconds,
        )
        result = preview.model_dump()
        if args.json:
            _say(json.dumps(result))
        else:
            _say(f"would end {preview.past_max_age} past the age limit (max_duration)")
            _say(f"would end {preview.past_idle} past the idle limit (idle_timeout)")
            checked = (
                "would ask the gateway about"
                if config.connections_endpoint
                else "no gateway endpoint for"
            )
            _say(f"{checked} {preview.suspects} suspect(s)")
            _say(f"would announce {preview.unannounced} unannounced end(s)")
            _say("dry run: nothing was changed")
        return 0
    deadline = time.monotonic() + args.time_limit
    sweep = Sweep.configured(lambda: deadline - time.monotonic())
    try:
        report = sweep.run()
    except TetherError:
        emit_metric("SweepFailed")
        raise
    if args.metrics:
        emit_sweep_metrics(report)
    summary = report.as_dict()
    if args.json:
        _say(json.dumps(summary))
    else:
        ended_by = sorted(report.ended_by_reason.items())
        reasons = ", ".join(f"{count} {reason}" for reason, count in ended_by) or "none"
        _say(f"ended {report.ended} session(s): {reasons}")
        _say(f"checked {report.checked} suspect(s) with the gateway, refreshed {report.refreshed}")
        _say(
            f"announced {report.announced}, redelivered {report.redelivered},"
            f" failed {report.announce_failed}"
        )
        if report.health:
            health = report.health
            _say(f"{health.active_sessions} active, {health.orphaned_sessions} orphaned")
        if report.stopped_for_time:
            _say("stopped for time: run again to finish")
    return 0


def cmd_close_orphans(args: argparse.Namespace) -> int:
    from functions.core.announce import drain_outbox  # noqa: PLC0415

    older_than = parse_duration(args.older_than)
    config = _sweep_settings(args)
    runtime.install(config)
    store = runtime.store()
    summary = store.orphan_summary(older_than_seconds=older_than)
    if summary.orphans == 0:
        _say(f"no active session started more than {describe_seconds(older_than)} ago")
        return 0
    now = datetime.now(UTC)
    oldest = (
        describe_seconds((now - summary.oldest_start).total_seconds())
        if summary.oldest_start
        else "?"
    )
    newest = (
        describe_seconds((now - summary.newest_start).total_seconds())
        if summary.newest_start
        else "?"
    )
    _say(
        f"{summary.orphans} active session(s) started more than {describe_seconds(older_than)} ago"
        f" (oldest {oldest}, newest {newest})"
    )
    if not args.apply:
        _say("dry run: nothing was changed; add --apply to end them (reason orphan_cleanup)")
        return 0
    ended = 0
    while batch := store.close_orphans(
        older_than_seconds=older_than, limit=config.sweep_batch_size
    ):
        ended += batch
    # Their ends wait in the outbox; announce them now rather than at the next sweep.
    drained = drain_outbox(
        store,
        runtime.announcer(),
        batch_size=config.sweep_batch_size,
        lease_seconds=max(config.announce_lease_seconds, 1.0),
        time_left=lambda: True,
    )
    _say(f"ended {ended} session(s) with reason orphan_cleanup; announced {drained.announced}")
    if drained.failed:
        _say(f"{drained.failed} announcement(s) failed and stay queued for the sweep to redeliver")
    return 0


def cmd_dev(args: argparse.Namespace) -> int:
    from functions.devtools.dev import DevOptions, run  # noqa: PLC0415

    options = DevOptions(
        host=args.host,
        port=args.port,
        database_url=args.database_url,
        sweep_interval=args.sweep_interval,
        heartbeat_grace=args.heartbeat_grace,
        idle_timeout=args.idle_timeout,
        max_duration=args.max_duration,
        suspect_after=args.suspect_after,
        disconnect_loss=args.disconnect_loss,
        routes=args.route,
        route_selection=args.route_selection,
    )
    return run(options, _say)


def cmd_simulate(args: argparse.Namespace) -> int:
    import asyncio  # noqa: PLC0415

    from functions.devtools.simulate import simulate  # noqa: PLC0415

    report = asyncio.run(
        simulate(
            url=args.url,
            database_url=args.database_url,
            clients=args.clients,
            duration=args.duration,
            drop_rate=args.drop_rate,
            heartbeat=args.heartbeat,
            settle=args.settle,
            token=args.token,
            progress=not args.json and sys.stderr.isatty(),
        )
    )
    if args.json:
        _say(json.dumps(report.as_dict()))
        return 0
    latency = report.detection_latency_s
    _say(
        f"clients {report.clients}: connected {report.connected},"
        f" dropped {report.dropped}, failed {report.failed}"
    )
    _say(f"sessions opened {report.opened}")
    for reason, count in report.ended_by_reason.items():
        _say(f"  ended {reason}: {count}")
    _say(f"still active {report.active}, orphaned {report.orphaned}")
    _say(
        f"detection latency p50 {latency['p50']} s, p95 {latency['p95']} s, max {latency['max']} s"
    )
    for error in report.errors:
        _say(f"  client error: {error}")
    return 0


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number of seconds: {text!r}") from None
    if not value >= 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"seconds must be a finite number >= 0, got {text!r}")
    return value


def _fraction(text: str) -> float:
    value = _seconds(text)
    if value > 1:
        raise argparse.ArgumentTypeError(f"a fraction between 0 and 1, got {text!r}")
    return value


def _port(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a port: {text!r}") from None
    if not 0 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"a port between 0 and 65535, got {text!r}")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="tether", description="Keep the session table of a serverless WebSocket app true."
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="log at debug level")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    db_help = (
        "Postgres URL (default: $TETHER_DATABASE_URL, $DATABASE_URL, else the embedded server)"
    )

    migrate_cmd = commands.add_parser("migrate", help="apply pending migrations")
    migrate_cmd.add_argument("--database-url", help=db_help)
    migrate_cmd.add_argument(
        "--status", action="store_true", help="list applied and pending migrations, change nothing"
    )
    migrate_cmd.set_defaults(handler=cmd_migrate)

    sweep_cmd = commands.add_parser("sweep", help="end every session whose connection is gone")
    sweep_cmd.add_argument("--database-url", help=db_help)
    sweep_cmd.add_argument(
        "--endpoint-url",
        help="the @connections endpoint for suspects (default: $TETHER_CONNECTIONS_ENDPOINT)",
    )
    sweep_cmd.add_argument("--dry-run", action="store_true", help="report what a run would do")
    sweep_cmd.add_argument(
        "--time-limit", type=float, default=300.0, help="seconds before no new batch is taken"
    )
    sweep_cmd.add_argument("--json", action="store_true", help="print the report as JSON")
    sweep_cmd.add_argument("--metrics", action="store_true", help="also print EMF metric lines")
    sweep_cmd.set_defaults(handler=cmd_sweep)

    orphans_cmd = commands.add_parser(
        "close-orphans", help="one-off clean-up of sessions left active by an older system"
    )
    orphans_cmd.add_argument(
        "--older-than", required=True, help="age of the sessions to end, such as 2h or 1d"
    )
    orphans_cmd.add_argument("--apply", action="store_true", help="end them (default: dry run)")
    orphans_cmd.add_argument("--database-url", help=db_help)
    orphans_cmd.set_defaults(handler=cmd_close_orphans)

    dev_cmd = commands.add_parser("dev", help="run the whole system on this machine")
    dev_cmd.add_argument("--host", default="127.0.0.1")
    dev_cmd.add_argument("--port", type=_port, default=3001)
    dev_cmd.add_argument("--database-url", help=db_help)
    dev_cmd.add_argument("--sweep-interval", type=_seconds, default=60.0, metavar="S")
    dev_cmd.add_argument(
        "--heartbeat-grace",
        type=_seconds,
        default=None,
        metavar="S",
        help="require a sign of life this often (default: not required)",
    )
    dev_cmd.add_argument("--idle-timeout", type=_seconds, default=600.0, metavar="S")
    dev_cmd.add_argument("--max-duration", type=_seconds, default=7200.0, metavar="S")
    dev_cmd.add_argument(
        "--suspect-after",
        type=_seconds,
        default=None,
        metavar="S",
        help="ask the gateway about sessions silent this long (default 120)",
    )
    dev_cmd.add_argument(
        "--disconnect-loss",
        type=_fraction,
        default=0.0,
        metavar="P",
        help="fraction of dropped connections whose $disconnect never comes, as on AWS",
    )
    dev_cmd.add_argument(
        "--route",
        action="append",
        default=[],
        metavar="NAME=module:function",
        help="an application route, selected on $request.body.action",
    )
    dev_cmd.add_argument(
        "--route-selection",
        default="$request.body.action",
        metavar="EXPRESSION",
        help="the API's route selection expression (default: $request.body.action)",
    )
    dev_cmd.set_defaults(handler=cmd_dev)

    sim_cmd = commands.add_parser("simulate", help="drive real WebSocket clients at a gateway")
    sim_cmd.add_argument("--url", required=True, help="ws:// or wss:// URL of the gateway")
    sim_cmd.add_argument("--database-url", required=True, help="the session table to check")
    sim_cmd.add_argument("--clients", type=int, default=20)
    sim_cmd.add_argument("--duration", type=_seconds, default=10.0, metavar="S")
    sim_cmd.add_argument("--drop-rate", type=_fraction, default=0.0, metavar="P")
    sim_cmd.add_argument("--heartbeat", type=_seconds, default=0.0, metavar="S")
    sim_cmd.add_argument("--settle", type=_seconds, default=10.0, metavar="S")
    sim_cmd.add_argument("--token", help="access token each client presents")
    sim_cmd.add_argument("--json", action="store_true", help="print the report as one JSON object")
    sim_cmd.set_defaults(handler=cmd_simulate)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.WARNING,
        format="%(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    handler: Command = args.handler
    if args.command != "dev":
        from functions.core.observability import logs_to_stderr  # noqa: PLC0415

        logs_to_stderr()
    try:
        return handler(args)
    except TetherError as exc:
        sys.stderr.write(f"tether {args.command}: {exc}\n")
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
