-- tether_row_security_problems_v1 (/health, `tether migrate`, `tether adopt --check`)
-- missed two ways a table forcing row level security refuses tether's functions
-- (SQLSTATE 42501) while the rule said nothing was wrong:
-- * it counted a permissive policy as applying to the functions' owner when that role
--   was a member of the policy's role. Postgres applies a policy only to the roles
--   whose privileges the user has: a member that does not inherit them (a NOINHERIT
--   role or, on Postgres 16 and later, a grant WITH INHERIT FALSE) is not let in;
-- * it took one permissive policy that applies for enough, whatever restrictive
--   policies the table also had. Postgres lets a row through only when every
--   restrictive policy that applies passes too (`as restrictive ... using (false)`, or
--   one on auth.uid(), which tether's functions never have).
--
-- * tether_row_security_problems_v2 counts a policy's role only when the functions'
--   owner has its privileges (pg_has_role 'usage', as Postgres decides whether a policy
--   applies), or the policy is for public; and it also reports a table where a
--   restrictive policy applies to that role for a command the functions run there (one
--   that would pass is reported too: the rule cannot read its expression).
--
-- tether_row_security_problems_v1 stays as it is until a later release drops it.


create function public.tether_row_security_problems_v2()
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

comment on function public.tether_row_security_problems_v2 is
  'tether''s tables whose row level security refuses tether''s functions (their owner, to whom no permissive policy applies for a command they run there, or a restrictive one does: a policy applies for public or for a role whose privileges it has), and whether the table forces it.';

comment on function public.tether_row_security_problems_v1 is
  'tether''s tables whose row level security refuses tether''s functions (their owner, to whom no permissive policy applies for a command they run there), and whether the table forces it. Superseded by tether_row_security_problems_v2, which counts a policy only for a role whose privileges the owner has, and restrictive policies too.';

revoke execute on function public.tether_row_security_problems_v2()
  from public, anon, authenticated;
grant execute on function public.tether_row_security_problems_v2() to service_role;
