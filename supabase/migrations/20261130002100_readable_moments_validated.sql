-- The check of the migration before, on the rows already there (which that migration
-- gave readable moments). Applied on its own (supabase db push, tether adopt), the
-- validation reads the whole table under a lock that lets every read and write go on;
-- in one run with the migration before (tether migrate), the lock that migration took
-- to add the check holds them through this read, as an index build would.
alter table public.conversation_sessions
  validate constraint conversation_sessions_moments_readable_check;
