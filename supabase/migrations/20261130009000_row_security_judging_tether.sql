-- Which of tether's tables judge tether's own functions by row level security.
--
-- tether's functions are security definer: they run as their owner, the role that
-- applied these migrations. Row level security passes that role by when it owns the
-- table and the table does not force it, or when it is a superuser or has BYPASSRLS.
-- A table that forces it (`alter table ... force row level security`, added after
-- migrating) judges the functions by its policies, and none lets their owner write:
-- every session opened is refused (SQLSTATE 42501, 'new row violates row-level
-- security policy'), and the sweep and the operators' reads see no rows. Nothing
-- failed where an operator looks: /health and `tether migrate` now ask this function,
-- which runs as that same owner, so row_security_active() answers for it.

create function public.tether_row_security_problems_v1()
returns table (table_name text, forced boolean)
language sql
stable
security definer
set search_path = pg_catalog, pg_temp
set lock_timeout = '3s'
set plan_cache_mode = force_custom_plan
as $$
  select pg_catalog.format('%I.%I', n.nspname, c.relname), c.relforcerowsecurity
  from pg_catalog.pg_class c
  join pg_catalog.pg_namespace n on n.oid = c.relnamespace
  where c.oid = any (array[
      pg_catalog.to_regclass('public.conversation_sessions'),
      pg_catalog.to_regclass('public.conversation_session_announcements'),
      pg_catalog.to_regclass('tether.sweep_state'),
      pg_catalog.to_regclass('tether.sweep_runs')
    ]::pg_catalog.oid[])
    and pg_catalog.row_security_active(c.oid)
  order by 1;
$$;

comment on function public.tether_row_security_problems_v1 is
  'tether''s tables whose row level security judges tether''s functions (their owner), and whether the table forces it.';

revoke execute on function public.tether_row_security_problems_v1()
  from public, anon, authenticated;
grant execute on function public.tether_row_security_problems_v1() to service_role;
