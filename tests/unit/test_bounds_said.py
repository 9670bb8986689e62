"""The bound the README states for a vanished client and the one `tether dev` promises
an earlier run's sessions are one figure, worked out from the same settings."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from tether import limits
from tether.local import dev
from tether.settings import Settings

ROOT = Path(__file__).resolve().parents[2]


def _default(name: str) -> float:
    value = Settings.model_fields[name].default
    assert isinstance(value, float)
    return value


def _readme_seconds(row: str) -> float:
    """The bold figure of the README's row that begins so."""
    text = (ROOT / "README.md").read_text()
    [line] = [line for line in text.splitlines() if line.startswith(row)]
    [figure] = re.findall(r"\*\*(\d+) s\*\*", line)
    return float(figure)


def test_the_readme_states_the_bound_the_defaults_give() -> None:
    every = _default("sweep_check_every_seconds")
    gone = limits.gone_within_seconds(
        suspect_after=_default("suspect_after_seconds"),
        check_every=every,
        settle=_default("gone_settle_seconds"),
    )
    vanished = limits.vanished_within_seconds(
        suspect_after=_default("suspect_after_seconds"),
        check_every=every,
        settle=_default("gone_settle_seconds"),
        grace=_default("heartbeat_grace_seconds"),
    )
    assert _readme_seconds("| `$disconnect` lost, the gateway knows it is gone") == gone
    assert _readme_seconds("| client vanished, the gateway does not know") == vanished
    assert _readme_seconds("| no session stays active once its connection is gone") == vanished


def test_the_settle_time_adds_checks_only_past_one() -> None:
    # A second 410 a settle time after the first: the next check, unless it is longer.
    assert limits.gone_within_seconds(suspect_after=20, check_every=10, settle=5) == 40
    assert limits.gone_within_seconds(suspect_after=20, check_every=10, settle=0) == 30
    assert limits.gone_within_seconds(suspect_after=20, check_every=10, settle=25) == 60
    assert (
        limits.vanished_within_seconds(suspect_after=20, check_every=10, settle=5, grace=None) == 40
    )


def test_tether_dev_promises_an_earlier_runs_sessions_the_readmes_bound(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """It said "within about 45s" at the defaults, where the README says 40 s."""
    for name in ("TETHER_OPERATOR_KEY", "TETHER_OPERATOR_KEY_SECRET"):
        monkeypatch.delenv(name, raising=False)
    said: list[str] = []
    dev._banner(
        said.append,
        options=dev.DevOptions(),
        config=Settings(operator_key="k" * 32),
        url="postgresql://localhost/tether",
        database=None,
        applied=0,
        leftovers=2,
    )
    [line] = [line for line in said if "still marked active" in line]
    figure = re.search(r"within about (\d+)s", line)
    assert figure is not None, line
    assert float(figure.group(1)) == _readme_seconds("| `$disconnect` lost, the gateway knows")


def _g(seconds: float) -> str:
    return f"{seconds:g} s"


def test_the_readme_states_the_chaos_run_s_bound_with_its_slack() -> None:
    """The chaos run counts an end late only past its bound plus a slack for a check's
    own time and its own polling: the README says both, and what they add up to, rather
    than a bound the run does not hold ends to."""
    from tether.local import chaos  # noqa: PLC0415

    text = " ".join((ROOT / "README.md").read_text().split())
    bound, slack, poll = chaos.BOUND_SECONDS, chaos.SLACK_SECONDS, chaos.POLL_SECONDS
    assert (
        f"so that the bound is {_g(bound)}, for checks that take no time: what a check takes"
        f" comes on top. The run reads the table every {_g(poll)}"
    ) in text
    assert f"only past the bound plus {_g(slack)} of slack" in text
    assert f"it proves ends within {_g(bound + slack)}, not within {_g(bound)}" in text
    assert f"(bound {_g(bound)}, and the time of a check; late past {_g(bound + slack)})" in text
    assert f"so that the bound is {_g(bound)} plus the time a check takes" in text
    assert (
        f"by more than {_g(slack)} of slack: the run sees an end by reading the table"
        f" every {_g(poll)}"
    ) in text
