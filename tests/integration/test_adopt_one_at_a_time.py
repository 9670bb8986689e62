"""One `tether adopt` changes a table at a time: --finish, like --apply, waits for no
other and says so, rather than act beside one or misread what it is doing."""

from __future__ import annotations

import json

import psycopg

from tests.origin_fixture import build_origin
from tests.support import run_tether
from tether.adopt.apply import ADOPT_LOCK_KEY


def test_finish_while_another_adopt_runs_says_so_and_changes_nothing(
    empty_database_url: str,
) -> None:
    """--finish beside an --apply under way said the adoption had stopped part way and
    to resume it, which the --apply then refused; beside an --apply run again on an
    adopted table (after an upgrade, bringing the trigger to the new version's
    reading), it rewrote the table while the other put the trigger back."""
    url = empty_database_url
    build_origin(url)
    applied = run_tether("adopt", "--apply", "--yes", "--database-url", url)
    assert applied.returncode == 0, applied.stderr
    with psycopg.connect(url, autocommit=True) as running:
        # Held as a running `tether adopt --apply` holds it.
        running.execute("select pg_advisory_lock(%s)", (ADOPT_LOCK_KEY,))
        refused = run_tether("adopt", "--finish", "--yes", "--database-url", url)
    assert refused.returncode == 1, refused.stdout
    assert "another tether adopt is running on this database" in refused.stderr
    assert "stopped part way" not in refused.stderr
    checked = run_tether("adopt", "--check", "--json", "--database-url", url)
    assert json.loads(checked.stdout)["state"] == "adopted, transitional"
    # Once it has ended, --finish goes ahead.
    finished = run_tether("adopt", "--finish", "--yes", "--database-url", url)
    assert finished.returncode == 0, finished.stderr
