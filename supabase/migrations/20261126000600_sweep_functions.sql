-- What the scheduled sweep needs beyond close_stale: suspects to ask the gateway
-- about (leased, so overlapping sweeps do not ask twice), refreshing a live
-- connection's last sign of life, the one-off orphan clean-up, and the numbers
-- the sweep reports. Every read here filters on `is_active` literally.

alter table public.conversation_sessions add column check_after timestamptz;

comment on column public.conversation_sessions.check_after is
  'The sweep may ask the gateway about this connection only in runs that start after this time: the end of an in-flight lease, or when it was last asked.';


create function public.tether_claim_suspects_v1(
  p_silent_seconds double precision,
  p_limit integer default 500,
  p_lease_seconds double precision default 60,
  p_run_started timestamptz default null
)
returns table (
  session_id uuid,
  connection_id text,
  user_id uuid,
  session_start timestamptz,
  last_seen_at timestamptz
)
language plpgsql
volatile
security definer
set search_path = ''
as $$
#variable_conflict use_column
begin
  perform public.tether_require_range('silence', p_silent_seconds, 0, 86400, true, 'seconds');
  perform public.tether_require_range('batch size', p_limit, 1, 10000, true, '');
  perform public.tether_require_range('lease', p_lease_seconds, 0, 3600, false, 'seconds');

  return query
    with picked as (
      select q.ctid
      from public.conversation_sessions q
      where q.is_active
        and q.last_seen_at < now() - make_interval(secs => p_silent_seconds)
        -- Once per run: what this run (or an overlapping one) already asked
        -- about, or is asking about now, waits for the next run.
        and (q.check_after is null
             or q.check_after <= least(now(), coalesce(p_run_started, now())))
      order by q.last_seen_at
      limit p_limit
      for update skip locked
    )
    update public.conversation_sessions as s
       set check_after = now() + make_interval(secs => p_lease_seconds)
      from picked
     where s.ctid = picked.ctid
       and s.is_active
    returning s.session_id, s.connection_id, s.user_id, s.session_start, s.last_seen_at;
end;
$$;

comment on function public.tether_claim_suspects_v1 is
  'Leases up to p_limit active sessions silent for longer than p_silent_seconds, for the sweep to ask the gateway about.';


create function public.tether_settle_suspects_v1(
  p_session_ids uuid[],
  p_last_active_ats timestamptz[]
)
returns table (session_id uuid, last_seen_at timestamptz)
language sql
volatile
security definer
set search_path = ''
as $$
  -- The suspects the gateway says are alive (or could not answer for), in one
  -- statement: LastActiveAt (null: no answer) only ever moves last_seen_at forward,
  -- never past now; and the lease ends now, so the next run may ask again.
  update public.conversation_sessions as s
     set last_seen_at = greatest(s.last_seen_at, least(coalesce(a.last_active_at, s.last_seen_at), now())),
         check_after = now()
    from unnest(p_session_ids, p_last_active_ats) as a (session_id, last_active_at)
   where s.session_id = a.session_id
     and s.is_active
  returning s.session_id, s.last_seen_at;
$$;


create function public.tether_close_orphans_v1(
  p_older_than_seconds double precision,
  p_limit integer default 500
)
returns table (end_reason text, ended bigint)
language plpgsql
volatile
security definer
set search_path = ''
as $$
#variable_conflict use_column
begin
  perform public.tether_require_range('age', p_older_than_seconds, 0, null, false, 'seconds');
  perform public.tether_require_range('batch size', p_limit, 1, 10000, true, '');

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
         set session_end = greatest(s.last_seen_at, s.session_start),
             end_reason = 'orphan_cleanup'
        from picked
       where s.ctid = picked.ctid
         and s.is_active
      returning s.session_id, s.end_reason
    ), queued as (
      insert into public.conversation_session_announcements (session_id)
      select e.session_id from ended e
    )
    select e.end_reason::text, count(*) from ended e group by e.end_reason;
end;
$$;

comment on function public.tether_close_orphans_v1 is
  'The one-off clean-up: ends up to p_limit active sessions started before the age given, with reason orphan_cleanup, at their last sign of life, and queues their announcements.';


create function public.tether_release_announcements_v1(p_session_ids uuid[])
returns table (session_id uuid, announce_after timestamptz)
language sql
volatile
security definer
set search_path = ''
as $$
  -- EventBridge refused these: drop the lease so the next sweep retries at once.
  update public.conversation_session_announcements as a
     set announce_after = now()
   where a.session_id = any (p_session_ids)
  returning a.session_id, a.announce_after;
$$;


create function public.tether_orphan_summary_v1(p_older_than_seconds double precision)
returns table (orphans bigint, oldest_start timestamptz, newest_start timestamptz)
language sql
stable
security definer
set search_path = ''
as $$
  select count(*), min(s.session_start), max(s.session_start)
  from public.conversation_sessions s
  where s.is_active
    and s.session_start < now() - make_interval(secs => greatest(p_older_than_seconds, 0));
$$;


create function public.tether_sweep_preview_v1(
  p_idle_seconds double precision,
  p_max_age_seconds double precision,
  p_silent_seconds double precision
)
returns table (past_max_age bigint, past_idle bigint, suspects bigint, unannounced bigint)
language sql
stable
security definer
set search_path = ''
as $$
  select
    (select count(*) from public.conversation_sessions s
      where s.is_active and s.session_start < now() - make_interval(secs => p_max_age_seconds)),
    (select count(*) from public.conversation_sessions s
      where s.is_active and s.last_seen_at < now() - make_interval(secs => p_idle_seconds)
        and s.session_start >= now() - make_interval(secs => p_max_age_seconds)),
    (select count(*) from public.conversation_sessions s
      where s.is_active and s.last_seen_at < now() - make_interval(secs => p_silent_seconds)
        and s.last_seen_at >= now() - make_interval(secs => p_idle_seconds)
        and s.session_start >= now() - make_interval(secs => p_max_age_seconds)),
    (select count(*) from public.conversation_session_announcements);
$$;


create function public.tether_session_health_v1()
returns table (
  active_sessions bigint,
  oldest_active_start timestamptz,
  orphaned_sessions bigint,
  unannounced bigint
)
language sql
stable
security definer
set search_path = ''
as $$
  select
    (select count(*) from public.conversation_sessions s where s.is_active),
    (select min(s.session_start) from public.conversation_sessions s where s.is_active),
    (select count(*) from public.conversation_session_orphans),
    (select count(*) from public.conversation_session_announcements);
$$;

comment on function public.tether_session_health_v1 is
  'The numbers the sweep reports as metrics: live sessions, the oldest one, orphans (by the view), ends not yet announced.';


revoke execute on function
  public.tether_claim_suspects_v1(double precision, integer, double precision, timestamptz),
  public.tether_settle_suspects_v1(uuid[], timestamptz[]),
  public.tether_close_orphans_v1(double precision, integer),
  public.tether_release_announcements_v1(uuid[]),
  public.tether_orphan_summary_v1(double precision),
  public.tether_sweep_preview_v1(double precision, double precision, double precision),
  public.tether_session_health_v1()
from public, anon, authenticated;

grant execute on function
  public.tether_claim_suspects_v1(double precision, integer, double precision, timestamptz),
  public.tether_settle_suspects_v1(uuid[], timestamptz[]),
  public.tether_close_orphans_v1(double precision, integer),
  public.tether_release_announcements_v1(uuid[]),
  public.tether_orphan_summary_v1(double precision),
  public.tether_sweep_preview_v1(double precision, double precision, double precision),
  public.tether_session_health_v1()
to service_role;
