"""``tether sweep`` and ``tether close-orphans``: ending sessions from the command line."""

from __future__ import annotations

import argparse
import contextlib
import sys
import time
from collections import Counter
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from tether import limits
from tether.cli.common import (
    RUN_MAX_SECONDS,
    add_announce_option,
    add_database_options,
    age,
    confirm,
    declined,
    embedded_endpoint_missing,
    endpoint,
    installed_settings,
    run_length,
    say,
    say_aside,
    say_json,
    say_unannounced,
)
from tether.durations import describe_seconds, format_duration
from tether.errors import InvalidInputError, PartlyDoneError, TetherError

if TYPE_CHECKING:
    from uuid import UUID

    from tether.models import EndReason
    from tether.outbox import DrainResult
    from tether.store import SessionStore
    from tether.sweep import SweepPolicy, SweepReport
    from tether.sweep_and_admin_models import OrphanSummary


# --time-limit left out; None there tells it from a limit given, which --dry-run refuses.
SWEEP_TIME_LIMIT_SECONDS = 300.0


def cmd_sweep(args: argparse.Namespace) -> int:
    from tether import runtime  # noqa: PLC0415 - the command line starts without pydantic
    from tether.handlers.sweep import run_sweep  # noqa: PLC0415
    from tether.sweep import SweepPolicy, SweepReport  # noqa: PLC0415

    running = [
        flag
        for flag, on in (
            ("--time-limit", args.time_limit is not None),
            ("--keep-checking", args.keep_checking),
            ("--metrics", args.metrics),
        )
        if on
    ]
    if args.dry_run and running:
        raise InvalidInputError(
            f"--dry-run counts once and runs nothing: it takes no {' and '.join(running)}"
        )
    config = installed_settings(args)
    if args.dry_run:
        policy = SweepPolicy.from_settings(config)
        preview = runtime.store().sweep_preview(
            idle_seconds=policy.idle_limit_seconds,
            max_age_seconds=policy.max_age_seconds,
            silent_seconds=policy.suspect_after_seconds,
        )
        if args.json:
            say_json(preview.model_dump())
            return 0
        say(f"would end {preview.past_max_age} past the age limit (max_duration)")
        say(f"would end {preview.past_idle} past the idle limit (idle_timeout)")
        say(
            f"would end {preview.intended} with the reason their end intent gave"
            " (a sweep closed their connections)"
        )
        asked = "would ask the gateway about" if config.connections_endpoint else "no gateway for"
        say(f"{asked} {preview.suspects} suspect(s)")
        say(f"would announce {preview.unannounced} unannounced end(s)")
        if preview.unannounced_held:
            say(
                f"{preview.unannounced_held} more end(s) held for whoever is announcing them"
                " (a $disconnect, a kick, a run) until their lease ends: not this run's"
            )
        say("dry run: nothing was changed")
        return 0
    if not config.connections_endpoint:
        # With --embedded and no dev serving its database, the flag and setting alone
        # would not say why: the endpoint --embedded takes is the running dev's.
        missing = embedded_endpoint_missing(args)
        sys.stderr.write(
            f"tether sweep: no @connections endpoint ({missing}{'else ' if missing else ''}"
            "--endpoint-url or TETHER_CONNECTIONS_ENDPOINT): silent sessions are not asked"
            " about, only the idle and age limits end sessions\n"
        )
    # The limit is when batches stop being taken: the run's margin (kept on Lambda for
    # the invocation's end) is added back, or a limit under it would take none.
    time_limit = SWEEP_TIME_LIMIT_SECONDS if args.time_limit is None else args.time_limit
    deadline = time.monotonic() + time_limit + config.sweep_time_margin_seconds
    # With --json, stdout is the report alone: the metric lines go to stderr.
    metrics_to = sys.stderr if args.json else sys.stdout
    so_far = SweepReport()
    with contextlib.redirect_stdout(metrics_to):
        try:
            report = run_sweep(
                lambda: deadline - time.monotonic(),
                metrics=args.metrics,
                keep_checking=args.keep_checking,
                report=so_far,
            )
        except InvalidInputError as exc:
            # The database refusing a row mid-run (a constraint of the table's), not
            # this command's flags, read before. Refused before the run did anything,
            # a refusal stays one, as close-orphans' first batch does.
            if not so_far.ended_closed_or_announced:
                raise InvalidInputError(
                    f"{exc}; nothing was done: no session was ended, no connection closed,"
                    " nothing announced"
                ) from exc
            # What the run had done is kept.
            raise PartlyDoneError(
                f"stopped part way: {exc}; what the run had done is kept (the line"
                " 'sweep failed; what it did is kept' above counts it)"
            ) from exc
    if args.json:
        say_json(report.as_dict())
    else:
        _say_report(report)
    unchecked = _unchecked(report)
    unannounced = _unannounced(report)
    return 1 if unchecked or unannounced else 0


def _unannounced(report: SweepReport) -> bool:
    """Whether ends the run could not announce stay queued. Their sessions are ended,
    but whoever waits for SessionEnded has not heard of them, and a bus that refuses
    once (no such bus, no permission) refuses every run: a script must see that, as it
    sees a suspect left unchecked. With --keep-checking, what a later check announced
    is not counted."""
    failed = len(report.failed_still_queued)
    if not failed:
        return False
    say_unannounced("sweep", failed, report.announce_error)
    return True


def _unchecked(report: SweepReport) -> bool:
    """Whether suspects were left unchecked. One the gateway could not be asked about
    stays active, as live as ever to its readers: a script must see that, as it sees a
    kick the gateway could not be told of (the report above says what was done). With
    --keep-checking, what an earlier check could not ask the next asked again."""
    if not report.unchecked:
        return False
    failed = report.unchecked - report.unchecked_for_time
    why = []
    if failed:
        why.append(f"{failed} call(s) to the gateway failed")
    if report.unchecked_for_time:
        why.append(
            f"{report.unchecked_for_time} suspect(s) were left unasked or unclosed for want of"
            " the check's time (their calls never started)"
        )
    advice = "check the @connections endpoint and " if failed else ""
    sys.stderr.write(
        f"tether sweep: {' and '.join(why)}, so some suspects were not checked and their"
        f" sessions stay active; {advice}run the sweep again\n"
    )
    return True


def _say_report(report: SweepReport) -> None:
    """A run's report in words."""
    ended_by = sorted(report.ended_by_reason.items())
    reasons = ", ".join(f"{count} {reason}" for reason, count in ended_by) or "none"
    say(f"ended {report.ended} session(s): {reasons}")
    say(f"checked {report.checked} suspect(s) with the gateway, refreshed {report.refreshed}")
    if report.closed_silent:
        say(
            f"closed {report.closed_silent} silent connection(s) at the gateway"
            " (heartbeat_timeout; an end their $disconnect recorded first is not counted above)"
        )
    left_for_time = report.left_unasked + report.left_unclosed
    failed = report.gateway_errors + report.bugs + left_for_time
    if not report.unchecked:
        left = "a later check asked again about those suspects"
    elif report.unchecked >= failed:
        left = "those suspects were not checked"
    else:
        # --keep-checking: each check asks again about what the one before could not.
        left = (
            f"the {report.unchecked} of its last check left their suspects unchecked;"
            " a later check asked again about the others"
        )
    if report.gateway_errors:
        say(f"{report.gateway_errors} call(s) to the gateway failed: {left}")
    if report.bugs:
        say(
            f"{report.bugs} call(s) to the gateway raised an unexpected error (a bug: its"
            f" traceback is in the log): {left}"
        )
    if left_for_time:
        say(f"{_left_for_time(report)}: {left}")
    _say_announcements(report)
    if report.failed_checks:
        say(f"{report.failed_checks} check(s) cut short: the database was unavailable")
    if report.health:
        health = report.health
        say(f"{health.active_sessions} active, {health.orphaned_sessions} orphaned")
    if report.stopped_for_time:
        say("stopped for time: run again to finish")


def _say_announcements(report: SweepReport) -> None:
    say(f"announced {report.announced}, redelivered {report.redelivered}")
    if report.announce_failed:
        why = report.announce_error or "refused by EventBridge"
        queued = len(report.failed_still_queued)
        if queued == report.announce_failed:
            say(
                f"{report.announce_failed} announcement(s) failed and stay queued for the next"
                f" sweep: {why}"
            )
        else:
            # --keep-checking: each check tries a queued end again, so the failures count
            # tries, not ends; a later check may have announced some.
            later = report.failed_then_announced
            tail = f"{queued} end(s) stay queued for the next sweep"
            if later:
                tail = f"a later check announced {later} end(s), {tail}"
            say(f"{report.announce_failed} announcement(s) failed: {why}; {tail}")
    if report.announced_unrecorded:
        say(
            f"{report.announced_unrecorded} announcement(s) went out but could not be recorded"
            " (the database went away): they will be announced again"
        )


def _left_for_time(report: SweepReport) -> str:
    """Not failures: the questions had had their share of the check's time (the deletes
    have the rest), or the time was over, before these calls started."""
    what = []
    if report.left_unasked:
        what.append(f"{report.left_unasked} suspect(s) left unasked")
    if report.left_unclosed:
        what.append(f"{report.left_unclosed} silent connection(s) left unclosed")
    return (
        f"{' and '.join(what)} for want of the check's time (their calls never started;"
        " none failed)"
    )


def _ago(moment: datetime | None, now: datetime) -> str:
    return describe_seconds((now - moment).total_seconds()) if moment else "?"


def cmd_close_orphans(args: argparse.Namespace) -> int:
    from tether import runtime  # noqa: PLC0415
    from tether.sweep import SweepPolicy  # noqa: PLC0415

    older_than = args.older_than
    if older_than < limits.GATEWAY_MAX_CONNECTION_SECONDS and not args.force:
        raise InvalidInputError(
            f"--older-than {describe_seconds(older_than)} could end sessions that are still"
            f" connected: API Gateway keeps a connection up to"
            f" {describe_seconds(limits.GATEWAY_MAX_CONNECTION_SECONDS)}, so only older ones are"
            " certainly orphans. Use 2h or more, or add --force if you mean it"
        )
    config = installed_settings(args)
    store = runtime.store()
    # The sessions ended are those counted here and shown before the question, none
    # younger: each batch reaches back as far as this moment's age limit (up to the
    # functions' year and a day, past which any session is an orphan for certain).
    counted_at = time.monotonic()
    summary = store.orphan_summary(older_than_seconds=older_than)
    policy = SweepPolicy.from_settings(config)
    if summary.orphans == 0:
        # Nothing to end, so nothing announced: what waits in the outbox (an earlier run
        # cut short) stays queued for the sweep, and an --apply says how much, not 0.
        queued, held = _left_in_outbox(store, policy) if args.apply else (0, 0)
        _report(args, summary=summary, ended={}, drained=None, queued=queued, held=held)
        if not args.json:
            say(f"no active session started more than {describe_seconds(older_than)} ago")
            _say_left(queued, held, drained=None)
        return 0
    now = datetime.now(UTC)
    if not args.json:
        say(
            f"{summary.orphans} active session(s) started more than"
            f" {describe_seconds(older_than)} ago (oldest {_ago(summary.oldest_start, now)},"
            f" newest {_ago(summary.newest_start, now)})"
        )
    if not args.apply:
        # --apply drains the outbox: the ends already waiting there go out too, but not
        # those a lease holds for whoever is announcing them (a $disconnect, a sweep).
        others, held = _left_in_outbox(store, policy)
        if args.json:
            _report(args, summary=summary, ended={}, drained=None, queued=others, held=held)
        else:
            say(f"dry run: nothing was changed; add --apply to end them ({_reasons(summary)})")
            if others:
                say(f"--apply also announces the {others} other end(s) waiting in the outbox")
            if held:
                say(
                    f"{held} more end(s) held for whoever is announcing them until their lease"
                    " ends: not --apply's"
                )
        return 0
    question = (
        f"end {summary.orphans} session(s) ({_reasons(summary)})?"
        if summary.intended
        else f"end {summary.orphans} session(s) as orphan_cleanup?"
    )
    if not confirm(question, assume_yes=args.yes):
        return declined()
    ended, drained = _end_and_announce(
        store,
        older_than=older_than,
        counted_at=counted_at,
        about=summary.orphans,
        batch_size=config.sweep_batch_size,
        lease_seconds=max(config.announce_lease_seconds, 1.0),
        progress=not args.json,
    )
    try:
        queued, held = _left_in_outbox(store, policy)
    except TetherError as exc:
        # The ends are committed and announced: "cannot connect" alone would read as
        # nothing done.
        raise PartlyDoneError(_done_before_failing(ended, drained, exc)) from exc
    _report(args, summary=summary, ended=ended, drained=drained, queued=queued, held=held)
    return _announced_all(drained, queued)


def _announced_all(drained: DrainResult, queued: int) -> int:
    """0 when every end it tried to announce went out. Ended but not announced, an end
    waits for the sweep, and whoever waits for SessionEnded has not heard of it: a
    script must see that, as it sees a sweep's."""
    if not drained.failed:
        return 0
    # The announcing stops at the first batch refused: what stays queued is every end
    # not announced, the batches never tried included, not that batch alone.
    say_unannounced("close-orphans", max(drained.failed, queued), drained.error)
    return 1


def _left_in_outbox(store: SessionStore, policy: SweepPolicy) -> tuple[int, int]:
    """The ends waiting in the outbox: those the next announcer takes (before --apply,
    those it would announce), and apart those a lease holds for whoever is announcing
    them (a $disconnect, a kick, a run; this run's own unrecorded ones), taken by the
    sweep once their lease ends."""
    outbox = store.sweep_preview(
        idle_seconds=policy.idle_limit_seconds,
        max_age_seconds=policy.max_age_seconds,
        silent_seconds=policy.suspect_after_seconds,
    )
    return outbox.unannounced, outbox.unannounced_held


def _done_before_failing(
    ended: dict[UUID, EndReason], drained: DrainResult, exc: TetherError
) -> str:
    unrecorded = (
        f" ({drained.unrecorded} of them went out but could not be recorded: they will be"
        " announced again)"
        if drained.unrecorded
        else ""
    )
    return (
        f"ended {len(ended)} session(s) and announced {drained.announced}{unrecorded}, then the"
        f" database failed: {exc}; what was not announced waits in the outbox for the sweep"
    )


def _reasons(summary: OrphanSummary) -> str:
    """The reasons the orphans counted end with: orphan_cleanup, but an end intent in
    force (a sweep closed the connection, then stopped) keeps its own."""
    if not summary.intended:
        return "reason orphan_cleanup"
    if summary.intended == summary.orphans:
        return "each with the reason of its end intent: a sweep closed their connections"
    return (
        f"{summary.orphans - summary.intended} with reason orphan_cleanup,"
        f" {summary.intended} with the reason of their end intent: a sweep closed their"
        " connections"
    )


def _end_and_announce(
    store: SessionStore,
    *,
    older_than: float,
    counted_at: float,
    about: int,
    batch_size: int,
    lease_seconds: float,
    progress: bool,
) -> tuple[dict[UUID, EndReason], DrainResult]:
    """End the orphans counted, batch by batch, then announce their ends (and any other
    end waiting in the outbox); each session ended, with its reason. Interrupted, it
    says how far it got before the interruption goes on."""
    from tether import runtime  # noqa: PLC0415
    from tether.outbox import drain_outbox  # noqa: PLC0415

    ended: dict[UUID, EndReason] = {}
    try:
        while True:
            # The functions reach back a year and a day at most: there, a session that
            # came of that age during the run is ended too, an orphan for certain.
            reach = min(older_than + (time.monotonic() - counted_at), limits.ORPHAN_AGE_MAX_SECONDS)
            batch = store.close_orphans(older_than_seconds=reach, limit=batch_size)
            if not batch:
                break
            ended.update(batch)
            if progress and about > batch_size:
                say(f"  ended {len(ended)} of about {about}")
    except KeyboardInterrupt:
        # A batch under way may have committed before its answer came back.
        say_aside(
            f"tether close-orphans: interrupted after ending {len(ended)} session(s) (a batch under"
            " way may have ended more); their SessionEnded wait in the outbox for the sweep;"
            " run it again to end the rest"
        )
        raise
    except TetherError as exc:
        if not ended:
            raise  # nothing was done: a refusal stays one
        # The batches before it were committed: not "nothing was done".
        raise PartlyDoneError(
            f"ended {len(ended)} session(s) before this stopped it: {exc}; their SessionEnded"
            " wait in the outbox for the sweep; run it again to end the rest"
        ) from exc
    # Their ends wait in the outbox; announce them now rather than at the next sweep.
    try:
        drained = drain_outbox(
            store,
            runtime.announcer(),
            batch_size=batch_size,
            lease_seconds=lease_seconds,
            time_left=lambda: True,
        )
    except KeyboardInterrupt:
        say_aside(
            f"tether close-orphans: interrupted while announcing; {len(ended)} session(s) were"
            " ended, and what was not announced waits in the outbox for the sweep"
        )
        raise
    except TetherError as exc:
        if not ended:
            raise
        raise PartlyDoneError(
            f"ended {len(ended)} session(s), then announcing them failed: {exc}; what was not"
            " announced waits in the outbox for the sweep"
        ) from exc
    return ended, drained


def _report(
    args: argparse.Namespace,
    *,
    summary: OrphanSummary,
    ended: dict[UUID, EndReason],
    drained: DrainResult | None,
    queued: int,
    held: int,
) -> None:
    """``queued`` and ``held`` as ``_left_in_outbox`` counts them: what waits in the
    outbox is their sum, before --apply or after it."""
    ended_by_reason = sorted(Counter(ended.values()).items())
    announced = drained.announced if drained else 0
    # Sent, but the database could not record them so (away, or their rows held past
    # the lock timeout): they stay queued and go out again (at least once).
    unrecorded = drained.unrecorded if drained else 0
    # The outbox is drained whole: ends made elsewhere (a $disconnect whose announcement
    # failed, a sweep's) go out too, and are told apart from this run's own.
    others = len(drained.announced_sessions - ended.keys()) if drained else 0
    if args.json:
        say_json(
            {
                "found": summary.orphans,
                "intended": summary.intended,
                "ended": len(ended),
                "ended_by_reason": {reason.value: n for reason, n in ended_by_reason},
                "announced": announced,
                "announced_others": others,
                "announced_unrecorded": unrecorded,
                "queued": queued,
                "held": held,
                "announce_error": drained.error if drained else None,
                "applied": bool(args.apply),
            }
        )
        return
    if not ended:
        return
    # As the sweep says it, unless all are orphan_cleanup, as they were before end
    # intents were kept.
    if [reason for reason, _ in ended_by_reason] == ["orphan_cleanup"]:
        how = " with reason orphan_cleanup"
    else:
        how = ": " + ", ".join(f"{n} {reason}" for reason, n in ended_by_reason)
    besides = f" ({others} of them other ends that were waiting in the outbox)" if others else ""
    say(f"ended {len(ended)} session(s){how}; announced {announced}{besides}")
    if unrecorded:
        say(
            f"{unrecorded} announcement(s) went out but the database could not record them as"
            " sent: they will be announced again (consumers dedupe by session_id)"
        )
    _say_left(queued, held, drained=drained)


def _say_left(queued: int, held: int, *, drained: DrainResult | None) -> None:
    """What an --apply leaves in the outbox, in words."""
    if queued:
        why = f": {drained.error}" if drained and drained.error else ""
        say(f"{queued} announcement(s) stay queued for the sweep to deliver{why}")
    if held:
        more = "more " if queued else ""
        own = ", this run's unrecorded ones among them" if drained and drained.unrecorded else ""
        say(
            f"{held} {more}announcement(s) held by a lease for whoever is announcing them{own}:"
            " the sweep delivers them once it ends"
        )


def register(commands: Any, common: argparse.ArgumentParser) -> None:
    sweep_cmd = commands.add_parser(
        "sweep", parents=[common], help="end every session whose connection is gone, once"
    )
    add_database_options(sweep_cmd)
    sweep_cmd.add_argument(
        "--endpoint-url",
        type=endpoint,
        metavar="URL",
        help="the @connections endpoint for suspects (default: $TETHER_CONNECTIONS_ENDPOINT;"
        " with --embedded, the running tether dev's)",
    )
    add_announce_option(sweep_cmd)
    sweep_cmd.add_argument("--dry-run", action="store_true", help="report what a run would do")
    sweep_cmd.add_argument(
        "--time-limit",
        type=run_length,
        default=None,
        metavar="DURATION",
        help="stop taking new batches after this long"
        f" (default: {format_duration(SWEEP_TIME_LIMIT_SECONDS)},"
        f" at most {format_duration(RUN_MAX_SECONDS)})",
    )
    sweep_cmd.add_argument(
        "--keep-checking",
        action="store_true",
        help="check at the configured cadence for a whole schedule period, as the scheduled"
        " run does (default: one check)",
    )
    sweep_cmd.add_argument("--json", action="store_true", help="print the report as JSON")
    sweep_cmd.add_argument(
        "--metrics", action="store_true", help="also print EMF metric lines (on stderr with --json)"
    )
    sweep_cmd.set_defaults(handler=cmd_sweep)

    orphans_cmd = commands.add_parser(
        "close-orphans",
        parents=[common],
        help="one-off clean-up of sessions left active by an older system",
    )
    orphans_cmd.add_argument(
        "--older-than",
        required=True,
        type=age,
        metavar="DURATION",
        help="age of the sessions to end, with its unit: 2h, 1d (at least 2h unless --force)",
    )
    orphans_cmd.add_argument("--apply", action="store_true", help="end them (default: dry run)")
    orphans_cmd.add_argument("--yes", action="store_true", help="do not ask before --apply")
    orphans_cmd.add_argument(
        "--force", action="store_true", help="allow an age under 2h (may end live sessions)"
    )
    orphans_cmd.add_argument("--json", action="store_true", help="print the outcome as JSON")
    add_database_options(orphans_cmd)
    add_announce_option(orphans_cmd)
    orphans_cmd.set_defaults(handler=cmd_close_orphans)
