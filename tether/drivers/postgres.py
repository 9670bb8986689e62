"""The session store over psycopg 3: any Postgres 14+, Supabase's pooler included."""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from tether.dburl import check, scrub
from tether.errors import DatabaseUnavailableError, InvalidInputError, error_from_psycopg
from tether.store import Row, SessionStore

if TYPE_CHECKING:
    import psycopg

logger = logging.getLogger("tether.store")

_queries: dict[tuple[str, tuple[str, ...]], bytes] = {}


def _query(function: str, names: tuple[str, ...], connection: psycopg.Connection[Row]) -> bytes:
    """``select * from public.<function>(name => $1, ...)``, composed once per function
    and argument names, then reused by every warm invocation."""
    key = (function, names)
    query = _queries.get(key)
    if query is None:
        from psycopg import sql  # noqa: PLC0415

        composed = sql.SQL("select * from {}({})").format(
            sql.Identifier("public", function),
            sql.SQL(", ").join(
                sql.SQL("{} => {}").format(sql.Identifier(name), sql.SQL(f"${position}"))
                for position, name in enumerate(names, start=1)
            ),
        )
        query = composed.as_bytes(connection)
        _queries[key] = query
    return query


def _execute(connection: psycopg.Connection[Row], query: bytes, params: list[Any]) -> list[Row]:
    """One statement, what a psycopg cursor does for it, step for step, without the
    cursor: psycopg's own adapters dump the parameters and load the rows, the
    extended protocol with unnamed statements carries them (nothing prepared, as the
    transaction pooler needs), psycopg's own errors are raised. A cursor costs several
    times the client time of these steps, and on a warm invocation that client time is
    most of what tether adds to the database's own."""
    from psycopg import errors, generators, pq  # noqa: PLC0415
    from psycopg.adapt import PyFormat, Transformer  # noqa: PLC0415

    transformer = Transformer(connection)
    values = transformer.dump_sequence(params, [PyFormat.AUTO] * len(params))
    pgconn = connection.pgconn
    with connection.lock:
        pgconn.send_query_params(
            query,
            values,
            param_types=transformer.types,
            param_formats=transformer.formats,
            result_format=pq.Format.TEXT,
        )
        results = connection.wait(generators.execute(pgconn))
    encoding = connection.info.encoding
    for result in results:
        if result.status not in (pq.ExecStatus.TUPLES_OK, pq.ExecStatus.COMMAND_OK):
            raise errors.error_from_result(result, encoding=encoding)
    result = results[-1]
    transformer.set_pgresult(result)
    names = [(result.fname(column) or b"").decode(encoding) for column in range(result.nfields)]
    return transformer.load_rows(0, result.ntuples, lambda row: dict(zip(names, row, strict=True)))


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

        params: list[Any] = list(args.values())
        if any(isinstance(value, dict) for value in params):
            from psycopg.types.json import Jsonb  # noqa: PLC0415

            params = [Jsonb(value) if isinstance(value, dict) else value for value in params]
        names = tuple(args)
        reused = self._connection is not None
        for attempt in (1, 2):
            connection = self._connection or self._connect()
            self._connection = connection
            try:
                return _execute(connection, _query(function, names, connection), params)
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
