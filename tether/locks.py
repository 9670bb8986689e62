"""Taking a lock that stops writes without stopping them for long.

A statement waiting for a lock also makes every later writer of the table wait
behind it. So each transaction that takes a lock conflicting with writes (an
adoption's step, a migration run) sets ``lock_timeout``: if the lock is not free
within it (a long transaction holds the table), the transaction gives up,
everything waiting behind it goes on, and it tries again after a pause that grows
each time."""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from tether.dburl import hide_secrets

if TYPE_CHECKING:
    import psycopg

    from tether.errors import TetherError

logger = logging.getLogger("tether.locks")

Progress = Callable[[str], None]
Work = Callable[["psycopg.Connection[tuple[Any, ...]]"], None]


@dataclass(frozen=True)
class LockPolicy:
    timeout_seconds: float = 1.0
    """The longest a lock request may make the table's writers wait."""
    attempts: int = 30
    """Tries before giving up (the pauses between them grow to ``max_pause_seconds``)."""
    first_pause_seconds: float = 0.5
    max_pause_seconds: float = 15.0

    def pause(self, attempt: int) -> float:
        base = min(self.max_pause_seconds, self.first_pause_seconds * 2 ** (attempt - 1))
        return float(base) * random.uniform(0.75, 1.25)  # noqa: S311 - jitter, not security


_HOLDERS = """
select a.pid, coalesce(nullif(a.application_name, ''), '?'), coalesce(a.state, '?'),
       coalesce(round(extract(epoch from now() - a.xact_start)::numeric, 1), 0)
from pg_catalog.pg_locks l join pg_catalog.pg_stat_activity a on a.pid = l.pid
where l.locktype = 'relation' and l.granted and l.pid <> pg_backend_pid()
  and l.database = (select oid from pg_catalog.pg_database where datname = current_database())
  and ({tables})
group by 1, 2, 3, 4 order by 4 desc limit 3
"""
_TETHERS_TABLES = (
    "l.relation = to_regclass('public.conversation_sessions')"
    " or l.relation in (select c.oid from pg_catalog.pg_class c"
    " where c.relnamespace = to_regnamespace('tether'))"
)


def holders(conn: psycopg.Connection[tuple[Any, ...]]) -> str:
    """Who holds tether's tables now (what made the lock wait), or, when none does, any
    table (a migration may wait on another schema's): pid, application, state and the
    age of its transaction. Never the query text, which may hold secrets."""
    rows = conn.execute(_HOLDERS.format(tables=_TETHERS_TABLES)).fetchall()
    if not rows:
        rows = conn.execute(_HOLDERS.format(tables="true")).fetchall()
    if not rows:
        return "no transaction holds it now"
    return "; ".join(
        f"pid {pid} ({hide_secrets(str(app))}, {state}, in a transaction for {age}s)"
        for pid, app, state, age in rows
    )


def with_lock_timeout(
    conn: psycopg.Connection[tuple[Any, ...]],
    step: str,
    work: Work,
    *,
    policy: LockPolicy,
    progress: Progress,
    gives_up_with: type[TetherError],
    again: str = "run the command again when the table is quieter",
    first: Work | None = None,
) -> None:
    """Run ``work`` in one transaction whose every lock request waits at most
    ``policy.timeout_seconds``; on a timeout, roll back, pause, and try again. After
    the last try, raise ``gives_up_with``, saying who held the table and ``again``.
    ``first`` runs in the same transaction before the timeout applies: a lock only
    its own kind waits for (an advisory lock) may wait as long as it takes."""
    import psycopg  # noqa: PLC0415

    for attempt in range(1, policy.attempts + 1):
        try:
            with conn.transaction():
                if first is not None:
                    first(conn)
                conn.execute(
                    "select set_config('lock_timeout', %s, true)",
                    (f"{max(1, round(policy.timeout_seconds * 1000))}ms",),
                )
                work(conn)
        except psycopg.errors.LockNotAvailable:
            # In a transaction of its own, ended at once: on a connection that is not in
            # autocommit, the read would open one that stayed open through the pause
            # (idle in transaction, each later try a savepoint of it, each later read
            # of pg_stat_activity the first one's snapshot).
            with conn.transaction():
                who = holders(conn)
            if attempt == policy.attempts:
                raise gives_up_with(
                    f"{step}: the table stayed busy through {policy.attempts}"
                    f" {'try' if policy.attempts == 1 else 'tries, each'}"
                    f" waiting at most {policy.timeout_seconds:g}s ({who}). Nothing of this"
                    f" step was changed; {again}"
                ) from None
            pause = policy.pause(attempt)
            logger.info(
                "lock not available; trying again",
                extra={"step": step, "attempt": attempt, "pause_seconds": pause},
            )
            progress(
                f"  {step}: the table is busy ({who}); waited {policy.timeout_seconds:g}s,"
                f" trying again in {pause:.1f}s"
            )
            time.sleep(pause)
        else:
            return
