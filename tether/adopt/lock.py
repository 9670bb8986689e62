"""One ``tether adopt`` at a time on a database: a session-level advisory lock that
``--apply`` and ``--finish`` hold while they change the table, and that ``tether
migrate`` and ``--finish``'s plan read to tell an adoption running from one stopped part
way through."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import psycopg

ADOPT_LOCK_KEY = 7_460_501_002
"""Session advisory lock: one adoption at a time per database (--apply and --finish)."""
ANOTHER_ADOPT_RUNS = "another tether adopt is running on this database; wait for it to end"


def take(conn: psycopg.Connection[tuple[Any, ...]]) -> bool:
    """Take the lock for this connection's session, if no other session holds it."""
    held = conn.execute("select pg_try_advisory_lock(%s)", (ADOPT_LOCK_KEY,)).fetchone()
    return bool(held and held[0])


def release(conn: psycopg.Connection[tuple[Any, ...]]) -> None:
    """Let go of the lock this connection's session holds."""
    conn.execute("select pg_advisory_unlock(%s)", (ADOPT_LOCK_KEY,))


def held_by_another(conn: psycopg.Connection[tuple[Any, ...]]) -> bool:
    """Whether another session holds the lock on this database now (a bigint key is
    held as its high and low 32 bits, objsubid 1), changing nothing."""
    row = conn.execute(
        "select exists (select 1 from pg_catalog.pg_locks where locktype = 'advisory'"
        " and granted and pid <> pg_backend_pid()"
        " and database = (select oid from pg_catalog.pg_database"
        " where datname = current_database())"
        " and classid::bigint = %s and objid::bigint = %s and objsubid = 1)",
        (ADOPT_LOCK_KEY >> 32, ADOPT_LOCK_KEY & 0xFFFFFFFF),
    ).fetchone()
    return bool(row and row[0])
