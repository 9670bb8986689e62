-- The session table. is_active and duration_seconds are derived by Postgres from
-- session_end, so no writer can ever leave them disagreeing with it.

-- The reasons a session can end, in one place: the column and every function use it.
create domain public.tether_end_reason as text
  constraint tether_end_reason_check check (
    value in (
      'client_disconnect', 'server_disconnect', 'connection_lost', 'message_too_big',
      'idle_timeout', 'max_duration', 'gone', 'heartbeat_timeout',
      'orphan_cleanup', 'forced_close', 'shutdown'
    )
  );

-- Time-ordered ids (the layout of UUID version 7): the live sessions' keys sit
-- together at the end of the primary key index, so ending them touches a few hot
-- pages however long the history grows. (Postgres 18 has uuidv7(); this runs on 14+.)
create function public.tether_uuid_v7() returns uuid
language sql
volatile
parallel safe
set search_path = ''
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

create table public.conversation_sessions (
  session_id uuid not null default public.tether_uuid_v7(),
  user_id uuid,
  connection_id text not null,
  session_start timestamptz not null default now(),
  session_end timestamptz,
  is_active boolean generated always as (session_end is null) stored,
  duration_seconds numeric generated always as (
    extract(epoch from (session_end - session_start))
  ) stored,
  last_seen_at timestamptz not null default now(),
  end_reason public.tether_end_reason,
  disconnect_status_code integer,
  source_ip text,
  user_agent text,
  api_id text,
  stage text,
  announced_at timestamptz,
  finalize_after timestamptz,
  finalized_at timestamptz,
  constraint conversation_sessions_pkey primary key (session_id),
  constraint conversation_sessions_connection_id_key unique (connection_id),
  constraint conversation_sessions_connection_id_check
    check (length(connection_id) between 1 and 128),
  constraint conversation_sessions_end_after_start_check
    check (session_end is null or session_end >= session_start),
  constraint conversation_sessions_end_has_reason_check
    check ((session_end is null) = (end_reason is null)),
  constraint conversation_sessions_announced_after_end_check
    check (announced_at is null or session_end is not null),
  constraint conversation_sessions_text_sizes_check check (
    coalesce(length(source_ip), 0) <= 64
    and coalesce(length(user_agent), 0) <= 1024
    and coalesce(length(api_id), 0) <= 64
    and coalesce(length(stage), 0) <= 128
  )
)
-- Room on each page for the updates that touch no indexed column (announced_at,
-- the leases), so Postgres makes them heap-only and writes no index entry.
with (fillfactor = 90);

comment on table public.conversation_sessions is
  'One row per WebSocket connection. Written only through the tether_* functions.';
comment on column public.conversation_sessions.connection_id is
  'API Gateway connectionId; the key every $disconnect and heartbeat arrives with.';
comment on column public.conversation_sessions.is_active is
  'Generated: true exactly while session_end is null.';
comment on column public.conversation_sessions.duration_seconds is
  'Generated: seconds from session_start to session_end; null while active.';
comment on column public.conversation_sessions.last_seen_at is
  'Last sign of life (connect, heartbeat, message), written at most once per throttle interval.';
comment on column public.conversation_sessions.session_end is
  'When the connection ended: the handler time for $disconnect, the last sign of life for sessions ended by the sweep.';
comment on column public.conversation_sessions.end_reason is
  'Why the session ended; the first end wins and keeps its reason.';
comment on column public.conversation_sessions.disconnect_status_code is
  'WebSocket close code reported by API Gateway in the $disconnect event, when it sent one.';
comment on column public.conversation_sessions.announced_at is
  'When SessionEnded was accepted by EventBridge; null while the end is still to be announced.';
comment on column public.conversation_sessions.finalized_at is
  'When the SessionEnded subscriber finished its work, so a redelivered event does nothing twice.';

-- Every hot query spells `where is_active` so these stay small: their size follows
-- the live sessions, not the history.
create index conversation_sessions_last_seen_at_active_idx
  on public.conversation_sessions (last_seen_at) where is_active;
create index conversation_sessions_session_start_active_idx
  on public.conversation_sessions (session_start) where is_active;
create index conversation_sessions_user_id_active_idx
  on public.conversation_sessions (user_id) where is_active;
-- The RLS policy filters on user_id over all of a user's history.
create index conversation_sessions_user_id_idx
  on public.conversation_sessions (user_id);

-- Row Level Security: users read their own sessions; nobody writes through the
-- public API (writes go through the security definer functions).
alter table public.conversation_sessions enable row level security;

revoke all on table public.conversation_sessions from public, anon, authenticated;
grant select on table public.conversation_sessions to authenticated;
grant all on table public.conversation_sessions to service_role;

create policy "Users can read their own sessions"
  on public.conversation_sessions
  for select
  to authenticated
  using ((select auth.uid()) = user_id);


-- The outbox: one row per ended session whose SessionEnded EventBridge has not yet
-- accepted. Kept apart from the sessions so the queue stays as small as the backlog,
-- and marking an end announced deletes here instead of re-indexing the history.
create table public.conversation_session_announcements (
  session_id uuid not null,
  enqueued_at timestamptz not null default now(),
  announce_after timestamptz not null default now(),
  constraint conversation_session_announcements_pkey primary key (session_id)
);

comment on table public.conversation_session_announcements is
  'Ended sessions whose SessionEnded is still to be announced (at least once).';
comment on column public.conversation_session_announcements.announce_after is
  'Lease: the queue skips the row until then, so the announcer at work is not raced.';

create index conversation_session_announcements_announce_after_idx
  on public.conversation_session_announcements (announce_after);

-- Only the lifecycle functions insert here, in the statement that ends the session,
-- so a foreign key would check what cannot be wrong, at the cost of a primary key
-- lookup and a row lock per end (a third of the sweep's time). Deleting a session
-- (an operator's clean-up) still takes its queue entry with it.
create function public.tether_forget_announcement() returns trigger
language plpgsql
security definer
set search_path = ''
as $$
begin
  delete from public.conversation_session_announcements a where a.session_id = old.session_id;
  return old;
end;
$$;

create trigger conversation_sessions_forget_announcement
  after delete on public.conversation_sessions
  for each row execute function public.tether_forget_announcement();

alter table public.conversation_session_announcements enable row level security;
revoke all on table public.conversation_session_announcements from public, anon, authenticated;
grant all on table public.conversation_session_announcements to service_role;
