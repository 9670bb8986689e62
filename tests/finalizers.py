"""Finalizers the SessionEnded tests name in TETHER_FINALIZER."""

from __future__ import annotations

import asyncio
import functools
import sys
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

from tether.models import SessionEnded

calls: list[SessionEnded] = []
failures_left = 0


def recording(detail: SessionEnded) -> None:
    global failures_left  # noqa: PLW0603 - test double state
    if failures_left > 0:
        failures_left -= 1
        raise RuntimeError("memory store unavailable")
    calls.append(detail)


not_callable = 42

lease_probe_url: str | None = None
leases_seen: list[float] = []


def lease_probe(detail: SessionEnded) -> None:
    """Records how long the claim this call runs under still has to run."""
    import psycopg  # noqa: PLC0415

    assert lease_probe_url is not None
    with psycopg.connect(lease_probe_url) as conn:
        row = conn.execute(
            "select extract(epoch from finalize_after - now())::float8"
            " from public.conversation_sessions where session_id = %s",
            (detail.session_id,),
        ).fetchone()
    assert row is not None
    leases_seen.append(float(row[0]))


LEAKED_PASSWORD = "S3cretPass"  # the secret the test looks for
LEAKED_TOKEN = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJ4In0.abcDEF123"


def leaky(detail: SessionEnded) -> None:
    """Fails as a careless finalizer does: with its connection string in the message,
    and a token in a note added on the way up."""
    failure = RuntimeError(
        f"could not reach postgresql://mem:{LEAKED_PASSWORD}@db.example.com:5432/mem"
        f" with token={LEAKED_TOKEN}"
    )
    failure.add_note(f"while calling https://memory.example.com/v1/save?token={LEAKED_TOKEN}")
    raise failure


async_client_loop: list[asyncio.AbstractEventLoop] = []


async def recording_async(detail: SessionEnded) -> None:
    """An ``async def`` finalizer, as an application on an async client writes one: the
    client, made at its first call and kept (a pool), works on the loop it was made on
    only, as httpx's and asyncpg's do."""
    loop = asyncio.get_running_loop()
    if not async_client_loop:
        async_client_loop.append(loop)
    if async_client_loop[0] is not loop:
        raise RuntimeError("the client is bound to a different event loop")
    await asyncio.sleep(0)
    calls.append(detail)


async def cancelled_async(detail: SessionEnded) -> None:
    """An async finalizer whose work was cancelled (a task it awaited, cut short)."""
    raise asyncio.CancelledError


def recording_generator(detail: SessionEnded) -> Iterator[None]:
    """A finalizer left with a ``yield`` in it: calling it runs none of its body."""
    calls.append(detail)
    yield


async def recording_async_generator(detail: SessionEnded) -> AsyncIterator[None]:
    calls.append(detail)
    yield


class _RecordingGeneratorObject:
    """A callable object whose ``__call__`` has a ``yield`` in it."""

    def __call__(self, detail: SessionEnded) -> Iterator[None]:
        calls.append(detail)
        yield


recording_generator_object = _RecordingGeneratorObject()

recording_generator_partial = functools.partial(recording_generator)


def recording_then_returning_a_generator(detail: SessionEnded) -> Iterator[str]:
    """Does its work, then returns a generator of what it did: from outside, not told
    from a generator function behind a wrapper."""
    calls.append(detail)
    return (str(detail.session_id) for _ in range(1))


def _timed(function: Callable[[SessionEnded], Any]) -> Callable[[SessionEnded], Any]:
    """A decorator as applications write them, without functools.wraps."""

    def wrapper(detail: SessionEnded) -> Any:
        return function(detail)

    return wrapper


def _timed_async(function: Callable[[SessionEnded], Any]) -> Callable[[SessionEnded], Any]:
    async def wrapper(detail: SessionEnded) -> Any:
        return function(detail)

    return wrapper


@_timed
def recording_generator_wrapped(detail: SessionEnded) -> Iterator[None]:
    """A generator function behind a wrapper that hides it."""
    calls.append(detail)
    yield


@_timed
async def recording_async_generator_wrapped(detail: SessionEnded) -> AsyncIterator[None]:
    calls.append(detail)
    yield


@_timed_async
def recording_generator_async_wrapped(detail: SessionEnded) -> Iterator[None]:
    calls.append(detail)
    yield


def exits(detail: SessionEnded) -> None:
    """A finalizer whose library ends the program as a script would (``sys.exit``)."""
    sys.exit("memory store not configured")


row_locker_url: str | None = None
row_locker: list[Any] = []
"""The connection holding the session's row, kept open until the test closes it."""


def _lock_the_row(detail: SessionEnded) -> None:
    """What a finalizer that writes the same row from its own connection may do: hold it,
    so that recording the finalizer's outcome waits past its lock timeout."""
    import psycopg  # noqa: PLC0415

    assert row_locker_url is not None
    conn = psycopg.connect(row_locker_url)
    conn.execute(
        "select 1 from public.conversation_sessions where session_id = %s for update",
        (detail.session_id,),
    )
    row_locker.append(conn)


def lock_then_fail(detail: SessionEnded) -> None:
    _lock_the_row(detail)
    raise RuntimeError("memory service said no")


def lock_then_succeed(detail: SessionEnded) -> None:
    _lock_the_row(detail)
    calls.append(detail)
