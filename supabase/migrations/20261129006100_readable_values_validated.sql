-- The check of the migration before, on the rows already there. A start an earlier
-- version let in becomes the first readable moment its row holds (its last sign of
-- life or its end, else now), and the migration says how many it moved: left as it
-- was, the row could not be read, and, checked now, could not be updated either (not
-- ended, announced or finalized). Those rows are found through the start's index.
--
-- Applied on its own (supabase db push, tether adopt), the validation reads the whole
-- table under a lock that lets every write go on; in one run with the migration
-- before (tether migrate), the add's lock holds writes through this read, as an index
-- build would.
do $$
declare
  v_moved bigint;
begin
  update public.conversation_sessions s
     set session_start = coalesce(
           (select min(m.moment)
              from (values (s.last_seen_at), (s.session_end)) m(moment)
             where isfinite(m.moment) and m.moment >= '0001-01-02 00:00:00+00'),
           now())
   where s.session_start < '0001-01-02 00:00:00+00' or s.session_start = 'infinity';
  get diagnostics v_moved = row_count;
  if v_moved > 0 then
    raise warning '% session(s) had a start no client can read; each now starts at the'
      ' first readable moment it holds', v_moved;
  end if;
end
$$;

alter table public.conversation_sessions
  validate constraint conversation_sessions_start_readable_check;
