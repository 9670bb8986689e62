-- The operators' API, page and commands: listing sessions a page at a time, one
-- session, forced closes (one session, or every live session of a user), the daily
-- statistics, the ends of the last minutes by reason, the sweep's last run, and the
-- migrations a database has, for /health. Reads of live sessions spell `is_active`
-- literally, so the partial indexes serve them.

-- Listing the history newest first, a page at a time, and the daily statistics both
-- read by session_start; the ends of the last hour read by session_end. Both indexes
-- grow at their right edge only (rows start and end in time order), so keeping them
-- costs each write a few hot pages.
create index conversation_sessions_session_start_idx
  on public.conversation_sessions (session_start, session_id);
create index conversation_sessions_session_end_idx
  on public.conversation_sessions (session_end) where not is_active;


-- A page of sessions, newest first, after a position (the previous page's last
-- session_start and session_id). Each call plans its statement for the filters it was
-- given (EXECUTE ... USING), so a filter left out costs nothing and a user's sessions
-- are read through the user_id index; the statement texts are constants.
create function public.tether_list_sessions_v1(
  p_active boolean default null,
  p_user_id uuid default null,
  p_started_after timestamptz default null,
  p_started_before timestamptz default null,
  p_end_reason text default null,
  p_after_start timestamptz default null,
  p_after_session_id uuid default null,
  p_limit integer default 50
)
returns table (
  session_id uuid,
  user_id uuid,
  connection_id text,
  is_active boolean,
  session_start timestamptz,
  session_end timestamptz,
  duration_seconds numeric,
  last_seen_at timestamptz,
  end_reason text,
  disconnect_status_code integer,
  source_ip text,
  user_agent text,
  api_id text,
  stage text,
  announced_at timestamptz,
  finalized_at timestamptz
)
language plpgsql
stable
security definer
set search_path = ''
as $$
begin
  perform public.tether_require_range('page size', p_limit, 1, 500, true, 'rows');
  if p_end_reason is not null then
    perform p_end_reason::public.tether_end_reason;
  end if;
  if (p_after_start is null) <> (p_after_session_id is null) then
    raise exception using
      errcode = '22023',
      message = 'a position needs both its session_start and its session_id';
  end if;

  if p_active then
    return query execute
      'select s.session_id, s.user_id, s.connection_id, s.is_active, s.session_start,
              s.session_end, s.duration_seconds, s.last_seen_at, s.end_reason::text,
              s.disconnect_status_code, s.source_ip, s.user_agent, s.api_id, s.stage,
              s.announced_at, s.finalized_at
       from public.conversation_sessions s
       where s.is_active
         and ($1::uuid is null or s.user_id = $1)
         and ($2::timestamptz is null or s.session_start >= $2)
         and ($3::timestamptz is null or s.session_start < $3)
         and ($4::text is null or s.end_reason::text = $4)
         and ($5::timestamptz is null or (s.session_start, s.session_id) < ($5, $6::uuid))
       order by s.session_start desc, s.session_id desc
       limit $7'
      using p_user_id, p_started_after, p_started_before, p_end_reason,
            p_after_start, p_after_session_id, p_limit;
  else
    return query execute
      'select s.session_id, s.user_id, s.connection_id, s.is_active, s.session_start,
              s.session_end, s.duration_seconds, s.last_seen_at, s.end_reason::text,
              s.disconnect_status_code, s.source_ip, s.user_agent, s.api_id, s.stage,
              s.announced_at, s.finalized_at
       from public.conversation_sessions s
       where ($8::boolean is null or not s.is_active)
         and ($1::uuid is null or s.user_id = $1)
         and ($2::timestamptz is null or s.session_start >= $2)
         and ($3::timestamptz is null or s.session_start < $3)
         and ($4::text is null or s.end_reason::text = $4)
         and ($5::timestamptz is null or (s.session_start, s.session_id) < ($5, $6::uuid))
       order by s.session_start desc, s.session_id desc
       limit $7'
      using p_user_id, p_started_after, p_started_before, p_end_reason,
            p_after_start, p_after_session_id, p_limit, p_active;
  end if;
end;
$$;

comment on function public.tether_list_sessions_v1 is
  'A page of sessions, newest first (session_start, then session_id), filtered by state, user, start time and end reason, after a position; at most 500 rows.';


create function public.tether_get_session_v1(p_session_id uuid)
returns table (
  session_id uuid,
  user_id uuid,
  connection_id text,
  is_active boolean,
  session_start timestamptz,
  session_end timestamptz,
  duration_seconds numeric,
  last_seen_at timestamptz,
  end_reason text,
  disconnect_status_code integer,
  source_ip text,
  user_agent text,
  api_id text,
  stage text,
  announced_at timestamptz,
  finalized_at timestamptz
)
language sql
stable
security definer
set search_path = ''
as $$
  select s.session_id, s.user_id, s.connection_id, s.is_active, s.session_start,
         s.session_end, s.duration_seconds, s.last_seen_at, s.end_reason::text,
         s.disconnect_status_code, s.source_ip, s.user_agent, s.api_id, s.stage,
         s.announced_at, s.finalized_at
  from public.conversation_sessions s
  where s.session_id = p_session_id;
$$;

comment on function public.tether_get_session_v1 is
  'One session by its id; no row for an unknown id.';


-- Forced closes: an operator ends sessions now, with reason forced_close. As every
-- end, the first one wins and joins the outbox in the same statement; the lease
-- keeps the redelivery off it while the caller announces it.
create function public.tether_force_close_v1(
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
  disconnect_status_code integer
)
language plpgsql
volatile
security definer
set search_path = ''
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
           e.session_end, e.duration_seconds, e.end_reason::text, e.disconnect_status_code
    from ended e;

  if not found then
    -- Already ended (by this call before, or by anything else): the first end stays.
    return query
      select 'already_ended'::text, s.session_id, s.connection_id, s.user_id, s.session_start,
             s.session_end, s.duration_seconds, s.end_reason::text, s.disconnect_status_code
      from public.conversation_sessions s
      where s.session_id = p_session_id;
  end if;
end;
$$;

comment on function public.tether_force_close_v1 is
  'An operator ends one session now (forced_close), exactly once: outcome ended, or already_ended with the first end; no row for an unknown id.';


create function public.tether_force_close_user_v1(
  p_user_id uuid,
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
  if p_user_id is null then
    raise exception using errcode = '22023', message = 'a user id is required';
  end if;
  perform public.tether_require_range('announce lease', p_announce_lease_seconds, 0, 3600, true, 'seconds');

  return query
    with ended as (
      update public.conversation_sessions as s
         set session_end = greatest(now(), s.session_start),
             end_reason = 'forced_close'
       where s.user_id = p_user_id
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
    from ended e
    order by e.session_start;
end;
$$;

comment on function public.tether_force_close_user_v1 is
  'An operator ends every live session of a user now (forced_close), each exactly once; returns those it ended.';


-- The origin's daily statistics, per UTC day of session_start, for the last p_days
-- days, today included; a day without sessions is a row of zeros, so charts keep
-- their calendar.
create function public.tether_daily_stats_v1(p_days integer default 7)
returns table (
  day date,
  total_sessions bigint,
  still_active bigint,
  ended_sessions bigint,
  avg_duration_seconds numeric,
  max_duration_seconds numeric
)
language plpgsql
stable
security definer
set search_path = ''
as $$
#variable_conflict use_column
declare
  v_today date := (now() at time zone 'UTC')::date;
  v_first date;
begin
  perform public.tether_require_range('days', p_days, 1, 366, true, 'days');
  v_first := v_today - (p_days - 1);

  return query
    with per_day as (
      select (s.session_start at time zone 'UTC')::date as day,
             count(*) as total_sessions,
             count(*) filter (where s.is_active) as still_active,
             count(*) filter (where not s.is_active) as ended_sessions,
             round(avg(s.duration_seconds), 3) as avg_duration_seconds,
             max(s.duration_seconds) as max_duration_seconds
      from public.conversation_sessions s
      where s.session_start >= (v_first::timestamp at time zone 'UTC')
      group by 1
    )
    select g.day::date,
           coalesce(p.total_sessions, 0),
           coalesce(p.still_active, 0),
           coalesce(p.ended_sessions, 0),
           p.avg_duration_seconds,
           p.max_duration_seconds
    from generate_series(v_first::timestamp, v_today::timestamp, interval '1 day') as g (day)
    left join per_day p on p.day = g.day::date
    order by 1 desc;
end;
$$;

comment on function public.tether_daily_stats_v1 is
  'Sessions per UTC day of session_start for the last p_days days (1 to 366), newest first: how many, still active, ended, average and longest duration.';


create function public.tether_recent_ends_v1(p_seconds double precision default 3600)
returns table (end_reason text, ended bigint)
language plpgsql
stable
security definer
set search_path = ''
as $$
#variable_conflict use_column
begin
  perform public.tether_require_range('window', p_seconds, 0, 604800, false, 'seconds');

  return query
    select s.end_reason::text, count(*)
    from public.conversation_sessions s
    where not s.is_active
      and s.session_end > now() - make_interval(secs => p_seconds)
    group by s.end_reason
    order by 2 desc, 1;
end;
$$;

comment on function public.tether_recent_ends_v1 is
  'How many sessions ended in the last p_seconds, by reason.';


create function public.tether_sweep_state_v1()
returns table (
  idle_limit_seconds double precision,
  max_age_seconds double precision,
  last_started_at timestamptz,
  last_finished_at timestamptz,
  last_report jsonb,
  checked_at timestamptz
)
language sql
stable
security definer
set search_path = ''
as $$
  select w.idle_limit_seconds, w.max_age_seconds, w.last_started_at, w.last_finished_at,
         w.last_report, now()
  from tether.sweep_state w
  where w.singleton;
$$;

comment on function public.tether_sweep_state_v1 is
  'The limits the sweep last ran with, when its last run started and finished, its report, and the database clock.';


-- The migrations this database has, from tether's ledger and from Supabase's (when
-- `supabase db push` applied them), for /health to name the pending ones. Either
-- ledger may be missing: the statements are read only where their table exists.
create function public.tether_applied_migrations_v1()
returns table (ledger text, version text, name text, statements text[])
language plpgsql
stable
security definer
set search_path = ''
as $$
declare
  v_tether regclass := to_regclass('tether.schema_migrations');
  v_supabase regclass := to_regclass('supabase_migrations.schema_migrations');
begin
  -- Each ledger is named by the regclass found at run time: either may not exist.
  -- Supabase's rows carry their statements: a file is known there by its content.
  if v_tether is not null then
    for ledger, version, name, statements in execute format(
      'select ''tether''::text, m.version::text, m.name::text, null::text[] from %s m',
      v_tether)
    loop
      return next;
    end loop;
  end if;
  if v_supabase is not null then
    for ledger, version, name, statements in execute format(
      'select ''supabase''::text, m.version::text, coalesce(m.name, '''')::text,'
      ' m.statements from %s m',
      v_supabase)
    loop
      return next;
    end loop;
  end if;
end;
$$;

comment on function public.tether_applied_migrations_v1 is
  'The migrations recorded in tether.schema_migrations and in supabase_migrations.schema_migrations, where they exist.';


revoke execute on function
  public.tether_list_sessions_v1(boolean, uuid, timestamptz, timestamptz, text, timestamptz, uuid, integer),
  public.tether_get_session_v1(uuid),
  public.tether_force_close_v1(uuid, double precision),
  public.tether_force_close_user_v1(uuid, double precision),
  public.tether_daily_stats_v1(integer),
  public.tether_recent_ends_v1(double precision),
  public.tether_sweep_state_v1(),
  public.tether_applied_migrations_v1()
from public, anon, authenticated;

grant execute on function
  public.tether_list_sessions_v1(boolean, uuid, timestamptz, timestamptz, text, timestamptz, uuid, integer),
  public.tether_get_session_v1(uuid),
  public.tether_force_close_v1(uuid, double precision),
  public.tether_force_close_user_v1(uuid, double precision),
  public.tether_daily_stats_v1(integer),
  public.tether_recent_ends_v1(double precision),
  public.tether_sweep_state_v1(),
  public.tether_applied_migrations_v1()
to service_role;
