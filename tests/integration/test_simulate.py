"""`tether simulate` against a database that is not the gateway's, on a real Postgres."""

from __future__ import annotations

import time

import psycopg
import pytest

from tests.support import ORIGIN_TABLE, run_tether


@pytest.mark.parametrize(
    ("table", "said"),
    [
        (None, "the database has no public.conversation_sessions table"),
        (ORIGIN_TABLE, "a conversation_sessions table without tether's user_agent, end_reason"),
    ],
)
def test_simulate_on_a_database_without_tethers_table_says_so_before_it_runs(
    empty_database_url: str, table: str | None, said: str
) -> None:
    """Said before a client connects, with what to do; it was a bare SQL error (42P01,
    42703) once the whole run was over."""
    if table is not None:
        with psycopg.connect(empty_database_url, autocommit=True) as conn:
            conn.execute(table)
    started = time.monotonic()
    result = run_tether(
        *("simulate", "--url", "ws://127.0.0.1:9", "--database-url", empty_database_url),
        *("--clients", "2", "--duration", "30s", "--settle", "30s"),
    )
    assert result.returncode == 1, result.stderr
    assert said in result.stderr
    assert "is --database-url the gateway's database?" in result.stderr
    assert "`tether migrate`" in result.stderr
    assert "42P01" not in result.stderr
    assert "42703" not in result.stderr
    assert time.monotonic() - started < 20  # not after the run's 30 s
