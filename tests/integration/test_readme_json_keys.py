"""The keys the README says a command's `--json` prints are the keys a real run prints:
a script written from the README must find every key it reads, and none undocumented."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from tests.conftest import SessionFactory
from tests.support import run_tether
from tether.admin.schemas import SweepSummary

ROOT = Path(__file__).resolve().parents[2]
KEY = re.compile(r"`([a-z_]+)`")


def _readme_keys(starts: str, ends: str) -> set[str]:
    """The keys the README names between ``starts`` and the next ``ends`` after it, the
    prose's line breaks read as spaces."""
    text = " ".join((ROOT / "README.md").read_text().split())
    begin = text.index(starts) + len(starts)
    return set(KEY.findall(text[begin : text.index(ends, begin)]))


def _printed(*args: str) -> set[str]:
    result = run_tether(*args)
    assert result.returncode == 0, result.stderr
    return set(json.loads(result.stdout))


@pytest.fixture
def sessions(make_session: SessionFactory) -> None:
    make_session(connection_id="orphan=", started_seconds_ago=3 * 86400)
    make_session(connection_id="live=", started_seconds_ago=5)


@pytest.mark.usefixtures("sessions")
def test_sweep_json_prints_the_keys_the_readme_names(database_url: str) -> None:
    documented = _readme_keys("`tether sweep --json` prints the run's report", "(`POST /sweep`")
    assert documented, "the README names no keys for tether sweep --json"
    printed = _printed("sweep", "--announce-to", "log", "--json", "--database-url", database_url)
    assert printed == documented

    # `POST /sweep` answers the same report: one name for each count, in both.
    assert set(SweepSummary.model_fields) == documented

    documented = _readme_keys("with `--dry-run`, the keys", ".")
    printed = _printed("sweep", "--dry-run", "--json", "--database-url", database_url)
    assert printed == documented


@pytest.mark.usefixtures("sessions")
def test_close_orphans_json_prints_the_keys_the_readme_names(database_url: str) -> None:
    documented = _readme_keys("`tether close-orphans --json` prints, with `--apply` or", ".")
    assert documented, "the README names no keys for tether close-orphans --json"
    common = ("close-orphans", "--older-than", "2h", "--announce-to", "log", "--json")
    assert _printed(*common, "--database-url", database_url) == documented
    applied = _printed(*common, "--apply", "--yes", "--database-url", database_url)
    assert applied == documented
    # Nothing left to end takes another path to its report: the same keys.
    assert _printed(*common, "--apply", "--yes", "--database-url", database_url) == documented
