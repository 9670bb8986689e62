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
--   * the rows `tether adopt`'s backfill corrects (ends found in the history): it
--     gives them their 'legacy:' connection id in that write;
--   * an end written as announced already.
--
-- tether's functions queue their ends in the statement that writes them, with the
-- lease they need (a data-modifying WITH: the row is in the outbox before this
-- trigger runs, at the statement's end), so for their ends the insert below finds it
-- there and does nothing. Telling their writes apart instead (a setting on each of
-- them) would spare that call, but only a superuser may attach a custom setting to a
-- function, and Supabase's postgres, which migrates, is none. The condition is
-- checked before any call: heartbeats and the outbox's marks cost nothing more.

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
  after update of session_end on public.conversation_sessions
  for each row
  when (
    old.session_end is null
    and new.session_end is not null
    and new.announced_at is null
    and new.connection_id not like 'legacy:%'
  )
  execute function public.tether_queue_direct_end();
