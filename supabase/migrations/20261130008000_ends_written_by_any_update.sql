-- The triggers of 20261130005000 (an end written around tether's functions is queued)
-- and 20261130006000 (an ended session's end is final) fired only on an UPDATE naming
-- the end's columns in its SET list. An end written by a BEFORE trigger on an update
-- naming other columns passed both: during an adoption's transition the old server's
-- `set is_active = false` (the adoption's sync trigger writes the end) ended tether's
-- sessions unannounced, and a team's own trigger could end a row, or move its end,
-- unseen. They now fire on any UPDATE whose row changes so. Their conditions, read
-- before any call and unchanged, keep heartbeats and marks from paying more than them.

-- Replaced in place (Postgres 14+): no moment without them, and a lighter lock than a
-- drop's.
create or replace trigger conversation_sessions_queue_direct_end
  after update on public.conversation_sessions
  for each row
  when (
    old.session_end is null
    and new.session_end is not null
    and new.announced_at is null
    and new.connection_id not like 'legacy:%'
  )
  execute function public.tether_queue_direct_end();

create or replace trigger conversation_sessions_ends_are_final
  after update on public.conversation_sessions
  for each row
  when (
    old.session_end is not null
    -- A row an adoption's backfill has not reached yet is read by adoption's rules.
    and old.connection_id is not null
    and (new.session_end is distinct from old.session_end
         or new.end_reason is distinct from old.end_reason
         or new.disconnect_status_code is distinct from old.disconnect_status_code)
  )
  execute function public.tether_refuse_changed_end();
