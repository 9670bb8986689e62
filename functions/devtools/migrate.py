"""Applies ``supabase/migrations/*.sql`` in order, once each, and remembers them.

The files are the ones ``supabase db push`` takes; this runner keeps its own
record (``tether.schema_migrations``: version, name, sha-256) so the same files
can be applied to any Postgres. A file edited after it was applied is refused,
by name, before anything runs.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import psycopg
from psycopg import sql

from functions.core.errors import DatabaseUnavailableError, MigrationError, error_from_psycopg

logger = logging.getLogger(__name__)

MIGRATION_NAME = re.compile(r"^(?P<version>\d{14})_(?P<name>[a-z0-9_]+)\.sql$")
# Any constant works; it only has to be the same for every runner.
ADVISORY_LOCK_KEY = 7_460_501_001


def default_migrations_dir() -> Path:
    override = os.environ.get("TETHER_MIGRATIONS_DIR")
    if override:
        return Path(override)
    return Path(__file__).resolve().parents[2] / "supabase" / "migrations"


@dataclass(frozen=True)
class Migration:
    version: str
    name: str
    path: Path
    checksum: str

    @property
    def filename(self) -> str:
        return self.path.name


@dataclass(frozen=True)
class AppliedMigration:
    version: str
    name: str
    checksum: str
    applied_at: datetime


@dataclass(frozen=True)
class MigrationStatus:
    applied: list[AppliedMigration]
    pending: list[Migration]


def discover(directory: Path | None = None) -> list[Migration]:
    folder = directory or default_migrations_dir()
    if not folder.is_dir():
        raise MigrationError(f"migrations directory not found: {folder}")
    migrations: list[Migration] = []
    for path in sorted(folder.glob("*.sql")):
        match = MIGRATION_NAME.match(path.name)
        if match is None:
            raise MigrationError(
                f"{path.name}: migration files are named YYYYMMDDHHMMSS_short_name.sql"
            )
        checksum = hashlib.sha256(path.read_bytes()).hexdigest()
        migrations.append(Migration(match["version"], match["name"], path, checksum))
    versions = [migration.version for migration in migrations]
    if len(set(versions)) != len(versions):
        raise MigrationError("two migration files share a version")
    return migrations


_CREATE_LEDGER = sql.SQL(
    """
    create schema if not exists tether;
    create table if not exists tether.schema_migrations (
      version text primary key,
      name text not null,
      checksum text not null,
      applied_at timestamptz not null default now()
    );
    """
)


def _connect(url: str) -> psycopg.Connection[tuple[object, ...]]:
    try:
        return psycopg.connect(url, autocommit=True, prepare_threshold=None, connect_timeout=10)
    except psycopg.Error as exc:
        raise DatabaseUnavailableError(f"cannot connect to the database: {exc}") from exc


def _applied(conn: psycopg.Connection[tuple[object, ...]]) -> list[AppliedMigration]:
    exists = conn.execute("select to_regclass('tether.schema_migrations') is not null").fetchone()
    if not exists or not exists[0]:
        return []
    rows = conn.execute(
        "select version, name, checksum, applied_at from tether.schema_migrations order by version"
    ).fetchall()
    return [
        AppliedMigration(str(v), str(n), str(c), a)  # type: ignore[arg-type]
        for v, n, c, a in rows
    ]


def _check_unchanged(migrations: list[Migration], applied: list[AppliedMigration]) -> None:
    by_version = {migration.version: migration for migration in migrations}
    for record in applied:
        migration = by_version.get(record.version)
        if migration is None:
            # Applied by a newer checkout; nothing to compare against.
            continue
        if migration.checksum != record.checksum:
            raise MigrationError(
                f"{migration.filename} was edited after it was applied "
                f"(recorded sha256 {record.checksum[:12]}, file now {migration.checksum[:12]}); "
                "add a new migration instead of changing an applied one"
            )


def status(url: str, directory: Path | None = None) -> MigrationStatus:
    migrations = discover(directory)
    with _connect(url) as conn:
        applied = _applied(conn)
    _check_unchanged(migrations, applied)
    done = {record.version for record in applied}
    return MigrationStatus(applied, [m for m in migrations if m.version not in done])


def migrate(url: str, directory: Path | None = None) -> list[Migration]:
    """Apply every pending migration, each in its own transaction. Returns those applied."""
    migrations = discover(directory)
    applied_now: list[Migration] = []
    with _connect(url) as conn:
        # One runner at a time; a second waits, then finds nothing pending.
        conn.execute("select pg_advisory_lock(%s)", (ADVISORY_LOCK_KEY,))
        try:
            conn.execute(_CREATE_LEDGER)
            applied = _applied(conn)
            _check_unchanged(migrations, applied)
            done = {record.version for record in applied}
            for migration in migrations:
                if migration.version in done:
                    continue
                logger.info("applying migration", extra={"migration": migration.filename})
                try:
                    with conn.transaction():
                        conn.execute(migration.path.read_bytes())
                        conn.execute(
                            "insert into tether.schema_migrations (version, name, checksum)"
                            " values (%s, %s, %s)",
                            (migration.version, migration.name, migration.checksum),
                        )
                except psycopg.Error as exc:
                    raise MigrationError(
                        f"{migration.filename} failed and was rolled back: "
                        f"{error_from_psycopg(exc)}"
                    ) from exc
                applied_now.append(migration)
        finally:
            if not conn.closed and not conn.broken:
                conn.execute("select pg_advisory_unlock(%s)", (ADVISORY_LOCK_KEY,))
    return applied_now
