-- A session past both hard limits is ended for the one it reached first. The sweep
-- takes sessions past the age limit before those past the idle limit, and v1 named
-- every one of those max_duration: a session silent from its first minute and found
-- three hours later (a sweep down overnight, a laptop's `tether dev` restarted in the
-- morning, an adopted table) was ended max_duration with a duration of seconds, though
-- API Gateway had closed it at the idle limit. Its end was right (its last sign of
-- life); its reason was not.
--
-- * tether_close_stale_v2 ends the same sessions at the same moments as v1, for
--   idle_timeout when its last sign of life plus the idle limit came before its start
--   plus the age limit, else for max_duration;
-- * tether_sweep_preview_v3 counts them the same way (v2 counted every session past
--   the age limit as max_duration).
--
-- The _v1 and _v2 stay as they are until a later release drops them. Both pin their
-- search_path, lock_timeout and plan_cache_mode in their definition.

create function public.tether_close_stale_v2(
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

  -- The end is the last sign of life (never past the age limit): durations stay honest
  -- however late the sweep runs. The reason is the limit the connection reached first.
  return query
    with ended as (
      update public.conversation_sessions as s
         set session_end = greatest(least(s.last_seen_at, s.session_start + v_max_age),
                                    s.session_start),
             end_reason = case when s.last_seen_at + v_idle <= s.session_start + v_max_age
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

comment on function public.tether_close_stale_v2 is
  'Ends at most p_limit active sessions past the age limit or silent beyond the idle limit, each for the limit it reached first (idle_timeout or max_duration), queues their announcements, and returns how many per reason; safe when sweeps overlap.';


create function public.tether_sweep_preview_v3(
  p_idle_seconds double precision,
  p_max_age_seconds double precision,
  p_silent_seconds double precision
)
returns table (past_max_age bigint, past_idle bigint, suspects bigint, unannounced bigint)
language plpgsql
stable
security definer
set search_path = pg_catalog, pg_temp
set lock_timeout = '3s'
set plan_cache_mode = force_custom_plan
as $$
#variable_conflict use_column
declare
  v_idle interval;
  v_max_age interval;
begin
  -- The ranges the sweep itself runs with (tether_close_stale_v2, tether_claim_suspects_v1).
  perform public.tether_require_range('idle limit', p_idle_seconds, 0, 86400, false, 'seconds');
  perform public.tether_require_range('age limit', p_max_age_seconds, 0, 604800, false, 'seconds');
  perform public.tether_require_range('silence', p_silent_seconds, 0, 86400, true, 'seconds');
  v_idle := make_interval(secs => p_idle_seconds);
  v_max_age := make_interval(secs => p_max_age_seconds);

  return query
    select
      -- Ended for the age limit: past it, and not silent past the idle limit before it.
      (select count(*) from public.conversation_sessions s
        where s.is_active and s.session_start < now() - v_max_age
          and s.last_seen_at + v_idle > s.session_start + v_max_age),
      -- For the idle limit: silent past it, and reached it before the age limit.
      (select count(*) from public.conversation_sessions s
        where s.is_active and s.last_seen_at < now() - v_idle
          and (s.session_start >= now() - v_max_age
               or s.last_seen_at + v_idle <= s.session_start + v_max_age)),
      (select count(*) from public.conversation_sessions s
        where s.is_active and s.last_seen_at < now() - make_interval(secs => p_silent_seconds)
          and s.last_seen_at >= now() - v_idle
          and s.session_start >= now() - v_max_age),
      (select count(*) from public.conversation_session_announcements);
end;
$$;

comment on function public.tether_sweep_preview_v3 is
  'What a sweep with these limits would do now, writing nothing: sessions it would end for the age limit and for the idle limit (each for the limit it reached first), silent enough to ask the gateway about, and ends not yet announced.';

comment on function public.tether_close_stale_v1 is
  'Ends at most p_limit active sessions older than the age limit (max_duration) or silent beyond the idle limit (idle_timeout), queues their announcements, and returns how many per reason; safe when sweeps overlap. Superseded by tether_close_stale_v2, which names the limit reached first.';
comment on function public.tether_sweep_preview_v2 is
  'What a sweep with these limits would do now, writing nothing. Superseded by tether_sweep_preview_v3.';


revoke execute on function
  public.tether_close_stale_v2(double precision, double precision, integer),
  public.tether_sweep_preview_v3(double precision, double precision, double precision)
from public, anon, authenticated;

grant execute on function
  public.tether_close_stale_v2(double precision, double precision, integer),
  public.tether_sweep_preview_v3(double precision, double precision, double precision)
to service_role;
