"""The .tether folder ignores itself in git, and leaves a .gitignore it finds alone."""

from __future__ import annotations

from pathlib import Path

from tether.folders import IGNORE, make_folder


def test_the_tether_folder_a_path_is_in_ignores_all_of_it(tmp_path: Path) -> None:
    make_folder(tmp_path / ".tether" / "bundle-cache" / "bundles")
    assert (tmp_path / ".tether" / "bundle-cache" / "bundles").is_dir()
    assert (tmp_path / ".tether" / ".gitignore").read_text() == IGNORE
    assert "*" in IGNORE.splitlines()
    assert not (tmp_path / ".tether" / "bundle-cache" / ".gitignore").exists()


def test_a_gitignore_already_there_is_left_as_it_is(tmp_path: Path) -> None:
    (tmp_path / ".tether").mkdir()
    (tmp_path / ".tether" / ".gitignore").write_text("pgdata/\n")
    make_folder(tmp_path / ".tether")
    assert (tmp_path / ".tether" / ".gitignore").read_text() == "pgdata/\n"


def test_a_folder_elsewhere_gets_nothing(tmp_path: Path) -> None:
    make_folder(tmp_path / "cache" / "bundles")
    assert list(tmp_path.rglob(".gitignore")) == []
