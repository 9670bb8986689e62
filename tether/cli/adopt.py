"""``tether adopt``: take over a conversation_sessions table tether did not create."""

from __future__ import annotations

import argparse
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from tether.cli.common import (
    add_database_options,
    add_lock_options,
    confirm,
    count,
    database_url,
    declined,
    lock_policy,
    say,
    say_aside,
    say_json,
)
from tether.durations import describe_seconds, estimate
from tether.errors import InvalidInputError

if TYPE_CHECKING:
    from tether.adopt.inspect import Report
    from tether.adopt.plan import Step


# tether.adopt's names (not imported here: it would load psycopg for every command).
FUNCTION_SOURCE = "function source"
"""tether.adopt.catalog.FUNCTION_SOURCE"""
SYNC_TRIGGER = "zz_tether_adoption_sync"
"""tether.adopt.catalog.SYNC_TRIGGER"""
FINISHED = "adopted and finished"
"""tether.adopt.inspect.FINISHED"""
COLUMN_PRIVILEGE = "column privilege"
"""tether.adopt.catalog.COLUMN_PRIVILEGE"""


def _ago(moment: datetime | None) -> str:
    if moment is None:
        return "?"
    return describe_seconds((datetime.now(UTC) - moment).total_seconds())


def _counted(number: int, one: str, more: str | None = None) -> str:
    """A count and the words that agree with it: 1 row, 2 rows; 1 is an orphan, 2 are
    orphans."""
    return f"{number} {one if number == 1 else more or one + 's'}"


def _steps(steps: list[Step]) -> None:
    width = max(len(step.name) for step in steps)
    for number, step in enumerate(steps, 1):
        mark = "done" if step.done else estimate(step.estimate_seconds)
        stops = "writes wait while it is held" if step.blocks_writes else "writes go on"
        say(f"  {number:>2}. {step.name:<{width}}  [{mark}] {step.lock}; {stops}")
        say(f"      {step.does}")
        if step.holds != "-":
            say(f"      held: {step.holds}")


def _numbers(report: Report, not_adopted: bool) -> None:
    if not report.counted:
        say(
            f"  {report.bytes / 2**20:.1f} MB; its rows are not read by the rules while"
            " something is refused (below): the counts come once it is dealt with"
        )
        return
    say(
        f"  {_counted(report.rows, 'row')} ({report.bytes / 2**20:.1f} MB);"
        f" as the table says, {report.marked_active} with is_active = true"
    )
    orphans = sum(report.orphans.values())
    buckets = ", ".join(f"{name}: {n}" for name, n in report.orphans.items() if n)
    say(
        f"  as tether reads them: {report.active} active, of which {report.live} started within"
        f" 2 hours and {_counted(orphans, 'is an orphan', 'are orphans')}"
        + (f" ({buckets})" if buckets else "")
    )
    if report.oldest_active_start:
        say(f"  the oldest active session started {_ago(report.oldest_active_start)} ago")
    # The rows the backfill has read are written as tether reads them already: what
    # follows counts only those it has still to read, and says so when that is not all.
    partly_read = report.unread < report.rows
    of_unread = f" of the {_counted(report.unread, 'row')} still to read" if partly_read else ""
    if report.unread or not_adopted:
        indent = "  "
        if partly_read:
            say(
                f"  the backfill has read {report.rows - report.unread} of the"
                f" {_counted(report.rows, 'row')}, written as tether reads them; of the"
                f" {report.unread} it has still to read:"
            )
            indent = "    "
        say(
            f"{indent}ended: {report.ended_unrecorded} at the time recorded (reason unrecorded),"
            f" {report.ended_unknown} at an unknown time (end_unknown, recorded at their start)"
        )
        say(
            f"{indent}{_counted(report.corrected, 'row has', 'rows have')} recorded values that"
            " change; their originals are kept in tether.adoption_corrections"
        )
    if report.kinds:
        say("")
        say(f"inconsistencies{of_unread} (rows; a few session_ids; the rule):")
        for kind in report.kinds:
            say(f"  {kind.kind}: {kind.rows}  {' '.join(kind.examples)}")
            say(f"      {kind.rule}")


def _shape(report: Report) -> None:
    say("")
    say("columns:")
    if report.columns_added:
        say(f"  added: {', '.join(report.columns_added)}")
    for line in report.columns_converted:
        say(f"  changed: {line}")
    say(f"  kept as they are: {', '.join(report.columns_kept) or 'none'}")
    if report.views or report.policies or report.triggers or report.dependents:
        _built_on(report)
    for title, lines in (
        ("refused (what stops --apply)", report.refusals),
        ("what would stop --finish", report.finish_refusals),
        ("to know", report.warnings),
    ):
        if lines:
            say("")
            say(f"{title}:")
            for line in lines:
                say(f"  - {line}")


def _built_on(report: Report) -> None:
    say("")
    say("built on the table:")
    if report.views:
        say(f"  views reading it: {', '.join(report.views)}")
    if report.policies:
        say(f"  policies: {', '.join(report.policies)}")
    if report.triggers:
        say(f"  triggers of yours: {', '.join(report.triggers)}")
        if report.state != FINISHED:
            say(
                f"      Postgres fires BEFORE row triggers in name order: tether's {SYNC_TRIGGER}"
                " must come last, for is_active, duration_seconds and ended_at to follow"
                " session_end (one of yours named after it is refused below)"
            )
    for dependent in report.dependents:
        kind, name = dependent["kind"], dependent["name"]
        uses = ", ".join(dependent["columns"])
        if kind == FUNCTION_SOURCE:
            say(f"  function {name}: its source mentions {uses}")
        else:
            say(f"  {kind} {name} uses {uses}")


def _report(report: Report) -> None:
    from tether.adopt import inspect  # noqa: PLC0415

    say(f"{report.table}: {report.state}")
    if report.state == inspect.ABSENT:
        # Both, when both are there (as --json lists them): either may be the team's.
        if report.elsewhere:
            say(inspect.found_elsewhere(report.elsewhere))
        if report.similar:
            say(inspect.found_similar(report.similar))
        if not (report.elsewhere or report.similar):
            say("there is no table to adopt: `tether migrate` creates tether's own")
        return
    if report.state == inspect.TETHERS_OWN:
        say("tether's migrations created this table: there is nothing to adopt")
        return
    _numbers(report, report.state == inspect.NOT_ADOPTED)
    _shape(report)
    if report.steps:
        say("")
        say("the steps of --apply (lock; held; estimated time on this server):")
        _steps(report.steps)
    if report.finish:
        say("then, once the old writers are gone, --finish:")
        _steps([report.finish])
    say("")
    if report.refusals:
        say("nothing can be applied until what is refused above is dealt with")
    elif report.state in (inspect.NOT_ADOPTED, inspect.IN_PROGRESS):
        say("next: tether adopt --apply")
    elif report.state == inspect.TRANSITIONAL:
        say("next: move every writer to tether's functions, then tether adopt --finish")
    say("this was a check: nothing was changed")


DEFAULT_BATCH_SIZE = 5000


def _batch_size(text: str) -> int:
    value = count(text)
    if value > 100_000:
        raise argparse.ArgumentTypeError(f"at most 100000 rows, got {text!r}")
    return value


def cmd_adopt(args: argparse.Namespace) -> int:
    from tether.adopt.inspect import inspect  # noqa: PLC0415

    if args.batch_size is None:
        args.batch_size = DEFAULT_BATCH_SIZE
    elif args.finish:
        # Taken and ignored, it read as if the rewrite's lock could be cut into batches.
        raise InvalidInputError(
            "--batch-size: --finish rewrites the table in one statement, not in batches:"
            " leave it out"
        )
    if args.check:
        # Taken and ignored, they read as if --check took a lock or asked before a change.
        for flag, given in (("--yes", args.yes), ("--attempts", args.attempts is not None)):
            if given:
                raise InvalidInputError(
                    f"{flag}: --check changes nothing and takes no lock: leave it out"
                )
    url = database_url(args)
    if args.check:
        try:
            report = inspect(url, batch_size=args.batch_size, lock_timeout=args.lock_timeout)
        except KeyboardInterrupt:
            say_aside(_INTERRUPTED_READING)
            raise
        if args.json:
            say_json(report.as_dict())
        else:
            _report(report)
        return 0
    if args.apply:
        return _apply(args, url)
    return _finish(args, url)


def _apply(args: argparse.Namespace, url: str) -> int:
    from tether.adopt import inspect as inspection  # noqa: PLC0415
    from tether.adopt.apply import ApplyResult, apply  # noqa: PLC0415
    from tether.errors import AdoptionError  # noqa: PLC0415

    # With --json, stdout is the outcome alone: the steps are told beside it.
    tell = say_aside if args.json else say
    try:
        report = inspection.inspect(url, batch_size=args.batch_size, lock_timeout=args.lock_timeout)
    except KeyboardInterrupt:
        say_aside(_INTERRUPTED_READING)
        raise
    nothing = inspection.nothing_to_adopt(report.state, report.elsewhere, report.similar)
    if nothing:
        raise AdoptionError(nothing)
    if report.state == inspection.FINISHED:
        tell(f"{report.table}: {report.state}; --apply has nothing left to do")
        if args.json:
            say_json(ApplyResult().as_dict())
        return 0
    left = [step for step in report.steps if not step.done]
    if report.state == inspection.TRANSITIONAL and not left:
        # Run all the same: it brings the transition's trigger up to this version.
        again = apply(url, batch_size=args.batch_size, lock=lock_policy(args), progress=tell)
        tell(f"{report.table}: {report.state}; --apply has nothing left to do")
        if args.json:
            say_json(again.as_dict())
        return 0
    if report.refusals:
        raise AdoptionError("cannot adopt:\n  - " + "\n  - ".join(report.refusals))
    tell(
        f"{report.table}: {_counted(report.rows, 'row')}; {len(left)} step(s) to run, none stopping"
        f" writes for more than {args.lock_timeout:g}s at a time (`tether adopt --check`"
        " shows each)"
    )
    if not confirm("adopt public.conversation_sessions in place?", assume_yes=args.yes):
        return declined()
    try:
        result = apply(url, batch_size=args.batch_size, lock=lock_policy(args), progress=tell)
    except KeyboardInterrupt:
        say_aside(_INTERRUPTED)
        raise
    if args.json:
        say_json(result.as_dict())
        return 0
    # A run that resumed one that stopped read only the rows left to it.
    resumed = " (this run, which resumed an earlier one)" if result.skipped else ""
    say(
        f"adopted: {result.rows_read} row(s) read by the rules{resumed}; tether's functions,"
        " the sweep and close-orphans work on the table, and the old server's writes are kept"
        " in step"
    )
    if result.supabase_ledger:
        say(
            "`supabase db push` keeps a ledger here too, and it does not know what --apply"
            " applied: if tether's files are exported into your supabase/migrations, mark"
            " those `supabase migration list` shows unapplied with `supabase migration repair"
            " --status applied VERSION ...`, so that later pushes carry only your own files"
        )
    say(
        "next: move every writer to tether's functions (and end the old server's orphans with"
        " `tether close-orphans`), then `tether adopt --finish`"
    )
    return 0


# The interruptions main() leaves to the command to tell: each says what became of the
# table, none passes in silence.
_INTERRUPTED_READING = "tether adopt: interrupted while reading the table: nothing was changed"


_INTERRUPTED = (
    "tether adopt: interrupted: what the step under way had done is kept or rolled back"
    " whole (a backfill keeps the batches it recorded); run `tether adopt --apply` again"
    " to resume from there"
)


_FINISH_INTERRUPTED = (
    "tether adopt: interrupted: --finish is one transaction, kept or rolled back whole;"
    " run `tether adopt --finish` again: it finishes the table, or says it is finished already"
)


def _finish(args: argparse.Namespace, url: str) -> int:
    from tether.adopt import inspect as inspection  # noqa: PLC0415
    from tether.adopt.finish import finish, plan_finish  # noqa: PLC0415
    from tether.errors import AdoptionError  # noqa: PLC0415

    tell = say_aside if args.json else say
    try:
        planned = plan_finish(url)
    except KeyboardInterrupt:
        say_aside(_INTERRUPTED_READING)
        raise
    if planned.state == inspection.FINISHED:
        tell("public.conversation_sessions: adopted and finished; nothing left to do")
        if args.json:
            say_json({"lock_held_seconds": 0.0, "recreated": []})
        return 0
    if planned.refusals or planned.step is None:
        raise AdoptionError("cannot finish:\n  - " + "\n  - ".join(planned.refusals))
    step = planned.step
    tell(f"--finish: {step.does}")
    tell(
        f"  lock: {step.lock} on public.conversation_sessions for the whole rewrite,"
        f" estimated at {estimate(step.estimate_seconds)} on this server: every read and write"
        " of the table (each $connect, $disconnect and heartbeat) waits that long"
    )
    if planned.recreated:
        # A privilege is named by its grant alone: the column says which one it is.
        names = ", ".join(
            f"{d['kind']} {d['name']}"
            + (f" on {', '.join(d['columns'])}" if d["kind"] == COLUMN_PRIVILEGE else "")
            for d in planned.recreated
        )
        tell(f"  dropped and created again in the same transaction: {names}")
    if planned.legacy_active:
        tell(
            f"  {_counted(planned.legacy_active, 'session', 'sessions')} the old server opened"
            f" {'is' if planned.legacy_active == 1 else 'are'} still active (the"
            f" newest started {_ago(planned.newest_legacy_start)} ago). After --finish the old"
            " server's writes fail: is_active and duration_seconds become generated"
        )
    if not confirm("rewrite the table now?", assume_yes=args.yes):
        return declined()
    try:
        result = finish(url, lock=lock_policy(args), progress=tell)
    except KeyboardInterrupt:
        say_aside(_FINISH_INTERRUPTED)
        raise
    if args.json:
        say_json({"lock_held_seconds": result.lock_held_seconds, "recreated": result.recreated})
        return 0
    say(
        f"finished: the table has its final shape; it was locked for"
        f" {result.lock_held_seconds:.2f}s"
    )
    return 0


def register(commands: Any, common: argparse.ArgumentParser) -> None:
    adopt_cmd = commands.add_parser(
        "adopt",
        parents=[common],
        help="take over an existing conversation_sessions table in place",
        description=(
            "Take over a conversation_sessions table tether did not create, keeping its rows:"
            " --check reports (read-only), --apply adopts it without stopping its writers,"
            " --finish gives it its final shape once the old writers are gone."
        ),
    )
    action = adopt_cmd.add_mutually_exclusive_group(required=True)
    action.add_argument("--check", action="store_true", help="report; change nothing")
    action.add_argument("--apply", action="store_true", help="adopt the table in place")
    action.add_argument(
        "--finish", action="store_true", help="generated columns (rewrites the table)"
    )
    adopt_cmd.add_argument("--yes", action="store_true", help="do not ask before changing")
    adopt_cmd.add_argument("--json", action="store_true", help="print the outcome as JSON")
    adopt_cmd.add_argument(
        "--batch-size",
        type=_batch_size,
        metavar="N",
        help=f"rows per backfill transaction, --check and --apply (default {DEFAULT_BATCH_SIZE})",
    )
    add_lock_options(adopt_cmd)
    add_database_options(adopt_cmd)
    adopt_cmd.set_defaults(handler=cmd_adopt)
