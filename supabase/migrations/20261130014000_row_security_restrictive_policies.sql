-- tether_row_security_problems_v2 (/health, `tether migrate`, `tether adopt --check`)
-- counted a table as letting tether's functions' owner in once a permissive policy
-- applied to that role for each command they run there, whatever restrictive policies
-- the table also had. Postgres lets a row through only when every restrictive policy
-- that applies passes too: a table forcing row level security with a restrictive
-- policy for that role (`as restrictive ... using (false)`, or one on auth.uid(), which
-- tether's functions never have) refused every call of tether's functions (SQLSTATE
-- 42501), and the rule said nothing was wrong.
--
-- * tether_row_security_problems_v3 judges as v2 does, and also reports a table where a
--   restrictive policy applies to that role for a command they run there.
--
-- tether_row_security_problems_v2 stays as it is until a later release drops it.


create function public.tether_row_security_problems_v3()
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
                         else pg_catalog.pg_has_role(current_user, r.role, 'usage') end
            )
        )
        or exists (
          select 1 from pg_catalog.pg_policy p
          where p.polrelid = c.oid
            and not p.polpermissive
            and p.polcmd::text in (needed.command, '*')
            and exists (
              select 1 from pg_catalog.unnest(p.polroles) as r (role)
              where case when r.role = 0 then true
                         else pg_catalog.pg_has_role(current_user, r.role, 'usage') end
            )
        )
    )
  order by 1;
$$;

comment on function public.tether_row_security_problems_v3 is
  'tether''s tables whose row level security refuses tether''s functions (their owner, to whom no permissive policy applies for a command they run there, or a restrictive one does: a policy applies for public or for a role whose privileges it has), and whether the table forces it.';

comment on function public.tether_row_security_problems_v2 is
  'tether''s tables whose row level security refuses tether''s functions (their owner, to whom no permissive policy applies for a command they run there: none for public or for a role whose privileges it has), and whether the table forces it. Superseded by tether_row_security_problems_v3, which also counts a restrictive policy that applies to the owner.';

revoke execute on function public.tether_row_security_problems_v3()
  from public, anon, authenticated;
grant execute on function public.tether_row_security_problems_v3() to service_role;
