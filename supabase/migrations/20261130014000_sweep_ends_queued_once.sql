-- The sweep's batches paid for each end they wrote twice over: tether_close_stale_v3
-- queues its ends' announcements in the statement that writes them, then the trigger of
-- 20261130005000 (an end written around tether's functions is queued) called its
-- function for every one of those rows, to find each queued already. On 100,000 stale
-- sessions that call was a third of the batches' time.
--
-- * tether_close_stale_v4 ends and queues what v3 does, and says so for the length of
--   its update (a transaction-local setting, reset when the update is done), so the
--   trigger leaves its rows alone.
-- * The trigger skips a row only while that setting is on and the write is not one a
--   trigger made: an end written by a team's trigger during tether's update (a cascade
--   of its own) is still queued. The setting gives a writer nothing it did not have:
--   an end written with `announced_at` set was never queued either.
--
-- v4 also reads the rows it ends by their ctid whatever the table's size: v3's update
-- scanned a table of up to several hundred thousand rows whole for each batch of
-- thousands, the planner preferring that to reading as many rows by their ctid.
--
-- tether_close_stale_v3 stays as it is until a later release drops it; its ends still
-- pass the trigger, which finds them queued.

create or replace trigger conversation_sessions_queue_direct_end
  after update on public.conversation_sessions
  for each row
  when (
    old.session_end is null
    and new.session_end is not null
    and new.announced_at is null
    and new.connection_id not like 'legacy:%'
    and (current_setting('tether.queued_own_ends', true) is distinct from 'on'
         or pg_trigger_depth() > 0)
  )
  execute function public.tether_queue_direct_end();


create function public.tether_close_stale_v4(
  p_idle_seconds double precision,
  p_max_age_seconds double precision,
  p_limit integer default 500
)
returns table (end_reason text, ended bigint)
language plpgsql
volatile
security definer
set search_path = pg_catalog, pg_temp
set lock_timeout = '3s'
set plan_cache_mode = force_custom_plan
as $$
#variable_conflict use_column
declare
  v_now timestamptz := now();
  v_idle interval;
  v_max_age interval;
  v_too_old tid[];
  v_silent tid[];
begin
  perform public.tether_require_range('idle limit', p_idle_seconds, 0, 86400, false, 'seconds');
  perform public.tether_require_range('age limit', p_max_age_seconds, 0, 604800, false, 'seconds');
  perform public.tether_require_range('batch size', p_limit, 1, 10000, true, '');
  v_idle := make_interval(secs => p_idle_seconds);
  v_max_age := make_interval(secs => p_max_age_seconds);

  -- As v3: SKIP LOCKED, so an overlapping sweep takes other rows, and the rows are
  -- updated by their ctid, which the row locks keep stable.
  select coalesce(array_agg(s.ctid), '{}') into v_too_old
  from (
    select s.ctid
    from public.conversation_sessions s
    where s.is_active
      and s.session_start < v_now - v_max_age
    order by s.session_start
    limit p_limit
    for update skip locked
  ) s;

  select coalesce(array_agg(s.ctid), '{}') into v_silent
  from (
    select s.ctid
    from public.conversation_sessions s
    where s.is_active
      and s.last_seen_at < v_now - v_idle
      and s.ctid <> all (v_too_old)
    order by s.last_seen_at
    limit p_limit - cardinality(v_too_old)
    for update skip locked
  ) s;

  -- The update below queues each end it writes: the trigger need not look for them.
  perform set_config('tether.queued_own_ends', 'on', true);
  return query
    with ended as (
      update public.conversation_sessions as s
         set session_end = case
               when s.end_intent_reason is not null and s.last_seen_at <= s.end_intent_at
                    and s.end_intent_at <= s.session_start + v_max_age
               then greatest(s.end_intent_at, s.session_start)
               else greatest(least(s.last_seen_at, s.session_start + v_max_age),
                             s.session_start) end,
             end_reason = case
               when s.end_intent_reason is not null and s.last_seen_at <= s.end_intent_at
                    and s.end_intent_at <= s.session_start + v_max_age
               then s.end_intent_reason
               when s.last_seen_at + v_idle <= s.session_start + v_max_age
               then 'idle_timeout' else 'max_duration' end
       -- An array read when the update runs, not a constant of the plan: for a
       -- constant of thousands the planner would rather scan a table of a few
       -- hundred thousand rows whole than read those rows by their ctid.
       where s.ctid = any (array(select unnest(v_too_old || v_silent)))
         and s.is_active
      returning s.session_id, s.end_reason
    ), queued as (
      insert into public.conversation_session_announcements (session_id)
      select e.session_id from ended e
    )
    select e.end_reason::text, count(*) from ended e group by e.end_reason;
  perform set_config('tether.queued_own_ends', '', true);
end;
$$;

comment on function public.tether_close_stale_v4 is
  'Ends at most p_limit active sessions past the age limit or silent beyond the idle limit, each for the limit it reached first (idle_timeout or max_duration) or, where an end intent before the age limit is in force, as the intent says; queues their announcements, and returns how many per reason; safe when sweeps overlap.';

comment on function public.tether_close_stale_v3 is
  'Ends at most p_limit active sessions past the age limit or silent beyond the idle limit, each for the limit it reached first (idle_timeout or max_duration) or, where an end intent before the age limit is in force, as the intent says; queues their announcements, and returns how many per reason; safe when sweeps overlap. Superseded by tether_close_stale_v4, whose ends the direct-end trigger need not look for.';

revoke execute on function public.tether_close_stale_v4(double precision, double precision, integer)
from public, anon, authenticated;

grant execute on function public.tether_close_stale_v4(double precision, double precision, integer)
to service_role;
