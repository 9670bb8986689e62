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
import weakref
from typing import TYPE_CHECKING

from tether.aws.secrets import resolve_secret, resolve_setting
from tether.settings import Settings, load_settings

if TYPE_CHECKING:
    from tether.auth import TokenVerifier
    from tether.aws.connections import ConnectionsApi
    from tether.outbox import Announcer
    from tether.store import SessionStore
    from tether.sweep import RemainingSeconds, Sleep, Sweep, SweepReport


@functools.cache
def settings() -> Settings:
    return _installed[-1] if _installed else load_settings()


_stores = threading.local()
_all_stores: weakref.WeakSet[SessionStore] = weakref.WeakSet()
_stores_lock = threading.Lock()


class _ThreadStore:
    """Holds a thread's store; when the thread ends, its local data goes, and with it
    the store's connection (a worker thread per request must not leak one each)."""

    def __init__(self, held: SessionStore) -> None:
        self.store = held
        weakref.finalize(self, held.close)


def store() -> SessionStore:
    """The session store of this container, which on Lambda is this thread. The local
    runtime runs several invocations at once, one per worker thread: each thread gets
    a store (a database connection) of its own, as each Lambda container does."""
    holder: _ThreadStore | None = getattr(_stores, "holder", None)
    if holder is None:
        holder = _ThreadStore(_new_store())
        _stores.holder = holder
        with _stores_lock:
            _all_stores.add(holder.store)
    return holder.store


@functools.cache
def shared_store() -> SessionStore:
    """One store for the whole process, its calls taken one at a time: for callers
    whose threads come and go with each request (the operators' API)."""
    from tether.store import SerializedStore  # noqa: PLC0415

    shared = SerializedStore(_new_store())
    with _stores_lock:
        _all_stores.add(shared)
    return shared


def _new_store() -> SessionStore:
    config = settings()
    config.require_store()
    if config.database_url:
        from tether.drivers.postgres import PostgresStore  # noqa: PLC0415

        return PostgresStore(
            resolve_setting("TETHER_DATABASE_URL", config.database_url, config.aws_endpoint_url)
        )
    from tether.drivers.supabase import SupabaseStore  # noqa: PLC0415

    return SupabaseStore(
        config.supabase_url or "",
        resolve_setting(
            "TETHER_SUPABASE_SERVICE_KEY",
            config.supabase_service_key or "",
            config.aws_endpoint_url,
        ),
    )


@functools.cache
def verifier() -> TokenVerifier | None:
    """The token verifier, or None when only anonymous connections are configured."""
    config = settings()
    config.require_authentication()
    from tether.auth import verifier_for  # noqa: PLC0415

    return verifier_for(
        config,
        allowed_roles=config.role_allow_list,
        allow_anonymous_users=config.allow_anonymous,
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

    return ConnectionsApi(
        config.connections_endpoint, concurrency=max(10, config.sweep_concurrency)
    )


def sweep(
    remaining_seconds: RemainingSeconds,
    *,
    keep_checking: bool = True,
    sleep: Sleep | None = None,
    session_store: SessionStore | None = None,
    report: SweepReport | None = None,
) -> Sweep:
    """A sweep built from this container's configuration, on the store given (the
    operators' API passes its one shared store) or this thread's, filling the report
    given, if any."""
    from tether.sweep import Sweep, SweepPolicy  # noqa: PLC0415

    return Sweep(
        store=session_store or store(),
        announcer=announcer(),
        policy=SweepPolicy.from_settings(settings(), keep_checking=keep_checking),
        connections=connections(),
        remaining_seconds=remaining_seconds,
        sleep=sleep or time.sleep,
        report=report,
    )


def install(config: Settings) -> None:
    """Use these settings instead of the environment's (the CLI and the local runtime)."""
    reset()
    _installed.append(config)


_installed: list[Settings] = []


def reset() -> None:
    """Forget every singleton (tests, and the local runtime after a config change)."""
    with _stores_lock:
        for each in list(_all_stores):
            each.close()
        _all_stores.clear()
    global _stores  # noqa: PLW0603 - a fresh thread-local forgets every thread's store
    _stores = threading.local()
    for cached in (verifier, announcer, connections, shared_store):
        cached.cache_clear()
    settings.cache_clear()
    resolve_secret.cache_clear()
    _installed.clear()
