"""``tether dev``: the whole system on one machine.

An embedded Postgres (or any ``--database-url``), the migrations, the local
gateway invoking the real handlers, and the sweep on its schedule asking the
gateway's own ``@connections`` API, and the operators' API and page under ``/admin``
with a key made for the run. Ctrl-C or SIGTERM closes every connection
and runs its ``$disconnect`` before exiting, so the table is left with no active
session; a ``kill -9`` leaves rows for the first sweeps of the next start.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import secrets
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import uvicorn

from tether import limits, migrate, runtime
from tether.cli.common import LOCAL_STATE
from tether.dburl import redact
from tether.errors import ConfigurationError, TetherError
from tether.loading import load_callable
from tether.local import embedded
from tether.local.gateway import (
    FRAME_LIMIT,
    MESSAGE_LIMIT,
    Limits,
    LocalGateway,
    protocol_for,
)
from tether.settings import load_settings

logger = logging.getLogger("tether.dev")

STAGE = "local"


@dataclass
class DevOptions:
    host: str = "127.0.0.1"
    port: int = 3001
    database_url: str | None = None
    sweep_interval: float = 60.0
    heartbeat_grace: float | None = None
    idle_timeout: float = limits.GATEWAY_IDLE_TIMEOUT_SECONDS
    max_duration: float = limits.GATEWAY_MAX_CONNECTION_SECONDS
    suspect_after: float | None = None
    disconnect_loss: float = 0.0
    routes: list[str] = field(default_factory=list)
    route_selection: str = "$request.body.action"


def parse_routes(specs: list[str]) -> dict[str, Callable[[dict[str, Any], Any], Any]]:
    routes: dict[str, Callable[[dict[str, Any], Any], Any]] = {}
    for spec in specs:
        name, separator, reference = spec.partition("=")
        if not separator or not name or not reference:
            raise ConfigurationError(f"--route takes NAME=module:function, got {spec!r}")
        routes[name] = load_callable(reference, what="handler", default_attribute="lambda_handler")
    return routes


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
        raise ConfigurationError(
            f"route selection must look like $request.body.<key>, got {expression!r}"
        )
    return key[len(prefix) :]


def _env_flag(name: str, default: bool) -> bool:
    value = os.environ.get(name)
    return default if value is None else value.strip().lower() in {"1", "true", "yes", "on"}


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


def build(
    options: DevOptions, database_url: str, routed: Routing
) -> tuple[LocalGateway, uvicorn.Server]:
    from tether.admin.app import create_app  # noqa: PLC0415
    from tether.handlers import connect, disconnect  # noqa: PLC0415

    endpoint = f"http://{options.host}:{options.port}/{STAGE}"
    overrides: dict[str, Any] = {
        "database_url": database_url,
        "allow_anonymous": _env_flag("TETHER_ALLOW_ANONYMOUS", default=True),
        "announce_to": os.environ.get("TETHER_ANNOUNCE_TO", "log"),
        "connections_endpoint": endpoint,
        "idle_timeout_seconds": options.idle_timeout,
        "max_duration_seconds": options.max_duration,
        "heartbeat_grace_seconds": options.heartbeat_grace,
    }
    if options.suspect_after is not None:
        overrides["suspect_after_seconds"] = options.suspect_after
    if not os.environ.get("TETHER_OPERATOR_KEY"):
        # A key for this run only, printed at start: curl and a browser work at once.
        overrides["operator_key"] = secrets.token_urlsafe(24)
    runtime.install(load_settings(**overrides))

    gateway = LocalGateway(
        connect=connect.lambda_handler,
        disconnect=disconnect.lambda_handler,
        routes=routed.routes,
        limits=Limits(
            idle_timeout_seconds=options.idle_timeout,
            max_duration_seconds=options.max_duration,
            frame_bytes=FRAME_LIMIT,
            message_bytes=MESSAGE_LIMIT,
        ),
        route_selection_key=routed.selection_key,
        stage=STAGE,
        domain_name=f"{options.host}:{options.port}",
        disconnect_loss=options.disconnect_loss,
        on_event=lambda what, connection_id: logger.info("%s %s", what, connection_id),
        admin=create_app(),
    )
    config = uvicorn.Config(
        gateway,
        host=options.host,
        port=options.port,
        ws=protocol_for(gateway.limits),
        ws_max_size=gateway.limits.message_bytes,
        ws_ping_interval=None,
        lifespan="on",
        log_level="warning",
    )
    return gateway, _Server(config)


async def _sweep_forever(interval: float, server: uvicorn.Server) -> None:
    from tether.handlers.sweep import run_sweep  # noqa: PLC0415
    from tether.sweep import SweepPolicy  # noqa: PLC0415

    while not server.started:
        await asyncio.sleep(0.05)
    policy = SweepPolicy.from_settings(runtime.settings())
    while not server.should_exit:

        def one_run() -> None:
            # Like the scheduled Lambda: time to work for one period, plus the margin
            # at which the sweep stops taking batches.
            deadline = time.monotonic() + max(interval, 1.0) + policy.time_margin_seconds
            run_sweep(lambda: deadline - time.monotonic())

        try:
            await asyncio.to_thread(one_run)
        except TetherError:
            pass  # run_sweep logged it; the next run tries again, as on AWS
        except Exception:  # a bug must not stop the schedule either
            logger.exception("sweep crashed; the next run tries again")
        await asyncio.sleep(interval)


def _write_state(database_url: str, ws_url: str) -> None:
    """Tell `tether simulate` (and the curious) which database and gateway run here."""
    LOCAL_STATE.parent.mkdir(parents=True, exist_ok=True)
    LOCAL_STATE.touch(mode=0o600)  # the URL may carry a password
    LOCAL_STATE.write_text(
        json.dumps({"database_url": database_url, "ws_url": ws_url, "pid": os.getpid()})
    )


def run(options: DevOptions, say: Callable[[str], None]) -> int:
    logging.getLogger("tether.dev").setLevel(logging.INFO)
    logging.getLogger("tether.gateway").setLevel(logging.INFO)
    routed = routing(options)
    database = None
    url = options.database_url
    if url is None:
        database = embedded.start(embedded.DEFAULT_DATA_DIR)
        url = database.url
    applied = migrate.migrate(url)
    gateway, server = build(options, url, routed)

    where = f"embedded in {database.data_dir}" if database else "given"
    say(f"tether dev: database ({where}) {redact(url)}")
    say(f"  migrations applied now: {len(applied)}")
    say(f"  WebSocket     ws://{options.host}:{options.port}")
    say(f"  @connections  http://{options.host}:{options.port}/{STAGE}/@connections/{{id}}")
    admin = f"http://{options.host}:{options.port}/admin"
    key = "$TETHER_OPERATOR_KEY" if os.environ.get("TETHER_OPERATOR_KEY") else None
    key = key or runtime.settings().operator_key or ""
    say(f"  operator key  {key}")
    say(f"  live page     {admin}/dashboard?key={key}")
    say(f"  API           curl -H 'Authorization: Bearer {key}' {admin}/sessions?active=true")
    say(f"                (schema: {admin}/openapi.json)")
    say(
        f"  sweep every {options.sweep_interval:g}s;"
        f" idle {options.idle_timeout:g}s, max {options.max_duration:g}s"
    )
    say("  Ctrl-C closes every connection and ends its session")
    _write_state(url, f"ws://{options.host}:{options.port}")

    async def main() -> None:
        sweeper = asyncio.create_task(_sweep_forever(options.sweep_interval, server))
        try:
            await server.serve()
        finally:
            sweeper.cancel()
            await asyncio.gather(sweeper, return_exceptions=True)

    try:
        asyncio.run(main())
    finally:
        LOCAL_STATE.unlink(missing_ok=True)
        runtime.reset()
        if database is not None and database.started_here:
            database.stop()
    say(
        f"tether dev: stopped; {gateway.stats.opened} opened, {gateway.stats.ended} ended,"
        f" {gateway.stats.refused} refused"
    )
    sys.stdout.flush()
    return 0
