"""`tether dev`'s hold on its database: a lock in a transaction left open for the
dev's life, which must keep nothing from vacuum and survive a lost connection."""

from __future__ import annotations

import psycopg

from tests.conftest import set_for_database
from tether.local.dev import DatabaseClaim

CLAIMS = (
    "select backend_xmin, state from pg_stat_activity"
    " where application_name = 'tether dev' and datname = current_database()"
)


def test_the_lock_keeps_no_snapshot_however_often_it_is_checked(database_url: str) -> None:
    """Checked every 2 s for hours: psycopg prepares a statement run often, and a
    prepared (or parameterised) one leaves a portal, and its snapshot, open in the
    transaction. A database whose default isolation is repeatable read would keep one
    snapshot for the dev's life."""
    set_for_database(database_url, "default_transaction_isolation", "repeatable read")
    claim = DatabaseClaim(database_url)
    assert claim.take()
    try:
        for _ in range(10):
            assert claim.check()
        with psycopg.connect(database_url) as conn:
            assert conn.execute(CLAIMS).fetchall() == [(None, "idle in transaction")]
    finally:
        claim.close()


def test_a_lost_connection_s_server_process_that_lives_on_is_ended_and_the_lock_retaken(
    database_url: str,
) -> None:
    """A network gone quiet: the dev gives its connection up, while the server, which
    notices only at its keepalive, keeps the old process and its lock."""
    claim = DatabaseClaim(database_url)
    assert claim.take()
    lost = claim._conn  # what a dead network leaves: open on the server's side
    claim._conn = None
    try:
        assert claim.check()
        assert claim.held
        with psycopg.connect(database_url) as conn:
            assert conn.execute(CLAIMS).fetchall() == [(None, "idle in transaction")]
    finally:
        claim.close()
        if lost is not None:
            lost.close()
