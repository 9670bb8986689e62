-- Every moment an operator reads of a session is held to what its readers can read,
-- as its start already is (20261129006000): an end, a last sign of life, an
-- announcement or a finalization at 'infinity', before year 1 or past year 9999 cannot
-- be read by a client (Python's datetime cannot hold it, psycopg refuses it), and one
-- such row made every page of `/sessions` that held it, and the live page, answer 500.
-- The start gains the same upper bound. tether's functions never write one; a direct
-- writer (a hand-written UPDATE, a team's old server after `tether adopt --finish`)
-- could, and is now refused (SQLSTATE 23514) with nothing written.
--
-- First the rows already there: each moment no client can read becomes one it can,
-- from what its row holds, and the migration says how many rows it changed. Left as
-- they were, those rows could not be read, and, checked, not updated either (not
-- ended, announced or finalized):
--   a start past year 9999: its first readable moment (last sign of life, end), else now;
--   an end: its last readable sign of life, no later than now, no earlier than its start;
--   a last sign of life: its end, else its start;
--   an announcement or a finalization: now (it happened; when cannot be read).
-- Each update reads the row as it is when it writes it (one statement, one table), so a
-- writer's change made meanwhile is not written over. This runs before the check is
-- added, so its reads hold no lock that stops anyone.
do $$
declare
  v_earliest constant timestamptz := '0001-01-02 00:00:00+00';
  v_latest constant timestamptz := '9999-12-31 00:00:00+00';
  v_changed bigint;
begin
  select count(*) into v_changed
    from public.conversation_sessions s
   where not (s.session_start < v_latest
              and (s.session_end is null
                   or (isfinite(s.session_end) and s.session_end >= v_earliest
                       and s.session_end < v_latest))
              and isfinite(s.last_seen_at) and s.last_seen_at >= v_earliest
              and s.last_seen_at < v_latest
              and (s.announced_at is null
                   or (isfinite(s.announced_at) and s.announced_at >= v_earliest
                       and s.announced_at < v_latest))
              and (s.finalized_at is null
                   or (isfinite(s.finalized_at) and s.finalized_at >= v_earliest
                       and s.finalized_at < v_latest)));
  if v_changed = 0 then
    return;  -- as nearly every table: one read, nothing written
  end if;

  -- least() passes over nulls: the earlier of the two that can be read.
  update public.conversation_sessions s
     set session_start = coalesce(
           least(case when isfinite(s.last_seen_at) and s.last_seen_at >= v_earliest
                       and s.last_seen_at < v_latest then s.last_seen_at end,
                 case when isfinite(s.session_end) and s.session_end >= v_earliest
                       and s.session_end < v_latest then s.session_end end),
           now())
   where s.session_start >= v_latest;

  update public.conversation_sessions s
     set session_end = greatest(
           s.session_start,
           least(case when isfinite(s.last_seen_at) and s.last_seen_at >= v_earliest
                       and s.last_seen_at < v_latest then s.last_seen_at end,
                 now()))
   where s.session_end is not null
     and not (isfinite(s.session_end) and s.session_end >= v_earliest
              and s.session_end < v_latest);

  update public.conversation_sessions s
     set last_seen_at = case
           when isfinite(s.last_seen_at) and s.last_seen_at >= v_earliest
                and s.last_seen_at < v_latest then s.last_seen_at
           else coalesce(s.session_end, s.session_start) end,
         announced_at = case
           when s.announced_at is null
                or (isfinite(s.announced_at) and s.announced_at >= v_earliest
                    and s.announced_at < v_latest) then s.announced_at
           else now() end,
         finalized_at = case
           when s.finalized_at is null
                or (isfinite(s.finalized_at) and s.finalized_at >= v_earliest
                    and s.finalized_at < v_latest) then s.finalized_at
           else now() end
   where not (isfinite(s.last_seen_at) and s.last_seen_at >= v_earliest
              and s.last_seen_at < v_latest)
      or not (s.announced_at is null
              or (isfinite(s.announced_at) and s.announced_at >= v_earliest
                  and s.announced_at < v_latest))
      or not (s.finalized_at is null
              or (isfinite(s.finalized_at) and s.finalized_at >= v_earliest
                  and s.finalized_at < v_latest));

  raise warning '% session(s) held a moment no client can read; each now holds a'
    ' readable one', v_changed;
end
$$;

-- NOT VALID: adding a check takes a lock that stops every read and write of the table
-- for as long as a validation would read it. The next migration validates it.
alter table public.conversation_sessions
  add constraint conversation_sessions_moments_readable_check check (
    session_start < '9999-12-31 00:00:00+00'
    and (session_end is null
         or (isfinite(session_end)
             and session_end >= '0001-01-02 00:00:00+00'
             and session_end < '9999-12-31 00:00:00+00'))
    and isfinite(last_seen_at)
    and last_seen_at >= '0001-01-02 00:00:00+00'
    and last_seen_at < '9999-12-31 00:00:00+00'
    and (announced_at is null
         or (isfinite(announced_at)
             and announced_at >= '0001-01-02 00:00:00+00'
             and announced_at < '9999-12-31 00:00:00+00'))
    and (finalized_at is null
         or (isfinite(finalized_at)
             and finalized_at >= '0001-01-02 00:00:00+00'
             and finalized_at < '9999-12-31 00:00:00+00'))
  ) not valid;
