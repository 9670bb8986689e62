-- The checks of the migration before, validated on the rows already there. Applied on
-- its own (supabase db push, tether adopt), the validation reads the whole table under
-- a lock that lets every write go on; in one run with the migration before (tether
-- migrate), the add's lock holds writes through this read, as an index build would. A
-- table holding rows an earlier version let in keeps the checks unvalidated (new
-- writes are checked all the same) and says so, rather than stop every later
-- migration: the hint's query finds those rows.
do $$
begin
  if exists (
    select 1 from public.conversation_sessions
    where not (isfinite(session_start) and session_start >= '0001-01-02 00:00:00+00')
       or disconnect_status_code not between 0 and 9999
  ) then
    raise warning 'conversation_sessions holds a start no client can read or a close code'
      ' out of 0 to 9999; the checks stay unvalidated'
      using hint = 'select session_id, session_start, disconnect_status_code'
        ' from public.conversation_sessions where not (isfinite(session_start) and'
        ' session_start >= ''0001-01-02 00:00:00+00'') or disconnect_status_code not'
        ' between 0 and 9999';
  else
    alter table public.conversation_sessions
      validate constraint conversation_sessions_start_readable_check;
    alter table public.conversation_sessions
      validate constraint conversation_sessions_status_code_check;
  end if;
end
$$;
