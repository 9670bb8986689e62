-- service_role reads and writes the session rows, as Supabase's service key does
-- everywhere, and calls tether's functions; it was granted everything on the two
-- tables, TRIGGER included. A trigger it attaches runs inside tether's functions,
-- with their owner's rights: a function of its own in pg_temp (TEMP is every role's)
-- made a member of service_role the owner, superuser on plain Postgres, the next time
-- any $disconnect or sweep wrote the table. TRUNCATE of the outbox would have dropped
-- every queued announcement unsaid. Neither is any caller's business; REFERENCES (a
-- foreign key of its own that holds tether's deletes back) neither. The owner keeps
-- them all.
revoke trigger, truncate, references
  on table public.conversation_sessions, public.conversation_session_announcements
  from service_role;

-- Postgres 17's MAINTAIN (VACUUM, ANALYZE, REINDEX, CLUSTER) is the owner's too. (A
-- writer may still LOCK TABLE, as UPDATE lets it; the functions wait 3 s at most.)
do $$
begin
  if current_setting('server_version_num')::int >= 170000 then
    execute 'revoke maintain on table public.conversation_sessions,'
            ' public.conversation_session_announcements from service_role';
  end if;
end
$$;
