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
