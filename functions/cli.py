"""The ``tether`` command: the operator's and developer's entry point.

This module is the user interface, so it writes results to stdout; everything
below it logs instead.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Callable, Sequence

from functions.core.errors import TetherError

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


def cmd_dev(args: argparse.Namespace) -> int:
    _say("tether dev: the local runtime is not built yet (see the open issue).")
    _say("Meanwhile: `tether migrate` prepares the embedded Postgres, `make test` runs the suite.")
    return 0


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

    dev_cmd = commands.add_parser("dev", help="run the whole system on this machine")
    dev_cmd.set_defaults(handler=cmd_dev)
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
    try:
        return handler(args)
    except TetherError as exc:
        sys.stderr.write(f"tether {args.command}: {exc}\n")
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
