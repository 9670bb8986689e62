"""API Gateway's ``@connections`` API: ask whether a connection is alive, or close it.

A thin wrapper over boto3's ``apigatewaymanagementapi`` that turns 410 Gone into
an answer rather than an error, and lets botocore's standard retry mode back off
on throttling (``LimitExceededException``, 429).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import TYPE_CHECKING

from tether.errors import ConfigurationError, GatewayError

if TYPE_CHECKING:
    from mypy_boto3_apigatewaymanagementapi import ApiGatewayManagementApiClient


class ConnectionState(StrEnum):
    ALIVE = "alive"
    GONE = "gone"


@dataclass(frozen=True)
class ConnectionInfo:
    state: ConnectionState
    connected_at: datetime | None = None
    last_active_at: datetime | None = None


# .../@connections, or with a placeholder for the id: {id}, {connection_id}, %7Bid%7D.
_CONNECTIONS_PATH = re.compile(
    r"/@connections(?:/(?:\{[^/{}]*\}|%7B[^/]*?%7D)?)?/*$", re.IGNORECASE
)


ENDPOINT_SHAPE = "https://{api}.execute-api.{region}.amazonaws.com/{stage}"


def endpoint_problem(url: str) -> str | None:
    """What makes ``url`` unusable as the @connections endpoint, without repeating it (it
    may carry credentials); None when it is usable. botocore's own check of a host is
    the one applied, to the stage's URL the client is given, so what passes here is what
    its client takes."""
    from tether.aws.clients import endpoint_flaw  # noqa: PLC0415

    text = url.strip()
    if any(c.isspace() or not c.isprintable() for c in text):
        return "the @connections endpoint holds a space or a control character"
    flaw = endpoint_flaw(text, as_called=stage_endpoint)
    if flaw == "shape":
        return f"the @connections endpoint must be an http(s) URL: {ENDPOINT_SHAPE}"
    if flaw == "host":
        return f"the @connections endpoint's host is not a valid host name: {ENDPOINT_SHAPE}"
    if "/@connections" in stage_endpoint(text).lower():
        return (
            "the @connections endpoint names a connection: give the stage's URL, or"
            " .../@connections/{id} with {id} as it is"
        )
    return None


def stage_endpoint(url: str) -> str:
    """The stage's base URL, which boto3 wants: ``https://{api}.execute-api.{region}
    .amazonaws.com/{stage}``. Given the full ``.../@connections/{id}`` form (as the console
    and ``tether dev`` show it) or ``.../@connections``, the tail is taken off: left on,
    every call would go to a path that does not exist and answer 404."""
    return _CONNECTIONS_PATH.sub("", url.strip()).rstrip("/")


class ConnectionsApi:
    def __init__(
        self,
        endpoint_url: str,
        *,
        max_attempts: int = 4,
        timeout_seconds: float = 5.0,
        concurrency: int = 10,
        client: ApiGatewayManagementApiClient | None = None,
    ) -> None:
        self.endpoint_url = stage_endpoint(endpoint_url)
        if client is None:
            client = self._client(max_attempts, timeout_seconds, concurrency)
        self._api = client

    def _client(
        self, max_attempts: int, timeout_seconds: float, concurrency: int
    ) -> ApiGatewayManagementApiClient:
        from tether.aws.clients import client  # noqa: PLC0415 - boto3 only where it is used

        problem = endpoint_problem(self.endpoint_url)
        if problem:
            # botocore would say it with the URL, credentials and all.
            raise ConfigurationError(problem)
        client_: ApiGatewayManagementApiClient = client(
            "apigatewaymanagementapi",
            endpoint_url=self.endpoint_url,
            timeout_seconds=timeout_seconds,
            max_attempts=max_attempts,
            # One pooled HTTP connection per call the sweep has in flight at once.
            max_pool_connections=concurrency,
        )
        return client_

    def get(self, connection_id: str) -> ConnectionInfo:
        from botocore.exceptions import BotoCoreError, ClientError  # noqa: PLC0415

        try:
            answer = self._api.get_connection(ConnectionId=connection_id)
        except self._api.exceptions.GoneException:
            return ConnectionInfo(ConnectionState.GONE)
        except (BotoCoreError, ClientError) as exc:
            raise GatewayError(f"GetConnection failed: {_said(exc)}") from exc
        return ConnectionInfo(
            ConnectionState.ALIVE,
            connected_at=answer.get("ConnectedAt"),
            last_active_at=answer.get("LastActiveAt"),
        )

    def delete(self, connection_id: str) -> bool:
        """Close the connection; False when it was already gone."""
        from botocore.exceptions import BotoCoreError, ClientError  # noqa: PLC0415

        try:
            self._api.delete_connection(ConnectionId=connection_id)
        except self._api.exceptions.GoneException:
            return False
        except (BotoCoreError, ClientError) as exc:
            raise GatewayError(f"DeleteConnection failed: {_said(exc)}") from exc
        return True


def _said(exc: Exception) -> str:
    # botocore quotes the URL it called, with whatever credentials were put in it.
    from tether.dburl import hide_secrets  # noqa: PLC0415

    return hide_secrets(str(exc))
