"""API Gateway's ``@connections`` API: ask whether a connection is alive, or close it.

A thin wrapper over boto3's ``apigatewaymanagementapi`` that turns 410 Gone into
an answer rather than an error, and lets botocore's standard retry mode back off
on throttling (``LimitExceededException``, 429).
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import TYPE_CHECKING
from urllib.parse import urlparse

from functions.core.errors import TetherError

if TYPE_CHECKING:
    from mypy_boto3_apigatewaymanagementapi import ApiGatewayManagementApiClient

_REGION_IN_HOST = re.compile(r"\.execute-api\.([a-z0-9-]+)\.amazonaws\.com$")
_LOCAL_HOSTS = frozenset({"localhost", "127.0.0.1", "::1"})


class GatewayError(TetherError):
    """The @connections API did not answer (throttled past retries, forbidden, down)."""


class ConnectionState(StrEnum):
    ALIVE = "alive"
    GONE = "gone"


@dataclass(frozen=True)
class ConnectionInfo:
    state: ConnectionState
    connected_at: datetime | None = None
    last_active_at: datetime | None = None


class ConnectionsApi:
    def __init__(
        self,
        endpoint_url: str,
        *,
        max_attempts: int = 4,
        timeout_seconds: float = 5.0,
        client: ApiGatewayManagementApiClient | None = None,
    ) -> None:
        self.endpoint_url = endpoint_url.rstrip("/")
        if client is None:
            client = self._client(max_attempts, timeout_seconds)
        self._api = client

    def _client(self, max_attempts: int, timeout_seconds: float) -> ApiGatewayManagementApiClient:
        import boto3  # noqa: PLC0415 - only the sweep and the operators' tools load it
        from botocore.config import Config  # noqa: PLC0415

        host = urlparse(self.endpoint_url).hostname or ""
        match = _REGION_IN_HOST.search(host)
        region = (
            match.group(1)
            if match
            else os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION") or "us-east-1"
        )
        key_id: str | None = None
        secret: str | None = None
        if host in _LOCAL_HOSTS and not os.environ.get("AWS_ACCESS_KEY_ID"):
            # The local gateway checks no signature, but botocore insists on signing.
            key_id = secret = "local"  # noqa: S105 - not a secret
        return boto3.client(
            "apigatewaymanagementapi",
            endpoint_url=self.endpoint_url,
            region_name=region,
            config=Config(
                retries={"mode": "standard", "max_attempts": max_attempts},
                connect_timeout=timeout_seconds,
                read_timeout=timeout_seconds,
            ),
            aws_access_key_id=key_id,
            aws_secret_access_key=secret,
        )

    def get(self, connection_id: str) -> ConnectionInfo:
        from botocore.exceptions import BotoCoreError, ClientError  # noqa: PLC0415

        try:
            answer = self._api.get_connection(ConnectionId=connection_id)
        except self._api.exceptions.GoneException:
            return ConnectionInfo(ConnectionState.GONE)
        except (BotoCoreError, ClientError) as exc:
            raise GatewayError(f"GetConnection failed: {exc}") from exc
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
            raise GatewayError(f"DeleteConnection failed: {exc}") from exc
        return True
