comment on column public.conversation_sessions.ended_at is
  'Generated: the same as session_end, for the queries written before tether.';
