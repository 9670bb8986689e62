"""The ``tether`` command: the operator's and developer's entry point.

Each module here registers a group of commands. This package is the user
interface: it writes results to stdout and logs to stderr, so ``--json``
output stays parseable.
"""

from __future__ import annotations

import argparse
import contextlib
import contextvars
import logging
import os
import re
import select
import signal
import sys
import threading
from collections.abc import Callable, Iterator, Sequence
from typing import Any, NoReturn

from tether import __version__
from tether.cli.common import configured_url
from tether.dburl import hide_secrets, scrub
from tether.errors import Interrupted, InvalidInputError, TetherError, error_from_psycopg

Command = Callable[[argparse.Namespace], int]


class _HideSecrets(logging.Filter):
    """Libraries log at debug level what they send (a URL with ?token=, a DSN): hide it."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.msg = hide_secrets(record.getMessage())
        record.args = None
        if record.exc_info or record.exc_text:
            # A traceback quotes its exception's message, the URL it could not reach
            # and all: formatted here (or as a handler before this one did), hidden, and
            # kept as the text every handler prints.
            text = record.exc_text
            if not text and record.exc_info:
                text = _FORMATTER.formatException(record.exc_info)
            record.exc_text = hide_secrets(text or "")
        if record.stack_info:
            record.stack_info = hide_secrets(record.stack_info)
        return True


_FORMATTER = logging.Formatter()


class _GivenOnce(argparse._StoreAction):
    """A flag that takes a value takes it once: argparse keeps the last of several, and
    `kick --session A --session B` closed B alone, saying nothing of A."""

    def __call__(
        self,
        parser: argparse.ArgumentParser,
        namespace: argparse.Namespace,
        values: str | Sequence[Any] | None,
        option_string: str | None = None,
    ) -> None:
        seen: set[str] = namespace.__dict__.setdefault("_flags_given", set())
        if option_string is not None and self.dest in seen:
            raise argparse.ArgumentError(self, "given more than once: give it once")
        seen.add(self.dest)
        super().__call__(parser, namespace, values, option_string)


class _Parser(argparse.ArgumentParser):
    """tether's parsers, its commands' included (argparse makes them of this class)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.register("action", None, _GivenOnce)
        self.register("action", "store", _GivenOnce)

    def error(self, message: str) -> NoReturn:
        # argparse repeats what it could not place: a URL given without its flag
        # (`tether migrate postgresql://user:pw@host/db`), a misspelt or ambiguous
        # `--databse-url=...`, a choice it refused.
        # Each argument is whole here: a password with a space in it, which no pattern
        # can tell from the words after it, is known by the URL it came in (a flag's
        # `--name=URL` included).
        for argument in _ARGUMENTS.get():
            for url in (argument, argument.partition("=")[2]):
                if "://" in url or "password" in url.lower():
                    message = scrub(message, url)
        super().error(hide_secrets(_AMBIGUOUS_VALUE.sub(r"\g<option>", message)))


# The command line being read, for its parsers' errors.
_ARGUMENTS: contextvars.ContextVar[tuple[str, ...]] = contextvars.ContextVar(
    "tether_arguments", default=()
)


# An ambiguous `--flag=value` is named by its flag alone: its value may be anything.
_AMBIGUOUS_VALUE = re.compile(r"(?<=ambiguous option: )(?P<option>-[^=\s]*)=\S*")


def build_parser() -> argparse.ArgumentParser:
    from tether.cli import admin, adopt, deploy, local, migrations, sweep  # noqa: PLC0415

    # Accepted before or after the command: `tether -v sweep` and `tether sweep -v`.
    common = _Parser(add_help=False)
    common.add_argument(
        "-v", "--verbose", action="store_true", default=argparse.SUPPRESS, help="log at debug level"
    )
    parser = _Parser(
        prog="tether",
        description="Keep the session table of a serverless WebSocket app true.",
        parents=[common],
    )
    parser.add_argument("--version", action="version", version=f"tether {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for module in (migrations, adopt, sweep, admin, local, deploy):
        module.register(commands, common)
    _know_own_parsers(parser)
    return parser


def _know_own_parsers(parser: argparse.ArgumentParser) -> None:
    """Each (sub)command remembers its parser, so an unknown flag is reported with the
    command's own usage, not tether's."""
    # argparse lists subcommands nowhere but in its private _actions.
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for command_parser in action.choices.values():
                command_parser.set_defaults(command_parser=command_parser)
                _know_own_parsers(command_parser)


def _named(unknown: Sequence[str]) -> list[str]:
    """The arguments argparse could not place, as its error names them: a flag by its
    name alone, without the value given to it (`--tokn=TOKEN`, `--databse-url URL`)."""
    named: list[str] = []
    after_flag = False
    for arg in unknown:
        if arg.startswith("-") and len(arg) > 1:
            named.append(arg.split("=", 1)[0])
            after_flag = "=" not in arg
        elif after_flag:
            after_flag = False
        else:
            named.append(arg)
    return named


# Commands that say, when interrupted, what to do next in their own words.
_SAY_THEIR_OWN_INTERRUPTION = frozenset({"adopt"})


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    given = list(sys.argv[1:] if argv is None else argv)
    _ARGUMENTS.set(tuple(given))
    args, unknown = parser.parse_known_args(given)
    if unknown:
        # Before the command, the flag is tether's; after it, the command's.
        before = args.command in given and given.index(unknown[0]) < given.index(args.command)
        (parser if before else args.command_parser).error(
            f"unrecognized arguments: {' '.join(_named(unknown))}"
        )
    verbose = getattr(args, "verbose", False)
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.WARNING,
        format="%(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    for handler in logging.getLogger().handlers:
        handler.addFilter(_HideSecrets())
    # botocore's debug lines hold whole response bodies: a secret's value read by
    # reference (an RDS secret's JSON password) in the clear, whatever -v asks for.
    # Without -v its info lines stay out too ("Found credentials in ..."): a logger's
    # own level is the only one its records meet before the root's handlers.
    logging.getLogger("botocore").setLevel(logging.INFO if verbose else logging.WARNING)
    from tether.aws.observability import logger, logs_to_stderr  # noqa: PLC0415

    if args.command != "dev":
        # tether dev's log is its output: on stdout, one stream with its banner, as a
        # Lambda's log is what CloudWatch keeps.
        logs_to_stderr()
    if verbose:
        logger.setLevel(logging.DEBUG)
    command: Command = args.handler
    try:
        with _terminated_as_interrupted():
            status = command(args)
            # What is still buffered goes now, where a reader gone is caught below,
            # not at the interpreter's exit.
            sys.stdout.flush()
            return status
    except TetherError as exc:
        return _failed(args, exc)
    except BrokenPipeError:
        if not _stdout_gone():
            raise
        # Its reader stopped reading (`| head`): nothing more to say, to anyone. What
        # the command had done is kept, as on Ctrl-C.
        return 128 + signal.SIGPIPE
    except KeyboardInterrupt as exc:
        if isinstance(exc, Interrupted):
            sys.stderr.write(f"tether {args.command}: {exc.said}\n")
        elif args.command not in _SAY_THEIR_OWN_INTERRUPTION:
            # Otherwise the prompt comes back with nothing said of what became of the work.
            sys.stderr.write(f"tether {args.command}: interrupted; what it had done is kept\n")
        return 130
    except Exception as exc:
        # A database error no command mapped itself (a privilege missing, say) is still
        # one line, like every other failure, not a traceback.
        psycopg = sys.modules.get("psycopg")
        if psycopg is None or not isinstance(exc, psycopg.Error):
            raise
        # Raised mid-command, whatever its SQLSTATE: some work may be done (exit 1).
        return _failed(args, error_from_psycopg(exc), before_any_work=False)


def _stdout_gone() -> bool:
    """Whether the pipe that broke is standard output (a pipe whose reader has gone
    polls as an error). If so, it is pointed at nothing, so that the interpreter's last
    flush of what is left does not fail once more."""
    try:
        out = sys.stdout.fileno()
    except (AttributeError, OSError, ValueError):  # not a file (captured, closed)
        return False
    if not hasattr(select, "poll"):  # not on Windows
        return False
    poller = select.poll()
    poller.register(out, select.POLLOUT)
    # Linux says POLLERR; the BSDs and macOS, POLLHUP.
    if not any(events & (select.POLLERR | select.POLLHUP) for _, events in poller.poll(0)):
        return False
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, out)
    return True


def _interrupt_once(signum: int, frame: object) -> None:
    # A second SIGTERM (CI sends more than one) must not cut short the clean-up the
    # first one asked for.
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    raise KeyboardInterrupt


@contextlib.contextmanager
def _terminated_as_interrupted() -> Iterator[None]:
    """SIGTERM (`timeout`, `kill`, a cancelled CI job) stops a command as Ctrl-C does:
    what it started is stopped (the embedded Postgres an --embedded command started
    for itself, a dev's gateway), not left running, since Python's default for it
    runs no clean-up at all. A command's event loop cancels its work instead
    (tether.local.stopping): raised inside the loop, the interruption can be lost."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGTERM, _interrupt_once)
    try:
        yield
    finally:
        # Once it fired (or a command set it so), SIGTERM stays ignored: the clean-up
        # still to come (atexit: an embedded Postgres to stop) is not cut short.
        if signal.getsignal(signal.SIGTERM) is _interrupt_once:
            signal.signal(signal.SIGTERM, previous)


# What argparse answers a flag it cannot read with; the same for input a command
# refused once read (flags that contradict each other, a bound the database refused):
# nothing was done. 1 is for a failure, one after part of the work was committed
# included (PartlyDoneError, whatever stopped it: a later batch refused, say).
USAGE_EXIT = 2


# Every control character but the line break, which a refusal's list of reasons uses.
_CONTROLS = re.compile("[\x00-\x09\x0b-\x1f\x7f-\x9f]")


def _failed(args: argparse.Namespace, exc: TetherError, *, before_any_work: bool = True) -> int:
    message = str(exc)
    named = (getattr(args, "database_url", None), configured_url())
    for url in (*named, getattr(args, "database_url_behind_reference", None)):
        message = scrub(message, url)
    # A refusal may quote what it was given (an address with ?apikey= in it), an AWS
    # error its canonical request (x-amz-security-token): hidden as the logs hide them.
    message = hide_secrets(message)
    # What a server or a proxy said is quoted as it came: its control characters (an
    # escape sequence that clears or retitles the operator's terminal) are shown, not run.
    message = _CONTROLS.sub(lambda found: f"\\x{ord(found.group()):02x}", message)
    # The (sub)command that failed, as its usage names it: tether migrations export.
    parser = getattr(args, "command_parser", None)
    said_by = (
        parser.prog if isinstance(parser, argparse.ArgumentParser) else f"tether {args.command}"
    )
    sys.stderr.write(f"{said_by}: {message}\n")
    return USAGE_EXIT if before_any_work and isinstance(exc, InvalidInputError) else 1


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
