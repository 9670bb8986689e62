-- The plain-Postgres stand-in for auth.uid() (20261126000100) read an empty
-- request.jwt.claims as JSON and failed. Postgres leaves a custom setting empty, not
-- unset, once the transaction that set it locally has ended, as PostgREST sets it: a
-- connection reused after such a request then failed every read of the session table
-- under its row-level policy ("invalid input syntax for type json") instead of
-- reading no claims. Supabase's own auth.uid() reads an empty setting as none; the
-- stand-in now does too.
--
-- Only the stand-in is replaced, recognised by its body: an auth.uid() of any other
-- making (Supabase's, a project's own) is left as it is.

do $$
begin
  if exists (
    select 1
    from pg_catalog.pg_proc p
    join pg_catalog.pg_namespace n on n.oid = p.pronamespace
    where n.nspname = 'auth' and p.proname = 'uid' and p.pronargs = 0
      and pg_catalog.btrim(pg_catalog.regexp_replace(p.prosrc, '\s+', ' ', 'g'))
          = 'select nullif( coalesce( current_setting(''request.jwt.claim.sub'', true),'
            ' current_setting(''request.jwt.claims'', true)::jsonb ->> ''sub'' ), '''' )::uuid'
  ) then
    -- create or replace keeps the function's owner and grants.
    create or replace function auth.uid() returns uuid
    language sql stable
    as $fn$
      select nullif(
        coalesce(
          nullif(current_setting('request.jwt.claim.sub', true), ''),
          nullif(current_setting('request.jwt.claims', true), '')::jsonb ->> 'sub'
        ),
        ''
      )::uuid
    $fn$;
  end if;
end
$$;
