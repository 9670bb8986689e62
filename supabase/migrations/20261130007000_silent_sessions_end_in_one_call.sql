-- tether_end_sessions_v1 ends the sessions of the connections the sweep has closed for
-- silence in one call, as tether_end_session_v3 ends one.
--
-- The sweep recorded the intents of a batch in one call (tether_intend_end_v2) and
-- closed their connections at once, then ended their sessions one call each: with a
-- database 100 ms away, 500 silent clients took 50 s, past the sweep's time limit, and
-- that run's report was lost. Each end is as v3 records it: the first end wins (a
-- $disconnect caused by the close that came first is kept, and this one leaves it
-- alone); an intent still in force (no sign of life after it) gives the reason and the
-- time; no end comes before the last sign of life, nor after now. Its announcement is
-- queued in the same statement, for the caller's announce step (or the next sweep) to
-- send at once, so the trigger of 20261130005000 finds it queued.
--
-- An end time no client can read, a missing reason, and arrays that do not pair one
-- session id with one end time are refused (SQLSTATE 22023) with nothing written.

create function public.tether_end_sessions_v1(
  p_session_ids uuid[],
  p_reason text,
  p_ended_ats timestamptz[]
)
returns table (session_id uuid, connection_id text, end_reason text, session_end timestamptz)
language plpgsql
volatile
security definer
set search_path = pg_catalog, pg_temp
set lock_timeout = '3s'
set plan_cache_mode = force_custom_plan
as $$
#variable_conflict use_column
begin
  if p_reason is null then
    raise exception using errcode = '22023', message = 'an end reason is required';
  end if;
  perform p_reason::public.tether_end_reason;
  perform public.tether_require_pairs(p_session_ids, p_ended_ats, 'end time', false);
  if exists (
    select 1 from unnest(p_ended_ats) as t (at)
    where not (isfinite(t.at) and t.at >= '0001-01-02 00:00:00+00'
               and t.at < '9999-12-31 00:00:00+00')
  ) then
    raise exception using errcode = '22023',
      message = 'an end time must be a moment a client can read (years 1 to 9999)';
  end if;

  return query
    with ended as (
      update public.conversation_sessions as s
         set session_end = greatest(
               least(
                 case when s.end_intent_reason is not null and s.last_seen_at <= s.end_intent_at
                      then s.end_intent_at else i.ended_at end,
                 now()),
               s.session_start,
               least(s.last_seen_at, now())),
             end_reason = case when s.end_intent_reason is not null
                                    and s.last_seen_at <= s.end_intent_at
                               then s.end_intent_reason else p_reason::public.tether_end_reason end,
             disconnect_status_code = null
        from unnest(p_session_ids, p_ended_ats) as i (session_id, ended_at)
       where s.session_id = i.session_id
         and s.is_active
      returning s.session_id, s.connection_id, s.end_reason, s.session_end
    ), queued as (
      insert into public.conversation_session_announcements (session_id, announce_after)
      select e.session_id, now() from ended e
    )
    select e.session_id, e.connection_id, e.end_reason::text, e.session_end from ended e;
end;
$$;

comment on function public.tether_end_sessions_v1 is
  'Ends these sessions (the connections the sweep closed) in one call, each as tether_end_session_v3 would: first end wins, an end intent in force gives the reason and time, never before the last sign of life. Returns the ends it recorded.';

revoke execute on function public.tether_end_sessions_v1(uuid[], text, timestamptz[])
from public, anon, authenticated;

grant execute on function public.tether_end_sessions_v1(uuid[], text, timestamptz[])
to service_role;
