-- An end written around tether's functions is queued for its announcement too.
--
-- service_role writes the session table, as Supabase's service key does (a team's
-- script, an operator's update in the dashboard), and during an adoption's transition
-- the old server does (its shutdown handler's `set is_active = false where is_active`
-- ends every live session, tether's own included). Such an end left no outbox row: its
-- SessionEnded was never sent, and the health's unannounced count did not show it.
--
-- Now a row that goes from active to ended in a write from outside tether's functions
-- is queued (announced by the next sweep). Left out, as before:
--   * the sessions an old server opened (connection ids 'legacy:...'): it finalizes
--     its own; close-orphans and the sweep still announce the ends they write;
--   * the rows `tether adopt`'s backfill corrects (ends found in the history);
--   * an end written as announced already.
--
-- tether's functions queue their ends in the statement that writes them, with the
-- lease they need: each one that does carries tether.queues_its_ends, and the trigger
-- is not even called for their writes (a call per end made the sweep's batches half
-- again as slow). A function added later that queues its ends sets it in its
-- definition (`set "tether.queues_its_ends" = 'on'`). The condition is checked before
-- any call, so heartbeats and the outbox's marks cost nothing more.

do $$
declare
  f regprocedure;
begin
  for f in
    select p.oid::regprocedure
    from pg_catalog.pg_proc p
    join pg_catalog.pg_namespace n on n.oid = p.pronamespace
    where n.nspname = 'public'
      and p.proname ~ '^tether_.*_v[0-9]+$'
      and p.prosrc ~* 'insert\s+into\s+public\.conversation_session_announcements'
  loop
    execute format('alter function %s set "tether.queues_its_ends" = %L', f, 'on');
  end loop;
end
$$;

create function public.tether_queue_direct_end() returns trigger
language plpgsql
security definer
set search_path = pg_catalog, pg_temp
as $$
begin
  insert into public.conversation_session_announcements (session_id)
  values (new.session_id)
  on conflict (session_id) do nothing;
  return null;
end;
$$;

comment on function public.tether_queue_direct_end is
  'Queues the announcement of an end written outside tether''s functions (they queue their own).';

revoke execute on function public.tether_queue_direct_end() from public, anon, authenticated;

create trigger conversation_sessions_queue_direct_end
  after update on public.conversation_sessions
  for each row
  when (
    old.session_end is null
    and new.session_end is not null
    and new.announced_at is null
    and new.connection_id not like 'legacy:%'
    and current_setting('tether.queues_its_ends', true) is distinct from 'on'
    and current_setting('tether.adoption_backfill', true) is distinct from 'on'
  )
  execute function public.tether_queue_direct_end();
