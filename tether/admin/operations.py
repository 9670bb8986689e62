"""What operators ask and do, shared by the API, the live page and the commands.

Nothing here knows about HTTP: each function takes the store (and, to close
connections, the @connections API and the announcer) and returns the models of
``tether.admin.schemas``.

A forced close ends the row first (reason ``forced_close``, into the outbox with
the end, as every end, leased to it), asks the gateway to close the connection,
then announces the end. The ``$disconnect`` that the close causes finds the session
already ended: the first end wins. A connection already gone (410) is no failure: the
row was ended. Closing again is safe: it says the session was already closed, and asks
the gateway again, so a close whose gateway call failed can simply be retried; a close
that finds another still at work on the session (its end still leased to it) waits for
it to ask the gateway first. Closing a user's sessions keeps to a deadline
(``close_user``).
"""

from __future__ import annotations

import logging
import threading
import time
import weakref
from collections.abc import Callable, Sequence
from datetime import datetime, timedelta
from typing import Literal
from uuid import UUID

from tether import migrate, row_security
from tether.admin import cursor
from tether.admin.errors import InvalidFieldError
from tether.admin.schemas import (
    CloseOutcome,
    DailyStatsReport,
    DayStats,
    Disconnection,
    Health,
    HealthSummary,
    LiveConnection,
    LiveStats,
    MigrationsHealth,
    OrphanReport,
    SessionClosed,
    SessionPublic,
    SessionsPage,
    SweepRun,
    SweepSummary,
    SweepTimes,
    UserDisconnected,
    UserPresence,
)
from tether.aws import eventbridge
from tether.aws.connections import ConnectionsApi
from tether.bounded_calls import call_all
from tether.errors import (
    ConfigurationError,
    DatabaseError,
    DatabaseUnavailableError,
    GatewayError,
    TetherError,
)
from tether.models import EndOutcome, EndReason, EndResult, SessionEnded
from tether.outbox import Announcer, announce_and_mark
from tether.settings import Settings
from tether.store import SessionStore
from tether.sweep import SweepPolicy
from tether.sweep_and_admin_models import SessionFilter, SessionRecord, SweepState

logger = logging.getLogger("tether.admin")

PAGE_SIZE_DEFAULT = 50
PAGE_SIZE_MAX = 500
"""The hard cap of one page; the SQL function refuses more."""
PRESENCE_LIMIT = PAGE_SIZE_MAX
RECENT_WINDOW_SECONDS = 3600.0
ORPHAN_ALERT_DEFAULT = 5
"""The origin's alert fired above 5 such sessions."""
SWEEP_BUDGET_SECONDS = 25.0
"""A sweep run through the API stops taking batches within this time: an API Gateway HTTP
API integration answers within 30 seconds."""
DISCONNECT_BUDGET_SECONDS = 12.0
"""A forced close waits this long at most for the gateway's answers (a user's sessions
asked at once), so its answer, listing what to retry, comes within API Gateway's 29 s;
a DeleteConnection still unanswered then is reported failed."""
DISCONNECT_CONCURRENCY = 10
DISCONNECT_FLOOR_SECONDS = 1.0
"""The least wait for the gateway worth keeping time back for a later step: below it, the
gateway takes what is left."""
AT_WORK_SHARE = 0.5
"""The share of ``DISCONNECT_BUDGET_SECONDS`` a close may spend waiting for another still
at work on its session; the rest is the gateway's. The close waited for may have
crashed, or failed to record its announcement, and then holds the session until its
lease is over: had the wait taken the whole budget, a slow gateway would fail every
retry meanwhile."""
SESSION_CLOSE_BUDGET_SECONDS = 24.0
"""A single close answers within this time, as a user's close does: 5 s of API Gateway's
29 s are left for a cold start and the answer. Its steps and their worst cases (B: the
store's ``longest_call_seconds``, 15 s with either driver; E: ``ANNOUNCING_SECONDS``):

- ending the row: B, whatever the time (B is under this budget);
- waiting for a close at work on it: its share of ``DISCONNECT_BUDGET_SECONDS``
  (``AT_WORK_SHARE``: 6 s), in looks of B each, each started only while the gateway's
  share (the other 6 s) is still left after it;
- the gateway: ``DISCONNECT_BUDGET_SECONDS`` less the wait, its share (6 s) at least,
  keeping B for the read back unless that leaves it under its share; never past the
  deadline;
- announcing the end (the close that ended it): E + B, started only if it fits in the
  time left, else its lease is given back (B, if it fits) and the sweep announces it;
- reading the session back: B, started only if it fits.

Every step after the first keeps within the deadline: the answer comes within the
larger of this budget and B, plus the answer's own making."""
INVOCATION_KEPT_SECONDS = 5.0
"""What a close keeps of its Lambda invocation's time left (the function's 29 s, as API
Gateway's): the function's cold start, which API Gateway counts and the invocation does
not, and the answer's making. A close's budget ends no later than the invocation's end
less this: the time spent before the close (the token's signing keys fetched, up to 5 s)
comes out of the same 29 s."""
CLOSE_AT_WORK_POLL_SECONDS = 0.1
"""How often a close that found another forced close at work on its session looks
again."""
USER_DISCONNECT_BUDGET_SECONDS = 24.0
"""Closing a user's sessions answers within this time, however many sessions and however
slow the database, EventBridge or the gateway: API Gateway's HTTP API answers 504 after
29 s (its cold start included), and the operator would not know what was done. The rows
end first, in one statement; each later step (the gateway's closes, the announcements,
reading the sessions back) starts only while its worst case fits in what is left, and
the answer says what was left undone: a database call counted at the store's
``longest_call_seconds``, its driver's own timeouts, connecting included."""
STEP_MARGIN_SECONDS = 0.25
"""What passes between the end of the gateway's wait and the start of the next step (its
threads handing back, the time read again): kept with the call it leaves room for."""
ANNOUNCE_CHUNK = 80
"""Ends announced at a time when closing a user's sessions: eight PutEvents calls of ten,
made at once by the EventBridge announcer."""
ANNOUNCING_SECONDS = eventbridge.CALL_ATTEMPTS * 2 * eventbridge.CALL_TIMEOUT_SECONDS + 1.0
"""The worst case of sending one chunk to EventBridge: the announcer's tries, each with its
connect and read timeouts, and botocore's backoff of at most a second between them. A
chunk's worst case adds the database call recording what went out."""


# --- reading --------------------------------------------------------------------------


def list_page(
    store: SessionStore, where: SessionFilter, *, cursor_text: str | None, limit: int
) -> SessionsPage:
    if not 1 <= limit <= PAGE_SIZE_MAX:
        raise InvalidFieldError("limit", f"must be between 1 and {PAGE_SIZE_MAX}, got {limit}")
    if (
        where.started_after is not None
        and where.started_before is not None
        and where.started_after >= where.started_before
    ):
        raise InvalidFieldError("started_before", "must be later than started_after")
    rows, next_cursor = _page(store, where, cursor_text=cursor_text, limit=limit)
    return SessionsPage(
        sessions=[_public(row) for row in rows], next_cursor=next_cursor, limit=limit
    )


def _page(
    store: SessionStore, where: SessionFilter, *, cursor_text: str | None, limit: int
) -> tuple[list[SessionRecord], str | None]:
    """A page of rows after the cursor's position, and the cursor of the next page
    (None on the last): every listing of the API pages this way."""
    if not 1 <= limit <= PAGE_SIZE_MAX:
        raise InvalidFieldError("limit", f"must be between 1 and {PAGE_SIZE_MAX}, got {limit}")
    after = cursor.decode(cursor_text, where) if cursor_text is not None else None
    # One row more than the page, to know whether another page follows: a cursor on a
    # last page that happened to be full led to an empty one. The largest page asks
    # for the row after it on its own (the SQL function's pages are at most 500).
    rows = store.list_sessions(where, after=after, limit=min(limit + 1, PAGE_SIZE_MAX))
    more = len(rows) > limit
    rows = rows[:limit]
    if not more and len(rows) == PAGE_SIZE_MAX:
        last = rows[-1]
        more = bool(
            store.list_sessions(where, after=(last.session_start, last.session_id), limit=1)
        )
    next_cursor = None
    if more:
        last = rows[-1]
        next_cursor = cursor.encode(last.session_start, last.session_id, where)
    return rows, next_cursor


def _public(row: SessionRecord) -> SessionPublic:
    return SessionPublic.model_validate(row.model_dump())


def get_session(store: SessionStore, session_id: UUID) -> SessionPublic | None:
    row = store.get_session(session_id)
    return _public(row) if row else None


def presence(
    store: SessionStore,
    user_id: UUID,
    *,
    cursor_text: str | None = None,
    limit: int = PRESENCE_LIMIT,
    every_page: bool = False,
) -> UserPresence:
    """A user's live connections, newest first: a page of them (``next_cursor`` names
    the next while more follow, as a page of sessions does), or with ``every_page``
    all of them (what closing the user ends, to be listed before it is asked)."""
    where = SessionFilter(active=True, user_id=user_id)
    next_cursor: str | None
    if every_page:
        page = store.list_sessions(where, limit=PRESENCE_LIMIT)
        rows = list(page)
        while len(page) == PRESENCE_LIMIT:
            last = page[-1]
            page = store.list_sessions(
                where, after=(last.session_start, last.session_id), limit=PRESENCE_LIMIT
            )
            rows.extend(page)
        next_cursor = None
    else:
        rows, next_cursor = _page(store, where, cursor_text=cursor_text, limit=limit)
    # A later page emptied by ends since the first: whether the user is online is still
    # whether any connection is live, not whether this page holds one.
    online = bool(rows) or (cursor_text is not None and bool(store.list_sessions(where, limit=1)))
    connections = [
        LiveConnection(
            session_id=row.session_id,
            connection_id=row.connection_id,
            session_start=row.session_start,
            last_seen_at=row.last_seen_at,
            source_ip=row.source_ip,
            user_agent=row.user_agent,
        )
        for row in rows
    ]
    return UserPresence(
        user_id=user_id,
        online=online,
        connections=connections,
        next_cursor=next_cursor,
        limit=PRESENCE_LIMIT if every_page else limit,
    )


def daily(store: SessionStore, days: int) -> DailyStatsReport:
    stats = [DayStats.model_validate(day.model_dump()) for day in store.daily_stats(days=days)]
    return DailyStatsReport(days=days, stats=stats)


def orphans(store: SessionStore, *, older_than_seconds: float, alert_above: int) -> OrphanReport:
    summary = store.orphan_summary(older_than_seconds=older_than_seconds)
    return OrphanReport(
        older_than_seconds=older_than_seconds,
        orphans=summary.orphans,
        oldest_start=summary.oldest_start,
        newest_start=summary.newest_start,
        alert_above=alert_above,
        alerting=summary.orphans > alert_above,
    )


def _since(moment: datetime | None, now: datetime) -> float | None:
    return round((now - moment).total_seconds(), 3) if moment else None


def sweep_run(state: SweepState) -> SweepRun:
    return SweepRun(
        last_started_at=state.last_started_at,
        last_finished_at=state.last_finished_at,
        seconds_since_finished=_since(state.last_finished_at, state.checked_at),
        idle_limit_seconds=state.idle_limit_seconds,
        max_age_seconds=state.max_age_seconds,
        last_report=state.last_report,
    )


def live(store: SessionStore, settings: Settings) -> LiveStats:
    """Right now: live sessions, orphans by the sweep's limits, the last hour's ends by
    reason, and the sweep's last run."""
    policy = SweepPolicy.from_settings(settings)
    health = store.session_health(
        idle_limit_seconds=policy.idle_limit_seconds, max_age_seconds=policy.max_age_seconds
    )
    recent = store.recent_ends(seconds=RECENT_WINDOW_SECONDS)
    state = store.sweep_state()
    by_reason = {reason.value: count for reason, count in recent.items()}
    return LiveStats(
        active_sessions=health.active_sessions,
        oldest_active_start=health.oldest_active_start,
        orphaned_sessions=health.orphaned_sessions,
        unannounced=health.unannounced,
        ended_last_hour=sum(by_reason.values()),
        ended_last_hour_by_reason=by_reason,
        sweep=sweep_run(state),
        checked_at=state.checked_at,
    )


def health(store: SessionStore, *, details: bool) -> Health | HealthSummary:
    """Whether the database answers, which shipped migrations it lacks and what in it
    stops tether's functions: the status, judged the same for anyone. ``details`` (an
    operator's) adds which, and when the sweep last ran; without it the sweep's state
    is not read. Never raises for the database's sake: it reports."""
    try:
        applied = store.applied_migrations()
    except DatabaseUnavailableError as exc:
        return _unreachable(exc, details)
    except DatabaseError:
        applied = []  # reachable, but older than the function: every migration pending
    shipped = migrate.shipped()
    # The runner's own rule: tether's ledger by version, Supabase's by content.
    pending = [
        m.filename
        for m in migrate.outstanding(
            shipped,
            {a.version for a in applied if a.ledger == "tether"},
            (a.statements for a in applied if a.ledger == "supabase"),
        )
    ]
    # Asked (and logged) whoever asks: the status depends on it.
    problems = _row_security_problems(store)
    status: Literal["ok", "degraded"] = "ok" if not pending and not problems else "degraded"
    if not details:
        return HealthSummary(status=status, database="reachable")
    try:
        state: SweepState | None = store.sweep_state()
    except DatabaseUnavailableError as exc:
        return _unreachable(exc, details)
    except DatabaseError:
        state = None  # reachable, but older than the function: a migration is pending
    sweep = None
    if state is not None:
        sweep = SweepTimes(
            last_started_at=state.last_started_at,
            last_finished_at=state.last_finished_at,
            seconds_since_finished=_since(state.last_finished_at, state.checked_at),
        )
    return Health(
        status=status,
        database="reachable",
        migrations=MigrationsHealth(
            current=not pending, applied=len(shipped) - len(pending), pending=pending
        ),
        sweep=sweep,
        problems=problems,
    )


def _unreachable(exc: DatabaseUnavailableError, details: bool) -> Health | HealthSummary:
    logger.warning("health: database unreachable", extra={"error": str(exc)})
    if not details:
        return HealthSummary(status="unavailable", database="unreachable")
    return Health(status="unavailable", database="unreachable", migrations=None, sweep=None)


_said_refusing: weakref.WeakKeyDictionary[SessionStore, frozenset[row_security.Judged]] = (
    weakref.WeakKeyDictionary()
)
"""What each store's /health last logged as refusing tether's functions: /health is open
and may be polled every few seconds, so a lasting problem is logged when it appears (and
when it is mended), not on every call."""
_said_lock = threading.Lock()


def _row_security_problems(store: SessionStore) -> list[str]:
    """Each table whose row level security refuses tether's functions, and what to do."""
    try:
        judged = store.row_security_problems()
    except DatabaseError:
        return []  # older than the function: its migration is pending, and said
    _log_changes(store, frozenset(judged))
    return [row_security.describe(table) for table in judged]


def _log_changes(store: SessionStore, judged: frozenset[row_security.Judged]) -> None:
    """Logs the tables that began or stopped refusing tether's functions since the
    last call for this store."""
    with _said_lock:
        before = _said_refusing.get(store, frozenset())
        _said_refusing[store] = judged
    for table in sorted(judged - before, key=lambda t: t.table):
        logger.error(
            "row level security refuses tether's functions",
            extra={"table": table.table, "forced": table.forced},
        )
    # A table judged otherwise (no longer forced, but another role's) is not mended: it
    # was logged above as refusing, for its new reason.
    refusing = {table.table for table in judged}
    for table in sorted(before - judged, key=lambda t: t.table):
        if table.table not in refusing:
            logger.info(
                "row level security no longer refuses tether's functions",
                extra={"table": table.table, "forced": table.forced},
            )


# --- acting ---------------------------------------------------------------------------


def _require(connections: ConnectionsApi | None) -> ConnectionsApi:
    if connections is None:
        # Ending the row without closing the connection would leave a client connected
        # and untracked: refuse before anything is written.
        raise ConfigurationError(
            "no @connections endpoint configured: set TETHER_CONNECTIONS_ENDPOINT"
            " (https://{api}.execute-api.{region}.amazonaws.com/{stage}) so a forced close"
            " can disconnect the client"
        )
    return connections


def _disconnect(connections: ConnectionsApi, connection_id: str) -> tuple[Disconnection, str]:
    try:
        closed = connections.delete(connection_id)
    except GatewayError as exc:
        logger.warning(
            "DeleteConnection failed; the session is ended, close it again to retry",
            extra={"connection_id": connection_id, "error": str(exc)},
        )
        # Its reason too (the endpoint refused, unreachable, no permission): an operator
        # reading the answer, or the command's line, needs it to mend the endpoint.
        said = f"the gateway could not be told to close the connection ({exc})"
        return Disconnection.FAILED, said
    if closed:
        return Disconnection.DISCONNECTED, "the gateway closed the connection"
    return Disconnection.ALREADY_GONE, "the connection was already gone"


def _disconnect_all(
    connections: ConnectionsApi, connection_ids: Sequence[str], budget_seconds: float
) -> list[tuple[Disconnection, str]]:
    """Ask the gateway to close each connection, all at once, for ``budget_seconds`` at
    most: a gateway that does not answer must not hold the operator's answer past API
    Gateway's limit, one close after another. A call still unanswered then is reported
    failed; its thread is a daemon, so a command's exit does not wait for it."""

    def ask(connection_id: str) -> tuple[Disconnection, str]:
        try:
            return _disconnect(connections, connection_id)
        except Exception:  # a bug: said, and this connection reported failed
            logger.exception("DeleteConnection raised", extra={"connection_id": connection_id})
            return Disconnection.FAILED, "the gateway could not be told to close the connection"

    settled = call_all(
        ask,
        connection_ids,
        concurrency=DISCONNECT_CONCURRENCY,
        seconds=budget_seconds,
        name="tether-disconnect",
    )
    late = (Disconnection.FAILED, "the gateway did not answer in time to close the connection")
    for connection_id, answer in zip(connection_ids, settled, strict=True):
        if answer is None:
            logger.warning(
                "DeleteConnection did not answer in time; the session is ended, close it"
                " again to retry",
                extra={"connection_id": connection_id, "waited_seconds": budget_seconds},
            )
    # ask answers for its own bugs: what is not an answer is silence.
    return [answer if isinstance(answer, tuple) else late for answer in settled]


REFUSED_BY_EVENTBRIDGE = "refused by EventBridge"


def _announce(
    store: SessionStore, announcer: Announcer, sessions: Sequence[SessionEnded]
) -> tuple[bool, str | None]:
    """Announce fresh ends now; what fails stays queued for the sweep. Whether all went
    out, and if not why (as the sweep reports it: an error code, no secret)."""
    if not sessions:
        return True, None
    # The end is committed: what the database does not record stays queued, logged
    # there, and the close goes on to the gateway.
    result = announce_and_mark(store, announcer, sessions)
    if not result.failed:
        return True, None
    return False, result.error or REFUSED_BY_EVENTBRIDGE


def _queued(announced: bool | None) -> str:
    """What the detail adds when SessionEnded could not be announced now."""
    return "; its SessionEnded is queued: the sweep announces it" if announced is False else ""


def close_session(
    session_id: UUID,
    *,
    store: SessionStore,
    connections: ConnectionsApi | None,
    announcer: Announcer,
    announce_lease_seconds: float,
    operator: str,
    invocation_ends: float | None = None,
    answer_in_time: bool = True,
) -> SessionClosed | None:
    """Force one session closed; None when no session has that id.

    The close that ends the row asks the gateway at once, then announces the end. A close
    that finds the row ended by another forced close still at work waits for it (half of
    ``DISCONNECT_BUDGET_SECONDS`` at most, the other half the gateway's) before asking
    the gateway itself, so the close that ended the row is the one told it closed the
    connection, and the other is told it was gone. Within
    ``SESSION_CLOSE_BUDGET_SECONDS``, and what its Lambda invocation (ending at
    ``invocation_ends``) has left: what it had no time for is said. ``answer_in_time``
    false (a terminal's close, ``tether kick``) stretches the budget to the lease
    (``_deadline``)."""
    gateway = _require(connections)
    deadline = _deadline(
        SESSION_CLOSE_BUDGET_SECONDS, invocation_ends, answer_in_time, announce_lease_seconds
    )

    def left() -> float:
        return deadline - time.monotonic()

    end = store.force_close(session_id, announce_lease_seconds=announce_lease_seconds)
    if end is None or end.session is None:
        return None
    ended = end.outcome is EndOutcome.ENDED
    lease = announce_lease_seconds
    waited = 0.0 if ended else _wait_for_the_close_at_work(store, session_id, end, lease, left)
    call = store.longest_call_seconds
    # The gateway's share of its budget, whatever the wait took (a look at the close at
    # work started only while the share was left after it), comes before the read back.
    share = (1 - AT_WORK_SHARE) * DISCONNECT_BUDGET_SECONDS
    ((connection, said),) = _disconnect_all(
        gateway,
        [end.connection_id],
        _gateway_seconds(
            left(),
            keep=call + STEP_MARGIN_SECONDS,
            most=max(DISCONNECT_BUDGET_SECONDS - waited, share),
            least=share,
        ),
    )
    announced: bool | None = None
    announce_error: str | None = None
    if ended and left() >= ANNOUNCING_SECONDS + call:
        announced, announce_error = _announce(store, announcer, [end.session])
    elif ended:
        logger.warning(
            "no time left to announce this end now; the sweep announces it",
            extra={"session_id": str(session_id)},
        )
        announced, announce_error = False, NOT_ANNOUNCED_IN_TIME
        _give_back(store, [session_id], left)
    outcome = CloseOutcome.CLOSED if ended else CloseOutcome.ALREADY_CLOSED
    logger.info(
        "forced close",
        extra={
            "session_id": str(session_id),
            "outcome": outcome.value,
            "connection": connection.value,
            "operator": operator,
        },
    )
    before = "ended it" if ended else f"it had already ended ({end.session.end_reason.value})"
    record, unread = _read_one(store, session_id, left)
    return SessionClosed(
        session_id=session_id,
        outcome=outcome,
        connection=connection,
        announced=announced,
        announce_error=announce_error,
        detail=f"{before}; {said}{_queued(announced)}{_unread(unread)}",
        session=record,
    )


NOT_READ_IN_TIME = "not read back in time"
NOT_READ_FAILING = "not read back, the database failing"


def _read_one(
    store: SessionStore, session_id: UUID, left: Callable[[], float]
) -> tuple[SessionPublic | None, str | None]:
    """The session just closed, as it stands now, if a call fits in the time left; if
    not read, why. Only shown: the close is done, and a database failing now must not
    turn its answer into an error that hides what it did (and which call to retry)."""
    if left() < store.longest_call_seconds:
        return None, NOT_READ_IN_TIME
    try:
        return get_session(store, session_id), None
    except TetherError as exc:
        logger.warning(
            "could not read the closed session back",
            extra={"session_id": str(session_id), "error": str(exc)},
        )
        return None, NOT_READ_FAILING


def _unread(why: str | None) -> str:
    """What a close's detail adds for a session it did not read back."""
    return f"; {why}: GET /sessions/{{id}}" if why else ""


def _wait_for_the_close_at_work(
    store: SessionStore,
    session_id: UUID,
    end: EndResult,
    announce_lease_seconds: float,
    left: Callable[[], float],
) -> float:
    """While another forced close that ended this session is still at work on it (asking
    the gateway, then announcing), wait for it, for its share of
    ``DISCONNECT_BUDGET_SECONDS`` at most (``AT_WORK_SHARE``), looking again only while
    a look at its worst case still leaves the gateway its own share: its call to the
    gateway goes first. How long this waited."""
    started = time.monotonic()
    share = AT_WORK_SHARE * DISCONNECT_BUDGET_SECONDS
    gateway_share = DISCONNECT_BUDGET_SECONDS - share
    call = store.longest_call_seconds
    while end.closing_until is not None:
        waited = time.monotonic() - started
        if waited >= share or left() - CLOSE_AT_WORK_POLL_SECONDS - call < gateway_share:
            logger.warning(
                "the forced close that ended this session is still at work; asking the"
                " gateway all the same",
                extra={"session_id": str(session_id)},
            )
            break
        time.sleep(CLOSE_AT_WORK_POLL_SECONDS)
        try:
            again = store.force_close(session_id, announce_lease_seconds=announce_lease_seconds)
        except TetherError as exc:
            # The wait only lets the other close reach the gateway first: this close has
            # its session, and its own call to the gateway is what the operator asked.
            logger.warning(
                "could not look at the forced close still at work on this session; asking"
                " the gateway all the same",
                extra={"session_id": str(session_id), "error": str(exc)},
            )
            break
        if again is None:  # deleted meanwhile: nothing left to wait for
            break
        end = again
    return time.monotonic() - started


NOT_ANNOUNCED_IN_TIME = "not tried: the answer's time ran out first"


def close_user(
    user_id: UUID,
    *,
    store: SessionStore,
    connections: ConnectionsApi | None,
    announcer: Announcer,
    announce_lease_seconds: float,
    operator: str,
    invocation_ends: float | None = None,
    answer_in_time: bool = True,
) -> UserDisconnected:
    """Force every live session of a user closed (sign-out, ban), within
    ``USER_DISCONNECT_BUDGET_SECONDS`` and what its Lambda invocation (ending at
    ``invocation_ends``) has left: what it closed, and what it left undone.

    The rows end first, all in one statement, so the user's clients are ended whatever
    follows (a client whose close the gateway is not told of is closed at its next
    heartbeat). Then the gateway is asked to close each connection, the ends are
    announced a chunk at a time, and the sessions read back a page at a time, each
    step only while it fits in the time left. What was not done is said per session
    and is safe to finish: a connection ``failed`` is closed again by
    ``POST /sessions/{id}/close``, an end not announced stays queued for the sweep,
    and calling this again ends nothing twice. ``answer_in_time`` false (a terminal's
    close, ``tether kick``) stretches the budget to the lease (``_deadline``)."""
    gateway = _require(connections)
    deadline = _deadline(
        USER_DISCONNECT_BUDGET_SECONDS, invocation_ends, answer_in_time, announce_lease_seconds
    )

    def left() -> float:
        return deadline - time.monotonic()

    ended = store.force_close_user(user_id, announce_lease_seconds=announce_lease_seconds)
    # The operator's intent first: the clients go. The gateway's wait leaves the time
    # of a database call, to read the sessions back; the announcements, then the lease's
    # give-back, only take what time is left, since what they leave the sweep announces.
    answers = _disconnect_all(
        gateway,
        [session.connection_id for session in ended],
        _gateway_seconds(left(), keep=store.longest_call_seconds + STEP_MARGIN_SECONDS),
    )
    announced = _announce_in_time(store, announcer, ended, left)
    records, unread_why = _read_back(store, user_id, ended, left)
    sent = {session_id for session_id, (went_out, _) in announced.items() if went_out}
    _give_back(store, [s.session_id for s in ended if s.session_id not in sent], left)
    closed = []
    for session, (connection, said) in zip(ended, answers, strict=True):
        went_out, why = announced.get(session.session_id, (False, NOT_ANNOUNCED_IN_TIME))
        closed.append(
            SessionClosed(
                session_id=session.session_id,
                outcome=CloseOutcome.CLOSED,
                connection=connection,
                announced=went_out,
                announce_error=why,
                detail=f"ended it; {said}{_queued(went_out)}",
                session=records.get(session.session_id),
            )
        )
    unclosed = sum(1 for each in closed if each.connection is Disconnection.FAILED)
    unannounced = sum(1 for each in closed if each.announced is False)
    unread = sum(1 for each in closed if each.session is None)
    logger.info(
        "user disconnected",
        extra={
            "user_id": str(user_id),
            "closed": len(closed),
            "operator": operator,
            "connections_failed": unclosed,
            "unannounced": unannounced,
            "unread": unread,
        },
    )
    return UserDisconnected(
        user_id=user_id,
        closed=len(closed),
        sessions=closed,
        complete=not (unclosed or unannounced or unread),
        detail=describe_user_close(len(closed), unclosed, unannounced, unread, unread_why),
    )


def _deadline(
    budget_seconds: float,
    invocation_ends: float | None,
    answer_in_time: bool = True,
    lease_seconds: float = 0.0,
) -> float:
    """When a close is to be done (``time.monotonic()``): its budget from now, and no
    later than its Lambda invocation's end less ``INVOCATION_KEPT_SECONDS``. A close with
    no answer to make in time (``answer_in_time`` false: a terminal, not API Gateway's
    29 s) takes the longer of its budget and its ends' announce lease (``lease_seconds``,
    60 s by default), each step still started only while its worst case fits: an
    operator's ``tether kick`` of a user's hundreds of sessions announces their ends
    rather than leaving them to the sweep, and stops before the lease is over, when
    the sweep may announce them too."""
    if not answer_in_time:
        budget_seconds = max(budget_seconds, lease_seconds)
    deadline = time.monotonic() + budget_seconds
    if invocation_ends is None:
        return deadline
    return min(deadline, invocation_ends - INVOCATION_KEPT_SECONDS)


def _gateway_seconds(
    left: float,
    *,
    keep: float,
    most: float | None = None,
    least: float | None = None,
) -> float:
    """How long the gateway's answers are waited for, with ``left`` seconds left: up to
    ``most`` (``DISCONNECT_BUDGET_SECONDS``), keeping ``keep`` for what follows; when
    that would leave the gateway less than ``least`` (``DISCONNECT_FLOOR_SECONDS``), up
    to ``most`` of what is left (the clients' close comes first, and little that follows
    would fit)."""
    most = DISCONNECT_BUDGET_SECONDS if most is None else most
    least = DISCONNECT_FLOOR_SECONDS if least is None else least
    wait = min(most, left - keep)
    if wait < least:
        wait = min(most, left)
    return max(wait, 0.0)


def _announce_in_time(
    store: SessionStore,
    announcer: Announcer,
    ended: Sequence[SessionEnded],
    left: Callable[[], float],
) -> dict[UUID, tuple[bool, str | None]]:
    """Announce the ends a chunk at a time while a chunk's worst case (EventBridge's, then
    a database call) fits in the time left: each announced end's own outcome (whether it
    went out, and if not why). An end refused, or not tried, stays queued, still leased to
    this call (``_give_back``): released chunk by chunk, a chunk partly refused would make
    a second call, past its worst case. No time is kept back for reading the sessions
    back: with a call's worst case at 15 s, a chunk and a call after it would never fit
    in 24 s."""
    outcomes: dict[UUID, tuple[bool, str | None]] = {}
    for start in range(0, len(ended), ANNOUNCE_CHUNK):
        if left() < ANNOUNCING_SECONDS + store.longest_call_seconds:
            logger.warning(
                "no time left to announce these ends now; the sweep announces them",
                extra={"sessions": len(ended) - start},
            )
            break
        chunk = ended[start : start + ANNOUNCE_CHUNK]
        result = announce_and_mark(store, announcer, chunk, release=False)
        # EventBridge answers entry by entry: one refused is no other's failure, and
        # its reason is its own, not every reason of the chunk.
        refused = set(result.failed)
        batch_why = result.error or REFUSED_BY_EVENTBRIDGE
        outcomes.update(
            (
                s.session_id,
                (False, result.errors.get(s.session_id, batch_why))
                if s.session_id in refused
                else (True, None),
            )
            for s in chunk
        )
    return outcomes


def _give_back(store: SessionStore, unannounced: Sequence[UUID], left: Callable[[], float]) -> None:
    """Give back the lease on the ends this call did not announce (no time to, or
    EventBridge refused them), while a call fits in the time left: kept, it told a close
    of one of them (what the answer advises for a connection ``failed``) that this call
    was still at work on it, to be waited for, and kept the sweep off them until it ran
    out."""
    if not unannounced:
        return
    if left() < store.longest_call_seconds:
        logger.warning(
            "no time left to give back the lease on these ends; the sweep announces them"
            " once it is over",
            extra={"sessions": len(unannounced)},
        )
        return
    try:
        store.release_announcements(dict.fromkeys(unannounced, 0))
    except TetherError as exc:
        # Still queued and leased: announced once the lease is over; nothing is lost.
        logger.warning(
            "could not give back the lease on these ends; the sweep announces them once it is over",
            extra={"sessions": len(unannounced), "error": str(exc)},
        )


def _read_back(
    store: SessionStore, user_id: UUID, ended: Sequence[SessionEnded], left: Callable[[], float]
) -> tuple[dict[UUID, SessionPublic], str]:
    """The sessions just ended, as they stand now, read a page at a time (one call per
    session would cost a round trip each: hundreds for a user with hundreds of sessions)
    while a call fits in the time left, and why those missing were not read. Only shown,
    as a single close's (``_read_one``): a database failing stops the reading, not the
    answer.

    Only the user's forced closes are listed, and each page starts at the newest session
    of this call not yet read: the user's other sessions started in between (an old live
    session closed with many short ones since) are skipped over, not paged through."""
    if not ended:
        return {}, NOT_READ_IN_TIME
    starts = {session.session_id: session.session_start for session in ended}
    found: dict[UUID, SessionPublic] = {}
    after: tuple[datetime, UUID] | None = None
    while left() >= store.longest_call_seconds:
        unread = [session_id for session_id in starts if session_id not in found]
        if not unread:
            break
        newest = max(starts[session_id] for session_id in unread)
        if after is not None and after[0] > newest:
            after = None  # a page's rest holds none of these: jump to the next one
        where = SessionFilter(
            active=False,
            user_id=user_id,
            end_reason=EndReason.FORCED_CLOSE,
            started_after=min(starts[session_id] for session_id in unread),
            started_before=newest + _MOMENT,
        )
        try:
            rows = store.list_sessions(where, after=after, limit=PAGE_SIZE_MAX)
        except TetherError as exc:
            logger.warning(
                "could not read the closed sessions back",
                extra={"user_id": str(user_id), "unread": len(unread), "error": str(exc)},
            )
            return found, NOT_READ_FAILING
        found.update((row.session_id, _public(row)) for row in rows if row.session_id in starts)
        if len(rows) < PAGE_SIZE_MAX:
            break
        after = (rows[-1].session_start, rows[-1].session_id)
    return found, NOT_READ_IN_TIME


_MOMENT = timedelta(microseconds=1)
"""Postgres's resolution of a moment: the bound just past a session's start."""


def describe_user_close(
    closed: int, unclosed: int, unannounced: int, unread: int, unread_why: str = NOT_READ_IN_TIME
) -> str:
    """What closing a user's sessions did, and what is left and how to finish it."""
    said = [f"ended {closed} session(s)"]
    if unclosed:
        said.append(
            f"{unclosed} connection(s) not closed (the gateway did not answer, or was not"
            " asked before the answer's time ran out): close each again with"
            " POST /sessions/{id}/close, or leave them to their next heartbeat"
        )
    if unannounced:
        said.append(f"{unannounced} SessionEnded queued: the sweep announces them")
    if unread:
        said.append(f"{unread} session(s) {unread_why}: GET /sessions/{{id}}")
    return "; ".join(said)


def sweep_now(store: SessionStore, budget_seconds: float = SWEEP_BUDGET_SECONDS) -> SweepSummary:
    """One sweep from this process's configuration, within the budget (the one way a
    sweep is run: ``tether.handlers.sweep.run_sweep``)."""
    from tether.handlers.sweep import run_sweep  # noqa: PLC0415 - boto3 only when sweeping

    deadline = time.monotonic() + budget_seconds
    # One check, not a whole scheduled run: the caller waits for the answer.
    report = run_sweep(lambda: deadline - time.monotonic(), keep_checking=False, store=store)
    return SweepSummary.model_validate(report.as_dict())
