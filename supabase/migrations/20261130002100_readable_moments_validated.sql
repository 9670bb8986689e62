-- The check of the migration before, on the rows already there. Each moment no client
-- can read becomes one it can, from what the row holds, and the migration says how
-- many rows it changed; left as they were, those rows could not be read, and, checked
-- now, could not be updated either (not ended, announced or finalized):
--   a start past year 9999: its first readable moment (last sign of life, end), else now;
--   an end: its last readable sign of life, no later than now, no earlier than its start;
--   a last sign of life: its end, else its start;
--   an announcement: now (it was announced; when cannot be read).
-- One read of the table finds them all (the lock of the migration before may still be
-- held: in one run of `tether migrate`, writes wait through this read).
do $$
declare
  v_earliest constant timestamptz := '0001-01-02 00:00:00+00';
  v_latest constant timestamptz := '9999-12-31 00:00:00+00';
  v_changed bigint;
begin
  with readable as (
    select s.session_id,
           s.session_end is not null as ended,
           s.announced_at is not null as announced,
           case when s.session_start < v_latest then s.session_start end as start_at,
           case when isfinite(s.session_end) and s.session_end >= v_earliest
                 and s.session_end < v_latest then s.session_end end as end_at,
           case when isfinite(s.last_seen_at) and s.last_seen_at >= v_earliest
                 and s.last_seen_at < v_latest then s.last_seen_at end as seen_at,
           case when isfinite(s.announced_at) and s.announced_at >= v_earliest
                 and s.announced_at < v_latest then s.announced_at end as announced_at
      from public.conversation_sessions s
     where not (s.session_start < v_latest
                and (s.session_end is null
                     or (isfinite(s.session_end) and s.session_end >= v_earliest
                         and s.session_end < v_latest))
                and isfinite(s.last_seen_at) and s.last_seen_at >= v_earliest
                and s.last_seen_at < v_latest
                and (s.announced_at is null
                     or (isfinite(s.announced_at) and s.announced_at >= v_earliest
                         and s.announced_at < v_latest)))
  ), started as (
    -- least() passes over nulls: the earlier of the two that can be read.
    select r.*, coalesce(r.start_at, least(r.seen_at, r.end_at), now()) as new_start
      from readable r
  ), ended as (
    select st.*,
           case when st.ended
                then coalesce(st.end_at, greatest(st.new_start, least(st.seen_at, now())))
           end as new_end
      from started st
  )
  update public.conversation_sessions s
     set session_start = e.new_start,
         session_end = e.new_end,
         last_seen_at = coalesce(e.seen_at, e.new_end, e.new_start),
         announced_at = case when e.announced then coalesce(e.announced_at, now()) end
    from ended e
   where s.session_id = e.session_id;
  get diagnostics v_changed = row_count;
  if v_changed > 0 then
    raise warning '% session(s) held a moment no client can read; each now holds a'
      ' readable one', v_changed;
  end if;
end
$$;

alter table public.conversation_sessions
  validate constraint conversation_sessions_moments_readable_check;
