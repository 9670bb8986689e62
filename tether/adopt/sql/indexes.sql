-- tether's indexes on the table, built CONCURRENTLY: writes go on during each build.
-- One statement per index, each on its own line group; the name follows "index".
-- A build that was interrupted leaves an INVALID index behind: tether adopt drops
-- it (CONCURRENTLY) and builds it again. An index that a later migration creates is
-- built here too, under the migration's name and definition: the migrations step
-- then finds it made (built under the migration's lock, the build would stop the
-- table's writes for as long as it takes).

create unique index concurrently conversation_sessions_connection_id_key
  on public.conversation_sessions (connection_id);

create index concurrently conversation_sessions_last_seen_at_active_idx
  on public.conversation_sessions (last_seen_at) where is_active;

create index concurrently conversation_sessions_session_start_active_idx
  on public.conversation_sessions (session_start) where is_active;

create index concurrently conversation_sessions_user_id_active_idx
  on public.conversation_sessions (user_id) where is_active;

create index concurrently conversation_sessions_user_id_idx
  on public.conversation_sessions (user_id);

create index concurrently conversation_sessions_session_start_idx
  on public.conversation_sessions (session_start, session_id);

create index concurrently conversation_sessions_session_end_idx
  on public.conversation_sessions (session_end) where not is_active;
