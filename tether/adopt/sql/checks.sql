-- tether's checks on the adopted table, added NOT VALID: from now on every write is
-- checked, but nothing scans the history under an exclusive lock. The validate step
-- checks the history later, under a lock that lets writes through. The three
-- tether_adoption_*_not_null checks exist only until their column is SET NOT NULL:
-- a valid check that proves the column has no null spares that command its scan.

do $$
declare
  c record;
begin
  for c in
    select *
    from (values
      ('conversation_sessions_connection_id_check',
       'check (length(connection_id) between 1 and 128)'),
      ('conversation_sessions_end_after_start_check',
       'check (session_end is null or session_end >= session_start)'),
      ('conversation_sessions_end_has_reason_check',
       'check ((session_end is null) = (end_reason is null))'),
      ('conversation_sessions_announced_after_end_check',
       'check (announced_at is null or session_end is not null)'),
      ('conversation_sessions_text_sizes_check',
       'check (coalesce(length(source_ip), 0) <= 64 and coalesce(length(user_agent), 0) <= 1024'
       || ' and coalesce(length(api_id), 0) <= 64 and coalesce(length(stage), 0) <= 128)'),
      ('tether_adoption_connection_id_not_null', 'check (connection_id is not null)'),
      ('tether_adoption_session_start_not_null', 'check (session_start is not null)'),
      ('tether_adoption_last_seen_at_not_null', 'check (last_seen_at is not null)')
    ) as v (name, definition)
  loop
    if not exists (
      select 1 from pg_catalog.pg_constraint k
      where k.conrelid = 'public.conversation_sessions'::regclass and k.conname = c.name
    ) then
      execute format(
        'alter table public.conversation_sessions add constraint %I %s not valid',
        c.name, c.definition
      );
    end if;
  end loop;
end
$$;
