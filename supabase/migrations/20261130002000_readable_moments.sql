-- Every moment an operator reads of a session is held to what its readers can read,
-- as its start already is (20261129006000): an end, a last sign of life or an
-- announcement at 'infinity', before year 1 or past year 9999 cannot be read by a
-- client (Python's datetime cannot hold it, psycopg refuses it), and one such row
-- made every page of `/sessions` that held it, and the live page, answer 500. The
-- start gains the same upper bound. tether's functions never write one; a direct
-- writer (a hand-written UPDATE, a team's old server after `tether adopt --finish`)
-- could, and is now refused (SQLSTATE 23514) with nothing written.
--
-- NOT VALID here, as the start's was: the next migration repairs and validates.
alter table public.conversation_sessions
  add constraint conversation_sessions_moments_readable_check check (
    session_start < '9999-12-31 00:00:00+00'
    and (session_end is null
         or (isfinite(session_end)
             and session_end >= '0001-01-02 00:00:00+00'
             and session_end < '9999-12-31 00:00:00+00'))
    and isfinite(last_seen_at)
    and last_seen_at >= '0001-01-02 00:00:00+00'
    and last_seen_at < '9999-12-31 00:00:00+00'
    and (announced_at is null
         or (isfinite(announced_at)
             and announced_at >= '0001-01-02 00:00:00+00'
             and announced_at < '9999-12-31 00:00:00+00'))
  ) not valid;
