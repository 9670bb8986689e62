"""One `tether adopt` changes a table at a time: --finish, like --apply, waits for no
other and says so, rather than act beside one or misread what it is doing."""

from __future__ import annotations

import json
import signal
import subprocess

import psycopg

from tests.origin_fixture import build_origin, fill_history
from tests.support import TETHER, run_tether
from tether.adopt import lock as adopt_lock
from tether.adopt.lock import ADOPT_LOCK_KEY


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


def test_migrate_while_an_apply_runs_says_it_runs_not_that_it_stopped(
    empty_database_url: str,
) -> None:
    """tether migrate beside an --apply under way said the adoption had stopped and to
    resume it with --apply, which would be refused: one is running."""
    url = empty_database_url
    build_origin(url)
    fill_history(url, 20_000)
    applying = subprocess.Popen(  # noqa: S603 - our own console script
        [TETHER, "adopt", "--apply", "--yes", "--batch-size", "100", "--database-url", url],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert applying.stdout is not None
        for line in applying.stdout:
            if line.startswith("backfill ..."):
                break
        refused = run_tether("migrate", "--database-url", url)
        assert applying.poll() is None, "the --apply ended before migrate asked"
    finally:
        if applying.poll() is None:
            applying.send_signal(signal.SIGTERM)
        applying.communicate(timeout=120)
    assert refused.returncode == 1, refused.stdout
    assert "a `tether adopt --apply` is running on this database" in refused.stderr
    assert "stopped" not in refused.stderr


def test_an_adopt_running_on_another_database_of_the_server_is_not_this_one_s(
    empty_database_url: str, database_url: str
) -> None:
    """Advisory locks are per database: an adoption running on another database of the
    same server was read as one running on this one (tether migrate and --finish said so)."""
    with (
        psycopg.connect(empty_database_url, autocommit=True) as here,
        psycopg.connect(database_url, autocommit=True) as elsewhere,
    ):
        elsewhere.execute("select pg_advisory_lock(%s)", (ADOPT_LOCK_KEY,))
        assert not adopt_lock.held_by_another(here)
        assert adopt_lock.held_by_another(elsewhere) is False  # its own, not another's
        with psycopg.connect(empty_database_url, autocommit=True) as running:
            running.execute("select pg_advisory_lock(%s)", (ADOPT_LOCK_KEY,))
            assert adopt_lock.held_by_another(here)
