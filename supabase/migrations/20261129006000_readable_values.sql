-- A session's start is held to what its readers can read, whoever writes it. Postgres
-- takes '-infinity' and dates before year 1 as a start; no client reads such a start
-- (Python's datetime cannot), and the sweep's arithmetic cannot subtract it from now:
-- one such live session stopped every sweep. The handlers never send one; a direct
-- caller of the SQL functions could, and is now refused (SQLSTATE 23514) with nothing
-- written. The bound is the one `tether adopt` reads moments by (belief.sql, sync.sql).
--
-- NOT VALID here: adding a check takes a lock that holds every write, for as long as
-- a validation would read the table. The next migration validates it.
alter table public.conversation_sessions
  add constraint conversation_sessions_start_readable_check
    check (isfinite(session_start) and session_start >= '0001-01-02 00:00:00+00') not valid;
