"""``tether sessions``, ``tether stats`` and ``tether kick``: the operators' API's
questions and forced closes, as tables on the command line (``--json`` prints what the
API answers)."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any
from uuid import UUID

from tether.cli.common import (
    add_announce_option,
    add_database_options,
    age,
    confirm,
    declined,
    embedded_endpoint_missing,
    endpoint,
    installed_settings,
    say,
    say_json,
    say_unannounced,
    whole_number,
)
from tether.durations import describe_seconds
from tether.errors import ConfigurationError, NotFoundError

if TYPE_CHECKING:
    from tether.admin.schemas import SessionClosed
    from tether.store import SessionStore

DAYS_MAX = 366


def human(seconds: float | None) -> str:
    return "-" if seconds is None else describe_seconds(seconds)


def _ago(moment: datetime | None, now: datetime) -> str:
    return f"{human((now - moment).total_seconds())} ago" if moment else "never"


def _when(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S")


def table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    """Left-aligned columns, two spaces apart."""
    widths = [len(h) for h in headers]
    for row in rows:
        widths = [max(w, len(cell)) for w, cell in zip(widths, row, strict=True)]

    def line(cells: Sequence[str]) -> str:
        return "  ".join(c.ljust(w) for c, w in zip(cells, widths, strict=True)).rstrip()

    return [line(headers), *(line(row) for row in rows)]


def _uuid(text: str) -> UUID:
    try:
        return UUID(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a UUID: {text!r}") from None


def _limit(text: str) -> int:
    from tether.admin.operations import PAGE_SIZE_MAX  # noqa: PLC0415

    value = whole_number(text)
    if not 1 <= value <= PAGE_SIZE_MAX:
        raise argparse.ArgumentTypeError(f"between 1 and {PAGE_SIZE_MAX}, got {text!r}")
    return value


def _days(text: str) -> int:
    value = whole_number(text)
    if not 1 <= value <= DAYS_MAX:
        raise argparse.ArgumentTypeError(f"between 1 and {DAYS_MAX}, got {text!r}")
    return value


def cmd_sessions(args: argparse.Namespace) -> int:
    from tether import runtime  # noqa: PLC0415 - the command line starts without pydantic
    from tether.admin import operations  # noqa: PLC0415
    from tether.sweep_and_admin_models import SessionFilter  # noqa: PLC0415

    installed_settings(args)
    store = runtime.store()
    active = True if args.active else (False if args.ended else None)
    # The database's clock, as the sweep's: this machine's may be minutes or hours off,
    # and an age counted from it would list sessions younger (or older) than asked.
    now = store.sweep_state().checked_at
    # The origin's "which are orphans": the oldest live sessions, which the newest 500
    # never reach once a few hundred clients are connected.
    started_before = now - timedelta(seconds=args.older_than) if args.older_than else None
    where = SessionFilter(active=active, user_id=args.user, started_before=started_before)
    page = operations.list_page(store, where, cursor_text=None, limit=args.limit)
    if args.json:
        say_json(page.model_dump(mode="json"))
        return 0
    if not page.sessions:
        say("no session matches")
        return 0
    rows = []
    for s in page.sessions:
        if s.is_active:
            state, length = "active", human((now - s.session_start).total_seconds())
        else:
            state = s.end_reason.value if s.end_reason else "ended"
            length = human(s.duration_seconds)
        rows.append(
            [
                str(s.session_id),
                str(s.user_id) if s.user_id else "-",
                _when(s.session_start),
                state,
                length,
                _ago(s.last_seen_at, now),
            ]
        )
    for text in table(["SESSION", "USER", "STARTED (UTC)", "STATE", "DURATION", "LAST SEEN"], rows):
        say(text)
    if page.next_cursor:
        say(_more_than_shown(store, args, shown=len(page.sessions), now=now))
    return 0


def _more_than_shown(
    store: SessionStore, args: argparse.Namespace, *, shown: int, now: datetime
) -> str:
    """What a listing cut at its limit left out. Newest first, the sessions an age asks
    for are the oldest: said how many there are and how old the oldest is, so a longer
    age reaches them."""
    if not args.older_than:
        return f"(the newest {shown}; more with --limit, up to 500, or the API's cursor)"
    older_than = describe_seconds(args.older_than)
    if not args.active or args.user:
        return (
            f"(the newest {shown} started more than {older_than} ago; older ones are not"
            " shown: a longer --older-than reaches them, or the API's cursor)"
        )
    summary = store.orphan_summary(older_than_seconds=args.older_than)
    oldest = (
        f"; the oldest started {_when(summary.oldest_start)} UTC,"
        f" {_ago(summary.oldest_start, now)}: a longer --older-than reaches the older ones"
        if summary.oldest_start
        else ""
    )
    return (
        f"(the newest {shown} of {summary.orphans} active sessions started more than"
        f" {older_than} ago{oldest})"
    )


def cmd_stats(args: argparse.Namespace) -> int:
    from tether import runtime  # noqa: PLC0415
    from tether.admin import operations  # noqa: PLC0415

    config = installed_settings(args)
    store = runtime.store()
    live = operations.live(store, config)
    daily = operations.daily(store, args.days)
    if args.json:
        say_json({"live": live.model_dump(mode="json"), "daily": daily.model_dump(mode="json")})
        return 0
    now = live.checked_at
    oldest = (
        f" (oldest started {_ago(live.oldest_active_start, now)})" if live.active_sessions else ""
    )
    say(
        f"active now {live.active_sessions}{oldest}; orphaned {live.orphaned_sessions};"
        f" unannounced {live.unannounced}"
    )
    reasons = ", ".join(f"{r} {n}" for r, n in live.ended_last_hour_by_reason.items())
    say(f"ended in the last hour {live.ended_last_hour}" + (f" ({reasons})" if reasons else ""))
    sweep = live.sweep
    report: dict[str, Any] = sweep.last_report or {}
    done = f" (ended {report.get('ended')}, checked {report.get('checked')})" if report else ""
    say(f"sweep last finished {_ago(sweep.last_finished_at, now)}{done}")
    say("")
    rows = [
        [
            day.day.isoformat(),
            str(day.total_sessions),
            str(day.still_active),
            str(day.ended_sessions),
            human(day.avg_duration_seconds),
            human(day.max_duration_seconds),
        ]
        for day in daily.stats
    ]
    for text in table(["DAY (UTC)", "SESSIONS", "ACTIVE", "ENDED", "AVERAGE", "LONGEST"], rows):
        say(text)
    return 0


def cmd_kick(args: argparse.Namespace) -> int:
    from tether import runtime  # noqa: PLC0415

    config = installed_settings(args)
    store = runtime.store()
    connections = runtime.connections()
    if connections is None:
        raise ConfigurationError(
            "kick disconnects clients through the @connections API:"
            f" {embedded_endpoint_missing(args)}pass"
            " --endpoint-url https://{api}.execute-api.{region}.amazonaws.com/{stage} (or set"
            " TETHER_CONNECTIONS_ENDPOINT); `tether dev` prints its own"
        )
    common: dict[str, Any] = {
        "store": store,
        "connections": connections,
        "announcer": runtime.announcer(),
        "announce_lease_seconds": config.announce_lease_seconds,
        "operator": "cli",
        # A terminal waits: not held to API Gateway's 29 s, up to the ends' lease.
        "answer_in_time": False,
    }
    if args.session is not None:
        return _kick_session(args, common)
    return _kick_user(args, common)


def _kick_session(args: argparse.Namespace, common: dict[str, Any]) -> int:
    from tether.admin import operations  # noqa: PLC0415

    store = common["store"]
    found = operations.get_session(store, args.session)
    if found is None:
        raise NotFoundError(f"no session {args.session}")
    state = (
        "live"
        if found.is_active
        else f"already ended ({found.end_reason.value if found.end_reason else ''})"
    )
    if not args.json:
        say(f"session {found.session_id} of user {found.user_id or '-'}: {state}")
    # An ended row is not ended again; what is left to do is to make sure its client
    # is gone (the gateway may not have been told the first time).
    question = (
        f"close session {found.session_id}?"
        if found.is_active
        else f"ask the gateway to close session {found.session_id}'s connection, if it is open?"
    )
    if not confirm(question, assume_yes=args.yes):
        return declined()
    closed = operations.close_session(args.session, **common)
    if closed is None:  # deleted meanwhile
        raise NotFoundError(f"no session {args.session}")
    if args.json:
        say_json(closed.model_dump(mode="json"))
    else:
        say(f"{closed.outcome.value}: {closed.detail}")
    return _kicked([closed], by_user=False)


def _kick_user(args: argparse.Namespace, common: dict[str, Any]) -> int:
    from tether.admin import operations  # noqa: PLC0415
    from tether.admin.schemas import Disconnection, UserDisconnected  # noqa: PLC0415

    # Every page: the sessions listed and counted before the question are those closed.
    live = operations.presence(common["store"], args.user, every_page=True)
    if not live.connections:
        if args.json:
            # What the API answers for a user with nothing live.
            nothing = UserDisconnected(
                user_id=args.user,
                closed=0,
                sessions=[],
                complete=True,
                detail=operations.describe_user_close(0, 0, 0, 0),
            )
            say_json(nothing.model_dump(mode="json"))
        else:
            say(f"user {args.user} has no live session")
        return 0
    if not args.json:
        say(f"user {args.user} has {len(live.connections)} live session(s):")
        for connection in live.connections:
            say(f"  {connection.session_id}  since {_when(connection.session_start)}")
    if not confirm(
        f"close {len(live.connections)} session(s) of user {args.user}?", assume_yes=args.yes
    ):
        return declined()
    result = operations.close_user(args.user, **common)
    if args.json:
        say_json(result.model_dump(mode="json"))
    else:
        for each in result.sessions:
            # A failure says why, as a single kick's detail does.
            why = f": {each.detail}" if each.connection is Disconnection.FAILED else ""
            say(f"  {each.session_id}: {each.connection.value}{why}")
        say(f"closed {result.closed} session(s) of user {args.user}")
    return _kicked(result.sessions, by_user=True)


def _kicked(closed: list[SessionClosed], *, by_user: bool) -> int:
    """0 when every client was disconnected (or already gone) and every end announced. A
    row ended while the gateway could not be told leaves its client connected, and an end
    EventBridge refused waits for the sweep while whoever listens for SessionEnded has not
    heard of it: a script must see either, as it does a sweep's, and be told what to do
    (a user's ended sessions are no longer "live" to --user)."""
    from tether.admin.schemas import Disconnection  # noqa: PLC0415

    failed = [each.session_id for each in closed if each.connection is Disconnection.FAILED]
    unannounced = sum(1 for each in closed if each.announced is False)
    if failed:
        again = (
            "; ask again with " + ", ".join(f"`tether kick --session {sid}`" for sid in failed)
            if by_user
            else "; run the same kick again to ask the gateway again"
        )
        sys.stderr.write(
            f"tether kick: the gateway could not be told to close {len(failed)} connection(s);"
            " their rows are ended but the clients may still be connected. Check the"
            f" @connections endpoint{again}\n"
        )
    if unannounced:
        # One announcement for all of them: one reason, as the sweep gives its run's.
        reasons = sorted({each.announce_error for each in closed if each.announce_error})
        say_unannounced("kick", unannounced, ", ".join(reasons) or None)
    return 1 if failed or unannounced else 0


def register(commands: Any, common: argparse.ArgumentParser) -> None:
    sessions_cmd = commands.add_parser(
        "sessions", parents=[common], help="list sessions, newest first"
    )
    state = sessions_cmd.add_mutually_exclusive_group()
    state.add_argument("--active", action="store_true", help="live sessions only")
    state.add_argument("--ended", action="store_true", help="ended sessions only")
    sessions_cmd.add_argument("--user", type=_uuid, metavar="ID", help="only this user's")
    sessions_cmd.add_argument(
        "--older-than",
        type=age,
        metavar="DURATION",
        help="only sessions started more than this long ago by the database's clock, with"
        " its unit: 2h, 1d (with --active: the orphans; newest first, a longer age reaches"
        " the oldest)",
    )
    sessions_cmd.add_argument(
        "--limit", type=_limit, default=50, metavar="N", help="how many (default 50, at most 500)"
    )
    sessions_cmd.add_argument("--json", action="store_true", help="print the page as JSON")
    add_database_options(sessions_cmd)
    sessions_cmd.set_defaults(handler=cmd_sessions)

    stats_cmd = commands.add_parser(
        "stats", parents=[common], help="sessions now, the last hour's ends, sessions per day"
    )
    stats_cmd.add_argument(
        "--days", type=_days, default=7, metavar="N", help="days of history (default 7)"
    )
    stats_cmd.add_argument("--json", action="store_true", help="print the numbers as JSON")
    add_database_options(stats_cmd)
    stats_cmd.set_defaults(handler=cmd_stats)

    kick_cmd = commands.add_parser(
        "kick", parents=[common], help="end sessions now and disconnect their clients"
    )
    target = kick_cmd.add_mutually_exclusive_group(required=True)
    target.add_argument("--user", type=_uuid, metavar="ID", help="every live session of a user")
    target.add_argument("--session", type=_uuid, metavar="ID", help="one session")
    kick_cmd.add_argument("--yes", action="store_true", help="do not ask before acting")
    kick_cmd.add_argument(
        "--endpoint-url",
        type=endpoint,
        metavar="URL",
        help="the @connections endpoint (default: $TETHER_CONNECTIONS_ENDPOINT; with"
        " --embedded, the running tether dev's)",
    )
    add_announce_option(kick_cmd)
    kick_cmd.add_argument("--json", action="store_true", help="print the outcome as JSON")
    add_database_options(kick_cmd)
    kick_cmd.set_defaults(handler=cmd_kick)
