-- What the table's migration (20261126000200) sets on the table besides its
-- columns, constraints and indexes, as it sets it: storage, row level security,
-- grants, the policy, comments, and the outbox's delete trigger. Run again, it
-- changes nothing.

alter table public.conversation_sessions set (fillfactor = 90);

alter table public.conversation_sessions enable row level security;

-- service_role as 20261130003000 leaves it: no TRIGGER, TRUNCATE or REFERENCES, which
-- Supabase's default privileges had given it on the team's table.
revoke all on table public.conversation_sessions from public, anon, authenticated, service_role;
grant select on table public.conversation_sessions to authenticated;
grant select, insert, update, delete on table public.conversation_sessions to service_role;

do $$
begin
  if not exists (
    select 1 from pg_catalog.pg_policy p
    where p.polrelid = 'public.conversation_sessions'::regclass
      and p.polname = 'Users can read their own sessions'
  ) then
    create policy "Users can read their own sessions"
      on public.conversation_sessions
      for select
      to authenticated
      using ((select auth.uid()) = user_id);
  end if;
end
$$;

comment on table public.conversation_sessions is
  'One row per WebSocket connection. Written only through the tether_* functions.';
comment on column public.conversation_sessions.connection_id is
  'API Gateway connectionId; the key every $disconnect and heartbeat arrives with.';
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

create or replace trigger conversation_sessions_forget_announcement
  after delete on public.conversation_sessions
  for each row execute function public.tether_forget_announcement();
