"""Per-container singletons: settings, the store, the verifier, the announcer.

Each is built on first use and kept for the life of the container (warm
invocations reuse the database connection and the JWKS cache). A handler only
builds what its own path needs: ``$connect`` never builds the announcer, so it
never imports boto3 unless a secret reference asks for it.
"""

from __future__ import annotations

import functools
import threading
import time
from typing import TYPE_CHECKING

from tether.aws.secrets import resolve_secret
from tether.settings import Settings, load_settings

if TYPE_CHECKING:
    from tether.auth import TokenVerifier
    from tether.aws.connections import ConnectionsApi
    from tether.outbox import Announcer
    from tether.store import SessionStore
    from tether.sweep import RemainingSeconds, Sleep, Sweep


@functools.cache
def settings() -> Settings:
    return _installed[-1] if _installed else load_settings()


_stores = threading.local()
_all_stores: list[SessionStore] = []
_stores_lock = threading.Lock()


def store() -> SessionStore:
    """The session store of this container, which on Lambda is this thread. The local
    runtime runs several invocations at once, one per worker thread: each thread gets
    a store (a database connection) of its own, as each Lambda container does."""
    existing: SessionStore | None = getattr(_stores, "store", None)
    if existing is None:
        existing = _new_store()
        _stores.store = existing
        with _stores_lock:
            _all_stores.append(existing)
    return existing


def _new_store() -> SessionStore:
    config = settings()
    config.require_store()
    if config.database_url:
        from tether.drivers.postgres import PostgresStore  # noqa: PLC0415

        return PostgresStore(resolve_secret(config.database_url, config.aws_endpoint_url))
    from tether.drivers.supabase import SupabaseStore  # noqa: PLC0415

    return SupabaseStore(
        config.supabase_url or "",
        resolve_secret(config.supabase_service_key or "", config.aws_endpoint_url),
    )


@functools.cache
def verifier() -> TokenVerifier | None:
    """The token verifier, or None when only anonymous connections are configured."""
    config = settings()
    config.require_authentication()
    if not config.jwt_secret and not config.signing_keys_url:
        return None
    from tether.auth import TokenVerifier  # noqa: PLC0415

    endpoint = config.aws_endpoint_url
    secret = resolve_secret(config.jwt_secret, endpoint) if config.jwt_secret else None
    return TokenVerifier(
        audience=config.jwt_audience,
        issuer=config.issuer or "",
        jwks_url=config.signing_keys_url,
        hs256_secret=secret,
        allowed_roles=config.role_allow_list,
        allow_anonymous_users=config.allow_anonymous,
        jwks_cache_seconds=config.jwks_cache_seconds,
        jwks_refresh_cooldown_seconds=config.jwks_refresh_cooldown_seconds,
        leeway_seconds=config.jwt_leeway_seconds,
    )


@functools.cache
def announcer() -> Announcer:
    config = settings()
    if config.announce_to == "log":
        from tether.outbox import LogAnnouncer  # noqa: PLC0415

        return LogAnnouncer()
    from tether.aws.eventbridge import EventBridgeAnnouncer  # noqa: PLC0415

    return EventBridgeAnnouncer(
        config.event_bus_name, source=config.event_source, endpoint_url=config.aws_endpoint_url
    )


@functools.cache
def connections() -> ConnectionsApi | None:
    """The @connections API, or None when no endpoint is configured (hard limits only)."""
    config = settings()
    if not config.connections_endpoint:
        return None
    from tether.aws.connections import ConnectionsApi  # noqa: PLC0415

    return ConnectionsApi(config.connections_endpoint)


def sweep(
    remaining_seconds: RemainingSeconds, *, keep_checking: bool = True, sleep: Sleep | None = None
) -> Sweep:
    """A sweep built from this container's configuration."""
    from tether.sweep import Sweep, SweepPolicy  # noqa: PLC0415

    return Sweep(
        store=store(),
        announcer=announcer(),
        policy=SweepPolicy.from_settings(settings(), keep_checking=keep_checking),
        connections=connections(),
        remaining_seconds=remaining_seconds,
        sleep=sleep or time.sleep,
    )


def install(config: Settings) -> None:
    """Use these settings instead of the environment's (the CLI and the local runtime)."""
    reset()
    _installed.append(config)


_installed: list[Settings] = []


def reset() -> None:
    """Forget every singleton (tests, and the local runtime after a config change)."""
    with _stores_lock:
        for each in _all_stores:
            each.close()
        _all_stores.clear()
    global _stores  # noqa: PLW0603 - a fresh thread-local forgets every thread's store
    _stores = threading.local()
    for cached in (verifier, announcer, connections):
        cached.cache_clear()
    settings.cache_clear()
    resolve_secret.cache_clear()
    _installed.clear()
