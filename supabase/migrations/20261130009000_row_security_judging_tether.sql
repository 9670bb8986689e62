-- Which of tether's tables judge tether's own functions by row level security.
--
-- tether's functions are security definer: they run as their owner, the role that
-- applied these migrations. Row level security passes that role by when it owns the
-- table and the table does not force it, or when it is a superuser or has BYPASSRLS.
-- A table that forces it (`alter table ... force row level security`, added after
-- migrating) judges the functions by its policies: unless they let their owner in,
-- every session opened is refused (SQLSTATE 42501, 'new row violates row-level
-- security policy'), and the sweep and the operators' reads see no rows. Nothing
-- failed where an operator looks: /health and `tether migrate` now ask this function,
-- which runs as that same owner, so row_security_active() answers for it. A table is
-- left out when each command the functions run on it (select, insert, update, delete)
-- has a permissive policy that applies to that role: to it, to a role it is a member
-- of, or to public. What a policy's expression lets through is not judged: a policy
-- written for that role is the team's own decision.

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
  from (values
      ('public.conversation_sessions', array['r', 'a', 'w']),
      ('public.conversation_session_announcements', array['r', 'a', 'w', 'd']),
      ('tether.sweep_state', array['r', 'a', 'w']),
      ('tether.sweep_runs', array['r', 'a', 'd'])
    ) as t (name, commands)
  join pg_catalog.pg_class c on c.oid = pg_catalog.to_regclass(t.name)
  join pg_catalog.pg_namespace n on n.oid = c.relnamespace
  where pg_catalog.row_security_active(c.oid)
    and exists (
      select 1 from pg_catalog.unnest(t.commands) as needed (command)
      where not exists (
        select 1 from pg_catalog.pg_policy p
        where p.polrelid = c.oid
          and p.polpermissive
          and p.polcmd::text in (needed.command, '*')
          and exists (
            select 1 from pg_catalog.unnest(p.polroles) as r (role)
            where case when r.role = 0 then true
                       else pg_catalog.pg_has_role(current_user, r.role, 'member') end
          )
      )
    )
  order by 1;
$$;

comment on function public.tether_row_security_problems_v1 is
  'tether''s tables whose row level security refuses tether''s functions (their owner, to whom no permissive policy applies for a command they run there), and whether the table forces it.';

revoke execute on function public.tether_row_security_problems_v1()
  from public, anon, authenticated;
grant execute on function public.tether_row_security_problems_v1() to service_role;
