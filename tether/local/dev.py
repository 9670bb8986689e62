"""``tether dev``: the whole system on one machine.

An embedded Postgres (or any ``--database-url``), the migrations, the local
gateway invoking the real handlers, and the sweep on its schedule asking the
gateway's own ``@connections`` API, and the operators' API and page under ``/admin``
with a key made for the run. Ctrl-C or SIGTERM closes every connection
and runs its ``$disconnect`` before exiting, so the table is left with no active
session; a ``kill -9`` leaves rows for the first checks of the next start.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import inspect
import ipaddress
import logging
import math
import os
import resource
import secrets
import shlex
import socket
import sys
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Executor, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any
from urllib.parse import quote

import uvicorn

from tether import limits, migrate, row_security, runtime
from tether.aws.secrets import is_reference
from tether.dburl import check, hide_secrets, redact, unreachable
from tether.drivers.postgres import (
    ANSWER_WITHIN_SECONDS,
    NETWORK_TIMEOUTS,
    connect_answering,
    read_plainly,
)
from tether.errors import (
    ConfigurationError,
    DatabaseUnavailableError,
    InvalidInputError,
    TetherError,
)
from tether.loading import load_callable
from tether.local import embedded, stopping
from tether.local import state as dev_state
from tether.local.gateway import Faults, GatewayStats, Limits, LocalGateway
from tether.local.output import LineAtomicStream
from tether.local.protocols import (
    HANDSHAKE_TIMEOUT_SECONDS,
    OpenWebSockets,
    http_protocol,
    websocket_protocol,
)
from tether.settings import Settings, from_environment, load_settings, read_checked_secret

if TYPE_CHECKING:
    import psycopg

logger = logging.getLogger("tether.dev")

STAGE = "local"
# File descriptors kept for the database, the sweep and the @connections calls.
RESERVED_DESCRIPTORS = 256


@dataclass
class DevOptions:
    host: str = "127.0.0.1"
    port: int = 3001
    database_url: str | None = None
    sweep_interval: float = 60.0
    """The schedule: how often a sweep run starts (EventBridge: every minute)."""
    check_every: float | None = None
    """How often a run checks (default: the setting, at most the schedule)."""
    heartbeat_grace: float | None = None
    """None: the setting's default; limits.HEARTBEATS_OFF: heartbeats not required."""
    idle_timeout: float = limits.GATEWAY_IDLE_TIMEOUT_SECONDS
    max_duration: float = limits.GATEWAY_MAX_CONNECTION_SECONDS
    suspect_after: float | None = None
    disconnect_loss: float = 0.0
    routes: list[str] = field(default_factory=list)
    route_selection: str = "$request.body.action"
    max_connections: int | None = None
    handshake_timeout: float = HANDSHAKE_TIMEOUT_SECONDS
    message_rate: float = 100.0
    fault_file: Path | None = None
    """Faults to inject (`tether chaos`): see ``tether.local.gateway.Faults``."""

    def __post_init__(self) -> None:
        if not self.handshake_timeout > 0:
            # A zero deadline would answer every handshake 408 before it could complete.
            raise InvalidInputError(
                f"--handshake-timeout must be above 0, got {self.handshake_timeout:g}s"
            )


def parse_routes(specs: list[str]) -> dict[str, Callable[[dict[str, Any], Any], Any]]:
    routes: dict[str, Callable[[dict[str, Any], Any], Any]] = {}
    given: dict[str, str] = {}
    if specs:
        _import_from_here()
    for spec in specs:
        name, separator, reference = spec.partition("=")
        module, _, function = reference.partition(":")
        # A reference no Python name could be is the command line's fault (exit 2), as
        # is one naming a module or function that is not there (_load_route).
        written_as_one = all(part.isidentifier() for part in module.split(".")) and (
            not function or function.isidentifier()
        )
        if not separator or not name or not written_as_one:
            raise InvalidInputError(f"--route takes NAME=module:function, got {spec!r}")
        if name in ("$connect", "$disconnect"):
            # A message naming it would select it; the handshake and the close would not.
            raise InvalidInputError(
                f"--route cannot take {name}: it is tether's own handler (routes are for"
                " messages; $default replaces the default message route)"
            )
        if name in given:
            # The last one would win, and the first be dropped without a word.
            raise InvalidInputError(
                f"--route {name} given twice ({given[name]} and {reference}): give each route once"
            )
        given[name] = reference
        routes[name] = _load_route(reference, module)
    return routes


def _import_from_here() -> None:
    """A route's module is the application's, in the folder the dev runs in, found as
    ``python -m`` finds it: the installed console script's path starts at its own bin
    folder, where no application module is."""
    here = os.getcwd()
    if "" not in sys.path and here not in sys.path:
        sys.path.insert(0, here)


def _load_route(reference: str, module: str) -> Callable[[dict[str, Any], Any], Any]:
    """A --route naming no module or no callable is a flag value the dev cannot use (exit
    2); a module that is there but fails as it runs (a syntax error, an import of its own
    that fails, a setting it reads) is a failure of that module (exit 1)."""
    try:
        handler = load_callable(reference, what="handler", default_attribute="lambda_handler")
    except ConfigurationError as exc:
        cause = exc.__cause__
        missing = getattr(cause, "name", None) if isinstance(cause, ModuleNotFoundError) else None
        names_nothing = cause is None or (
            missing is not None and (module == missing or module.startswith(f"{missing}."))
        )
        if names_nothing:
            raise InvalidInputError(str(exc)) from None
        raise
    # A callable object runs its __call__. Not unwrapped: a wrapper of def may run the
    # coroutine itself.
    runs = (handler, type(handler).__call__)
    if any(inspect.iscoroutinefunction(f) or inspect.isasyncgenfunction(f) for f in runs):
        # Lambda's Python runtime calls a handler and awaits nothing: what it returns is
        # no answer, and its work never runs. Said here, not at each message.
        raise InvalidInputError(
            f"--route {reference}: the handler is an async def, which Lambda's Python runtime"
            " calls without awaiting (its work would never run): define it with def, and"
            " asyncio.run what it awaits"
        )
    return handler


class _Server(uvicorn.Server):
    """uvicorn re-raises SIGINT/SIGTERM once it has shut down gracefully, which would
    kill the process before the summary and the database stop; not here."""

    def handle_exit(self, sig: int, frame: Any) -> None:
        super().handle_exit(sig, frame)
        self._captured_signals.clear()


def selection_key(expression: str) -> str:
    """The body key of a route selection expression such as ``$request.body.action``."""
    prefix = "$request.body."
    key = expression.strip().removeprefix("${").removesuffix("}")
    key = key if key.startswith("$") else "$" + key.lstrip("$")
    if not key.startswith(prefix) or not key[len(prefix) :].isidentifier():
        raise InvalidInputError(
            f"route selection must look like $request.body.<key>, got {expression!r}"
        )
    return key[len(prefix) :]


@dataclass(frozen=True)
class Routing:
    routes: dict[str, Callable[[dict[str, Any], Any], Any]]
    selection_key: str


def routing(options: DevOptions) -> Routing:
    """The routes and selection key, checked before anything starts."""
    from tether.handlers import message  # noqa: PLC0415

    routes: dict[str, Callable[[dict[str, Any], Any], Any]] = {
        "$default": message.lambda_handler,
        "heartbeat": message.lambda_handler,
    }
    routes.update(parse_routes(options.routes))
    return Routing(routes=routes, selection_key=selection_key(options.route_selection))


def _given_in_environment() -> set[str]:
    """The settings the environment sets, read as production reads them (names in any
    case, every alias); one set empty is left to the laptop's choice."""
    return {name for name, value in from_environment().items() if str(value).strip()}


def _operator_key_variable() -> str | None:
    """The environment variable holding the operator key, spelled as it is set (names
    are read in any case), or None when the run makes its own key."""
    if "operator_key" not in _given_in_environment():
        return None
    return next(
        name
        for name, value in os.environ.items()
        if name.upper() == "TETHER_OPERATOR_KEY" and value.strip()
    )


def dev_settings(options: DevOptions, database_url: str) -> Settings:
    """The production settings, with what a laptop run changes."""
    endpoint = f"http://{_netloc(options)}/{STAGE}"
    given = _given_in_environment()
    overrides: dict[str, Any] = {
        "database_url": database_url,
        "connections_endpoint": endpoint,
        "idle_timeout_seconds": options.idle_timeout,
        "max_duration_seconds": options.max_duration,
        "sweep_schedule_seconds": options.sweep_interval,
    }
    if "allow_anonymous" not in given:
        overrides["allow_anonymous"] = True
    if "announce_to" not in given:
        overrides["announce_to"] = "log"
    if "jwt_issuer" not in given and "supabase_url" not in given:
        # Tokens minted for the local run name this issuer (the banner says so).
        overrides["jwt_issuer"] = f"http://{_netloc(options)}/auth/v1"
    if options.heartbeat_grace is not None:
        overrides["heartbeat_grace_seconds"] = (
            None if options.heartbeat_grace == limits.HEARTBEATS_OFF else options.heartbeat_grace
        )
    if options.suspect_after is not None:
        overrides["suspect_after_seconds"] = options.suspect_after
    if "operator_key" not in given:
        # A key for this run only, printed at start: curl and a browser work at once.
        overrides["operator_key"] = operator_key()
    # Never longer than a run: a check every 10 s is no use to a run every 5 s.
    every = options.check_every
    if every is None:
        # Read with the flags given: without them, a flag's value would be checked
        # as its default against the environment's settings.
        every = load_settings(**overrides).sweep_check_every_seconds
    overrides["sweep_check_every_seconds"] = min(every, options.sweep_interval)
    return load_settings(**overrides)


PORTS_TRIED_FOR_ANOTHER = 20
"""How many ports past a taken one are tried for the one its message suggests."""


def bind(host: str, port: int) -> socket.socket:
    """The gateway's listening socket, bound before anything says it is ready."""
    try:
        return _bound(host, port)  # uvicorn listens on it once it is ready to serve
    except OSError as exc:
        said = f"cannot listen on {host}:{port}: {exc.strerror}"
        if isinstance(exc, socket.gaierror) or exc.errno == errno.EADDRNOTAVAIL:
            # --host names no address of this machine (a name that does not resolve,
            # another machine's address): a flag value it cannot use (exit 2).
            raise InvalidInputError(said) from None
        if exc.errno != errno.EADDRINUSE:
            raise ConfigurationError(said) from None
    other = _free_port_near(host, port)
    instead = (
        f'pick another port: tether dev --port {other} (make dev ARGS="--port {other}")'
        if other is not None
        else "pick another port with --port"
    )
    raise ConfigurationError(
        f"port {port} on {host} is already in use (another tether dev?): stop it, or {instead}"
    )


def _bound(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError:
        sock.close()
        raise
    return sock


def _free_port_near(host: str, port: int) -> int | None:
    """A port near ``port`` that is free now, to suggest: the next one may be taken too
    (two dev runs, a database), and past 65535 there is none."""
    after = range(port + 1, min(port + PORTS_TRIED_FOR_ANOTHER, 65535) + 1)
    before = range(port - 1, max(port - PORTS_TRIED_FOR_ANOTHER, 1024) - 1, -1)
    candidates: list[int] = [*after, *before]
    for candidate in candidates:
        try:
            _bound(host, candidate).close()
        except OSError:
            continue
        return candidate
    return None


def connection_limit(requested: int | None) -> int:
    """At most as many connections as this process has file descriptors for: raise
    the soft limit as far as the hard one allows, and keep a reserve."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = hard if hard != resource.RLIM_INFINITY else max(soft, 65536)
    with contextlib.suppress(ValueError, OSError):
        resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))
        soft = wanted
    available = max(16, soft - RESERVED_DESCRIPTORS)
    return min(requested, available) if requested else available


def build(
    options: DevOptions, config: Settings, routed: Routing, faults: Faults
) -> tuple[LocalGateway, uvicorn.Server]:
    from tether.admin.app import create_app  # noqa: PLC0415
    from tether.handlers import connect, disconnect  # noqa: PLC0415

    runtime.install(config)
    gateway = LocalGateway(
        connect=connect.lambda_handler,
        disconnect=disconnect.lambda_handler,
        routes=routed.routes,
        limits=Limits(
            idle_timeout_seconds=options.idle_timeout,
            max_duration_seconds=options.max_duration,
            messages_per_second=options.message_rate,
        ),
        route_selection_key=routed.selection_key,
        stage=STAGE,
        domain_name=_netloc(options),
        disconnect_loss=options.disconnect_loss,
        on_event=lambda what, connection_id: logger.info("%s %s", what, connection_id),
        admin=create_app(),
        faults=faults,
    )
    open_sockets = OpenWebSockets()
    uvicorn_config = uvicorn.Config(
        gateway,
        http=http_protocol(
            max_connections=connection_limit(options.max_connections),
            open_sockets=open_sockets,
            handshake_timeout=options.handshake_timeout,
        ),
        ws=websocket_protocol(gateway.limits.frame_bytes, open_sockets),
        ws_max_size=gateway.limits.message_bytes,
        ws_ping_interval=None,
        # API Gateway's sourceIp is the address the connection came from: a client's
        # X-Forwarded-For (trusted from loopback by default) must not set it.
        proxy_headers=False,
        lifespan="on",
        log_level="warning",
        # Its own handlers would write bare text to stderr: the run's output gives it ours.
        log_config=None,
    )
    return gateway, _Server(uvicorn_config)


class _Schedule:
    """The sweep on its schedule, as EventBridge runs it: one run every interval,
    checking at its cadence; stopping ends the run at its next check."""

    def __init__(self, interval: float, margin: float, claim: DatabaseClaim) -> None:
        self._interval = interval
        self._margin = margin
        self._claim = claim
        self._stopping = threading.Event()

    def stop(self) -> None:
        self._stopping.set()

    def _one_run(self) -> None:
        from tether.handlers.sweep import run_sweep  # noqa: PLC0415
        from tether.sweep import StoppableClock  # noqa: PLC0415

        # Like the scheduled Lambda: time for one period, plus the margin at which
        # the run stops taking batches.
        deadline = time.monotonic() + self._interval + self._margin

        def stopped() -> bool:
            # Without the database's lock another dev may be serving its clients.
            return self._stopping.is_set() or not self._claim.held

        if self._claim.held:
            clock = StoppableClock(lambda: deadline - time.monotonic(), stopped)
            run_sweep(clock, sleep=self._stopping.wait)

    async def forever(self, server: uvicorn.Server, thread: Executor) -> None:
        while not server.started:
            await asyncio.sleep(0.05)
        loop = asyncio.get_running_loop()
        while not server.should_exit:
            started = time.monotonic()
            try:
                await loop.run_in_executor(thread, self._one_run)
            except TetherError:
                pass  # run_sweep logged it; the next run tries again, as on AWS
            except Exception:  # a bug must not stop the schedule either
                logger.exception("sweep crashed; the next run tries again")
            await asyncio.sleep(max(0.0, self._interval - (time.monotonic() - started)))


def _describe_tokens(config: Settings) -> str:
    if config.jwt_secret or config.signing_keys_url:
        how = (
            "HS256 signed with TETHER_JWT_SECRET"
            if config.jwt_secret
            else "signed by the JWKS keys"
        )
        roles = ", ".join(sorted(config.role_allow_list))
        # The issuer comes from SUPABASE_URL or TETHER_JWT_ISSUER as written: an address
        # with credentials in it is shown without them.
        issuer = hide_secrets(config.issuer) if config.issuer else None
        return (
            f"tokens: {how}; aud {config.jwt_audience!r}, iss {issuer!r},"
            f" role in {{{roles}}}, exp/iat/nbf checked with {config.jwt_leeway_seconds:g}s"
            " leeway;"
            " ?token=... or the sub-protocol"
            + ("; no token: anonymous" if config.allow_anonymous else "; no token: refused")
        )
    if config.allow_anonymous:
        return (
            "tokens: not verified (set TETHER_JWT_SECRET or TETHER_JWKS_URL to verify them);"
            " every client connects as anonymous"
        )
    return "tokens: required, but nothing to verify them with: every connection is refused"


def _leftovers(config: Settings) -> int:
    from tether.sweep import SweepPolicy  # noqa: PLC0415

    policy = SweepPolicy.from_settings(config)
    health = runtime.store().session_health(
        idle_limit_seconds=policy.idle_limit_seconds, max_age_seconds=policy.max_age_seconds
    )
    return health.active_sessions


def _banner(
    say: Callable[[str], None],
    *,
    options: DevOptions,
    config: Settings,
    url: str,
    database: embedded.EmbeddedPostgres | None,
    applied: int,
    leftovers: int,
    problems: tuple[str, ...] = (),
) -> None:
    """Every effective setting, and a first command to try: said once the port is bound."""
    ws_url = f"ws://{_netloc(options)}"
    where = f"embedded, data in {database.data_dir}" if database else "given"
    every = config.sweep_check_every_seconds
    say(_listening(options, ws_url))
    say(f"  database      {redact(url)} ({where}); migrations applied now: {applied}")
    say(f"  @connections  http://{_netloc(options)}/{STAGE}/@connections/{{id}}")
    admin = f"http://{_netloc(options)}/admin"
    sessions = f'"{admin}/sessions?active=true"'  # quoted: a shell globs the '?'
    yours = _operator_key_variable()
    if yours is not None:
        # Yours: named, not shown. Double quotes, so that the shell puts it in: the
        # variable as it is spelled, unless it names a secret (then the key is not in it).
        kept = is_reference(os.environ[yours])
        bearer = "<the key in that secret>" if kept else f"${yours}"
        say(f"  operator key  yours, {'kept in the secret ' if kept else 'from '}{yours}")
        say(f"  live page     {admin}/dashboard   (it asks for the key)")
        say(f'  API           curl -H "Authorization: Bearer {bearer}" {sessions}')
    else:
        key = config.operator_key
        say(f"  operator key  {key}")
        # After '#': the browser keeps it, no request carries it.
        say(f"  live page     {admin}/dashboard#key={quote(key or '', safe='')}")
        say(f'  API           curl -H "Authorization: Bearer {key}" {sessions}')
    say(f"                (schema: {admin}/openapi.json)")
    say(
        f"  sweep         a run every {options.sweep_interval:g}s, checking every {every:g}s;"
        f" suspects after {config.suspect_after_seconds:g}s of silence"
    )
    say(f"  heartbeats    {_describe_heartbeats(config)}")
    say(
        f"  limits        idle {options.idle_timeout:g}s, max {options.max_duration:g}s,"
        f" frames {limits.GATEWAY_FRAME_BYTES // 1024} KB,"
        f" messages {limits.GATEWAY_MESSAGE_BYTES // 1024} KB,"
        f" URLs {limits.GATEWAY_URL_CHARACTERS} characters;"
        f" $disconnect lost for {options.disconnect_loss:.0%} of drops"
    )
    most = connection_limit(options.max_connections)
    capped = (
        f" (the process's file limit; --max-connections asked {options.max_connections})"
        if options.max_connections and most < options.max_connections
        else ""
    )
    say(
        f"                handshakes within {options.handshake_timeout:g}s,"
        f" {options.message_rate:g} messages/s per connection, {most} connections{capped}"
    )
    if options.idle_timeout <= config.heartbeat_interval_seconds:
        # Allowed (it shows the idle timeout at work quickly), but a surprise unsaid.
        say(
            f"                idle {options.idle_timeout:g}s is not more than the heartbeat"
            f" interval ({config.heartbeat_interval_seconds:g}s): clients that heartbeat on"
            " time are closed as idle too"
        )
    say(f"  routes        {_describe_routes(options)}")
    say(f"  {_describe_tokens(config)}")
    if leftovers:
        # No connection of this gateway is theirs: the gateway answers 410 for each.
        bound = limits.gone_within_seconds(
            suspect_after=config.suspect_after_seconds,
            check_every=every,
            settle=config.gone_settle_seconds,
        )
        say(
            f"  {leftovers} session(s) are still marked active, left by an earlier run or"
            " another server (an adopted table's orphans); no connection of this gateway is"
            f" theirs, and the sweep ends them within about {bound:g}s"
        )
    for problem in problems:
        say(f"  PROBLEM       every connection will fail: {problem}")
    # A client this Python has (websockets' own, installed with tether[local]): a
    # newcomer's machine need not have wscat or node.
    client = f"{shlex.quote(sys.executable)} -m websockets"
    if config.allow_anonymous:
        say(f'  try:          {client} {ws_url}   (then send {{"action": "heartbeat"}})')
        say("                tether simulate   (in another terminal)")
    else:
        # Without a token both would be refused (401): the lines say where it goes.
        say(
            f'  try:          {client} "{ws_url}/?token=$ACCESS_TOKEN"'
            '   (then send {"action": "heartbeat"})'
        )
        say('                tether simulate --token "$ACCESS_TOKEN"   (in another terminal)')
    say("  Ctrl-C closes every connection and ends its session")


def _describe_heartbeats(config: Settings) -> str:
    beats = f"every {config.heartbeat_interval_seconds:g}s"
    grace = config.heartbeat_grace_seconds
    if not grace:
        return beats + ", not required"
    if grace >= config.suspect_after_seconds:
        return beats + f", clients silent {grace:g}s are disconnected"
    # The grace is checked on suspects only: shorter than --suspect-after, it
    # disconnects at the suspect age, not its own.
    suspect = config.suspect_after_seconds
    return (
        beats + f", clients silent {suspect:g}s are disconnected (a suspect's age;"
        f" the grace alone is {grace:g}s)"
    )


def _describe_routes(options: DevOptions) -> str:
    """The message routes as --route gave them, tether's own where none replaced them,
    and the expression that chooses among them."""
    given = dict(spec.partition("=")[::2] for spec in options.routes)  # each name once
    own = [name for name in ("heartbeat", "$default") if name not in given]
    listed = [f"{name} -> {reference}" for name, reference in given.items()]
    if own:
        listed.append(f"{' and '.join(own)} -> tether's own")
    chosen_by = "$request.body." + selection_key(options.route_selection)
    return f"chosen by {chosen_by}: {', '.join(listed)}"


def _reached_through(host: str) -> str:
    """Listening on every interface (0.0.0.0, ::, however spelled), the dev is reached
    here through loopback: a wildcard address is no place to connect to (browsers refuse
    it, and AWS clients take it for a remote host that needs a region and credentials)."""
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return host  # a name
    if not address.is_unspecified:
        return host
    return "::1" if address.version == 6 else "127.0.0.1"


def _listening(options: DevOptions, ws_url: str) -> str:
    """The banner's first line. On every interface the URL names loopback: the line
    says the rest of the network reaches it too, and by what (a name is refused, for
    DNS rebinding), or nothing said it was there for phones and containers."""
    if _reached_through(options.host) == options.host:  # not a wildcard
        return f"tether dev: listening on {ws_url}"
    return (
        f"tether dev: listening on {ws_url}, and on every interface (--host"
        f" {options.host}): other devices call it by this machine's IP address"
    )


def operator_key() -> str:
    """A key for one run, as URL-safe as ``secrets.token_urlsafe`` but beginning and
    ending with a letter or digit: one beginning with "-" reads as an option to the tools
    it is handed to, and a terminal's double-click leaves its edge dashes behind."""
    while True:
        key = secrets.token_urlsafe(24)
        if key[0].isalnum() and key[-1].isalnum():
            return key


def _netloc(options: DevOptions) -> str:
    """host:port for the URLs the dev hands out: an IPv6 address goes in brackets
    (http://[::1]:3001)."""
    host = _reached_through(options.host)
    host = f"[{host}]" if ":" in host else host
    return f"{host}:{options.port}"


def _hold_the_folder() -> IO[str]:
    """One `tether dev` per folder: a second would share its embedded database, and its
    sweep, asking its own gateway about the first one's clients, would end their live
    sessions as gone; its note would also replace the first one's. A lock, not the note:
    the system lets it go when its holder dies, whatever became of its pid."""
    held = dev_state.hold()
    if held is None:
        other = dev_state.read()
        which = f" (pid {other['pid']}, {other.get('ws_url', '')})" if "pid" in other else ""
        raise ConfigurationError(
            f"another tether dev is running in this folder{which}: stop it first, or run"
            " this one from another folder with its own database"
        )
    return held


DEV_LOCK_KEY = 7_460_501_003
"""Advisory lock: one `tether dev` per database."""
DEV_LOCK_WAIT_SECONDS = 3.0
CLAIM_CHECK_SECONDS = 2.0


class DatabaseClaim:
    """One `tether dev` per database, from whatever folder: two would each sweep the
    other's sessions as gone (neither gateway knows the other's clients).

    The lock belongs to a transaction left open on a connection of its own for the
    dev's life, not to the session: through a transaction pooler a session lock would
    stay on a pooled server process after the dev ends, and refuse every later one. In
    read committed, with plain statements (no parameters, never prepared: either would
    leave a portal open), the transaction holds no snapshot between statements, so it
    keeps nothing from vacuum or from a concurrent index build. It ends, and the lock
    with it, when the connection does, a crash included.

    A connection lost while the dev runs (a database restart) loses the lock: the dev
    checks every few seconds, takes it back, and while another dev holds it, its sweep
    stands down."""

    def __init__(self, url: str) -> None:
        self._url = check(url)
        self._conn: psycopg.Connection[tuple[Any, ...]] | None = None
        # The server process that held the lock last, and when it started.
        self._backend: tuple[int, object] | None = None
        self.held = False

    def take(self, wait_seconds: float = 0.0, connect_timeout: int = 10) -> bool:
        """Take the lock, waiting up to ``wait_seconds`` for a holder that is going
        away (a dev killed a moment ago). Raises DatabaseUnavailableError."""
        import psycopg  # noqa: PLC0415 - the dev's dependency, not its command line's
        from psycopg import sql  # noqa: PLC0415

        self._drop()
        conn = None
        try:
            # Bounded as the handlers' calls are: a check that waited on a hung server
            # would hold the dev's stop until the server came back.
            conn = connect_answering(
                self._url,
                connect_timeout=connect_timeout,
                application_name="tether dev",
                prepare_threshold=None,
                **NETWORK_TIMEOUTS,
            )
            conn.isolation_level = psycopg.IsolationLevel.READ_COMMITTED
            read_plainly(conn)  # it reads its backend's start as a moment
            # Some servers end a transaction left idle; this one must stay open.
            conn.execute("set idle_in_transaction_session_timeout = 0")
            if conn.info.server_version >= 170000:  # Postgres 17 has this timeout too
                conn.execute("set transaction_timeout = 0")
            self._end_own_leftover(conn)
            try_lock = sql.SQL(
                "select pg_try_advisory_xact_lock({}), pid, backend_start"
                " from pg_stat_activity where pid = pg_backend_pid()"
            ).format(DEV_LOCK_KEY)
            deadline = time.monotonic() + wait_seconds
            while (row := conn.execute(try_lock).fetchone()) is None or not row[0]:
                if time.monotonic() >= deadline:
                    conn.close()
                    return False
                time.sleep(0.1)
        except psycopg.Error as exc:
            if conn is not None:
                conn.close()
            raise unreachable(exc, self._url) from None
        self._conn, self._backend, self.held = conn, (int(row[1]), row[2]), True
        return True

    def _end_own_leftover(self, conn: psycopg.Connection[tuple[Any, ...]]) -> None:
        """The server process of this dev's lost connection may still hold the lock (a
        network that went quiet is noticed by the server only at its keepalive): it is
        this dev's own, so it is ended rather than taken for another dev's."""
        from psycopg import sql  # noqa: PLC0415

        if self._backend is not None:
            pid, started = self._backend
            conn.execute(
                sql.SQL(
                    "select pg_terminate_backend(pid, 5000) from pg_stat_activity"
                    " where pid = {} and backend_start = {}"
                ).format(pid, sql.Literal(started))
            )

    def check(self) -> bool:
        """Whether the lock is still this dev's, taking it back if its connection was lost."""
        import psycopg  # noqa: PLC0415

        if self._conn is not None and not self._conn.closed:
            with contextlib.suppress(psycopg.Error):
                self._conn.execute("select 1")
                return True
        was_held = self.held
        try:
            self.held = self.take(connect_timeout=math.ceil(ANSWER_WITHIN_SECONDS))
        except DatabaseUnavailableError:
            # Nobody takes it while the database is down: the sweep carries on, failing
            # on its own and saying so, and is back at once when the database is.
            return self.held
        if was_held and not self.held:
            logger.warning(
                "another tether dev took this database while this one's connection to it"
                " was lost: this one's sweep stands down, or it would end that one's"
                " sessions as gone"
            )
        elif self.held and not was_held:
            logger.info("this tether dev holds its database again; its sweep goes on")
        return self.held

    async def watch(self, server: uvicorn.Server, thread: Executor) -> None:
        loop = asyncio.get_running_loop()
        while not server.should_exit:
            await asyncio.sleep(CLAIM_CHECK_SECONDS)
            try:
                await loop.run_in_executor(thread, self.check)
            except Exception:  # a bug must not end the watch: the lock is checked again
                logger.exception("checking the database lock failed")

    def _drop(self) -> None:
        if self._conn is not None:
            self._conn.close()  # never raises, a lost server or not
        self._conn = None

    def close(self) -> None:
        self._drop()
        self.held = False


def _let_go_of(database: embedded.EmbeddedPostgres) -> None:
    """Stop the embedded Postgres this dev ran on: at once if it started it; one a
    killed dev or command left, unless a command is using it."""
    stopped = True
    if database.started_here:
        database.stop()
    else:
        stopped = embedded.stop_if_unused(database)
    starter = dev_state.started_by(database.data_dir)
    with contextlib.suppress(OSError, ValueError):
        if stopped and int(starter.read_text().strip()) == os.getpid():
            starter.unlink()


def _hold_the_database(url: str) -> DatabaseClaim:
    claim = DatabaseClaim(url)
    if not claim.take(DEV_LOCK_WAIT_SECONDS):
        raise ConfigurationError(
            "another tether dev is running on this database (from another folder): each"
            " would end the other's sessions as gone. Stop it, or point this one at a"
            " database of its own"
        )
    return claim


def _checked(options: DevOptions) -> tuple[Routing, Faults]:
    """The flags, checked before anything starts (the embedded database's URL is not
    known yet: any URL stands in for it), so a bad one starts nothing."""
    routed = routing(options)
    config = dev_settings(options, options.database_url or "postgresql://localhost/tether")
    _read_named_secrets(config)
    return routed, Faults(options.fault_file)


def _read_named_secrets(config: Settings) -> None:
    """The token secret and the operator key, when their settings name where they are
    kept (a Secrets Manager or SSM reference), read before anything starts: one this
    machine cannot read (no AWS credentials here, a name mistyped) refused every
    connection, or answered every operator request 500, each saying why only in the log,
    under a banner that said tokens were checked."""
    if is_reference(config.jwt_secret or ""):
        read_checked_secret(config, "jwt_secret")
    if is_reference(config.operator_key or ""):
        read_checked_secret(config, "operator_key")


@contextlib.contextmanager
def _dev_output() -> Iterator[None]:
    """Whole lines on stdout from every thread, and the gateway's own lines, for the
    run's life: the process's stdout and log levels are given back after it."""
    previous = sys.stdout
    sys.stdout = LineAtomicStream(previous)
    loggers = [logging.getLogger(name) for name in ("tether.dev", "tether.gateway")]
    levels = [each.level for each in loggers]
    for each in loggers:
        each.setLevel(logging.INFO)
    # uvicorn's own lines (a request it cannot parse, from any scanner of the port) went
    # to stderr as bare text: they go the way of every other log line, JSON on stdout.
    server_log = logging.getLogger("uvicorn")
    kept = (server_log.handlers, server_log.propagate)
    server_log.handlers = list(logging.getLogger("tether").handlers)
    server_log.propagate = False
    try:
        yield
    finally:
        sys.stdout = previous
        for each, level in zip(loggers, levels, strict=True):
            each.setLevel(level)
        server_log.handlers, server_log.propagate = kept


def run(options: DevOptions, say: Callable[[str], None]) -> int:
    # What it holds is let go in reverse, whether it stops or fails to start.
    with contextlib.ExitStack() as held:
        held.enter_context(_dev_output())
        routed, faults = _checked(options)
        held.enter_context(_hold_the_folder())
        listener = held.enter_context(bind(options.host, options.port))
        url, database = options.database_url, None
        if url is None:
            database = embedded.start(embedded.DEFAULT_DATA_DIR)
            url = database.url
            held.callback(_let_go_of, database)
            # Whoever started it, this dev stops it now: if it is killed before, the
            # next command, finding its starter gone, stops it instead.
            dev_state.started_by(database.data_dir).write_text(str(os.getpid()))
        claim = _hold_the_database(url)
        held.callback(claim.close)
        # A busy table makes it wait (its lock timeout, then a pause): said as it waits.
        applied = migrate.migrate(url, progress=say)
        config = dev_settings(options, url)
        gateway, server = build(options, config, routed, faults)
        held.callback(runtime.reset)
        held.callback(dev_state.clear)
        # What tether migrate exits 1 over: every connection would fail while the banner
        # alone said all was well.
        leftovers, problems = _leftovers(config), tuple(row_security.problems(runtime.store()))
        ws_url = f"ws://{_netloc(options)}"
        schedule = _Schedule(options.sweep_interval, config.sweep_time_margin_seconds, claim)

        async def ready() -> None:
            # Said once the gateway serves: the first command to try works at once.
            while not server.started:
                if server.should_exit:
                    return
                await asyncio.sleep(0.02)
            # The note first: once the banner says so, simulate and --embedded find it.
            dev_state.write(
                database_url=url,
                ws_url=ws_url,
                connections_endpoint=config.connections_endpoint or "",
                embedded_data_dir=database.data_dir if database else None,
                sweep_settings={name: getattr(config, name) for name in dev_state.SWEEP_SETTINGS},
            )
            _banner(
                say,
                options=options,
                config=config,
                url=url,
                database=database,
                applied=len(applied),
                leftovers=leftovers,
                problems=problems,
            )

        # The sweep and each watcher on a thread of its own, one call at a time: the
        # handlers (on the gateway's pool) and they cannot hold each other up. The
        # sweep's one thread keeps its one database connection.
        sweep_thread = held.enter_context(ThreadPoolExecutor(1, "tether-sweep"))
        watch_threads = held.enter_context(ThreadPoolExecutor(2, "tether-watch"))

        async def main() -> None:
            asyncio.create_task(ready())  # noqa: RUF006 - it ends on its own, quickly
            sweeper = asyncio.create_task(schedule.forever(server, sweep_thread))
            watchers = [asyncio.create_task(claim.watch(server, watch_threads))]
            if database is not None:
                watchers.append(
                    asyncio.create_task(_watch_embedded(server, database, watch_threads))
                )
            try:
                await server.serve(sockets=[listener])
            finally:
                schedule.stop()
                for task in (sweeper, *watchers):
                    task.cancel()
                await asyncio.gather(sweeper, *watchers, return_exceptions=True)

        try:
            stopping.run(main())
        finally:
            gateway.close()
    _say_stopped(gateway.stats, say)
    return 0


async def _watch_embedded(
    server: uvicorn.Server, database: embedded.EmbeddedPostgres, thread: Executor
) -> None:
    """Say when the embedded Postgres stops under the dev (killed, say), and when it is
    back: every check failing as "unavailable" does not tell that nothing will restart
    it."""
    loop = asyncio.get_running_loop()
    stopped = False
    while not server.should_exit:
        await asyncio.sleep(CLAIM_CHECK_SECONDS)
        try:
            running = await loop.run_in_executor(thread, embedded.is_running, database.data_dir)
        except Exception:  # a bug must not end the watch: it looks again
            logger.exception("checking the embedded Postgres failed")
            continue
        if not running and not stopped:
            logger.error(
                "the embedded Postgres has stopped: connections are refused (503) and the"
                " sweep cannot run until it runs again; restart tether dev to start it",
                extra={"data_dir": str(database.data_dir)},
            )
        elif running and stopped:
            logger.info("the embedded Postgres is running again")
        stopped = not running


def _say_stopped(stats: GatewayStats, say: Callable[[str], None]) -> None:
    say(f"tether dev: stopped; {stats.opened} opened, {stats.ended} ended, {stats.refused} refused")
    if stats.disconnects_failed:
        say(
            f"  of those ends, {stats.disconnects_failed} $disconnect(s) failed (the log above"
            " says why): their sessions stay active until a sweep ends them (this run's, if"
            " it came after, or the next `tether dev`'s first)"
        )
    sys.stdout.flush()
