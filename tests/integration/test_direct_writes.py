"""Ends written around tether's functions: announced at least once, as any other."""

from __future__ import annotations

import psycopg
import pytest
from psycopg.rows import dict_row

from functions import connect, sweep
from tests.conftest import EventBus
from tests.support import (
    HS256_SECRET,
    FakeLambdaContext,
    claims,
    load_event,
    sign,
    with_query,
    ws_event,
)
from tether.drivers.postgres import PostgresStore


def _open(connection_id: str) -> None:
    token = sign(claims(), HS256_SECRET, "HS256")
    response = connect.lambda_handler(
        with_query(ws_event("connect", connection_id), token=token), FakeLambdaContext()
    )
    assert response["statusCode"] == 200


def _unannounced(database_url: str) -> int | None:
    store = PostgresStore(database_url)
    try:
        return store.session_health(idle_limit_seconds=660, max_age_seconds=7260).unannounced
    finally:
        store.close()


@pytest.mark.usefixtures("lambda_env")
def test_an_end_the_service_role_writes_itself_is_announced_by_the_next_sweep(
    database_url: str, event_bus: EventBus
) -> None:
    _open("direct=")
    _open("untouched=")
    # A team's script, or an operator in the dashboard, with the service key.
    with psycopg.connect(database_url, autocommit=True, row_factory=dict_row) as conn:
        conn.execute("set role service_role")
        conn.execute(
            "update public.conversation_sessions"
            " set session_end = now(), end_reason = 'forced_close'"
            " where connection_id = 'direct='"
        )
    assert _unannounced(database_url) == 1

    # One check: the run has a second past its margin, less than its cadence.
    report = sweep.lambda_handler(load_event("scheduled"), FakeLambdaContext(time_limit_seconds=11))
    assert report["announced"] == 1
    (event,) = event_bus.received()
    assert event["detail"]["connection_id"] == "direct="
    assert event["detail"]["end_reason"] == "forced_close"
    assert _unannounced(database_url) == 0
