"""The README's command synopses name only flags the commands take: one that drifted
would send a newcomer to an error."""

from __future__ import annotations

import argparse
import re
from pathlib import Path

import pytest

from tether.cli import build_parser

ROOT = Path(__file__).resolve().parents[2]
FENCE = re.compile(r"^```sh\n(.*?)^```", re.MULTILINE | re.DOTALL)
COMMAND = re.compile(r"^tether ((?:migrations )?[a-z-]+)")
FLAG = re.compile(r"(?<![\w-])(--[a-z][a-z-]*)")


def _synopses() -> list[tuple[str, str]]:
    """Each command a synopsis in a ```sh block names, and the flags it gives it (its
    continuation lines are indented; a comment after `#` is prose)."""
    found: list[tuple[str, str]] = []
    for block in FENCE.findall((ROOT / "README.md").read_text()):
        command = None
        for line in block.splitlines():
            text = line.split("#", 1)[0]
            started = COMMAND.match(text)
            if started:
                command = started.group(1)
            elif not line.startswith(" ") or command is None:
                command = None
                continue
            found.extend((command, flag) for flag in FLAG.findall(text))
    return found


def _subcommand(parser: argparse.ArgumentParser, words: list[str]) -> argparse.ArgumentParser:
    for word in words:
        (action,) = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
        parser = action.choices[word]
    return parser


SYNOPSES = _synopses()


def test_the_readme_gives_synopses_to_check() -> None:
    commands = {command for command, _ in SYNOPSES}
    assert {"dev", "sweep", "kick", "migrate", "deploy", "adopt"} <= commands


@pytest.mark.parametrize(("command", "flag"), sorted(set(SYNOPSES)))
def test_every_flag_of_a_synopsis_is_one_its_command_takes(command: str, flag: str) -> None:
    parser = _subcommand(build_parser(), command.split())
    taken = {option for action in parser._actions for option in action.option_strings}
    assert flag in taken, f"README: `tether {command}` has no {flag}"


def _takes(command: str) -> set[str]:
    parser = _subcommand(build_parser(), command.split())
    return {option for action in parser._actions for option in action.option_strings}


@pytest.mark.parametrize(
    "command", sorted({command for command, flag in SYNOPSES if flag == "--database-url"})
)
def test_a_synopsis_that_names_a_database_url_names_embedded_where_it_is_taken(
    command: str,
) -> None:
    """A newcomer reads the synopsis to find how to point a command at `tether dev`'s
    database: one that gives --database-url and not --embedded, which the command
    takes, leaves them without the way."""
    if "--embedded" in _takes(command):
        assert (command, "--embedded") in SYNOPSES, f"README: `tether {command}` has no --embedded"


def test_every_python_m_the_readme_gives_runs_something() -> None:
    """`python -m bench.adoption_blocking`, as the README once gave it, imported a module
    with no main and exited 0 having run nothing: each `python -m NAME` must name a
    package with a __main__ or a module that runs when executed."""
    readmes = " ".join((ROOT / doc).read_text() for doc in ("README.md", "bench/README.md"))
    names = re.findall(r"python -m ([A-Za-z_][\w.]*)", " ".join(readmes.split()))
    assert names or "python -m" not in readmes
    for name in names:
        path = ROOT.joinpath(*name.split("."))
        if path.is_dir():
            assert (path / "__main__.py").exists(), f"README: python -m {name}: no __main__"
        elif path.with_suffix(".py").exists():
            source = path.with_suffix(".py").read_text()
            assert 'if __name__ == "__main__"' in source, f"README: python -m {name} runs nothing"
