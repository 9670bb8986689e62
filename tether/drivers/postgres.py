"""The session store over psycopg 3: any Postgres 14+, Supabase's pooler included."""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping
from typing import TYPE_CHECKING

from tether.dburl import check, scrub
from tether.errors import DatabaseUnavailableError, InvalidInputError, error_from_psycopg
from tether.store import Row, SessionStore

if TYPE_CHECKING:
    import psycopg

logger = logging.getLogger("tether.store")


class PostgresStore(SessionStore):
    """psycopg 3 to any Postgres 14+, Supabase's transaction pooler included.

    One connection per container, opened on first use and reused across
    invocations; a connection found broken is re-opened once. Prepared
    statements are off because the transaction pooler cannot keep them.
    """

    def __init__(self, url: str, *, connect_timeout: float = 5.0) -> None:
        if not url:
            raise InvalidInputError("a database URL is required")
        self._url = check(url)
        self._connect_timeout = connect_timeout
        self._connection: psycopg.Connection[Row] | None = None

    def _connect(self) -> psycopg.Connection[Row]:
        import psycopg  # noqa: PLC0415 - keeps supabase-only deployments free of it
        from psycopg.rows import dict_row  # noqa: PLC0415

        try:
            return psycopg.connect(
                self._url,
                autocommit=True,
                prepare_threshold=None,
                row_factory=dict_row,
                connect_timeout=max(1, math.ceil(self._connect_timeout)),
                application_name="tether",
            )
        except psycopg.Error as exc:
            # libpq may echo the URL it was given, password and all.
            reason = scrub(str(error_from_psycopg(exc)), self._url)
            raise DatabaseUnavailableError(f"cannot connect to the database: {reason}") from None

    def call(self, function: str, args: Mapping[str, object]) -> list[Row]:
        import psycopg  # noqa: PLC0415
        from psycopg import sql  # noqa: PLC0415
        from psycopg.types.json import Jsonb  # noqa: PLC0415

        query = sql.SQL("select * from {}({})").format(
            sql.Identifier("public", function),
            sql.SQL(", ").join(
                sql.SQL("{} => {}").format(sql.Identifier(name), sql.Placeholder(name))
                for name in args
            ),
        )
        reused = self._connection is not None
        for attempt in (1, 2):
            connection = self._connection or self._connect()
            self._connection = connection
            try:
                params = {k: Jsonb(v) if isinstance(v, dict) else v for k, v in args.items()}
                return connection.execute(query, params).fetchall()
            except psycopg.Error as exc:
                if connection.broken or connection.closed:
                    self._connection = None
                    # Retry only a connection kept from an earlier invocation: the
                    # server may have dropped it while the container was frozen.
                    if reused and attempt == 1:
                        logger.warning(
                            "database connection was broken; reconnecting",
                            extra={"function": function},
                        )
                        continue
                    raise DatabaseUnavailableError(
                        f"database connection lost during {function}: {exc}"
                    ) from exc
                raise error_from_psycopg(exc) from exc
        raise AssertionError("unreachable")  # pragma: no cover

    def close(self) -> None:
        if self._connection is not None:
            self._connection.close()
            self._connection = None
