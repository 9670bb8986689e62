"""An unknown flag is reported with the usage of whatever it was given to."""

from __future__ import annotations

import pytest

from tether.cli import main


@pytest.mark.parametrize(
    ("argv", "blamed"),
    [
        (["sessions", "--bogus"], "tether sessions: error: unrecognized arguments: --bogus"),
        (["migrations", "path", "--bogus"], "tether migrations path: error: unrecognized"),
        (["--bogus", "sessions"], "tether: error: unrecognized arguments: --bogus"),
    ],
)
def test_an_unknown_flag_is_blamed_on_what_it_was_given_to(
    argv: list[str], blamed: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exited:
        main(argv)
    assert exited.value.code == 2
    assert blamed in capsys.readouterr().err
