-- tether_end_session_v3 ends a session as v2 does, and never before its last sign of
-- life, at a moment a client can read:
--
-- * v2 took its caller's end time as it came. The sweep passes the silence it found
--   (the session's last sign of life then); a heartbeat arriving between its intent
--   and its close voided the intent, and v2 still recorded the end minutes before
--   that heartbeat. v3 ends it no earlier than the last sign of life recorded.
-- * An end time of 'infinity' was taken as now, and '-infinity' or a date long past
--   as the session's start (a duration of 0 for a session an hour old): v3 refuses
--   an end time no client can read (SQLSTATE 22023), and nothing is written.
-- * A status code that is no WebSocket close code (1000 to 4999) was stored as given:
--   v3 refuses it (the handlers drop such a code from an event, and end the session).
--
-- v2 stays as it is until a later release drops it. v3 pins its search_path and
-- lock_timeout in its definition; like v2, it keeps its plans (it is on the hot path).

create function public.tether_end_session_v3(
  p_connection_id text,
  p_reason text,
  p_status_code integer default null,
  p_ended_at timestamptz default null,
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
  disconnect_status_code integer
)
language plpgsql
volatile
security definer
set search_path = pg_catalog, pg_temp
set lock_timeout = '3s'
as $$
#variable_conflict use_column
begin
  if p_reason is null then
    raise exception using errcode = '22023', message = 'an end reason is required';
  end if;
  perform p_reason::public.tether_end_reason;
  perform public.tether_require_range('announce lease', p_announce_lease_seconds, 0, 3600, true, 'seconds');
  if p_ended_at is not null
     and not (isfinite(p_ended_at) and p_ended_at >= '0001-01-02 00:00:00+00'
              and p_ended_at < '9999-12-31 00:00:00+00') then
    raise exception using errcode = '22023',
      message = 'the end time must be a moment a client can read (years 1 to 9999)';
  end if;
  if p_status_code is not null then
    perform public.tether_require_range('status code', p_status_code, 1000, 4999, true,
                                        '(a WebSocket close code)');
  end if;

  -- The first end wins, as in _v1. An end intent still in force (no sign of life
  -- after it) gives the reason and the time; the caller's status code is kept. No
  -- end comes before the last sign of life, nor after now.
  return query
    with ended as (
      update public.conversation_sessions as s
         set session_end = greatest(
               least(
                 case when s.end_intent_reason is not null and s.last_seen_at <= s.end_intent_at
                      then s.end_intent_at else coalesce(p_ended_at, now()) end,
                 now()),
               s.session_start,
               least(s.last_seen_at, now())),
             end_reason = case when s.end_intent_reason is not null
                                    and s.last_seen_at <= s.end_intent_at
                               then s.end_intent_reason else p_reason::public.tether_end_reason end,
             disconnect_status_code = p_status_code
       where s.connection_id = p_connection_id
         and s.is_active
      returning s.session_id, s.connection_id, s.user_id, s.session_start,
                s.session_end, s.duration_seconds, s.end_reason, s.disconnect_status_code
    ), queued as (
      insert into public.conversation_session_announcements (session_id, announce_after)
      select e.session_id, now() + make_interval(secs => p_announce_lease_seconds)
      from ended e
    )
    select 'ended'::text, e.session_id, e.connection_id, e.user_id, e.session_start,
           e.session_end, e.duration_seconds, e.end_reason::text, e.disconnect_status_code
    from ended e;

  if not found then
    return query
      select 'already_ended'::text, s.session_id, s.connection_id, s.user_id, s.session_start,
             s.session_end, s.duration_seconds, s.end_reason::text, s.disconnect_status_code
      from public.conversation_sessions s
      where s.connection_id = p_connection_id;
  end if;

  if not found then
    return query
      select 'unknown'::text, null::uuid, p_connection_id, null::uuid, null::timestamptz,
             null::timestamptz, null::numeric, null::text, null::integer;
  end if;
end;
$$;

comment on function public.tether_end_session_v3 is
  'Ends a session exactly once (first end wins), never before its last sign of life; an end intent in force gives the reason and time. Refuses an end time no client can read and a status code outside 1000 to 4999.';
comment on function public.tether_end_session_v2 is
  'Ends a session exactly once (first end wins); an end intent in force gives the reason and time. Superseded by tether_end_session_v3, which never ends a session before its last sign of life.';

revoke execute on function
  public.tether_end_session_v3(text, text, integer, timestamptz, double precision)
from public, anon, authenticated;

grant execute on function
  public.tether_end_session_v3(text, text, integer, timestamptz, double precision)
to service_role;
