"""Dropping a column drops or refuses what depends on it. When adoption replaces a
column (the numeric duration at --apply, the generated columns at --finish), it
saves each dependent's definition first and recreates it afterwards, in the same
transaction: views (with their options, owner, grants, comments, columns' defaults,
triggers and rules, and the views built on them), indexes, check constraints, triggers,
policies, and the privileges granted on the column itself. What it cannot
recreate faithfully it refuses to touch, by name, before changing anything."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from psycopg import sql

from tether.adopt.catalog import (
    COLUMN_PRIVILEGE,
    FUNCTION_SOURCE,
    ColumnPrivilege,
    Dependent,
    column_privileges,
    dependents,
    quoted,
    trusted,
)

if TYPE_CHECKING:
    import psycopg

RECREATED_KINDS = frozenset({"view", "index", "constraint", "policy", "trigger", COLUMN_PRIVILEGE})
REFUSED_HOW = {
    "materialized view": "recreating it would run its query under the table's lock",
    "key constraint": "a key on a column that is replaced cannot be rebuilt without a scan",
    "function": "its SQL-standard body is bound to the column",
    "generated column": "it is computed from the column",
    "statistics": "extended statistics are bound to the column",
    "publication": "a publication's column list or row filter (where) names the column",
    "rule": "adoption recreates the rules of views only",
    "policy of another table": "adoption recreates the policies of the table only",
}


@dataclass
class SavedView:
    oid: int
    schema: str
    name: str
    qualified: str
    """schema.name, quoted as SQL needs it, as every other dependent is named."""
    definition: str
    options: list[str]
    owner: str
    comment: str | None
    column_comments: dict[str, str]
    grants: list[tuple[str | None, str, bool]]
    """(grantee, privilege, grantable); grantee None is PUBLIC."""
    column_grants: list[ColumnPrivilege]
    column_defaults: dict[str, str]
    """alter view ... alter column ... set default: what an insert through it uses."""
    triggers: list[tuple[str, str, str | None]]
    """(name, definition, comment). Postgres disables no trigger of a view."""
    rules: list[tuple[str, str, str | None]]
    """(name, definition, comment): its rules other than the query itself (an INSTEAD
    rule making it writable): dropping the view drops them. Postgres disables no rule of
    a view."""
    depends_on: set[int] = field(default_factory=set)
    """The views to recreate its query reads (not its rules: a rule may read a view
    built on this one, created after it)."""


@dataclass
class Saved:
    """The definitions of what depends on the columns being replaced."""

    views: list[SavedView] = field(default_factory=list)
    indexes: list[tuple[str, str]] = field(default_factory=list)
    constraints: list[tuple[str, str, bool]] = field(default_factory=list)
    """(name, definition, pg_constraint.convalidated): one the team left NOT VALID stays
    so (its definition says NOT VALID)."""
    triggers: list[tuple[str, str, str]] = field(default_factory=list)
    """(name, definition, pg_trigger.tgenabled): created again enabled as it was."""
    policies: list[tuple[str, sql.Composed]] = field(default_factory=list)
    privileges: list[ColumnPrivilege] = field(default_factory=list)
    comments: list[sql.Composed] = field(default_factory=list)
    """``comment on`` each saved index, constraint, trigger and policy that had one."""
    found: list[Dependent] = field(default_factory=list)

    def refused(self) -> list[Dependent]:
        return [d for d in self.found if d.kind not in RECREATED_KINDS]


def refusal(dependent: Dependent) -> str:
    why = REFUSED_HOW.get(dependent.kind, "adoption cannot recreate it")
    return (
        f"{dependent.kind} {dependent.name} depends on {', '.join(dependent.columns)}: {why}."
        " Drop it, run the command again, then create it again"
    )


def tracked(
    conn: psycopg.Connection[tuple[Any, ...]], oid: int, columns: list[str]
) -> list[Dependent]:
    """What the catalog tracks as depending on the columns."""
    return [d for d in dependents(conn, oid, columns) if d.kind != FUNCTION_SOURCE]


def _attnums(conn: psycopg.Connection[tuple[Any, ...]], oid: int, columns: list[str]) -> list[int]:
    """The column numbers of ``columns`` of the table ``oid``."""
    return [
        int(r[0])
        for r in conn.execute(
            "select attnum from pg_catalog.pg_attribute where attrelid = %s and attname = any (%s)",
            (oid, columns),
        ).fetchall()
    ]


def save(conn: psycopg.Connection[tuple[Any, ...]], oid: int, columns: list[str]) -> Saved:
    saved = Saved(found=tracked(conn, oid, columns))
    saved.privileges = column_privileges(conn, oid, columns)
    saved.found += [privilege.dependent() for privilege in saved.privileges]
    names = {(d.kind, d.name) for d in saved.found}
    column_attnums = _attnums(conn, oid, columns)
    for name, definition in conn.execute(
        "select c.relname, pg_get_indexdef(i.indexrelid) from pg_catalog.pg_index i"
        " join pg_catalog.pg_class c on c.oid = i.indexrelid"
        " where i.indrelid = %s and not exists (select 1 from pg_catalog.pg_constraint k"
        "   where k.conindid = i.indexrelid and k.conrelid = i.indrelid)",
        (oid,),
    ).fetchall():
        if ("index", str(name)) in names:
            saved.indexes.append((str(name), str(definition)))
    for name, definition, validated in conn.execute(
        "select conname, pg_get_constraintdef(oid), convalidated from pg_catalog.pg_constraint"
        " where conrelid = %s and contype = 'c'",
        (oid,),
    ).fetchall():
        if ("constraint", str(name)) in names:
            saved.constraints.append((str(name), str(definition), bool(validated)))
    for name, definition, enabled in conn.execute(
        "select tgname, pg_get_triggerdef(oid), tgenabled::text from pg_catalog.pg_trigger"
        " where tgrelid = %s and not tgisinternal",
        (oid,),
    ).fetchall():
        if ("trigger", str(name)) in names:
            saved.triggers.append((str(name), str(definition), str(enabled)))
    for name, statement in _policies(conn, oid):
        if ("policy", name) in names:
            saved.policies.append((name, statement))
    saved.comments = _comments(conn, oid, saved)
    saved.views = _views(conn, oid, column_attnums)
    return saved


_COMMENTS = """
select 'index', c.relname, pg_catalog.obj_description(c.oid, 'pg_class')
from pg_catalog.pg_index i join pg_catalog.pg_class c on c.oid = i.indexrelid
where i.indrelid = %(oid)s
union all
select 'constraint', conname, pg_catalog.obj_description(oid, 'pg_constraint')
from pg_catalog.pg_constraint where conrelid = %(oid)s
union all
select 'trigger', tgname, pg_catalog.obj_description(oid, 'pg_trigger')
from pg_catalog.pg_trigger where tgrelid = %(oid)s and not tgisinternal
union all
select 'policy', polname, pg_catalog.obj_description(oid, 'pg_policy')
from pg_catalog.pg_policy where polrelid = %(oid)s
"""

_COMMENT_ON = {
    "index": "comment on index public.{} is {}",
    "constraint": "comment on constraint {} on public.conversation_sessions is {}",
    "trigger": "comment on trigger {} on public.conversation_sessions is {}",
    "policy": "comment on policy {} on public.conversation_sessions is {}",
}


def _comments(
    conn: psycopg.Connection[tuple[Any, ...]], oid: int, saved: Saved
) -> list[sql.Composed]:
    """The comments of what ``saved`` recreates on the table: dropping it drops them."""
    kept = {("index", name) for name, _ in saved.indexes}
    kept |= {("constraint", name) for name, _, _ in saved.constraints}
    kept |= {("trigger", name) for name, _, _ in saved.triggers}
    kept |= {("policy", name) for name, _ in saved.policies}
    return [
        sql.SQL(_COMMENT_ON[str(kind)]).format(sql.Identifier(str(name)), str(text))
        for kind, name, text in conn.execute(_COMMENTS, {"oid": oid}).fetchall()
        if text is not None and (str(kind), str(name)) in kept
    ]


def _policies(
    conn: psycopg.Connection[tuple[Any, ...]], oid: int
) -> list[tuple[str, sql.Composed]]:
    commands = {"r": "select", "a": "insert", "w": "update", "d": "delete", "*": "all"}
    found: list[tuple[str, sql.Composed]] = []
    for name, command, permissive, roles, qual, check in conn.execute(
        "select p.polname, p.polcmd, p.polpermissive,"
        " array(select case when r = 0 then null else pg_get_userbyid(r) end"
        "       from unnest(p.polroles) r),"
        " pg_get_expr(p.polqual, p.polrelid), pg_get_expr(p.polwithcheck, p.polrelid)"
        " from pg_catalog.pg_policy p where p.polrelid = %s",
        (oid,),
    ).fetchall():
        roles_sql = sql.SQL(", ").join(
            sql.SQL("public") if role is None else sql.Identifier(role) for role in roles
        )
        parts: list[sql.Composable] = [
            sql.SQL("create policy {} on public.conversation_sessions as {} for {} to {}").format(
                sql.Identifier(str(name)),
                sql.SQL("permissive" if permissive else "restrictive"),
                sql.SQL(commands[str(command)]),
                roles_sql,
            )
        ]
        if qual is not None:
            parts.append(sql.SQL("using ({})").format(trusted(str(qual))))
        if check is not None:
            parts.append(sql.SQL("with check ({})").format(trusted(str(check))))
        found.append((str(name), sql.SQL(" ").join(parts)))
    return found


_VIEWS = """
with recursive found (oid) as (
  select r.ev_class
  from pg_catalog.pg_depend d
  join pg_catalog.pg_rewrite r on r.oid = d.objid
  -- A rule of a table (not a view) is refused by name, not followed.
  join pg_catalog.pg_class v on v.oid = r.ev_class and v.relkind in ('v', 'm')
  where d.classid = 'pg_catalog.pg_rewrite'::regclass
    and d.refclassid = 'pg_catalog.pg_class'::regclass
    and d.refobjid = %(oid)s and d.refobjsubid = any (%(attnums)s)
    and r.ev_class <> %(oid)s
  union
  select r.ev_class
  from found f
  join pg_catalog.pg_depend d on d.refobjid = f.oid
   and d.refclassid = 'pg_catalog.pg_class'::regclass
   and d.classid = 'pg_catalog.pg_rewrite'::regclass
  join pg_catalog.pg_rewrite r on r.oid = d.objid
  join pg_catalog.pg_class v on v.oid = r.ev_class and v.relkind in ('v', 'm')
  where r.ev_class <> f.oid
)
select c.oid, n.nspname, c.relname,
       quote_ident(n.nspname) || '.' || quote_ident(c.relname), c.relkind, pg_get_viewdef(c.oid),
       coalesce(c.reloptions, '{}'), pg_get_userbyid(c.relowner),
       obj_description(c.oid, 'pg_class')
from (select distinct oid from found) f
join pg_catalog.pg_class c on c.oid = f.oid
join pg_catalog.pg_namespace n on n.oid = c.relnamespace
"""


def _views(
    conn: psycopg.Connection[tuple[Any, ...]], oid: int, attnums: list[int]
) -> list[SavedView]:
    views: dict[int, SavedView] = {}
    for (
        view_oid,
        schema,
        name,
        qualified,
        relkind,
        definition,
        options,
        owner,
        comment,
    ) in conn.execute(_VIEWS, {"oid": oid, "attnums": attnums}).fetchall():
        if relkind != "v":
            # A materialized view is refused by name (save().refused()); one built on a
            # view that is recreated would be dropped with it: refused the same way.
            continue
        saved = SavedView(
            oid=int(view_oid),
            schema=str(schema),
            name=str(name),
            qualified=str(qualified),
            definition=str(definition).strip().rstrip(";"),
            options=[str(o) for o in options],
            owner=str(owner),
            comment=comment,
            column_comments={
                str(col): str(text)
                for col, text in conn.execute(
                    "select a.attname, d.description from pg_catalog.pg_description d"
                    " join pg_catalog.pg_attribute a on a.attrelid = d.objoid"
                    "  and a.attnum = d.objsubid"
                    " where d.objoid = %s and d.classoid = 'pg_catalog.pg_class'::regclass"
                    "  and d.objsubid > 0",
                    (view_oid,),
                ).fetchall()
            },
            grants=[
                (grantee, str(privilege), bool(grantable))
                for grantee, privilege, grantable in conn.execute(
                    "select case when a.grantee = 0 then null"
                    " else pg_get_userbyid(a.grantee) end, a.privilege_type, a.is_grantable"
                    " from pg_catalog.pg_class c cross join lateral aclexplode(c.relacl) a"
                    " where c.oid = %s",
                    (view_oid,),
                ).fetchall()
            ],
            column_grants=column_privileges(conn, int(view_oid), None),
            column_defaults={
                str(col): str(default)
                for col, default in conn.execute(
                    "select a.attname, pg_catalog.pg_get_expr(d.adbin, d.adrelid)"
                    " from pg_catalog.pg_attrdef d join pg_catalog.pg_attribute a"
                    "  on a.attrelid = d.adrelid and a.attnum = d.adnum"
                    " where d.adrelid = %s order by a.attnum",
                    (view_oid,),
                ).fetchall()
            },
            triggers=[
                (str(r[0]), str(r[1]), r[2])
                for r in conn.execute(
                    "select tgname, pg_get_triggerdef(oid), obj_description(oid, 'pg_trigger')"
                    " from pg_catalog.pg_trigger"
                    " where tgrelid = %s and not tgisinternal order by tgname",
                    (view_oid,),
                ).fetchall()
            ],
            rules=[
                (str(r[0]), str(r[1]).strip().rstrip(";"), r[2])
                for r in conn.execute(
                    "select rulename, pg_get_ruledef(oid), obj_description(oid, 'pg_rewrite')"
                    " from pg_catalog.pg_rewrite"
                    " where ev_class = %s and rulename <> '_RETURN' order by rulename",
                    (view_oid,),
                ).fetchall()
            ],
        )
        views[saved.oid] = saved
    # The order of creation follows the views' queries (their _RETURN rules), which
    # cannot read each other in a cycle; their other rules are created after them all.
    for view_oid, used in conn.execute(
        "select distinct r.ev_class, d.refobjid from pg_catalog.pg_depend d"
        " join pg_catalog.pg_rewrite r on r.oid = d.objid and r.rulename = '_RETURN'"
        " where d.classid = 'pg_catalog.pg_rewrite'::regclass"
        " and d.refclassid = 'pg_catalog.pg_class'::regclass"
        " and r.ev_class = any (%s) and d.refobjid = any (%s) and d.refobjid <> r.ev_class",
        (list(views), list(views)),
    ).fetchall():
        views[int(view_oid)].depends_on.add(int(used))
    ordered: list[SavedView] = []
    placed: set[int] = set()
    while len(ordered) < len(views):
        ready = sorted(
            (v for v in views.values() if v.oid not in placed and v.depends_on <= placed),
            key=lambda v: (v.schema, v.name),
        )
        if not ready:  # pragma: no cover - no view's query reads itself, however far
            raise AssertionError("views' queries read each other in a cycle")
        for view in ready:
            ordered.append(view)
            placed.add(view.oid)
    return ordered


ROW_TYPE_USER = "row type user"
"""What uses a view's row type (a function returning setof it, a column of its type)."""

_BUILT_ON_VIEWS = """
select distinct
       case c.relkind when 'm' then 'materialized view' else 'rule' end,
       case when c.relkind = 'm' then ''
            else quote_ident(r.rulename) || ' on ' end
       || quote_ident(n.nspname) || '.' || quote_ident(c.relname),
       quote_ident(vn.nspname) || '.' || quote_ident(v.relname)
from pg_catalog.pg_depend d
join pg_catalog.pg_rewrite r on r.oid = d.objid
join pg_catalog.pg_class c on c.oid = r.ev_class
join pg_catalog.pg_namespace n on n.oid = c.relnamespace
join pg_catalog.pg_class v on v.oid = d.refobjid
join pg_catalog.pg_namespace vn on vn.oid = v.relnamespace
where d.classid = 'pg_catalog.pg_rewrite'::regclass
  and d.refclassid = 'pg_catalog.pg_class'::regclass
  and d.refobjid = any (%(views)s) and c.relkind <> 'v'
union
select distinct %(row_type_user)s,
       -- Named with its schema, whatever the search_path sees.
       case when d.classid = 'pg_catalog.pg_proc'::regclass then
              (select 'function ' || quote_ident(pn.nspname) || '.' || quote_ident(p.proname)
                      || '(' || pg_catalog.pg_get_function_identity_arguments(p.oid) || ')'
               from pg_catalog.pg_proc p
               join pg_catalog.pg_namespace pn on pn.oid = p.pronamespace
               where p.oid = d.objid)
            when d.classid = 'pg_catalog.pg_class'::regclass and d.objsubid > 0 then
              (select 'column ' || quote_ident(a.attname) || ' of '
                      || quote_ident(tn.nspname) || '.' || quote_ident(t.relname)
               from pg_catalog.pg_class t
               join pg_catalog.pg_namespace tn on tn.oid = t.relnamespace
               join pg_catalog.pg_attribute a on a.attrelid = t.oid and a.attnum = d.objsubid
               where t.oid = d.objid)
            else pg_catalog.pg_describe_object(d.classid, d.objid, d.objsubid) end,
       quote_ident(vn.nspname) || '.' || quote_ident(v.relname)
from pg_catalog.pg_depend d
-- Its row type, or an array of it (a function taking view[]).
join pg_catalog.pg_class v
  on d.refobjid in (v.reltype,
                    (select t.typarray from pg_catalog.pg_type t where t.oid = v.reltype))
join pg_catalog.pg_namespace vn on vn.oid = v.relnamespace
where d.refclassid = 'pg_catalog.pg_type'::regclass and d.deptype = 'n'
  and d.classid <> 'pg_catalog.pg_rewrite'::regclass
  and v.oid = any (%(views)s)
union
-- What reads the view itself: another table's row security policy, a function whose
-- SQL-standard body (begin atomic) names it.
select distinct
       case when d.classid <> 'pg_catalog.pg_policy'::regclass then 'function'
            when (select p.polrelid from pg_catalog.pg_policy p where p.oid = d.objid)
                 = 'public.conversation_sessions'::regclass then 'policy'
            else 'policy of another table' end,
       case when d.classid = 'pg_catalog.pg_policy'::regclass then
              (select quote_ident(p.polname) || ' on ' || quote_ident(tn.nspname) || '.'
                      || quote_ident(t.relname)
               from pg_catalog.pg_policy p
               join pg_catalog.pg_class t on t.oid = p.polrelid
               join pg_catalog.pg_namespace tn on tn.oid = t.relnamespace
               where p.oid = d.objid)
            else
              (select quote_ident(pn.nspname) || '.' || quote_ident(p.proname)
                      || '(' || pg_catalog.pg_get_function_identity_arguments(p.oid) || ')'
               from pg_catalog.pg_proc p
               join pg_catalog.pg_namespace pn on pn.oid = p.pronamespace
               where p.oid = d.objid) end,
       quote_ident(vn.nspname) || '.' || quote_ident(v.relname)
from pg_catalog.pg_depend d
join pg_catalog.pg_class v on v.oid = d.refobjid
join pg_catalog.pg_namespace vn on vn.oid = v.relnamespace
where d.refclassid = 'pg_catalog.pg_class'::regclass
  and d.classid in ('pg_catalog.pg_policy'::regclass, 'pg_catalog.pg_proc'::regclass)
  and v.oid = any (%(views)s)
order by 1, 2, 3
"""


def built_on_views(
    conn: psycopg.Connection[tuple[Any, ...]], views: list[SavedView]
) -> list[Dependent]:
    """What stands on a view to recreate and is not recreated with it: a materialized
    view or another table's rule reading it, and what uses its row type (a function
    returning setof it, a column of its type). Postgres drops no view while they stand.
    Each one's ``columns`` is the view it stands on."""
    if not views:
        return []
    return [
        Dependent(str(kind), str(name), (str(view),))
        for kind, name, view in conn.execute(
            _BUILT_ON_VIEWS, {"views": [v.oid for v in views], "row_type_user": ROW_TYPE_USER}
        ).fetchall()
    ]


def built_on_refusal(dependent: Dependent, command: str) -> str:
    what = (
        dependent.name if dependent.kind == ROW_TYPE_USER else f"{dependent.kind} {dependent.name}"
    )
    how = "uses the row type of" if dependent.kind == ROW_TYPE_USER else "is built on"
    return (
        f"{what} {how} view {dependent.columns[0]}, which {command} drops and creates again"
        " around the columns it replaces, and Postgres drops no view while something uses it."
        " Drop it, run the command again, then create it again"
    )


def view_refusals(
    conn: psycopg.Connection[tuple[Any, ...]], oid: int, columns: list[str], command: str
) -> list[str]:
    """What stands on the views ``command`` would recreate around ``columns``: refused
    before anything changes, not halfway through a step."""
    attnums = _attnums(conn, oid, columns)
    return [built_on_refusal(d, command) for d in built_on_views(conn, _views(conn, oid, attnums))]


_NEW_COLUMN = r'\bnew\.("?)({})\1(?![\w$])'
"""NEW.column in a trigger's WHEN, as pg_get_triggerdef writes it (quoted where needed)."""


def generated_when_refusals(
    conn: psycopg.Connection[tuple[Any, ...]], oid: int, columns: list[str], skip: str
) -> list[str]:
    """BEFORE row triggers whose WHEN reads NEW of a column --finish makes generated:
    Postgres refuses to create such a trigger, so --finish could not give it back."""
    if not columns:
        return []
    new_column = re.compile(
        _NEW_COLUMN.format("|".join(re.escape(c) for c in columns)), re.IGNORECASE
    )
    refusals: list[str] = []
    for name, definition in conn.execute(
        "select tgname, pg_catalog.pg_get_triggerdef(oid) from pg_catalog.pg_trigger"
        " where tgrelid = %s and not tgisinternal and tgqual is not null"
        # tgtype: 1 a row trigger, 2 a BEFORE one.
        "   and tgtype & 3 = 3 and tgname <> %s order by tgname",
        (oid, skip),
    ).fetchall():
        when = str(definition).split(" WHEN ", 1)[-1].split(" EXECUTE ", 1)[0]
        found = sorted({m.group(2).lower() for m in new_column.finditer(when)})
        if found:
            refusals.append(
                f"trigger {quoted(str(name))} fires BEFORE each row WHEN on"
                f" {', '.join('NEW.' + c for c in found)}, which --finish makes generated,"
                " and Postgres allows no such condition on a generated column: test it in"
                " the trigger's function instead, or make it an AFTER trigger (drop it,"
                " create it again so), then run the command again"
            )
    return refusals


def owner_refusals(
    conn: psycopg.Connection[tuple[Any, ...]], oid: int, columns: list[str], command: str
) -> list[str]:
    """The views ``command`` would recreate around ``columns`` that the role connected
    cannot give back to their owner (``alter view ... owner to`` needs it to be able to
    act as that role): refused before anything changes, not halfway through a step."""
    attnums = _attnums(conn, oid, columns)
    views = _views(conn, oid, attnums)
    if not views:
        return []
    # Dropping the view takes its owner's privileges (inherited: USAGE); giving it back,
    # being able to act as the owner (SET since Postgres 16; before it, membership).
    sixteen = conn.info.server_version >= 160000
    role, inherits, out_of_reach = conn.execute(
        "select current_user::text, (select rolinherit from pg_catalog.pg_roles"
        "  where rolname = current_user), coalesce(array_agg(r.rolname::text"
        "  order by r.rolname) filter (where not (pg_catalog.pg_has_role(current_user,"
        "  r.oid, 'USAGE') and pg_catalog.pg_has_role(current_user, r.oid, %s))), '{}')"
        " from pg_catalog.pg_roles r where r.rolname = any (%s)",
        ("SET" if sixteen else "MEMBER", sorted({v.owner for v in views})),
    ).fetchone() or ("", True, [])
    return [
        f"view {view.qualified} is owned by {view.owner}, which the role {role} cannot act"
        f" as, and {command} drops it and creates it again around {', '.join(columns)}:"
        f" first let it, with {_grant_owner(view.owner, role, sixteen, bool(inherits))}"
        f" (run as a superuser, or a role that administers {view.owner}), or give it the"
        f" view: alter view {view.qualified} owner to {quoted(role)}"
        for view in views
        if view.owner in out_of_reach
    ]


def _grant_owner(owner: str, role: str, sixteen: bool, inherits: bool) -> str:
    """The statement(s) that let ``role`` drop ``owner``'s view and give it back."""
    grant = f"grant {quoted(owner)} to {quoted(role)}"
    if sixteen:
        # Each grant has its own INHERIT and SET (INHERIT as the member's rolinherit,
        # unless told); said so, it also mends an existing grant that lacks one.
        return f"{grant} with inherit true, set true"
    # Before 16, a role without INHERIT uses no membership's privileges.
    return grant if inherits else f"{grant}; alter role {quoted(role)} inherit"


def drop(conn: psycopg.Connection[tuple[Any, ...]], saved: Saved) -> None:
    """Drop what was saved (inside the caller's transaction, under its lock): the views'
    rules first, which may read another of the views."""
    for view in saved.views:
        for name, _, _ in view.rules:
            conn.execute(
                sql.SQL("drop rule {} on {}").format(
                    sql.Identifier(name), sql.Identifier(view.schema, view.name)
                )
            )
    for view in reversed(saved.views):
        conn.execute(sql.SQL("drop view {}").format(sql.Identifier(view.schema, view.name)))
    for name, _ in saved.policies:
        conn.execute(
            sql.SQL("drop policy {} on public.conversation_sessions").format(sql.Identifier(name))
        )
    for name, _, _ in saved.triggers:
        conn.execute(
            sql.SQL("drop trigger {} on public.conversation_sessions").format(sql.Identifier(name))
        )
    for name, _, _ in saved.constraints:
        conn.execute(
            sql.SQL("alter table public.conversation_sessions drop constraint {}").format(
                sql.Identifier(name)
            )
        )
    for name, _ in saved.indexes:
        conn.execute(sql.SQL("drop index public.{}").format(sql.Identifier(name)))


def recreate(
    conn: psycopg.Connection[tuple[Any, ...]], saved: Saved, *, constraints_not_valid: bool
) -> list[str]:
    """Create again what was saved, in order. Returns the constraints added NOT VALID
    (to validate after the transaction, under a lock that lets writes through): with
    ``constraints_not_valid``, those that were validated; one the team left NOT VALID is
    created so again, and left so."""
    for _, definition in saved.indexes:
        conn.execute(trusted(definition))
    to_validate: list[str] = []
    for name, definition, validated in saved.constraints:
        deferred = constraints_not_valid and validated
        conn.execute(
            sql.SQL("alter table public.conversation_sessions add constraint {} {}{}").format(
                sql.Identifier(name),
                trusted(definition),
                sql.SQL(" not valid" if deferred else ""),
            )
        )
        if deferred:
            to_validate.append(name)
    for name, definition, enabled in saved.triggers:
        conn.execute(trusted(definition))
        # pg_get_triggerdef leaves out whether it fires: a trigger the team disabled (or
        # set to fire on replicas) is created again as it was, not enabled.
        if enabled in _TRIGGER_FIRING:
            conn.execute(
                sql.SQL("alter table public.conversation_sessions {} trigger {}").format(
                    sql.SQL(_TRIGGER_FIRING[enabled]), sql.Identifier(name)
                )
            )
    for _, statement in saved.policies:
        conn.execute(statement)
    for view in saved.views:
        _recreate_view(conn, view)
    for view in saved.views:
        _recreate_rules(conn, view)
    for statement in saved.comments:
        conn.execute(statement)
    table = sql.Identifier("public", "conversation_sessions")
    for granted in saved.privileges:
        _grant(
            conn,
            granted.privilege,
            table,
            granted.grantee,
            granted.grantable,
            column=granted.column,
        )
    return to_validate


_TRIGGER_FIRING = {"D": "disable", "R": "enable replica", "A": "enable always"}
"""pg_trigger.tgenabled other than 'O' (fires in the default replication role) -> the
ALTER TABLE that sets it."""


def _grant(
    conn: psycopg.Connection[tuple[Any, ...]],
    privilege: str,
    target: sql.Composable,
    grantee: str | None,
    grantable: bool,
    *,
    column: str | None = None,
) -> None:
    """``grant PRIVILEGE [(COLUMN)] on TARGET to GRANTEE [with grant option]``; grantee
    None is PUBLIC."""
    conn.execute(
        sql.SQL("grant {}{} on {} to {}{}").format(
            trusted(privilege),
            sql.SQL(" ({})").format(sql.Identifier(column)) if column else sql.SQL(""),
            target,
            sql.SQL("public") if grantee is None else sql.Identifier(grantee),
            sql.SQL(" with grant option" if grantable else ""),
        )
    )


def _recreate_view(conn: psycopg.Connection[tuple[Any, ...]], view: SavedView) -> None:
    """The view as it was: options, owner, comments, privileges (its columns' too), its
    columns' defaults and triggers (with their comments). Its rules come after every
    view (``_recreate_rules``)."""
    target = sql.Identifier(view.schema, view.name)
    options = (
        sql.SQL(" with ({})").format(sql.SQL(", ").join(trusted(o) for o in view.options))
        if view.options
        else sql.SQL("")
    )
    conn.execute(
        sql.SQL("create view {}{} as {}").format(target, options, trusted(view.definition))
    )
    conn.execute(sql.SQL("alter view {} owner to {}").format(target, sql.Identifier(view.owner)))
    if view.comment is not None:
        conn.execute(sql.SQL("comment on view {} is {}").format(target, view.comment))
    for column, text in view.column_comments.items():
        conn.execute(
            sql.SQL("comment on column {} is {}").format(
                sql.Identifier(view.schema, view.name, column), text
            )
        )
    if view.grants:
        # The saved privileges exactly: take back what creation gave, give what was.
        conn.execute(sql.SQL("revoke all on {} from {}").format(target, sql.Identifier(view.owner)))
        for grantee, privilege, grantable in view.grants:
            _grant(conn, privilege, target, grantee, grantable)
    for granted in view.column_grants:
        _grant(
            conn,
            granted.privilege,
            target,
            granted.grantee,
            granted.grantable,
            column=granted.column,
        )
    for column, default in view.column_defaults.items():
        conn.execute(
            sql.SQL("alter view {} alter column {} set default {}").format(
                target, sql.Identifier(column), trusted(default)
            )
        )
    for name, definition, comment in view.triggers:
        conn.execute(trusted(definition))
        if comment is not None:
            conn.execute(
                sql.SQL("comment on trigger {} on {} is {}").format(
                    sql.Identifier(name), target, comment
                )
            )


def _recreate_rules(conn: psycopg.Connection[tuple[Any, ...]], view: SavedView) -> None:
    """The view's rules (with their comments), once every view they may read exists."""
    target = sql.Identifier(view.schema, view.name)
    for name, definition, comment in view.rules:
        conn.execute(trusted(definition))
        if comment is not None:
            conn.execute(
                sql.SQL("comment on rule {} on {} is {}").format(
                    sql.Identifier(name), target, comment
                )
            )
