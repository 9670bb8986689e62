-- Two reasons for ends tether did not see, which `tether adopt` records when it
-- takes over a conversation_sessions table another server wrote:
--   unrecorded   the old writer recorded when the session ended, not why (its
--                history, and its ends while it still writes during the cut-over);
--   end_unknown  the row says the session ended, but holds no believable time:
--                session_end is then a lower bound (the last sign of life known).
--
-- The new check allows every value the old one did, so no row can break it, and it
-- is added NOT VALID: validating a domain's constraint scans every table that uses
-- the domain under a lock that blocks writes (SHARE) for as long as the scan takes,
-- which on a long history would stall $connect and $disconnect for nothing. New and
-- updated values are checked as before.

alter domain public.tether_end_reason drop constraint tether_end_reason_check;

alter domain public.tether_end_reason add constraint tether_end_reason_check check (
  value in (
    'client_disconnect', 'server_disconnect', 'connection_lost', 'message_too_big',
    'idle_timeout', 'max_duration', 'gone', 'heartbeat_timeout',
    'orphan_cleanup', 'forced_close', 'shutdown',
    'unrecorded', 'end_unknown'
  )
) not valid;
