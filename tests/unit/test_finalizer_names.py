"""What `tether deploy` reads from a finalizer's source to tell whether the function
exists, without running the module."""

from __future__ import annotations

import sys
import zipfile
from pathlib import Path

import pytest

from tether.cli import deploy
from tether.cli.deploy import _top_level_names
from tether.errors import InvalidInputError

MODULE = b"""
import os
from a import b as c
x = 1
if x:
    def defined_under_if(): local = 2
class K:
    attribute = 3
try:
    import q.r
except ImportError:
    fallback = None
declared_only: int
squares = [n for n in range(3)]
def g():
    global bound_by_global
    bound_by_global = 1
match x:
    case {"k": captured, **rest}: pass
    case other: pass
"""


def test_the_names_a_module_binds_at_its_top_level() -> None:
    names = _top_level_names(MODULE)
    assert names is not None
    for bound in ("os", "c", "x", "defined_under_if", "K", "q", "fallback", "squares", "g"):
        assert bound in names, bound
    for bound in ("bound_by_global", "captured", "rest", "other"):
        assert bound in names, bound
    # Not the module's: a function's locals, a class's attributes, a comprehension's
    # variable, and a name only declared.
    for unbound in ("local", "attribute", "n", "declared_only"):
        assert unbound not in names, unbound


def test_a_module_whose_names_cannot_be_told_without_running_it() -> None:
    for source in (
        b"from helpers import *\n",
        b"globals()['finalize'] = print\n",
        b"def __getattr__(name): return print\n",
        b"def (:\n",
    ):
        assert _top_level_names(source) is None, source


def test_the_names_of_a_standard_library_module_are_read_without_running_it() -> None:
    from tether.cli.deploy import _standard_library_names  # noqa: PLC0415

    json_names = _standard_library_names("json")
    assert json_names is not None
    assert {"dumps", "loads"} <= json_names
    assert "nosuch" not in json_names
    # Built into the interpreter: asked.
    if "time" in sys.builtin_module_names:
        assert "sleep" in (_standard_library_names("time") or set())
    # What cannot be told: names made as the module runs (os's `from posix import *`).
    assert _standard_library_names("os") is None


def test_a_standard_library_name_is_refused_only_against_the_functions_own_version(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Read in another version's library, a name may be one added since (itertools'
    batched, read in 3.11 for functions on 3.13) or removed: said, not refused."""
    bundle = tmp_path / "bundle.zip"
    zipfile.ZipFile(bundle, "w").close()  # json is Python's own
    here = f"{sys.version_info.major}.{sys.version_info.minor}"

    deploy._check_finalizer_ships("json:nosuch", bundle, runtime="3.10")  # never this one

    err = capsys.readouterr().err
    assert f"module json defines no nosuch in this Python's ({here}) standard library" in err
    assert "the functions run 3.10, whose library was not read" in err
    with pytest.raises(InvalidInputError, match=rf"defines no nosuch \(in Python {here}'s"):
        deploy._check_finalizer_ships("json:nosuch", bundle, runtime=here)
    deploy._check_finalizer_ships("json:dumps", bundle, runtime=here)


def test_a_module_of_the_bundle_named_as_one_of_python_s_is_the_one_read(
    tmp_path: Path,
) -> None:
    """Lambda searches the bundle before Python's own library: a finalizer in the bundle's
    calendar.py was refused for what Python's calendar does not define."""
    bundle = tmp_path / "bundle.zip"
    with zipfile.ZipFile(bundle, "w") as archive:
        archive.writestr("calendar.py", "def on_end(detail):\n    pass\n")
    here = f"{sys.version_info.major}.{sys.version_info.minor}"

    deploy._check_finalizer_ships("calendar:on_end", bundle, runtime=here)

    with pytest.raises(InvalidInputError, match=r"module calendar defines no month_name \(nothing"):
        deploy._check_finalizer_ships("calendar:month_name", bundle, runtime=here)
