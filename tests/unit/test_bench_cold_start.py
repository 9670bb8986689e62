"""The cold start benchmark times tether's import from bytecode, as the baseline's packages."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

from bench.cold_start import IMPORT_TETHER, ROOT, compile_sources

# What a timed interpreter compiled from source: nothing, once the benchmark has compiled.
COMPILED_FROM_SOURCE = (
    "from importlib.machinery import SourceFileLoader\n"
    "compiled = []\n"
    "original = SourceFileLoader.source_to_code\n"
    "def source_to_code(self, data, path, *args, **kwargs):\n"
    "    compiled.append(str(path))\n"
    "    return original(self, data, path, *args, **kwargs)\n"
    "SourceFileLoader.source_to_code = source_to_code\n"
    f"{IMPORT_TETHER}\n"
    "import tether\n"
    "print(tether.__file__)\n"
    "print(compiled)\n"
)


def test_a_timed_interpreter_compiles_none_of_connects_modules(tmp_path: Path) -> None:
    # A fresh checkout has no bytecode; an edited module's is stale.
    for folder in ("functions", "tether"):
        shutil.copytree(
            ROOT / folder, tmp_path / folder, ignore=shutil.ignore_patterns("__pycache__")
        )
    compile_sources(tmp_path)
    result = subprocess.run(  # noqa: S603
        [sys.executable, "-c", COMPILED_FROM_SOURCE],
        cwd=tmp_path,
        env={**os.environ, "PYTHONDONTWRITEBYTECODE": "1"},
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    imported_from, compiled = result.stdout.splitlines()
    assert imported_from == str(tmp_path / "tether" / "__init__.py")
    assert compiled == "[]"
