-- Two forced closes of one session at once (an operator's close and a user's
-- disconnect, a close retried while the first still runs): exactly one ends the row,
-- and both then asked the gateway to close the connection. Whichever call reached the
-- gateway first was told it closed it, so the close that ended the row could answer
-- that the connection had already gone (410) and the one that ended nothing that it
-- closed it.
--
-- * tether_force_close_v2 ends a session as v1 does and, when it finds the session
--   ended by a forced close whose caller is still at work on it (its announcement
--   still leased to that caller, the end's own first lease, which the caller gives
--   back once it has asked the gateway and announced), says until when
--   (`closing_until`): the caller waits for that close to ask the gateway first, then
--   asks again itself, and the close that ended the row is the one told it closed the
--   connection.
--
-- tether_force_close_v1 stays as it is until a later release drops it.

create function public.tether_force_close_v2(
  p_session_id uuid,
  p_announce_lease_seconds double precision default 60
)
returns table (
  outcome text,
  session_id uuid,
  connection_id text,
  user_id uuid,
  session_start timestamptz,
  session_end timestamptz,
  duration_seconds numeric,
  end_reason text,
  disconnect_status_code integer,
  closing_until timestamptz
)
language plpgsql
volatile
security definer
set search_path = pg_catalog, pg_temp
set lock_timeout = '3s'
set plan_cache_mode = force_custom_plan
as $$
#variable_conflict use_column
begin
  perform public.tether_require_range('announce lease', p_announce_lease_seconds, 0, 3600, true, 'seconds');

  return query
    with ended as (
      update public.conversation_sessions as s
         set session_end = greatest(now(), s.session_start),
             end_reason = 'forced_close'
       where s.session_id = p_session_id
         and s.is_active
      returning s.session_id, s.connection_id, s.user_id, s.session_start,
                s.session_end, s.duration_seconds, s.end_reason, s.disconnect_status_code
    ), queued as (
      insert into public.conversation_session_announcements (session_id, announce_after)
      select e.session_id, now() + make_interval(secs => p_announce_lease_seconds)
      from ended e
    )
    select 'ended'::text, e.session_id, e.connection_id, e.user_id, e.session_start,
           e.session_end, e.duration_seconds, e.end_reason::text, e.disconnect_status_code,
           null::timestamptz
    from ended e;

  if not found then
    -- Already ended (by this call before, or by anything else): the first end stays.
    return query
      select 'already_ended'::text, s.session_id, s.connection_id, s.user_id, s.session_start,
             s.session_end, s.duration_seconds, s.end_reason::text, s.disconnect_status_code,
             (select a.announce_after
              from public.conversation_session_announcements a
              where a.session_id = s.session_id
                and a.claim_count = 0
                and a.announce_after > now()
                and s.end_reason = 'forced_close')
      from public.conversation_sessions s
      where s.session_id = p_session_id;
  end if;
end;
$$;

comment on function public.tether_force_close_v2 is
  'An operator ends one session now (forced_close), exactly once: outcome ended, or already_ended with the first end and, while the forced close that made it is still at work (its announcement leased to it), until when; no row for an unknown id.';

revoke execute on function public.tether_force_close_v2(uuid, double precision)
from public, anon, authenticated;

grant execute on function public.tether_force_close_v2(uuid, double precision)
to service_role;
