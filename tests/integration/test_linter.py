"""What Supabase's database linter checks, as catalog queries on the migrated schema:
rules 0008 (RLS enabled, no policy), 0010 (security definer view), 0011 (mutable
search_path), 0028 and 0029 (security definer function executable by anon or
authenticated), for the schema the public API exposes."""

from __future__ import annotations

import psycopg
import pytest

Conn = psycopg.Connection[dict[str, object]]

# Supabase's own and extensions' schemas, which the linter leaves alone.
EXCLUDED = (
    "auth",
    "cron",
    "extensions",
    "graphql",
    "graphql_public",
    "information_schema",
    "net",
    "pg_catalog",
    "pgbouncer",
    "pgsodium",
    "realtime",
    "storage",
    "supabase_functions",
    "supabase_migrations",
    "vault",
    "pg_toast",
)
EXPOSED = ("public",)  # PostgREST's db_schemas on a default project


def _names(db: Conn, query: str, params: tuple[object, ...]) -> list[str]:
    return [str(row["name"]) for row in db.execute(query, params).fetchall()]


def test_0008_every_table_with_rls_has_a_policy(db: Conn) -> None:
    found = _names(
        db,
        """
        select n.nspname || '.' || c.relname as name
        from pg_class c join pg_namespace n on n.oid = c.relnamespace
        where c.relkind = 'r' and c.relrowsecurity
          and n.nspname <> all (%s)
          and not exists (select 1 from pg_policy p where p.polrelid = c.oid)
        """,
        (list(EXCLUDED),),
    )
    assert found == []


def test_0010_exposed_views_run_with_the_caller_s_rights(db: Conn) -> None:
    version = int(str(db.execute("show server_version_num").fetchone()["server_version_num"]))  # type: ignore[index]
    if version < 150000:
        pytest.skip("security_invoker views need Postgres 15")
    found = _names(
        db,
        """
        select n.nspname || '.' || c.relname as name
        from pg_class c join pg_namespace n on n.oid = c.relnamespace
        where c.relkind = 'v' and n.nspname = any (%s)
          and (has_table_privilege('anon', c.oid, 'select')
               or has_table_privilege('authenticated', c.oid, 'select')
               or has_table_privilege('service_role', c.oid, 'select'))
          and not coalesce(
            c.reloptions && array['security_invoker=true', 'security_invoker=on',
                                  'security_invoker=1', 'security_invoker=yes'], false)
        """,
        (list(EXPOSED),),
    )
    assert found == []


def test_0011_every_function_pins_its_search_path(db: Conn) -> None:
    found = _names(
        db,
        """
        select n.nspname || '.' || p.proname as name
        from pg_proc p join pg_namespace n on n.oid = p.pronamespace
        where n.nspname <> all (%s)
          and not exists (select 1 from pg_depend d where d.objid = p.oid and d.deptype = 'e')
          and not coalesce(
            exists (select 1 from unnest(p.proconfig) c where c like 'search_path=%%'), false)
        """,
        (list(EXCLUDED),),
    )
    assert found == []


@pytest.mark.parametrize("role", ["anon", "authenticated"])
def test_0028_0029_no_security_definer_function_is_callable_from_the_public_api(
    db: Conn, role: str
) -> None:
    found = _names(
        db,
        """
        select n.nspname || '.' || p.proname || '(' || pg_get_function_identity_arguments(p.oid)
               || ')' as name
        from pg_proc p join pg_namespace n on n.oid = p.pronamespace
        where p.prosecdef and n.nspname = any (%s)
          and has_function_privilege(%s, p.oid, 'execute')
        """,
        (list(EXPOSED), role),
    )
    assert found == []


@pytest.mark.parametrize("role", ["anon", "authenticated"])
def test_no_function_of_tether_is_an_rpc_endpoint_for_the_public(db: Conn, role: str) -> None:
    # Stricter than the linter: not even the invoker-rights helpers are callable.
    found = _names(
        db,
        """
        select p.proname as name from pg_proc p join pg_namespace n on n.oid = p.pronamespace
        where n.nspname = 'public' and p.proname like 'tether%%'
          and has_function_privilege(%s, p.oid, 'execute')
        """,
        (role,),
    )
    assert found == []
