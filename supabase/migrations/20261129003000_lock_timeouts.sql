-- No invocation waits long for a lock: every versioned function gives up on a lock it
-- cannot get within 3 seconds (SQLSTATE 55P03, reported as the database being
-- unavailable), so a $connect or $disconnect answers well within API Gateway's 29 s
-- even when something else holds a session's row (a long transaction, an adoption
-- step). The caller retries, or the sweep ends the session later. A function added
-- later sets its own (`set lock_timeout = '3s'` in its definition).

do $$
declare
  f regprocedure;
begin
  for f in
    select p.oid::regprocedure
    from pg_catalog.pg_proc p
    join pg_catalog.pg_namespace n on n.oid = p.pronamespace
    where n.nspname = 'public'
      and p.proname ~ '^tether_.*_v[0-9]+$'
      and p.proname <> 'tether_uuid_v7'
  loop
    execute format('alter function %s set lock_timeout = %L', f, '3s');
  end loop;
end
$$;
