-- The operators' standing questions, as views.

create view public.conversation_session_daily_stats as
select
  (s.session_start at time zone 'UTC')::date as day,
  count(*) as total_sessions,
  count(*) filter (where s.is_active) as still_active,
  count(*) filter (where not s.is_active) as ended_sessions,
  round(avg(s.duration_seconds), 3) as avg_duration_seconds,
  max(s.duration_seconds) as max_duration_seconds
from public.conversation_sessions s
group by 1;

comment on view public.conversation_session_daily_stats is
  'Sessions per UTC day of session_start: how many, how many still active, average and longest duration.';

-- An orphan is a session still marked active whose connection cannot exist any
-- more: older than API Gateway's 2-hour maximum connection duration, or silent
-- for longer than its 10-minute idle timeout plus the largest heartbeat throttle
-- (5 minutes). The sweep ends them; this view shows whether it keeps up.
create view public.conversation_session_orphans as
select
  s.session_id,
  s.user_id,
  s.connection_id,
  s.session_start,
  s.last_seen_at,
  round(extract(epoch from (now() - s.session_start)) / 3600, 2) as hours_active,
  case
    when s.session_start < now() - interval '2 hours' then 'max_duration'
    else 'idle_timeout'
  end as likely_reason
from public.conversation_sessions s
where s.is_active
  and (s.session_start < now() - interval '2 hours'
       or s.last_seen_at < now() - interval '15 minutes');

comment on view public.conversation_session_orphans is
  'Active sessions whose connection is certainly gone: older than 2 hours or silent for over 15 minutes.';

-- Views run with their owner's rights (security_invoker needs Postgres 15), so
-- they are for operators only.
revoke all on public.conversation_session_daily_stats, public.conversation_session_orphans
  from public, anon, authenticated;
grant select on public.conversation_session_daily_stats, public.conversation_session_orphans
  to service_role;
