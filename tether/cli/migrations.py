"""``tether migrate`` and ``tether migrations``: the schema, for any Postgres."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tether import dburl, migrate, row_security
from tether.cli.common import (
    add_database_options,
    add_lock_options,
    database_url,
    folder,
    lock_policy,
    say,
    say_aside,
    say_json,
)
from tether.errors import Interrupted, TetherError

if TYPE_CHECKING:
    from collections.abc import Callable


# Every pending file runs in one transaction: an interrupted run is rolled back whole.
NOTHING_APPLIED = "nothing of this run was applied (it is one transaction): run it again"


def cmd_migrate(args: argparse.Namespace) -> int:
    url = database_url(args)
    if args.status:
        return _status(args, url)
    try:
        done = migrate.apply_pending(
            url,
            lock=lock_policy(args),
            progress=say_aside,
            again=(
                "run `tether migrate` again when the table is quieter, or let it wait"
                " longer (--lock-timeout, --attempts)"
            ),
        )
    except KeyboardInterrupt:
        raise Interrupted(NOTHING_APPLIED) from None
    try:
        # Up to date is not working: row level security a table forces after migrating
        # refuses every session tether's functions open. Said as a failure (exit 1), so
        # a deploy that migrates first stops there instead of shipping functions that
        # cannot open a session; what was applied stays applied.
        problems = row_security.problems_at(dburl.check(url))
    except TetherError:
        say_done(done, say_aside)  # a failure prints nothing on stdout
        raise
    except KeyboardInterrupt:
        say_done(done, say_aside)
        raise Interrupted(
            "the migrations said above stay applied" if done else "nothing was applied"
        ) from None
    if problems:
        # A failure prints nothing on stdout, --json or not: stderr says what was done.
        say_done(done, say_aside)
        for problem in problems:
            say_aside(f"tether migrate: {problem}")
        return 1
    if args.json:
        say_json(
            {
                "applied_now": [migration.filename for migration, _ in done],
                # What supabase db push had already applied was recorded, not run.
                "recorded_from_supabase": [m.filename for m, pushed in done if pushed],
                "problems": problems,  # none: with any, it failed above
            }
        )
    else:
        say_done(done, say)
    return 0


def say_done(done: list[tuple[migrate.Migration, str | None]], to: Callable[[str], None]) -> None:
    """The migrations this run applied or recorded, and how the database stands."""
    for migration, pushed in done:
        if pushed:
            to(f"recorded {migration.filename}  (applied by supabase db push: {pushed})")
        else:
            to(f"applied  {migration.filename}")
    recorded = sum(1 for _, pushed in done if pushed)
    ran = len(done) - recorded
    # Those db push had applied were not run again: not counted as applied now.
    said = [f"{ran} migration(s) applied"] if ran or not recorded else []
    if recorded:
        said.append(f"{recorded} recorded as applied by supabase db push")
    to(", ".join(said) if done else "database is up to date")


def _status(args: argparse.Namespace, url: str) -> int:
    state = migrate.status(url)
    # What makes migrate fail once it has migrated (row level security refusing
    # tether's functions), as migrate says it: asked of a function of tether's, once it
    # is there and this role may call it (None: not asked).
    problems = row_security.problems_if_askable(dburl.check(url))
    if args.json:
        say_json(
            {
                "applied": [
                    {**record.__dict__, "applied_at": record.applied_at.isoformat()}
                    for record in state.applied
                ],
                "pending": [m.filename for m in state.pending],
                "applied_by_supabase": state.applied_by_supabase,
                "refused": state.refused,
                "problems": problems,
            }
        )
        return 0
    for record in state.applied:
        if record.recorded_from == migrate.ADOPTED:
            source = "  (an existing table taken over by tether adopt)"
        elif record.recorded_from:
            source = f"  (by supabase db push: {record.recorded_from})"
        else:
            source = ""
        say(
            f"applied  {record.version}_{record.name}.sql"
            f"  {record.applied_at:%Y-%m-%d %H:%M:%S%z}{source}"
        )
    for pending in state.pending:
        pushed = state.applied_by_supabase.get(pending.version)
        note = f"  (applied by supabase db push as {pushed}: will be recorded)" if pushed else ""
        say(f"pending  {pending.filename}{note}")
    say(f"{len(state.applied)} applied, {len(state.pending)} pending")
    for reason in state.refused:
        say(f"migrate would refuse: {reason}")
    for problem in problems or []:
        say(f"migrate would fail: {problem}")
    if problems is None and not state.pending:
        say(
            "row level security not judged: this role may not ask; the role that applied"
            " the migrations may"
        )
    return 0


def cmd_path(args: argparse.Namespace) -> int:
    say(str(migrate.migrations_path()))
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    written = migrate.export(Path(args.to), version_prefix=args.version_prefix)
    for path in written:
        say(f"wrote    {path}")
    if written:
        say(f"{len(written)} file(s) written; apply them with `supabase db push`")
    else:
        say(f"{args.to} already holds every tether migration")
    return 0


def register(commands: Any, common: argparse.ArgumentParser) -> None:
    migrate_cmd = commands.add_parser(
        "migrate",
        parents=[common],
        help="apply pending migrations (all in one transaction)",
        description="Apply tether's pending migrations, all in one transaction. Exits 1"
        " when they cannot be applied, and also when, applied, tether's functions would"
        " still be refused (row level security a table forces on their role): it says the"
        " statement that mends it.",
    )
    add_database_options(migrate_cmd)
    migrate_cmd.add_argument(
        "--status",
        action="store_true",
        help="list applied and pending migrations, and what would stop or fail migrate;"
        " change nothing",
    )
    migrate_cmd.add_argument("--json", action="store_true", help="print the outcome as JSON")
    add_lock_options(migrate_cmd)
    migrate_cmd.set_defaults(handler=cmd_migrate)

    group = commands.add_parser(
        "migrations", parents=[common], help="where tether's SQL is, or a copy for supabase/"
    )
    actions = group.add_subparsers(dest="action", required=True, metavar="ACTION")
    path_cmd = actions.add_parser(
        "path", parents=[common], help="print the folder of the installed migrations"
    )
    path_cmd.set_defaults(handler=cmd_path)
    export_cmd = actions.add_parser(
        "export",
        parents=[common],
        help="write tether's migrations into your supabase/migrations for `supabase db push`",
    )
    export_cmd.add_argument(
        "--to", required=True, type=folder, metavar="DIR", help="e.g. supabase/migrations"
    )
    export_cmd.add_argument(
        "--version-prefix",
        metavar="YYYYMMDDHHMMSS",
        help="version of the first file (default: now, or just after the folder's latest)",
    )
    export_cmd.set_defaults(handler=cmd_export)
