-- A function reads every unqualified type name first in the caller's temporary schema
-- when its search_path does not name pg_temp, and an empty search_path names nothing.
-- A caller allowed to call tether's functions and to create temporary objects (every
-- role may, by default) could define pg_temp.uuid, say, as a domain whose check runs the
-- caller's own code; a `::uuid` in a function running with its owner's rights would then
-- run it with the owner's. That includes the helpers such a function calls
-- (tether_require_range, tether_uuid_v7 as session_id's default), which run with the
-- rights of their caller: the owner. Naming pg_catalog first and pg_temp last makes every
-- name in tether's functions resolve to the system's types.
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
    where p.prokind in ('f', 'p')
      and (n.nspname = 'tether' or (n.nspname = 'public' and p.proname like 'tether\_%'))
  loop
    execute format('alter routine %s set search_path = pg_catalog, pg_temp', f);
  end loop;
end
$$;
