-- The session lifecycle: the one API both drivers (psycopg, supabase-py rpc) call.
-- Each call is one round trip. Names carry a version suffix: a change of signature
-- adds a _v2 and drops the _v1 in a later migration, because Lambda versions still
-- running the old code keep calling it during a deploy.
--
-- Bad input raises SQLSTATE 22023 (invalid_parameter_value) before anything is
-- written; an unknown end reason fails the cast to public.tether_end_reason (23514).

-- Every bound a function takes is checked the same way, before anything is written.
create function public.tether_require_range(
  p_name text,
  p_value double precision,
  p_low double precision,
  p_high double precision,
  p_low_inclusive boolean,
  p_unit text
)
returns void
language plpgsql
immutable
set search_path = ''
as $$
begin
  if p_value is null
     or p_value = 'NaN'::double precision
     or (p_low_inclusive and p_value < p_low)
     or (not p_low_inclusive and p_value <= p_low)
     or p_value > coalesce(p_high, 'Infinity'::double precision) then
    raise exception using
      errcode = '22023',
      message = case
        when p_high is null then format('%s must be more than %s %s', p_name, p_low, p_unit)
        when p_low_inclusive then format('%s must be between %s and %s %s', p_name, p_low, p_high, p_unit)
        else format('%s must be more than %s and at most %s %s', p_name, p_low, p_high, p_unit)
      end || format(', got %s', coalesce(p_value::text, 'nothing'));
  end if;
end;
$$;

revoke execute on function
  public.tether_require_range(text, double precision, double precision, double precision, boolean, text)
from public, anon, authenticated;


create function public.tether_open_session_v1(
  p_connection_id text,
  p_user_id uuid default null,
  p_connected_at timestamptz default null,
  p_source_ip text default null,
  p_user_agent text default null,
  p_api_id text default null,
  p_stage text default null
)
returns table (
  session_id uuid,
  connection_id text,
  user_id uuid,
  session_start timestamptz,
  is_active boolean,
  opened boolean
)
language plpgsql
volatile
security definer
set search_path = ''
as $$
#variable_conflict use_column
declare
  v_start timestamptz := least(coalesce(p_connected_at, now()), now());
begin
  if p_connection_id is null or length(p_connection_id) not between 1 and 128 then
    raise exception using
      errcode = '22023',
      message = 'connection_id must be between 1 and 128 characters';
  end if;

  return query
    insert into public.conversation_sessions as s (
      connection_id, user_id, session_start, last_seen_at,
      source_ip, user_agent, api_id, stage
    )
    values (
      p_connection_id, p_user_id, v_start, now(),
      left(p_source_ip, 64), left(p_user_agent, 1024), left(p_api_id, 64), left(p_stage, 128)
    )
    on conflict on constraint conversation_sessions_connection_id_key do nothing
    returning s.session_id, s.connection_id, s.user_id, s.session_start, s.is_active, true;

  if not found then
    -- A repeated $connect for the same connection: report the row it already has.
    return query
      select s.session_id, s.connection_id, s.user_id, s.session_start, s.is_active, false
      from public.conversation_sessions s
      where s.connection_id = p_connection_id;
  end if;
end;
$$;

comment on function public.tether_open_session_v1 is
  'Opens the session of a connection; a repeated call for the same connection_id returns the existing row with opened = false.';


create function public.tether_touch_session_v1(
  p_connection_id text,
  p_throttle_seconds double precision default 60
)
returns table (session_id uuid, last_seen_at timestamptz, touched boolean)
language plpgsql
volatile
security definer
set search_path = ''
as $$
#variable_conflict use_column
begin
  perform public.tether_require_range('throttle', p_throttle_seconds, 0, 300, true, 'seconds');

  -- Skip the write while last_seen_at is fresher than the throttle: a chatty
  -- client must not turn every frame into a row update.
  return query
    update public.conversation_sessions as s
       set last_seen_at = now()
     where s.connection_id = p_connection_id
       and s.is_active
       and s.last_seen_at < now() - make_interval(secs => p_throttle_seconds)
    returning s.session_id, s.last_seen_at, true;

  if not found then
    return query
      select s.session_id, s.last_seen_at, false
      from public.conversation_sessions s
      where s.connection_id = p_connection_id
        and s.is_active;
  end if;
end;
$$;

comment on function public.tether_touch_session_v1 is
  'Heartbeat: moves last_seen_at unless it is fresher than the throttle. No row for an unknown or ended connection.';


create function public.tether_end_session_v1(
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
set search_path = ''
as $$
#variable_conflict use_column
begin
  if p_reason is null then
    raise exception using errcode = '22023', message = 'an end reason is required';
  end if;
  perform p_reason::public.tether_end_reason;
  perform public.tether_require_range('announce lease', p_announce_lease_seconds, 0, 3600, true, 'seconds');

  -- The first end wins: a concurrent second end waits for the row lock, then
  -- finds is_active false and updates nothing. The end and its place in the
  -- outbox commit together, so no end can go unannounced.
  return query
    with ended as (
      update public.conversation_sessions as s
         set session_end = greatest(least(coalesce(p_ended_at, now()), now()), s.session_start),
             end_reason = p_reason,
             disconnect_status_code = p_status_code
       where s.connection_id = p_connection_id
         and s.is_active
      returning s.session_id, s.connection_id, s.user_id, s.session_start,
                s.session_end, s.duration_seconds, s.end_reason, s.disconnect_status_code
    ), queued as (
      -- The caller announces right away; the lease keeps the redelivery off it meanwhile.
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

comment on function public.tether_end_session_v1 is
  'Ends the session of a connection exactly once. outcome: ended, already_ended (the first end and its reason are kept) or unknown.';


create function public.tether_close_stale_v1(
  p_idle_seconds double precision,
  p_max_age_seconds double precision,
  p_limit integer default 500
)
returns table (end_reason text, ended bigint)
language plpgsql
volatile
security definer
set search_path = ''
as $$
#variable_conflict use_column
declare
  v_now timestamptz := now();
  v_too_old tid[];
  v_idle tid[];
begin
  perform public.tether_require_range('idle limit', p_idle_seconds, 0, 86400, false, 'seconds');
  perform public.tether_require_range('age limit', p_max_age_seconds, 0, 604800, false, 'seconds');
  perform public.tether_require_range('batch size', p_limit, 1, 10000, true, '');

  -- SKIP LOCKED: a sweep overlapping this one takes other rows; a row another
  -- sweep ended meanwhile fails the is_active recheck and is not taken. The rows
  -- are then updated by their ctid, which the row locks keep stable: no walk down
  -- the primary key, whose size follows the history.
  select coalesce(array_agg(s.ctid), '{}') into v_too_old
  from (
    select s.ctid
    from public.conversation_sessions s
    where s.is_active
      and s.session_start < v_now - make_interval(secs => p_max_age_seconds)
    order by s.session_start
    limit p_limit
    for update skip locked
  ) s;

  select coalesce(array_agg(s.ctid), '{}') into v_idle
  from (
    select s.ctid
    from public.conversation_sessions s
    where s.is_active
      and s.last_seen_at < v_now - make_interval(secs => p_idle_seconds)
      and s.ctid <> all (v_too_old)
    order by s.last_seen_at
    limit p_limit - cardinality(v_too_old)
    for update skip locked
  ) s;

  -- The connection is gone, but it went silent at last_seen_at: that is the end
  -- recorded, so durations stay honest however late the sweep runs. Each end
  -- joins the outbox in the same statement; the announcer takes it from there, so
  -- only the counts come back.
  return query
    with ended as (
      update public.conversation_sessions as s
         set session_end = greatest(
               least(s.last_seen_at, s.session_start + make_interval(secs => p_max_age_seconds)),
               s.session_start),
             end_reason = case when s.ctid = any (v_too_old)
                               then 'max_duration' else 'idle_timeout' end
       where s.ctid = any (v_too_old || v_idle)
         and s.is_active
      returning s.session_id, s.end_reason
    ), queued as (
      insert into public.conversation_session_announcements (session_id)
      select e.session_id from ended e
    )
    select e.end_reason::text, count(*) from ended e group by e.end_reason;
end;
$$;

comment on function public.tether_close_stale_v1 is
  'Ends at most p_limit active sessions older than the age limit (max_duration) or silent beyond the idle limit (idle_timeout), queues their announcements, and returns how many per reason; safe when sweeps overlap.';


create function public.tether_claim_unannounced_v1(
  p_limit integer default 100,
  p_lease_seconds double precision default 60
)
returns table (
  session_id uuid,
  connection_id text,
  user_id uuid,
  session_start timestamptz,
  session_end timestamptz,
  duration_seconds numeric,
  end_reason text,
  disconnect_status_code integer,
  enqueued_at timestamptz
)
language plpgsql
volatile
security definer
set search_path = ''
as $$
#variable_conflict use_column
begin
  perform public.tether_require_range('batch size', p_limit, 1, 10000, true, '');
  perform public.tether_require_range('lease', p_lease_seconds, 0, 3600, false, 'seconds');

  -- The lease hides the claimed rows from other announcers until it runs out; an
  -- announcer that dies before marking them leaves them to be claimed again.
  return query
    with claimed as (
      update public.conversation_session_announcements as a
         set announce_after = now() + make_interval(secs => p_lease_seconds)
       where a.session_id in (
         select q.session_id
         from public.conversation_session_announcements q
         where q.announce_after <= now()
         order by q.announce_after
         limit p_limit
         for update skip locked
       )
      returning a.session_id, a.enqueued_at
    )
    select s.session_id, s.connection_id, s.user_id, s.session_start, s.session_end,
           s.duration_seconds, s.end_reason::text, s.disconnect_status_code, c.enqueued_at
    from claimed c
    join public.conversation_sessions s on s.session_id = c.session_id;
end;
$$;

comment on function public.tether_claim_unannounced_v1 is
  'Claims up to p_limit ended sessions whose SessionEnded is not yet announced, leasing them to the caller.';


create function public.tether_mark_announced_v1(p_session_ids uuid[])
returns table (session_id uuid, announced_at timestamptz)
language sql
volatile
security definer
set search_path = ''
as $$
  -- Leave the outbox, and record when (a heap-only update: no indexed column moves).
  with done as (
    delete from public.conversation_session_announcements as a
     where a.session_id = any (p_session_ids)
    returning a.session_id
  )
  update public.conversation_sessions as s
     set announced_at = now()
    from done
   where s.session_id = done.session_id
     and s.announced_at is null
  returning s.session_id, s.announced_at;
$$;

comment on function public.tether_mark_announced_v1 is
  'Records that SessionEnded was accepted for these sessions; returns those newly marked. (Two columns: PostgREST versions differ on one-column results.)';


-- Writes go through these functions only, and only for the service role (the
-- Lambda functions). Supabase grants execute on new functions to anon and
-- authenticated by default: take that back.
revoke execute on function
  public.tether_open_session_v1(text, uuid, timestamptz, text, text, text, text),
  public.tether_touch_session_v1(text, double precision),
  public.tether_end_session_v1(text, text, integer, timestamptz, double precision),
  public.tether_close_stale_v1(double precision, double precision, integer),
  public.tether_claim_unannounced_v1(integer, double precision),
  public.tether_mark_announced_v1(uuid[])
from public, anon, authenticated;

grant execute on function
  public.tether_open_session_v1(text, uuid, timestamptz, text, text, text, text),
  public.tether_touch_session_v1(text, double precision),
  public.tether_end_session_v1(text, text, integer, timestamptz, double precision),
  public.tether_close_stale_v1(double precision, double precision, integer),
  public.tether_claim_unannounced_v1(integer, double precision),
  public.tether_mark_announced_v1(uuid[])
to service_role;
