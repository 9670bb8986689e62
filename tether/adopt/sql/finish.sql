-- The table's final shape, as a fresh install has it: is_active and
-- duration_seconds generated from session_end, so no writer can make them disagree
-- with it; the same for the old ended_at when tether kept it in step. One ALTER,
-- so the table is written once.
alter table public.conversation_sessions
  drop column is_active,
  drop column duration_seconds{drop_ended_at},
  add column is_active boolean generated always as (session_end is null) stored,
  add column duration_seconds numeric generated always as (
    extract(epoch from (session_end - session_start))
  ) stored{add_ended_at},
  alter column session_id set default public.tether_uuid_v7();

comment on column public.conversation_sessions.is_active is
  'Generated: true exactly while session_end is null.';
comment on column public.conversation_sessions.duration_seconds is
  'Generated: seconds from session_start to session_end; null while active.';
