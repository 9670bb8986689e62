"""Every third-party module the tether package imports is declared in pyproject.toml: in
its dependencies, or in the extra of the part of the package that imports it. A module
that only comes with another dependency (h11 with uvicorn) comes for as long as that one
keeps needing it, in whatever version it likes, not tether."""

from __future__ import annotations

import ast
import re
import sys
import tomllib
from collections.abc import Iterator
from importlib.metadata import packages_distributions
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

# The extra each part of the package needs beside the dependencies (the Lambda entry
# points, functions/, ship in the wheel as tether/deploy/functions).
EXTRA_OF = {
    "tether/admin/": "admin",
    "tether/local/": "local",
    "tether/drivers/supabase.py": "supabase",
    "functions/admin.py": "admin",
}
NOT_FROM_AN_INDEX = {
    # Lambda's Python runtimes provide it; tether imports it only where it is found.
    "snapshot_restore_py": "tether/aws/snapstart.py",
}
_NAME = re.compile(r"\s*([A-Za-z0-9][A-Za-z0-9._-]*)\s*(?:\[([^\]]*)\])?")


def _canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _sources() -> Iterator[Path]:
    """The package's modules, the entry points once (as functions/, not through the
    link that ships them)."""
    shipped_link = ROOT / "tether" / "deploy" / "functions"
    for path in sorted((ROOT / "tether").rglob("*.py")):
        if shipped_link not in path.parents:
            yield path
    yield from sorted((ROOT / "functions").glob("*.py"))


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _runtime_imports(tree: ast.AST) -> Iterator[str]:
    """The top-level names of every absolute import the module runs (those under ``if
    TYPE_CHECKING:`` are for the type checker only)."""
    for node in ast.iter_child_nodes(tree):
        if isinstance(node, ast.If) and _is_type_checking(node.test):
            for other in node.orelse:
                yield from _runtime_imports(ast.Module(body=[other], type_ignores=[]))
            continue
        if isinstance(node, ast.Import):
            yield from (alias.name.partition(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            yield node.module.partition(".")[0]
        yield from _runtime_imports(node)


def _third_party_imports() -> dict[str, set[str]]:
    """Each imported third-party module, with the files (relative to the root) that
    import it."""
    found: dict[str, set[str]] = {}
    for path in _sources():
        for top in _runtime_imports(ast.parse(path.read_bytes(), filename=str(path))):
            if top in sys.stdlib_module_names or top in {"tether", "functions"}:
                continue
            found.setdefault(top, set()).add(path.relative_to(ROOT).as_posix())
    return found


def _declared() -> tuple[set[str], dict[str, set[str]]]:
    """The distributions the dependencies name, and those each extra adds to them (an
    extra naming tether's own extras includes theirs)."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    own = _canonical(project["name"])

    def names(lines: list[str]) -> tuple[set[str], set[str]]:
        distributions: set[str] = set()
        extras: set[str] = set()
        for line in lines:
            match = _NAME.match(line)
            assert match, line
            if _canonical(match[1]) == own:
                extras.update(e.strip() for e in (match[2] or "").split(","))
            else:
                distributions.add(_canonical(match[1]))
        return distributions, extras

    core, _ = names(project["dependencies"])
    optional = project["optional-dependencies"]

    def of_extra(extra: str, seen: frozenset[str] = frozenset()) -> set[str]:
        distributions, included = names(optional[extra])
        for other in included - seen - {extra}:
            distributions |= of_extra(other, seen | {extra})
        return distributions

    return core, {extra: of_extra(extra) for extra in optional}


def _extra_of(file: str) -> str | None:
    for part, extra in EXTRA_OF.items():
        if file == part or (part.endswith("/") and file.startswith(part)):
            return extra
    return None


def test_every_module_tether_imports_is_declared_where_its_importer_is() -> None:
    core, extras = _declared()
    distributions_of = packages_distributions()
    missing: list[str] = []
    for module, files in sorted(_third_party_imports().items()):
        if module in NOT_FROM_AN_INDEX:
            continue
        installed = {_canonical(d) for d in distributions_of.get(module, [])}
        assert installed, f"{module} (imported by {sorted(files)}) is not installed here"
        for file in sorted(files):
            extra = _extra_of(file)
            allowed = core | (extras[extra] if extra else set())
            if not installed & allowed:
                where = f"the {extra} extra" if extra else "the dependencies"
                missing.append(f"{module} ({'/'.join(sorted(installed))}) for {file}: {where}")
    assert missing == [], "imported but not declared:\n" + "\n".join(missing)


def test_the_parts_and_exceptions_named_here_exist() -> None:
    """A part renamed or an exception no longer needed must not leave this check blind."""
    _, extras = _declared()
    for part, extra in EXTRA_OF.items():
        assert (ROOT / part).exists(), part
        assert extra in extras, extra
    imports = _third_party_imports()
    for module, file in NOT_FROM_AN_INDEX.items():
        assert file in imports.get(module, set()), module


def test_an_import_for_the_type_checker_only_needs_no_declaration() -> None:
    tree = ast.parse(
        "from typing import TYPE_CHECKING\n"
        "import typing\n"
        "if TYPE_CHECKING:\n"
        "    import stubs_only\n"
        "else:\n"
        "    import at_run_time\n"
        "if typing.TYPE_CHECKING:\n"
        "    from more_stubs import X\n"
        "def f():\n"
        "    import lazily\n"
        "    from .relative import y\n"
    )
    assert sorted(_runtime_imports(tree)) == ["at_run_time", "lazily", "typing", "typing"]
