"""What the operators' API tests share: the app on a test database, with an operator
key, HS256 tokens, and a @connections stand-in (or none)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from fastapi.testclient import TestClient

from tests import connections_standin
from tests.connections_standin import ConnectionsStandIn
from tests.support import AUDIENCE, HS256_SECRET, ISSUER, claims, sign
from tether import runtime
from tether.admin.app import create_app
from tether.settings import load_settings

OPERATOR_KEY = "operator-key-for-the-tests-0123456789"
AUTH = {"Authorization": f"Bearer {OPERATOR_KEY}"}


def token(**extra: Any) -> str:
    """An HS256 access token as Supabase issues them, with these claims."""
    return sign(claims(**extra), HS256_SECRET, "HS256")


@dataclass
class AdminApi:
    client: TestClient
    gateway: ConnectionsStandIn | None


@contextmanager
def admin_api(database_url: str, *, gateway: bool = True, **settings: Any) -> Iterator[AdminApi]:
    """The app on this database, its runtime configured as the admin Lambda's would be."""
    with connections_standin.serve() as standin:
        overrides: dict[str, Any] = {
            "database_url": database_url,
            "operator_key": OPERATOR_KEY,
            "jwt_secret": HS256_SECRET,
            "jwt_issuer": ISSUER,
            "jwt_audience": AUDIENCE,
            "announce_to": "log",
            "connections_endpoint": standin.url if gateway else None,
            **settings,
        }
        runtime.install(load_settings(**overrides))
        try:
            with TestClient(create_app()) as client:
                yield AdminApi(client, standin if gateway else None)
        finally:
            runtime.reset()
