"""What `tether deploy` reads from a finalizer's source to tell whether the function
exists, without running the module."""

from __future__ import annotations

from tether.cli.deploy import _top_level_names

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
