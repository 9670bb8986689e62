-- A sweep that recorded its end intents (tether_intend_end_v2) and closed those silent
-- connections at the gateway, then was killed before it ended their sessions, leaves
-- them to their $disconnect, or, that one lost too, to a later sweep. One that came only
-- once they were past the idle limit (sweeps down for a while, a killed `tether dev`
-- restarted later) ended them with tether_close_stale_v2 as idle_timeout, as if API
-- Gateway had closed them, though the sweep had closed them for a heartbeat timeout.
--
-- * tether_close_stale_v3 ends the same sessions as v2; one whose end intent is still
--   in force (no sign of life after it), and came before the age limit, ends with the
--   intent's reason at the intent's time, as tether_end_session_v3,
--   tether_end_sessions_v1 and tether_settle_gone_v1 end it.
--
-- tether_close_stale_v2 stays as it is until a later release drops it.


create function public.tether_close_stale_v3(
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

  -- As v1: SKIP LOCKED, so an overlapping sweep takes other rows, and the rows are
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

  -- As v2, but an end intent in force (no sign of life after it) that came before the
  -- age limit gives the reason and the time: the sweep closed that connection itself.
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
       where s.ctid = any (v_too_old || v_silent)
         and s.is_active
      returning s.session_id, s.end_reason
    ), queued as (
      insert into public.conversation_session_announcements (session_id)
      select e.session_id from ended e
    )
    select e.end_reason::text, count(*) from ended e group by e.end_reason;
end;
$$;

comment on function public.tether_close_stale_v3 is
  'Ends at most p_limit active sessions past the age limit or silent beyond the idle limit, each for the limit it reached first (idle_timeout or max_duration) or, where an end intent before the age limit is in force, as the intent says; queues their announcements, and returns how many per reason; safe when sweeps overlap.';

comment on function public.tether_close_stale_v2 is
  'Ends at most p_limit active sessions past the age limit or silent beyond the idle limit, each for the limit it reached first (idle_timeout or max_duration), queues their announcements, and returns how many per reason; safe when sweeps overlap. Superseded by tether_close_stale_v3, which keeps an end intent in force.';

revoke execute on function public.tether_close_stale_v3(double precision, double precision, integer)
from public, anon, authenticated;

grant execute on function public.tether_close_stale_v3(double precision, double precision, integer)
to service_role;
