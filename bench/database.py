"""The benchmarks' Postgres: a fresh embedded server per suite run, and a scratch
database per benchmark on it."""

from __future__ import annotations

import os
import shutil
import threading
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

import psycopg
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from tether import migrate
from tether.local import embedded
from tether.local import state as dev_state

BENCH_DATA_DIR = Path(".tether") / "bench-pgdata"
# Held for a run's life, until its results are written: a second run would stop the first
# one's server and remove its data, or merge its results into the latest.json the first
# is about to replace. The system releases it when the holder ends, a crash included.
BENCH_LOCK = Path(".tether") / "bench.lock"

TEMPLATE = "tether_bench_template"

_server: embedded.EmbeddedPostgres | None = None
_claim: IO[str] | None = None


_template_lock = threading.Lock()


class AnotherRunError(RuntimeError):
    """Another benchmark run holds this folder's benchmark server."""


def _claim_the_server() -> None:
    global _claim  # noqa: PLW0603 - one claim per suite run
    if _claim is not None:
        return
    claim = dev_state.hold(BENCH_LOCK)
    if claim is None:
        try:
            holder = f" (pid {int(BENCH_LOCK.read_text().strip())})"
        except (OSError, ValueError):
            holder = ""
        raise AnotherRunError(
            f"another benchmark run{holder} is using {BENCH_DATA_DIR}: wait for it to end;"
            " two at once would stop each other's Postgres, and share the CPUs they measure"
        )
    claim.truncate(0)
    claim.write(f"{os.getpid()}\n")
    claim.flush()
    _claim = claim


def start_fresh() -> embedded.EmbeddedPostgres:
    """A new cluster (initdb), so no earlier run's tables, bloat or statistics count."""
    global _server  # noqa: PLW0603 - one server per suite run
    _claim_the_server()
    path = BENCH_DATA_DIR.resolve()
    embedded.stop_if_running(path)
    shutil.rmtree(path, ignore_errors=True)
    _server = embedded.start(path)
    # Migrated once, copied for each benchmark: the migrations create cluster-wide roles,
    # which two benchmarks migrating at once would both try to create.
    with psycopg.connect(_server.url, autocommit=True) as admin:
        admin.execute(sql.SQL("create database {}").format(sql.Identifier(TEMPLATE)))
    migrate.migrate(with_database(_server.url, TEMPLATE))
    return _server


def stop() -> None:
    """Stop the run's server; the claim stays held (see ``release``)."""
    global _server  # noqa: PLW0603
    if _server is not None:
        _server.stop()
        _server = None
    elif _claim is not None:
        # Interrupted while it started: a server on the claimed data is this run's.
        embedded.stop_if_running(BENCH_DATA_DIR.resolve())


def release() -> None:
    """Let the next run start: once this one's results are written, or it has ended
    without writing them."""
    global _claim  # noqa: PLW0603
    if _claim is not None:
        _claim.close()
        _claim = None


def server_url() -> str:
    """The suite's server; a benchmark run on its own starts it (and leaves it running
    for the next: ``make clean`` or the next suite run stops it)."""
    return (_server or start_fresh()).url


def with_database(url: str, name: str) -> str:
    params = conninfo_to_dict(url)
    params["dbname"] = name
    return make_conninfo("", **params)


def server_version() -> str:
    with psycopg.connect(server_url()) as conn:
        row = conn.execute("show server_version").fetchone()
    return str(row[0]) if row else "unknown"


@contextmanager
def scratch_database(label: str, *, migrated: bool = True) -> Iterator[str]:
    """A database of its own (migrated unless told otherwise), dropped afterwards."""
    base = server_url()
    name = f"tether_bench_{label}_{uuid.uuid4().hex[:6]}"
    create = sql.SQL("create database {}").format(sql.Identifier(name))
    if migrated:
        create = sql.SQL("{} template {}").format(create, sql.Identifier(TEMPLATE))
    with _template_lock, psycopg.connect(base, autocommit=True) as admin:
        admin.execute(create)
    url = with_database(base, name)
    try:
        yield url
    finally:
        with psycopg.connect(base, autocommit=True) as admin:
            admin.execute(
                sql.SQL("drop database if exists {} with (force)").format(sql.Identifier(name))
            )


def uuid_v7_at(moment: str, seed: str) -> str:
    """SQL for a version 7 UUID whose time is ``moment`` and whose other bits come from
    ``seed`` (SQL expressions; a distinct seed per row): the layout ``tether_uuid_v7()``
    gives a row opened at ``moment``, at a fraction of the cost per row. (A bulk fill
    that leaves the column to its default spends most of its time drawing strong random
    bytes.)"""
    digest = f"md5('id' || ({seed})::text)"
    return (
        f"(lpad(to_hex((extract(epoch from {moment}) * 1000)::bigint), 12, '0') || '7'"
        f" || substr({digest}, 1, 3) || '8' || substr({digest}, 4, 15))::uuid"
    )


@contextmanager
def indexes_rebuilt_after(
    conn: psycopg.Connection[Any], table: str = "public.conversation_sessions"
) -> Iterator[None]:
    """Drop ``table``'s indexes, its primary key and unique constraints included, for a
    bulk fill, and build them again after it from their own definitions and names: one
    sort per index instead of an index entry per row (random ones, for random keys),
    the same indexes and constraints in the end."""
    keys = conn.execute(
        """
        select conname, pg_get_constraintdef(oid)
          from pg_constraint
         where conrelid = %s::regclass and contype in ('p', 'u')
        """,
        (table,),
    ).fetchall()
    indexes = conn.execute(
        """
        select n.nspname, c.relname, pg_get_indexdef(i.indexrelid)
          from pg_index i
          join pg_class c on c.oid = i.indexrelid
          join pg_namespace n on n.oid = c.relnamespace
          left join pg_constraint k on k.conindid = i.indexrelid
         where i.indrelid = %s::regclass and k.oid is null
        """,
        (table,),
    ).fetchall()
    target = sql.SQL(table)  # a name from this module's callers, never from input
    for name, _ in keys:
        conn.execute(
            sql.SQL("alter table {} drop constraint {}").format(target, sql.Identifier(name))
        )
    for schema, name, _ in indexes:
        conn.execute(sql.SQL("drop index {}").format(sql.Identifier(schema, name)))
    yield
    for name, definition in keys:
        conn.execute(
            sql.SQL("alter table {} add constraint {} {}").format(
                target, sql.Identifier(name), sql.SQL(definition)
            )
        )
    for _, _, definition in indexes:
        conn.execute(definition)
