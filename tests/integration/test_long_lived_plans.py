"""A warm Lambda container keeps its database connection while the table grows from
empty: a call made on that connection after the growth reads indexes, not the whole
history, even when no ANALYZE has run since the connection's first calls."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from datetime import UTC, datetime
from uuid import UUID

import psycopg
import pytest
from psycopg.rows import dict_row

from tether import store as store_module
from tether.drivers.postgres import PostgresStore
from tether.models import EndReason, OpenSessionRequest
from tether.store import Row, SessionStore
from tether.sweep_and_admin_models import SessionFilter

Conn = psycopg.Connection[dict[str, object]]

TABLES = ("conversation_sessions", "conversation_session_announcements")


class _Container(SessionStore):
    """One connection kept across calls, as a warm container keeps it, sending what
    the psycopg driver sends; it counts the sequential scans each call made."""

    def __init__(self, conn: Conn) -> None:
        self.conn = conn
        self.scans: dict[str, dict[str, int]] = {}

    @property
    def longest_call_seconds(self) -> float:
        return 15.0  # never asked: nothing here keeps to a deadline

    def _counts(self) -> dict[str, int]:
        rows = self.conn.execute(
            "select relname, seq_scan from pg_stat_xact_user_tables where relname = any(%s)",
            (list(TABLES),),
        ).fetchall()
        return {str(r["relname"]): int(r["seq_scan"]) for r in rows}  # type: ignore[call-overload]

    def call(self, function: str, args: Mapping[str, object]) -> list[Row]:
        query, params = PostgresStore.statement(function, args)
        before = self._counts()
        rows: list[Row] = self.conn.execute(query, params).fetchall()
        after = self._counts()
        made = {t: after.get(t, 0) - before.get(t, 0) for t in after}
        self.scans[function] = {t: n for t, n in made.items() if n}
        return rows


def _every_call(store: SessionStore, tag: str) -> None:
    """What the handlers, the sweep, the finalizer and the operators' API call."""
    store.open_session(OpenSessionRequest(connection_id=f"{tag}-a"))
    store.touch_session(f"{tag}-a", 0)
    ended = store.end_session(f"{tag}-a", EndReason.CLIENT_DISCONNECT).session
    assert ended is not None
    store.mark_announced([ended.session_id])
    store.open_session(OpenSessionRequest(connection_id=f"{tag}-b"))
    failed = store.end_session(f"{tag}-b", EndReason.CLIENT_DISCONNECT).session
    assert failed is not None
    store.release_announcements({failed.session_id: 0})
    store.claim_unannounced(limit=5, lease_seconds=30)
    store.close_stale(idle_seconds=3600, max_age_seconds=7200)
    live = [
        store.open_session(OpenSessionRequest(connection_id=f"{tag}-live-{k}")).session_id
        for k in range(5)
    ]
    store.claim_suspects(silent_seconds=0, limit=5, lease_seconds=30)
    suspects: list[UUID] = live[:4]
    store.settle_suspects(dict.fromkeys(suspects[:2]))
    store.intend_end(EndReason.HEARTBEAT_TIMEOUT, dict.fromkeys(suspects[2:4], datetime.now(UTC)))
    store.end_sessions(EndReason.HEARTBEAT_TIMEOUT, dict.fromkeys(suspects[2:3], datetime.now(UTC)))
    store.settle_gone(suspects[3:4], settle_seconds=0)
    claim = store.begin_finalize(ended.session_id, lease_seconds=30)
    if claim.token is not None:
        store.finish_finalize(ended.session_id, claim.token, succeeded=True)
    store.get_session(ended.session_id)
    store.force_close(live[4], announce_lease_seconds=30)
    store.list_sessions(SessionFilter(active=True), limit=10)
    store.orphan_summary(older_than_seconds=3600)
    store.recent_ends(seconds=3600)
    store.close_orphans(older_than_seconds=30 * 86400)
    store.session_health(idle_limit_seconds=600, max_age_seconds=7200)


@pytest.fixture
def container(database_url: str, db: Conn) -> Iterator[_Container]:
    # No autovacuum in this database: its ANALYZE would refresh the plans by luck.
    for table in TABLES:
        db.execute(f"alter table public.{table} set (autovacuum_enabled = false)")
    with psycopg.connect(database_url, autocommit=True, row_factory=dict_row) as conn:
        yield _Container(conn)


def _grow(db: Conn) -> None:
    """20,000 ended sessions over ten months and 100 live ones, never analysed."""
    db.execute(
        """
        insert into public.conversation_sessions
          (connection_id, user_id, session_start, last_seen_at, session_end, end_reason,
           announced_at)
        select 'h' || g, gen_random_uuid(),
               now() - make_interval(secs => g * 1300), now() - make_interval(secs => g * 1300),
               now() - make_interval(secs => g * 1300 - 60), 'client_disconnect',
               now() - make_interval(secs => g * 1300 - 61)
        from generate_series(1, 20000) g
        """
    )
    db.execute(
        "insert into public.conversation_sessions (connection_id, user_id)"
        " select 'live' || g, gen_random_uuid() from generate_series(1, 100) g"
    )


def test_calls_after_the_table_grew_read_no_history(container: _Container, db: Conn) -> None:
    # Calls while the table is small: enough for Postgres to keep generic plans.
    for round_ in range(8):
        _every_call(container, f"early{round_}")
    _grow(db)
    container.conn.autocommit = False  # one transaction: its own scan counts
    try:
        container.scans.clear()
        _every_call(container, "late")
    finally:
        container.conn.rollback()
    assert set(container.scans) == CALLED
    full_reads = {
        function: tables
        for function, tables in container.scans.items()
        if "conversation_sessions" in tables
    }
    assert full_reads == {}


# Every function ``_every_call`` reaches, so one left out is noticed. (The daily
# statistics are not among them: only the table's statistics tell the planner that
# seven days are a small part of it; test_admin_plans covers them, analysed.)
CALLED = {
    store_module.OPEN_SESSION,
    store_module.TOUCH_SESSION,
    store_module.END_SESSION,
    store_module.MARK_ANNOUNCED,
    store_module.RELEASE_ANNOUNCEMENTS,
    store_module.CLAIM_UNANNOUNCED,
    store_module.CLOSE_STALE,
    store_module.CLAIM_SUSPECTS,
    store_module.SETTLE_SUSPECTS,
    store_module.INTEND_END,
    store_module.END_SESSIONS,
    store_module.SETTLE_GONE,
    store_module.BEGIN_FINALIZE,
    store_module.FINISH_FINALIZE,
    store_module.GET_SESSION,
    store_module.FORCE_CLOSE,
    store_module.LIST_SESSIONS,
    store_module.ORPHAN_SUMMARY,
    store_module.RECENT_ENDS,
    store_module.CLOSE_ORPHANS,
    store_module.SESSION_HEALTH,
}


def test_a_large_sweep_batch_reads_its_rows_by_their_ctid(container: _Container, db: Conn) -> None:
    """A batch of thousands among tens of thousands of live sessions, analysed: the
    rows it locked are read by their ctid, not by a scan of the table per batch."""
    db.execute(
        "insert into public.conversation_sessions (connection_id, user_id)"
        " select 'live' || g, gen_random_uuid() from generate_series(1, 20000) g"
    )
    db.execute(
        "insert into public.conversation_sessions (connection_id, session_start, last_seen_at)"
        " select 'stale' || g, now() - interval '30 minutes', now() - interval '20 minutes'"
        " from generate_series(1, 2000) g"
    )
    db.execute("analyze public.conversation_sessions")
    container.conn.autocommit = False  # one transaction: its own scan counts
    try:
        ended = container.close_stale(idle_seconds=600, max_age_seconds=7200, limit=2000)
    finally:
        container.conn.rollback()
    assert sum(ended.values()) == 2000
    assert container.scans[store_module.CLOSE_STALE] == {}
