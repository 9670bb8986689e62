"""The session store over psycopg 3: any Postgres 14+, Supabase's pooler included."""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, TypedDict

from tether.dburl import check, unreachable
from tether.errors import DatabaseUnavailableError, InvalidInputError, error_from_psycopg
from tether.store import Row, SessionStore, refuse_unstorable_text

if TYPE_CHECKING:
    import psycopg

logger = logging.getLogger("tether.store")

TCP_USER_TIMEOUT_MS = 10_000
ANSWER_WITHIN_SECONDS = 5.0
"""The longest a call waits for the server's answer once sent. A server that stops
answering with its connection up (stopped, stalled on its disk, a frozen pooler or VM)
still has its kernel acknowledge every byte and keepalive probe, so no TCP timeout
fires: without this a call waited as long as the server hung (a handler past API
Gateway's 29 s, a sweep past its time limit). Above the functions' 3 s lock timeout,
so a call that waits on a lock is told so by the server first."""


class _NetworkTimeouts(TypedDict):
    """A server that stops answering mid-call (a network gone quiet, a laptop asleep) is
    given up after TCP_USER_TIMEOUT_MS, not after the kernel's minutes; an idle
    connection is probed, so each side learns when the other is gone."""

    tcp_user_timeout: int
    keepalives: int
    keepalives_idle: int
    keepalives_interval: int
    keepalives_count: int


NETWORK_TIMEOUTS = _NetworkTimeouts(
    tcp_user_timeout=TCP_USER_TIMEOUT_MS,
    keepalives=1,
    keepalives_idle=30,
    keepalives_interval=10,
    keepalives_count=3,
)

_queries: dict[tuple[str, tuple[str, ...]], str] = {}


def _query(function: str, names: tuple[str, ...]) -> str:
    """``select * from public.<function>(name => %s, ...)``, composed once per function
    and argument names, then reused by every warm invocation."""
    key = (function, names)
    query = _queries.get(key)
    if query is None:
        from psycopg import sql  # noqa: PLC0415

        composed = sql.SQL("select * from {}({})").format(
            sql.Identifier("public", function),
            sql.SQL(", ").join(sql.SQL("{} => %s").format(sql.Identifier(name)) for name in names),
        )
        query = composed.as_string()
        _queries[key] = query
    return query


def results_cursor(connection: psycopg.Connection[Row]) -> psycopg.Cursor[Row]:
    """The cursor the store sends its calls through. Its results come in binary: psycopg
    reads a timestamp sent as text only in the ISO DateStyle, and a server (or database,
    or role) set to 'SQL', 'German' or 'Postgres' failed every call after it had run."""
    return connection.cursor(binary=True)


def speak_utf8(connection: psycopg.Connection[Any]) -> None:
    """Text in UTF-8 whatever the database's encoding: a SQL_ASCII database hands text
    over as bytes, and a LATIN1 one cannot take all a client may send (in UTF-8 the
    server converts, or refuses as bad input, and psycopg reads text as text)."""
    if connection.info.encoding != "utf-8":
        connection.execute("set client_encoding = 'UTF8'")


def read_plainly(connection: psycopg.Connection[Any]) -> None:
    """A command's own connection, which reads its results as text: moments in the ISO
    DateStyle, the only one psycopg reads, and text in UTF-8."""
    connection.execute("set datestyle = 'ISO'")
    speak_utf8(connection)


_answering: type[psycopg.Connection[Any]] | None = None


def connect_answering(
    conninfo: str, *, answer_within: float = ANSWER_WITHIN_SECONDS, **kwargs: Any
) -> psycopg.Connection[Any]:
    """``psycopg.connect``, with every wait on the server bounded by ``answer_within``
    seconds once connected (past it, psycopg raises its ``_WaitTimeout``)."""
    connection = _answering_connection().connect(conninfo, **kwargs)
    connection.answer_within = answer_within  # type: ignore[attr-defined]
    return connection


def _answering_connection() -> type[psycopg.Connection[Any]]:
    """psycopg's connection, its every wait on the server bounded by ``answer_within``
    (psycopg 3.3's ``wait`` takes a timeout; its cursors never pass one)."""
    global _answering  # noqa: PLW0603 - the class is made once, on first use
    if _answering is None:
        import psycopg  # noqa: PLC0415

        class AnsweringConnection(psycopg.Connection[Any]):
            answer_within: float | None = None

            def wait(
                self, gen: Any, interval: float | None = None, timeout: float | None = None
            ) -> Any:
                bound = self.answer_within if timeout is None else timeout
                if interval is None:  # psycopg's own default
                    return super().wait(gen, timeout=bound)
                return super().wait(gen, interval, bound)

        _answering = AnsweringConnection
    return _answering


class PostgresStore(SessionStore):
    """psycopg 3 to any Postgres 14+, Supabase's transaction pooler included.

    One connection per container, opened on first use and reused across
    invocations; a connection found broken is re-opened once. Prepared
    statements are off because the transaction pooler cannot keep them.
    """

    def __init__(
        self,
        url: str,
        *,
        connect_timeout: float = 5.0,
        answer_within: float = ANSWER_WITHIN_SECONDS,
    ) -> None:
        if not url:
            raise InvalidInputError("a database URL is required")
        self._url = check(url)
        # psycopg counts its connect timeout in whole seconds, 2 at least.
        self._connect_seconds = max(2, math.ceil(connect_timeout))
        self._answer_within = answer_within
        self._connection: psycopg.Connection[Row] | None = None
        self._cursor: psycopg.Cursor[Row] | None = None

    def _connect(self) -> psycopg.Connection[Row]:
        import psycopg  # noqa: PLC0415 - keeps supabase-only deployments free of it
        from psycopg.rows import dict_row  # noqa: PLC0415

        started = time.monotonic()
        try:
            connection = connect_answering(
                self._url,
                answer_within=self._answer_within,
                autocommit=True,
                prepare_threshold=None,
                row_factory=dict_row,
                connect_timeout=self._connect_seconds,
                application_name="tether",
                **NETWORK_TIMEOUTS,
            )
        except psycopg.Error as exc:
            raise unreachable(exc, self._url) from None
        # The client encoding, set on a database not in UTF-8, within the connect
        # timeout: a call's longest wait counts one connect, not a connect and a call.
        left = self._connect_seconds - (time.monotonic() - started)
        connection.answer_within = max(left, 0.001)  # type: ignore[attr-defined]
        try:
            speak_utf8(connection)
        except psycopg.Error as exc:
            connection.close()
            raise DatabaseUnavailableError(f"cannot set the client encoding: {exc}") from None
        connection.answer_within = self._answer_within  # type: ignore[attr-defined]
        return connection

    @property
    def longest_call_seconds(self) -> float:
        """A call on a kept connection that breaks while it waits for the answer (up to
        ``answer_within``) is made again on a new one: the connect timeout (the client
        encoding included), then the answer's wait. Not counted: the host name's lookup,
        and a host name resolving to several addresses, each given the connect
        timeout."""
        return 2 * self._answer_within + self._connect_seconds

    @staticmethod
    def statement(function: str, args: Mapping[str, object]) -> tuple[str, list[Any]]:
        """The one statement ``call`` sends for this function and these arguments."""
        params: list[Any] = list(args.values())
        if any(isinstance(value, dict) for value in params):
            from psycopg.types.json import Jsonb  # noqa: PLC0415

            params = [Jsonb(value) if isinstance(value, dict) else value for value in params]
        return _query(function, tuple(args)), params

    def call(self, function: str, args: Mapping[str, object]) -> list[Row]:
        import psycopg  # noqa: PLC0415
        from psycopg.errors import _WaitTimeout  # noqa: PLC0415

        query, params = self.statement(function, args)
        reused = self._connection is not None
        for attempt in (1, 2):
            if self._connection is None or self._cursor is None:
                self._connection = self._connect()
                # One cursor for the connection's life: a new one per call costs
                # as much client time as the rest of the call.
                self._cursor = results_cursor(self._connection)
            connection, cursor = self._connection, self._cursor
            try:
                cursor.execute(query, params)
                return cursor.fetchall()
            except _WaitTimeout:
                # Sent, unanswered: the connection's state is unknown, and it is dropped.
                # Not retried: the server that did not answer would be asked again.
                self.close()
                raise DatabaseUnavailableError(
                    f"the database did not answer {function} within {self._answer_within:g}s"
                    " (a server stopped or stalled); the connection was dropped"
                ) from None
            except UnicodeEncodeError:
                # A lone surrogate, refused as psycopg encodes it, before sending.
                refuse_unstorable_text(function, args)
                raise
            except psycopg.Error as exc:
                if exc.sqlstate is None and not (connection.broken or connection.closed):
                    # Refused before sending (a NUL in text): said as the supabase driver
                    # says it. Looked for only now: every call would pay for the look.
                    refuse_unstorable_text(function, args)
                if connection.broken or connection.closed:
                    self._connection = self._cursor = None
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
        self._connection = self._cursor = None
