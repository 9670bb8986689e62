"""The SQL API is a contract: the migrated functions match the committed snapshot."""

from __future__ import annotations

import psycopg

from tests import sql_contract
from tether import store


def test_migrated_functions_match_the_committed_snapshot(
    db: psycopg.Connection[dict[str, object]],
) -> None:
    with psycopg.connect(db.info.dsn) as conn:
        migrated = sql_contract.functions(conn)
    committed = sql_contract.committed()
    changed = sorted(set(committed) - set(migrated))
    added = sorted(set(migrated) - set(committed))
    assert not changed, (
        "a released tether_*_vN changed or disappeared: add a _vN+1 instead "
        f"(and update the snapshot with `make sql-contract`): {changed}"
    )
    assert not added, f"new functions: record them with `make sql-contract`: {added}"


def test_every_function_the_code_calls_is_in_the_contract() -> None:
    names = {line.split("(", 1)[0] for line in sql_contract.committed()}
    called = {
        value
        for name, value in vars(store).items()
        if name.isupper() and isinstance(value, str) and value.startswith("tether_")
    }
    assert called, "the store names the functions it calls as module constants"
    assert called <= names, f"called but not in the contract: {sorted(called - names)}"


def test_no_migration_defines_a_released_function_again() -> None:
    """The snapshot holds each function's arguments and result, not its body: a later
    migration's `create or replace function tether_x_v1(...)` of the same signature
    changed a released function and the suite still passed, though the README says
    changing one fails it."""
    import re  # noqa: PLC0415
    from collections import defaultdict  # noqa: PLC0415

    from tether import migrate  # noqa: PLC0415

    defined = re.compile(
        r"\bcreate\s+(?:or\s+replace\s+)?function\s+(?:\"?public\"?\.)?\"?(tether_\w+_v\d+)\b",
        re.IGNORECASE,
    )
    where: defaultdict[str, list[str]] = defaultdict(list)
    for migration in migrate.discover():
        for name in dict.fromkeys(defined.findall(migration.sql)):
            where[name.lower()].append(migration.filename)
    assert where, "the pattern finds the functions the migrations define"
    again = {name: files for name, files in where.items() if len(files) > 1}
    assert not again, f"released functions defined again (add a _vN+1 instead): {again}"
