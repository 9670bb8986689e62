-- The objects of the table's migration (20261126000200_conversation_sessions.sql)
-- that stand apart from the table, created as that migration creates them. Run
-- again, it changes nothing.
--
-- One difference, for one step only: the domain starts without its check. Adding
-- a column whose domain has a constraint rewrites the whole table under an
-- exclusive lock; a domain without one adds in the catalog alone. The columns step
-- adds end_reason and then the check (NOT VALID, which scans nothing), in the same
-- transaction, before any value is written.

do $$
begin
  if to_regtype('public.tether_end_reason') is null then
    create domain public.tether_end_reason as text;
  end if;
end
$$;

create or replace function public.tether_uuid_v7() returns uuid
language sql
volatile
parallel safe
set search_path = pg_catalog, pg_temp
as $$
  select encode(
    set_bit(
      set_bit(
        overlay(
          uuid_send(gen_random_uuid())
          placing substring(int8send((extract(epoch from clock_timestamp()) * 1000)::bigint) from 3)
          from 1 for 6
        ),
        52, 1
      ),
      53, 1
    ),
    'hex'
  )::uuid
$$;

comment on function public.tether_uuid_v7 is
  'A random UUID whose first 48 bits are the Unix time in milliseconds (version 7 layout).';

create table if not exists public.conversation_session_announcements (
  session_id uuid not null,
  enqueued_at timestamptz not null default now(),
  announce_after timestamptz not null default now(),
  constraint conversation_session_announcements_pkey primary key (session_id)
);

comment on table public.conversation_session_announcements is
  'Ended sessions whose SessionEnded is still to be announced (at least once).';
comment on column public.conversation_session_announcements.announce_after is
  'Lease: the queue skips the row until then, so the announcer at work is not raced.';

create index if not exists conversation_session_announcements_announce_after_idx
  on public.conversation_session_announcements (announce_after);

create or replace function public.tether_forget_announcement() returns trigger
language plpgsql
security definer
set search_path = pg_catalog, pg_temp
as $$
begin
  delete from public.conversation_session_announcements a where a.session_id = old.session_id;
  return old;
end;
$$;

alter table public.conversation_session_announcements enable row level security;
revoke all on table public.conversation_session_announcements
  from public, anon, authenticated, service_role;
grant select, insert, update, delete on table public.conversation_session_announcements
  to service_role;
