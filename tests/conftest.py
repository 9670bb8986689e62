"""Test harness: a real Postgres, a template built from the migrations once per
run, and a fresh database copied from it for every test that needs one."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict, make_conninfo
from psycopg.rows import dict_row

from functions.core.store import PostgresStore
from functions.devtools import embedded, migrate

ROOT = Path(__file__).resolve().parents[1]
TEST_DATA_DIR = ROOT / ".tether" / "test-pgdata"


def with_database(url: str, dbname: str) -> str:
    """The same server URL, pointed at another database."""
    params = conninfo_to_dict(url)
    params["dbname"] = dbname
    return make_conninfo("", **params)


@pytest.fixture(scope="session")
def server_url() -> Iterator[str]:
    """A Postgres server for the run: DATABASE_URL if given, else the embedded one."""
    configured = embedded.configured_url()
    if configured:
        yield configured
        return
    server = embedded.start(TEST_DATA_DIR)
    yield server.url
    if server.started_here:
        server.stop()


@pytest.fixture(scope="session")
def template_database(server_url: str) -> Iterator[str]:
    """A database holding exactly the migrated schema; tests copy it."""
    name = f"tether_template_{os.getpid()}_{uuid.uuid4().hex[:6]}"
    with psycopg.connect(server_url, autocommit=True) as admin:
        admin.execute(sql.SQL("create database {}").format(sql.Identifier(name)))
    try:
        migrate.migrate(with_database(server_url, name))
        yield name
    finally:
        with psycopg.connect(server_url, autocommit=True) as admin:
            admin.execute(
                sql.SQL("drop database if exists {} with (force)").format(sql.Identifier(name))
            )


@pytest.fixture(scope="session")
def _copy_strategy(server_url: str) -> sql.Composable:
    with psycopg.connect(server_url, autocommit=True) as admin:
        row = admin.execute("show server_version_num").fetchone()
    version = int(row[0]) if row else 0
    # FILE_COPY (Postgres 15+) copies a small template far faster than WAL_LOG.
    return sql.SQL("strategy file_copy") if version >= 150000 else sql.SQL("")


@pytest.fixture
def database_url(
    server_url: str, template_database: str, _copy_strategy: sql.Composable
) -> Iterator[str]:
    """A database of this test's own, with the full schema and no rows."""
    name = f"tether_test_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(server_url, autocommit=True) as admin:
        admin.execute(
            sql.SQL("create database {} template {} {}").format(
                sql.Identifier(name), sql.Identifier(template_database), _copy_strategy
            )
        )
    try:
        yield with_database(server_url, name)
    finally:
        with psycopg.connect(server_url, autocommit=True) as admin:
            admin.execute(
                sql.SQL("drop database if exists {} with (force)").format(sql.Identifier(name))
            )


@pytest.fixture
def empty_database_url(server_url: str) -> Iterator[str]:
    """A database with no schema at all, for migration tests."""
    name = f"tether_empty_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(server_url, autocommit=True) as admin:
        admin.execute(sql.SQL("create database {}").format(sql.Identifier(name)))
    try:
        yield with_database(server_url, name)
    finally:
        with psycopg.connect(server_url, autocommit=True) as admin:
            admin.execute(
                sql.SQL("drop database if exists {} with (force)").format(sql.Identifier(name))
            )


@pytest.fixture
def db(database_url: str) -> Iterator[psycopg.Connection[dict[str, object]]]:
    """A plain connection to the test's database, for setup and assertions."""
    with psycopg.connect(database_url, autocommit=True, row_factory=dict_row) as conn:
        yield conn


@pytest.fixture
def store(database_url: str) -> Iterator[PostgresStore]:
    postgres_store = PostgresStore(database_url)
    yield postgres_store
    postgres_store.close()


class SessionFactory:
    """Places sessions in any state, straight in the table, for setting up tests."""

    def __init__(self, conn: psycopg.Connection[dict[str, object]]) -> None:
        self._conn = conn

    def __call__(
        self,
        *,
        connection_id: str | None = None,
        user_id: uuid.UUID | None = None,
        started_seconds_ago: float = 0.0,
        seen_seconds_ago: float | None = None,
        ended_seconds_ago: float | None = None,
        end_reason: str = "client_disconnect",
        announced: bool = False,
    ) -> dict[str, object]:
        seen = started_seconds_ago if seen_seconds_ago is None else seen_seconds_ago
        row = self._conn.execute(
            """
            insert into public.conversation_sessions
              (connection_id, user_id, session_start, last_seen_at, session_end, end_reason,
               announced_at)
            values (
              %(connection_id)s, %(user_id)s,
              now() - make_interval(secs => %(started)s),
              now() - make_interval(secs => %(seen)s),
              now() - make_interval(secs => %(ended)s),
              case when %(ended)s::float8 is null then null else %(reason)s end,
              case when %(announced)s and %(ended)s::float8 is not null then now() end
            )
            returning *
            """,
            {
                "connection_id": connection_id or f"conn-{uuid.uuid4().hex[:12]}=",
                "user_id": user_id,
                "started": float(started_seconds_ago),
                "seen": float(seen),
                "ended": None if ended_seconds_ago is None else float(ended_seconds_ago),
                "reason": end_reason,
                "announced": announced,
            },
        ).fetchone()
        assert row is not None
        return row


@pytest.fixture
def make_session(db: psycopg.Connection[dict[str, object]]) -> SessionFactory:
    return SessionFactory(db)
