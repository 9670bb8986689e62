-- What the sweep last did, and with which limits; the orphan view follows those
-- limits instead of literals. Also what Supabase's database linter asks of the
-- earlier migrations: no security definer function callable from the public API,
-- views that run with their caller's rights, an explicit policy on the outbox.

create schema if not exists tether;
revoke all on schema tether from public;
grant usage on schema tether to service_role;

-- One row: the limits the sweep runs with (API Gateway's idle timeout and
-- maximum duration, each plus its grace) and its last report.
create table tether.sweep_state (
  singleton boolean not null default true,
  idle_limit_seconds double precision not null default 660,
  max_age_seconds double precision not null default 7260,
  last_started_at timestamptz,
  last_finished_at timestamptz,
  last_report jsonb,
  constraint sweep_state_pkey primary key (singleton),
  constraint sweep_state_singleton_check check (singleton),
  constraint sweep_state_limits_check check (idle_limit_seconds > 0 and max_age_seconds > 0)
);

comment on table tether.sweep_state is
  'The limits the sweep last ran with and its last report; the orphan view and /health read it.';

insert into tether.sweep_state (singleton) values (true);

-- Every finished run's report, kept a week: what the sweep cost and did over time.
create table tether.sweep_runs (
  run_id bigint generated always as identity,
  started_at timestamptz not null,
  finished_at timestamptz not null default now(),
  report jsonb not null,
  constraint sweep_runs_pkey primary key (run_id)
);

comment on table tether.sweep_runs is
  'One row per finished sweep run with its report (ends, gateway calls, announcements); kept 7 days.';

create index sweep_runs_finished_at_idx on tether.sweep_runs (finished_at);

revoke all on table tether.sweep_state, tether.sweep_runs from public;
grant select on table tether.sweep_state, tether.sweep_runs to service_role;


create function public.tether_record_sweep_v1(
  p_idle_limit_seconds double precision,
  p_max_age_seconds double precision,
  p_report jsonb default null,
  p_started_at timestamptz default null
)
returns table (last_started_at timestamptz, last_finished_at timestamptz)
language plpgsql
volatile
security definer
set search_path = ''
as $$
#variable_conflict use_column
begin
  perform public.tether_require_range('idle limit', p_idle_limit_seconds, 0, 86400, false, 'seconds');
  perform public.tether_require_range('age limit', p_max_age_seconds, 0, 604800, false, 'seconds');

  if p_report is not null then
    insert into tether.sweep_runs (started_at, report)
    values (least(coalesce(p_started_at, now()), now()), p_report);
    delete from tether.sweep_runs r where r.finished_at < now() - interval '7 days';
  end if;

  -- Without a report: a run starts (its limits). With one: it finished.
  return query
    update tether.sweep_state as w
       set idle_limit_seconds = p_idle_limit_seconds,
           max_age_seconds = p_max_age_seconds,
           last_started_at = case when p_report is null then now() else w.last_started_at end,
           last_finished_at = case when p_report is null then w.last_finished_at else now() end,
           last_report = coalesce(p_report, w.last_report)
     where w.singleton
    returning w.last_started_at, w.last_finished_at;
end;
$$;

comment on function public.tether_record_sweep_v1 is
  'Records the limits a sweep runs with (at its start) and, at its end, its report (kept a week in tether.sweep_runs).';


create function public.tether_session_health_v2(
  p_idle_limit_seconds double precision,
  p_max_age_seconds double precision
)
returns table (
  active_sessions bigint,
  oldest_active_start timestamptz,
  orphaned_sessions bigint,
  unannounced bigint
)
language plpgsql
stable
security definer
set search_path = ''
as $$
begin
  perform public.tether_require_range('idle limit', p_idle_limit_seconds, 0, 86400, false, 'seconds');
  perform public.tether_require_range('age limit', p_max_age_seconds, 0, 604800, false, 'seconds');

  return query
    select
      (select count(*) from public.conversation_sessions s where s.is_active),
      (select min(s.session_start) from public.conversation_sessions s where s.is_active),
      (select count(*) from public.conversation_sessions s
        where s.is_active
          and (s.session_start < now() - make_interval(secs => p_max_age_seconds)
               or s.last_seen_at < now() - make_interval(secs => p_idle_limit_seconds))),
      (select count(*) from public.conversation_session_announcements);
end;
$$;

comment on function public.tether_session_health_v2 is
  'The numbers the sweep reports as metrics, orphans counted with the limits the sweep runs with.';


-- An orphan: still marked active although its connection cannot exist any more,
-- by the limits the sweep last ran with. The sweep ends them; this view shows
-- whether it keeps up.
create or replace view public.conversation_session_orphans as
select
  s.session_id,
  s.user_id,
  s.connection_id,
  s.session_start,
  s.last_seen_at,
  round(extract(epoch from (now() - s.session_start)) / 3600, 2) as hours_active,
  case
    when s.session_start < now() - make_interval(secs => w.max_age_seconds) then 'max_duration'
    else 'idle_timeout'
  end as likely_reason
from public.conversation_sessions s
cross join tether.sweep_state w
where s.is_active
  and (s.session_start < now() - make_interval(secs => w.max_age_seconds)
       or s.last_seen_at < now() - make_interval(secs => w.idle_limit_seconds));

comment on view public.conversation_session_orphans is
  'Active sessions whose connection is certainly gone, by the limits the sweep runs with (tether.sweep_state).';

-- Views run with their caller's rights where Postgres can (15+), so they never
-- read past a caller's row level security.
do $$
begin
  if current_setting('server_version_num')::int >= 150000 then
    execute 'alter view public.conversation_session_daily_stats set (security_invoker = true)';
    execute 'alter view public.conversation_session_orphans set (security_invoker = true)';
  end if;
end
$$;

-- The outbox is the service role's alone; say so in a policy rather than by its absence.
create policy "Only the service role uses the announcement outbox"
  on public.conversation_session_announcements
  for all
  to service_role
  using (true)
  with check (true);

-- Nothing below is for the public API: tether_uuid_v7 would be an rpc endpoint,
-- and the trigger function runs with its owner's rights.
revoke execute on function public.tether_uuid_v7() from public, anon, authenticated;
revoke execute on function public.tether_forget_announcement() from public, anon, authenticated;
grant execute on function public.tether_uuid_v7() to service_role;

revoke execute on function
  public.tether_record_sweep_v1(double precision, double precision, jsonb, timestamptz),
  public.tether_session_health_v2(double precision, double precision)
from public, anon, authenticated;

grant execute on function
  public.tether_record_sweep_v1(double precision, double precision, jsonb, timestamptz),
  public.tether_session_health_v2(double precision, double precision)
to service_role;
