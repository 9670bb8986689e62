-- The last hour's ends, as the operators' API and the live page count them, took
-- every end after the hour's start, one still to come included: an end written
-- directly with a session_end in the future (tether's functions never write one; a
-- team's own update, or a history brought in by hand, may) was counted among the last
-- hour's until its moment came.
--
-- * tether_recent_ends_v2 counts only the ends already past.
--
-- tether_recent_ends_v1 stays as it is until a later release drops it.

create function public.tether_recent_ends_v2(p_seconds double precision default 3600)
returns table (end_reason text, ended bigint)
language plpgsql
stable
security definer
set search_path = pg_catalog, pg_temp
set lock_timeout = '3s'
set plan_cache_mode = force_custom_plan
as $$
#variable_conflict use_column
begin
  perform public.tether_require_range('window', p_seconds, 0, 604800, false, 'seconds');

  return query
    select s.end_reason::text, count(*)
    from public.conversation_sessions s
    where not s.is_active
      and s.session_end > now() - make_interval(secs => p_seconds)
      and s.session_end <= now()
    group by s.end_reason
    order by 2 desc, 1;
end;
$$;

comment on function public.tether_recent_ends_v2 is
  'How many sessions ended in the last p_seconds, by reason: ends already past only.';

revoke execute on function public.tether_recent_ends_v2(double precision)
from public, anon, authenticated;

grant execute on function public.tether_recent_ends_v2(double precision)
to service_role;
