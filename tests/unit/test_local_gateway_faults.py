"""`tether dev --fault-file`: the faults the file names, read again as it changes."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest

from tether.local import gateway
from tether.local.gateway import Faults


@pytest.fixture(autouse=True)
def _read_at_every_call(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(gateway, "FAULTS_REREAD_SECONDS", -1.0)


def _warnings(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.name == "tether.gateway" and r.levelname == "WARNING"]


def test_a_file_that_stops_naming_faults_keeps_those_read_before_and_says_so(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Changed by hand to something no fault is, the file read as no faults, silently:
    the run looked like a run under faults."""
    path = tmp_path / "faults.json"
    path.write_text(json.dumps({"connections_throttle": 1}))
    faults = Faults(path)
    assert faults.throttled()

    path.write_text('{"connections_throttle": 1')  # caught mid-rewrite: not yet said
    assert faults.throttled()
    assert _warnings(caplog) == []
    assert faults.throttled()  # still so on the next read: said, once
    assert faults.throttled()
    (said,) = _warnings(caplog)
    assert said.getMessage() == "the fault file names no faults now; the faults read before stay"
    assert said.__dict__["problem"].startswith(f"--fault-file {path}: not JSON")
    assert said.__dict__["faults"] == {"connections_throttle": 1}

    path.write_text(json.dumps({"connections_throtle": 0}))  # another reason: said again
    assert faults.throttled() and faults.throttled()
    assert "no fault named 'connections_throtle'" in _warnings(caplog)[-1].__dict__["problem"]
    assert len(_warnings(caplog)) == 2

    path.write_text(json.dumps({"connections_throttle": 0}))  # faults again: taken
    assert not faults.throttled()
    path.unlink()
    assert not faults.throttled() and not faults.throttled()
    assert "cannot be read: no such file or directory" in _warnings(caplog)[-1].__dict__["problem"]


def test_faults_read_again_are_taken_at_once(tmp_path: Path) -> None:
    path = tmp_path / "faults.json"
    path.write_text("{}")
    faults = Faults(path)
    assert not faults.throttled()
    path.write_text(json.dumps({"connections_throttle": 1.0}))
    assert faults.throttled()
