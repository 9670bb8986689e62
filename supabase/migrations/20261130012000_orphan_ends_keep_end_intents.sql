-- A sweep that recorded its end intents (tether_intend_end_v2) and closed those silent
-- connections at the gateway, then was stopped before it ended their sessions, leaves
-- them to their $disconnect or to a later sweep. `tether close-orphans --apply` run
-- before either (tether_close_orphans_v2) ended them as orphan_cleanup at their last
-- sign of life, where every other end (tether_end_session_v3, tether_end_sessions_v1,
-- tether_settle_gone_v1, tether_close_stale_v3) keeps the intent's reason and time; and
-- its dry run (tether_orphan_summary_v2) could not say which of them would.
--
-- * tether_close_orphans_v3 ends the same sessions as v2; one whose end intent is still
--   in force (no sign of life after it) ends with the intent's reason at the intent's
--   time, as tether_close_stale_v3 ends it (close-orphans has no age limit to come
--   first). It returns each session it ended with its reason, so that its caller can
--   count them by reason and tell its own ends from others waiting in the outbox.
-- * tether_orphan_summary_v3 counts them as v2 does, and says how many of them have an
--   end intent in force (intended).
--
-- tether_close_orphans_v2 and tether_orphan_summary_v2 stay as they are until a later
-- release drops them.


create function public.tether_close_orphans_v3(
  p_older_than_seconds double precision,
  p_limit integer default 500
)
returns table (session_id uuid, end_reason text)
language plpgsql
volatile
security definer
set search_path = pg_catalog, pg_temp
set lock_timeout = '3s'
set plan_cache_mode = force_custom_plan
as $$
#variable_conflict use_column
begin
  -- A year and a day at most: as far back as the operators' commands reach.
  perform public.tether_require_range('age', p_older_than_seconds, 0, 31622400, false, 'seconds');
  perform public.tether_require_range('batch size', p_limit, 1, 10000, true, '');

  -- As v2, but an end intent in force (no sign of life after it) gives the reason and
  -- the time: a sweep closed that connection itself.
  return query
    with picked as (
      select q.ctid
      from public.conversation_sessions q
      where q.is_active
        and q.session_start < now() - make_interval(secs => p_older_than_seconds)
      order by q.session_start
      limit p_limit
      for update skip locked
    ), ended as (
      update public.conversation_sessions as s
         set session_end = case
               when s.end_intent_reason is not null and s.last_seen_at <= s.end_intent_at
               then greatest(s.end_intent_at, s.session_start)
               else greatest(s.last_seen_at, s.session_start) end,
             end_reason = case
               when s.end_intent_reason is not null and s.last_seen_at <= s.end_intent_at
               then s.end_intent_reason else 'orphan_cleanup' end
        from picked
       where s.ctid = picked.ctid
         and s.is_active
      returning s.session_id, s.end_reason
    ), queued as (
      insert into public.conversation_session_announcements (session_id)
      select e.session_id from ended e
    )
    select e.session_id, e.end_reason::text from ended e;
end;
$$;

comment on function public.tether_close_orphans_v3 is
  'The one-off clean-up: ends up to p_limit active sessions started before the age given (at most 366 days), with reason orphan_cleanup at their last sign of life or, where an end intent is in force, as the intent says; queues their announcements, and returns each session ended with its reason.';

comment on function public.tether_close_orphans_v2 is
  'The one-off clean-up: ends up to p_limit active sessions started before the age given (at most 366 days), with reason orphan_cleanup, at their last sign of life, and queues their announcements. Superseded by tether_close_orphans_v3, which keeps an end intent in force.';


create function public.tether_orphan_summary_v3(p_older_than_seconds double precision)
returns table (
  orphans bigint,
  intended bigint,
  oldest_start timestamptz,
  newest_start timestamptz
)
language plpgsql
stable
security definer
set search_path = pg_catalog, pg_temp
set lock_timeout = '3s'
set plan_cache_mode = force_custom_plan
as $$
#variable_conflict use_column
begin
  perform public.tether_require_range('age', p_older_than_seconds, 0, 31622400, false, 'seconds');

  return query
    select count(*),
           count(*) filter (where s.end_intent_reason is not null
                              and s.last_seen_at <= s.end_intent_at),
           min(s.session_start), max(s.session_start)
    from public.conversation_sessions s
    where s.is_active
      and s.session_start < now() - make_interval(secs => p_older_than_seconds);
end;
$$;

comment on function public.tether_orphan_summary_v3 is
  'What tether_close_orphans_v3 would end for this age: how many active sessions started before it, how many of them end as their end intent in force says (intended), the oldest start and the newest.';

comment on function public.tether_orphan_summary_v2 is
  'What tether_close_orphans_v2 would end for this age: how many active sessions started before it, the oldest start and the newest. Superseded by tether_orphan_summary_v3, which counts those with an end intent in force.';


revoke execute on function
  public.tether_close_orphans_v3(double precision, integer),
  public.tether_orphan_summary_v3(double precision)
from public, anon, authenticated;

grant execute on function
  public.tether_close_orphans_v3(double precision, integer),
  public.tether_orphan_summary_v3(double precision)
to service_role;
