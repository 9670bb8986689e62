-- What `tether adopt` has done, so that an interrupted run resumes where it stopped,
-- and the values it corrected, as the old writers left them.

create table if not exists tether.adoption_steps (
  step text not null,
  started_at timestamptz not null default now(),
  finished_at timestamptz,
  detail jsonb not null default '{}'::jsonb,
  constraint adoption_steps_pkey primary key (step)
);

comment on table tether.adoption_steps is
  'The steps tether adopt has taken over public.conversation_sessions; a rerun skips those finished.';

create table if not exists tether.adoption_corrections (
  session_id uuid not null,
  kinds text[] not null,
  original jsonb not null,
  corrected_at timestamptz not null default now(),
  constraint adoption_corrections_pkey primary key (session_id)
);

comment on table tether.adoption_corrections is
  'Rows whose is_active, session_start, session_end, ended_at or duration_seconds tether adopt corrected: the kinds of inconsistency found and the original values.';

revoke all on table tether.adoption_steps, tether.adoption_corrections from public;
grant select on table tether.adoption_steps, tether.adoption_corrections to service_role;
