-- An end is final, whoever writes the table.
--
-- tether's functions end a session in one conditional update (only while it is
-- active), so the first end and its reason stay and later ones answer already_ended.
-- A write from outside them (the service role's own UPDATE: a team's script, an edit
-- in Supabase's dashboard) could still move an ended session's end, change its reason
-- or status code, or open it again, after its SessionEnded had gone out with the
-- first: readers and the announcement would then disagree for good. Such a write is
-- now refused (SQLSTATE 23514) with nothing written.
--
-- Left free, as before:
--   * every other column of an ended row (its announcement, its finalization);
--   * while an adoption is under way, the rows its backfill has not reached yet (no
--     connection id): the backfill corrects their ends from the history, and until
--     then its sync trigger reads such a row by adoption's rules, which may correct
--     its end. A row it has reached keeps its end through that trigger too (an old
--     server's second end is turned back into the first), and its status code here.
--     What tells those rows is the row itself, not a setting a writer could make.
-- An operator who must correct an end on purpose does so as the table's owner, with
-- this trigger disabled for that transaction.

create function public.tether_refuse_changed_end() returns trigger
language plpgsql
set search_path = pg_catalog, pg_temp
as $$
begin
  raise exception 'session % has ended (%, %): its end is final', old.session_id,
      old.end_reason, old.session_end
    using errcode = 'check_violation',
          hint = 'end an active session with tether''s functions; an ended one keeps its'
                 || ' end, reason and status code';
end;
$$;

comment on function public.tether_refuse_changed_end is
  'Refuses a write that changes an ended session''s end, reason or status code, or opens it again.';

revoke execute on function public.tether_refuse_changed_end() from public, anon, authenticated;

create trigger conversation_sessions_ends_are_final
  after update of session_end, end_reason, disconnect_status_code
  on public.conversation_sessions
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
