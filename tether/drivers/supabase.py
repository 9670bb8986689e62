"""The session store over supabase-py: PostgREST ``rpc()`` to the same SQL functions."""

from __future__ import annotations

import threading
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any, NoReturn
from uuid import UUID

from tether.dburl import HIDDEN
from tether.errors import (
    ConfigurationError,
    DatabaseError,
    DatabaseUnavailableError,
    TetherError,
    error_from_postgrest,
)
from tether.store import Row, SessionStore, refuse_unstorable_text

POOL_SECONDS = 1.0
"""The wait for a free connection of the client's pool: a store makes one call at a time,
so a connection is always free."""
CONNECT_SECONDS = 2.5
"""The TCP connection, then the TLS handshake, each within this."""
SEND_SECONDS = 2.0
"""Sending the request's head, then its body, each within this."""
ANSWER_SECONDS = 5.0
"""The wait for the answer: PostgREST answers once the function has returned, all at
once. Above the functions' 3 s lock timeout, as the psycopg driver's."""
LONGEST_CALL_SECONDS = POOL_SECONDS + 2 * CONNECT_SECONDS + 2 * SEND_SECONDS + ANSWER_SECONDS
"""What one call can take at most: each of httpx's waits at its timeout. httpx's timeouts
bound each socket operation alone, so the call is also given this in all: a host name's
lookup, each of its addresses tried in turn, an answer (its head or its body) sent a
byte at a time, each byte just within ``ANSWER_SECONDS``, would otherwise hold it as long
as they like."""


@dataclass
class _Answer:
    """What one rpc call came to on its own thread, with what its answer's head said."""

    response: Any = None
    error: Exception | None = None
    status: int | None = None
    retry_after: str | None = None
    empty: bool = False


def _to_json(value: object) -> object:
    if isinstance(value, UUID):
        return str(value)
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, list | tuple):
        return [_to_json(item) for item in value]
    return value


class SupabaseStore(SessionStore):
    """Calls ``/rest/v1/rpc/<function>`` with the project's service key."""

    def __init__(
        self,
        url: str,
        service_key: str,
        *,
        client: Any | None = None,
    ) -> None:
        # The HTTP status of this thread's last answer: a proxy in front of PostgREST
        # (Kong, Cloudflare) answers an outage with a body of its own, often JSON with
        # no code, where only the status says what happened.
        self._statuses = threading.local()
        # A key kept with the newline of the file or command it came from: no key holds
        # white space, and httpx refused the header quoting it whole in its error.
        service_key = service_key.strip()
        self._key = service_key
        if not all("!" <= character <= "~" for character in service_key):
            raise ConfigurationError(
                "TETHER_SUPABASE_SERVICE_KEY holds a character no HTTP header can carry"
                " (only printable ASCII, no space, makes a key); it is not shown"
            )
        if client is None:
            if not url or not service_key:
                # A setting, not the caller's input: $connect would answer 400.
                raise ConfigurationError(
                    "SupabaseStore needs SUPABASE_URL and TETHER_SUPABASE_SERVICE_KEY"
                )
            # Only this driver needs supabase-py; importing it here keeps it off
            # the cold start of psycopg deployments.
            import httpx  # noqa: PLC0415
            from supabase.lib.client_options import SyncClientOptions  # noqa: PLC0415

            from supabase import create_client  # noqa: PLC0415

            def remember(response: httpx.Response) -> None:
                self._statuses.last = response.status_code
                self._statuses.retry_after = response.headers.get("Retry-After")
                # Read here (httpx keeps it for the caller): postgrest-py reads an empty
                # body as no rows, which PostgREST never answers for a function
                # returning a table.
                self._statuses.empty = not response.read()

            options = SyncClientOptions(
                httpx_client=httpx.Client(
                    timeout=httpx.Timeout(
                        connect=CONNECT_SECONDS,
                        write=SEND_SECONDS,
                        read=ANSWER_SECONDS,
                        pool=POOL_SECONDS,
                    ),
                    event_hooks={"response": [remember]},
                ),
                # The handshake waits on this call: fail fast rather than sleep
                # through retries. The SQL functions are idempotent; callers retry.
                postgrest_client_retry=False,
            )
            client = create_client(url, service_key, options=options)
        self._client = client

    def _hidden(self, text: str) -> str:
        """Text from whatever answered, the service key hidden: a proxy may echo the
        request's headers in its error page."""
        return text.replace(self._key, HIDDEN) if self._key else text

    def _raise(self, error: TetherError, cause: Exception) -> NoReturn:
        """``error``, chained to ``cause`` unless the cause quotes the service key: a
        logged traceback prints the chain, the cause's words and all."""
        if self._key and self._key in f"{cause}{cause!r}":
            raise error from None
        raise error from cause

    @property
    def longest_call_seconds(self) -> float:
        return LONGEST_CALL_SECONDS

    def call(self, function: str, args: Mapping[str, object]) -> list[Row]:
        import httpx  # noqa: PLC0415
        from postgrest.exceptions import APIError  # noqa: PLC0415
        from postgrest.types import CountMethod  # noqa: PLC0415

        refuse_unstorable_text(function, args)
        payload = {name: _to_json(value) for name, value in args.items()}
        answer = _Answer()

        def execute() -> None:
            self._statuses.last = None
            self._statuses.retry_after = None
            self._statuses.empty = False
            try:
                # The whole count: PostgREST cuts a function's rows to its max-rows
                # without a word, and says how many there were only when asked.
                answer.response = self._client.rpc(
                    function, payload, count=CountMethod.exact
                ).execute()
            except Exception as exc:  # noqa: BLE001 - handed over, mapped below
                answer.error = exc
            answer.status = self._statuses.last
            answer.retry_after = self._statuses.retry_after
            answer.empty = self._statuses.empty

        # On a thread of its own, waited for the longest call and no more: past it the
        # call is left to finish (or fail) alone, its answer unread. A daemon, so that
        # it holds no process's exit.
        seconds = LONGEST_CALL_SECONDS
        worker = threading.Thread(target=execute, name="tether-supabase-rpc", daemon=True)
        worker.start()
        worker.join(seconds)
        if worker.is_alive():
            raise DatabaseUnavailableError(
                f"Supabase did not answer {function} within {seconds:g}s in all (a host"
                " name not resolved, an answer coming a byte at a time); what the call did,"
                " if it ran, is kept"
            )
        try:
            if answer.error is not None:
                raise answer.error
            response = answer.response
        except APIError as exc:
            said = exc.json()
            message = said.get("message")
            if isinstance(message, str):
                said = {**said, "message": self._hidden(message)}
            mapped = error_from_postgrest(
                said, status=answer.status, retry_after=answer.retry_after
            )
            self._raise(mapped, exc)
        except ValueError as exc:
            # postgrest-py reading a Content-Range that is no range and count (its
            # count is asked for): not PostgREST's answer.
            self._raise(
                DatabaseError(f"{function}: an answer tether cannot read ({type(exc).__name__})"),
                exc,
            )
        except httpx.TransportError as exc:
            self._raise(
                DatabaseUnavailableError(self._hidden(f"cannot reach Supabase: {exc}")), exc
            )
        except httpx.DecodingError as exc:
            # A body its Content-Encoding does not decode (a proxy's page said to be
            # gzip, a compressed body cut short): no answer was read.
            self._raise(
                DatabaseUnavailableError(
                    self._hidden(f"{function}: Supabase's answer could not be read: {exc}")
                ),
                exc,
            )
        data = response.data
        if data is None or isinstance(data, str) or (data == [] and answer.empty):
            # Not PostgREST's answer (every tether function returns a table, answered as
            # a JSON array): a proxy's, or a page that is no JSON at all (postgrest-py
            # hands its text over). Read as no rows, a heartbeat would be told its
            # session is gone, and its connection closed.
            raise DatabaseUnavailableError(
                f"{function}: Supabase answered {answer.status} with no rows array,"
                " not PostgREST's answer"
            )
        if not isinstance(data, list):
            raise DatabaseError(f"{function} returned {type(data).__name__}, expected rows")
        if not all(isinstance(row, dict) for row in data):
            # PostgREST answers each row of a table as a JSON object.
            raise DatabaseError(f"{function} returned rows that are not JSON objects")
        if isinstance(response.count, int) and response.count > len(data):
            # The function ran whole (its ends, claims and leases are committed); only
            # its answer lost rows, which a caller would take for all there were.
            raise DatabaseError(
                f"{function} returned {response.count} rows and PostgREST answered"
                f" {len(data)}: its max-rows (Supabase's API setting 'Max rows') cut the"
                " answer; what the call did is kept. Set it to at least"
                " TETHER_SWEEP_BATCH_SIZE and 500 (the operators' API's page), or lower"
                " the batch size"
            )
        return data
