-- A Lambda container keeps its database connection for hours, and Postgres 18 keeps a
-- SQL function's plans for the life of the connection (until an ANALYZE of the table
-- invalidates them). A plan made while the table was small, when reading its few
-- pages is the cheapest way, would then read the whole history on every call after
-- the table has grown: on a new project, on one whose autovacuum is behind, or on
-- the local runtime. These functions plan each call for the table as it is now (tens
-- of microseconds each); their signatures and results do not change.
--
-- Left out: the handshake's and the heartbeat's functions, whose every statement
-- finds its row by a unique key, the plan Postgres makes at any table size. A
-- function added later sets its own (`set plan_cache_mode = force_custom_plan`).

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
      and p.proname not in (
        'tether_uuid_v7',
        'tether_open_session_v1',
        'tether_touch_session_v1',
        'tether_end_session_v1',
        'tether_end_session_v2'
      )
  loop
    execute format('alter function %s set plan_cache_mode = %L', f, 'force_custom_plan');
  end loop;
end
$$;
