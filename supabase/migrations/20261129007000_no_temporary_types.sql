-- A function running with its owner's rights reads every unqualified type name first
-- in the caller's temporary schema when its search_path does not name pg_temp, and an
-- empty search_path names nothing. A caller allowed to call such a function and to
-- create temporary objects (every role may, by default) could define pg_temp.uuid, say,
-- as a domain whose check runs the caller's own code; the function's `::uuid` would
-- then run it with the owner's rights. Naming pg_catalog first and pg_temp last makes
-- every name in those functions resolve to the system's types.
--
-- Nothing else changes for any caller: every table and type of tether's is already
-- named with its schema. A function added later sets the same search_path in its
-- definition (the security tests refuse one that does not).

do $$
declare
  f regprocedure;
begin
  for f in
    select p.oid::regprocedure
    from pg_catalog.pg_proc p
    join pg_catalog.pg_namespace n on n.oid = p.pronamespace
    where p.prosecdef
      and (n.nspname = 'tether' or (n.nspname = 'public' and p.proname like 'tether\_%'))
  loop
    execute format('alter function %s set search_path = pg_catalog, pg_temp', f);
  end loop;
end
$$;
