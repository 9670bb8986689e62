"""The table a team brings to tether: the origin report's ``conversation_sessions``
as its old server created and wrote it, with 85 rows, 18 orphans 9 to 444 hours
old, and every inconsistency such a history leaves behind; the application's own
columns, a view, an index, a policy and a function of the team's on it; the old
server's writes and the operators' two monitoring queries, verbatim.

Each row carries what adoption must make of it, by the README's rules."""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg

from tests.support import ORIGIN_TABLE

ORPHAN_HOURS = (9, 12, 20, 26, 33, 40, 51, 70, 90, 120, 150, 200, 250, 300, 350, 400, 430, 444)

# The origin report's monitoring queries, unchanged.
ORPHAN_ALERT = """
SELECT COUNT(*) as orphaned_count
FROM conversation_sessions
WHERE is_active = true
AND session_start < NOW() - INTERVAL '2 hours';
"""
DAILY_STATS = """
SELECT
    DATE(session_start) as date,
    COUNT(*) as total_sessions,
    AVG(duration_seconds) as avg_duration,
    COUNT(*) FILTER (WHERE is_active) as still_active
FROM conversation_sessions
WHERE session_start > NOW() - INTERVAL '7 days'
GROUP BY DATE(session_start)
ORDER BY date DESC;
"""

# The old server's writes (websocket_manager_v2 and its shutdown handler).
OLD_INSERT = (
    "insert into conversation_sessions (user_id, is_active, session_start)"
    " values (%s, true, now()) returning session_id"
)
OLD_END = (
    "update conversation_sessions set is_active = false, session_end = now(), ended_at = now(),"
    " duration_seconds = extract(epoch from (now() - session_start)) where session_id = %s"
)
OLD_SHUTDOWN = (
    "update conversation_sessions set is_active = false, session_end = now(), ended_at = now()"
    " where is_active = true"
)

TEAM_OBJECTS = """
do $$
begin
  -- Supabase has these roles; the team's table was granted to them by default.
  if not exists (select 1 from pg_roles where rolname = 'anon') then
    create role anon nologin noinherit;
  end if;
  if not exists (select 1 from pg_roles where rolname = 'authenticated') then
    create role authenticated nologin noinherit;
  end if;
  if not exists (select 1 from pg_roles where rolname = 'service_role') then
    create role service_role nologin noinherit bypassrls;
  end if;
end
$$;
grant all on table public.conversation_sessions to anon, authenticated, service_role;

create index conversation_sessions_is_active_idx on public.conversation_sessions (is_active);

create view public.team_session_stats as
select date(session_start) as date,
       count(*) as total_sessions,
       avg(duration_seconds) as avg_duration,
       count(*) filter (where is_active) as still_active
from public.conversation_sessions
group by date(session_start);
comment on view public.team_session_stats is 'The team''s dashboard.';
grant select on public.team_session_stats to authenticated;

create view public.team_busy_days as
select date, total_sessions from public.team_session_stats where total_sessions > 1;

create policy "Agents read active sessions" on public.conversation_sessions
  for select to authenticated using (is_active and agent_id is not null);

create function public.close_all_sessions() returns bigint language plpgsql as $fn$
declare n bigint;
begin
  update conversation_sessions set is_active = false, session_end = now(), ended_at = now()
  where is_active = true;
  get diagnostics n = row_count;
  return n;
end
$fn$;
"""


@dataclass
class OriginRow:
    label: str
    session_id: uuid.UUID
    user_id: uuid.UUID
    is_active: bool | None
    session_start: datetime | None
    session_end: datetime | None
    ended_at: datetime | None
    duration_seconds: float | None
    agent_id: str
    metadata: dict[str, Any]
    expect_reason: str | None
    """None: still active after adoption."""
    expect_end: datetime | str | None
    """A moment, or 'start': the (believed) start, or None while active."""
    kinds: frozenset[str] = frozenset()

    @property
    def corrected(self) -> bool:
        return bool(self.kinds)


@dataclass
class Origin:
    now: datetime
    rows: list[OriginRow] = field(default_factory=list)

    def by_label(self, label: str) -> list[OriginRow]:
        return [row for row in self.rows if row.label == label]

    @property
    def orphans(self) -> list[OriginRow]:
        return self.by_label("orphan")


def _rows(now: datetime) -> list[OriginRow]:
    rows: list[OriginRow] = []

    def add(
        label: str,
        *,
        is_active: bool | None,
        start: datetime | None,
        end: datetime | None = None,
        ended_at: datetime | None = None,
        duration: float | None = None,
        reason: str | None,
        expect_end: datetime | str | None,
        kinds: tuple[str, ...] = (),
    ) -> None:
        index = len(rows)
        rows.append(
            OriginRow(
                label=label,
                session_id=uuid.uuid4(),
                user_id=uuid.uuid4(),
                is_active=is_active,
                session_start=start,
                session_end=end,
                ended_at=ended_at,
                duration_seconds=duration,
                agent_id=f"agent-{index % 3}",
                metadata={"n": index, "label": label, "tags": ["voice", "chat"][index % 2 :]},
                expect_reason=reason,
                expect_end=expect_end,
                kinds=frozenset(kinds),
            )
        )

    hours = timedelta(hours=1)
    for age in ORPHAN_HOURS:
        add("orphan", is_active=True, start=now - age * hours, reason=None, expect_end=None)
    for minutes in (5, 30):
        add(
            "live",
            is_active=True,
            start=now - timedelta(minutes=minutes),
            reason=None,
            expect_end=None,
        )
    for i in range(37):
        start = now - (50 + 3 * i) * hours
        seconds = 60.0 * (i + 1) + 0.25
        end = start + timedelta(seconds=seconds)
        add(
            "clean",
            is_active=False,
            start=start,
            end=end,
            ended_at=end,
            duration=seconds,
            reason="unrecorded",
            expect_end=end,
        )
    for i in range(4):
        start = now - (30 + i) * hours
        add(
            "inactive_ended_at",
            is_active=False,
            start=start,
            ended_at=start + timedelta(seconds=300),
            duration=300.0,
            reason="unrecorded",
            expect_end=start + timedelta(seconds=300),
            kinds=("inactive_without_end", "ended_at_differs"),
        )
    for i in range(3):
        start = now - (36 + i) * hours
        add(
            "inactive_duration",
            is_active=False,
            start=start,
            duration=120.5,
            reason="unrecorded",
            expect_end=start + timedelta(seconds=120.5),
            kinds=("inactive_without_end",),
        )
    for i in range(4):
        add(
            "inactive_nothing",
            is_active=False,
            start=now - (40 + i) * hours,
            reason="end_unknown",
            expect_end="start",
            kinds=("inactive_without_end", "duration_differs"),
        )
    for i in range(4):
        start = now - (44 + i) * hours
        add(
            "active_with_end",
            is_active=True,
            start=start,
            end=start + timedelta(seconds=600),
            reason="unrecorded",
            expect_end=start + timedelta(seconds=600),
            kinds=("active_with_end", "ended_at_differs", "duration_differs"),
        )
    for i in range(3):
        start = now - (60 + i) * hours
        add(
            "end_before_start",
            is_active=False,
            start=start,
            end=start - hours,
            ended_at=start - hours,
            duration=-3600.0,
            reason="end_unknown",
            expect_end="start",
            kinds=("end_before_start", "duration_differs"),
        )
    start = now - 64 * hours
    add(
        "end_before_start_ended_at",
        is_active=False,
        start=start,
        end=start - hours,
        ended_at=start + timedelta(seconds=900),
        duration=-3600.0,
        reason="unrecorded",
        expect_end=start + timedelta(seconds=900),
        kinds=("end_before_start", "ended_at_differs", "duration_differs"),
    )
    for i in range(3):
        start = now - (70 + i) * hours
        # The origin's clean-up: the duration counted up to the clean-up, not the end.
        add(
            "wrong_duration",
            is_active=False,
            start=start,
            end=start + timedelta(seconds=200),
            ended_at=start + timedelta(seconds=200),
            duration=(70 + i) * 3600.0,
            reason="unrecorded",
            expect_end=start + timedelta(seconds=200),
            kinds=("duration_differs",),
        )
    for i in range(2):
        start = now - (80 + i) * hours
        add(
            "ended_at_differs",
            is_active=False,
            start=start,
            end=start + timedelta(seconds=100),
            ended_at=start + timedelta(seconds=5000),
            duration=100.0,
            reason="unrecorded",
            expect_end=start + timedelta(seconds=100),
            kinds=("ended_at_differs",),
        )
    start = now - 90 * hours
    add(
        "is_active_null",
        is_active=None,
        start=start,
        end=start + timedelta(seconds=50),
        ended_at=start + timedelta(seconds=50),
        duration=50.0,
        reason="unrecorded",
        expect_end=start + timedelta(seconds=50),
        kinds=("is_active_null",),
    )
    end = now - 20 * hours
    add(
        "no_start",
        is_active=False,
        start=None,
        end=end,
        ended_at=end,
        reason="unrecorded",
        expect_end=end,
        kinds=("no_start", "duration_differs"),
    )
    # A naive local time read as UTC: three hours in the future.
    add(
        "start_in_future",
        is_active=False,
        start=now + 3 * hours,
        end=now + 3 * hours + timedelta(minutes=10),
        ended_at=now + 3 * hours + timedelta(minutes=10),
        duration=600.0,
        reason="end_unknown",
        expect_end="start",
        kinds=("start_in_future", "end_in_future", "duration_differs"),
    )
    start = now - 30 * hours
    add(
        "end_in_future",
        is_active=False,
        start=start,
        end=now + 5 * hours,
        ended_at=now + 5 * hours,
        duration=35 * 3600.0,
        reason="end_unknown",
        expect_end="start",
        kinds=("end_in_future", "duration_differs"),
    )
    return rows


def build_origin(url: str, *, team_objects: bool = True) -> Origin:
    """Create the origin's table in the (empty) database at ``url`` and fill it."""
    origin = Origin(now=datetime.now(UTC).replace(microsecond=0))
    origin.rows = _rows(origin.now)
    assert len(origin.rows) == 85
    assert len(origin.orphans) == 18
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(ORIGIN_TABLE)
        with conn.cursor() as cursor:
            cursor.executemany(
                "insert into public.conversation_sessions (session_id, user_id, is_active,"
                " session_start, session_end, ended_at, duration_seconds, agent_id, metadata)"
                " values (%s, %s, %s, %s, %s, %s, %s, %s, %s)",
                [
                    (
                        row.session_id,
                        row.user_id,
                        row.is_active,
                        row.session_start,
                        row.session_end,
                        row.ended_at,
                        row.duration_seconds,
                        row.agent_id,
                        json.dumps(row.metadata),
                    )
                    for row in origin.rows
                ],
            )
        if team_objects:
            conn.execute(TEAM_OBJECTS.encode())
    return origin


def fill_history(url: str, rows: int, *, batch: int = 100_000) -> None:
    """Many old rows in the origin's table (ended, a few orphans), for size tests."""
    with psycopg.connect(url, autocommit=True) as conn:
        done = 0
        while done < rows:
            count = min(batch, rows - done)
            conn.execute(
                "insert into public.conversation_sessions (user_id, is_active, session_start,"
                " session_end, ended_at, duration_seconds, agent_id, metadata)"
                " select gen_random_uuid(), g %% 50 = 0,"
                "   now() - make_interval(hours => 3 + g %% 2000),"
                "   case when g %% 50 <> 0"
                "        then now() - make_interval(hours => 3 + g %% 2000) + interval '5 minutes'"
                "   end,"
                "   case when g %% 50 <> 0"
                "        then now() - make_interval(hours => 3 + g %% 2000) + interval '5 minutes'"
                "   end,"
                "   case when g %% 50 <> 0 then 300 end,"
                "   'agent-' || g %% 7, jsonb_build_object('n', g)"
                " from generate_series(%s::int, %s::int) g",
                (done + 1, done + count),
            )
            done += count
        conn.execute("analyze public.conversation_sessions")
