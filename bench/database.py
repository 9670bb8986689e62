"""A scratch database per benchmark, on DATABASE_URL or the embedded server."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from contextlib import contextmanager

import psycopg
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from tether import migrate
from tether.cli.common import configured_url
from tether.local import embedded

BENCH_DATA_DIR = ".tether/pgdata"


def server_url() -> str:
    return configured_url() or embedded.start(BENCH_DATA_DIR).url


@contextmanager
def scratch_database(label: str) -> Iterator[str]:
    """A migrated database of its own, dropped afterwards."""
    base = server_url()
    name = f"tether_bench_{label}_{uuid.uuid4().hex[:6]}"
    with psycopg.connect(base, autocommit=True) as admin:
        admin.execute(sql.SQL("create database {}").format(sql.Identifier(name)))
    params = conninfo_to_dict(base)
    params["dbname"] = name
    url = make_conninfo("", **params)
    try:
        migrate.migrate(url)
        yield url
    finally:
        with psycopg.connect(base, autocommit=True) as admin:
            admin.execute(
                sql.SQL("drop database if exists {} with (force)").format(sql.Identifier(name))
            )
