"""The Lambda bundle: ``functions/``, the installed ``tether`` and its runtime
dependencies, built for the target runtime and architecture whatever machine builds it.

Dependencies come from pip with ``--platform``, ``--python-version``,
``--implementation cp`` and ``--only-binary=:all:``, so an x86 laptop builds an arm64
bundle with arm64 wheels (psycopg's libpq, pydantic-core, cryptography). The zip is
deterministic: sorted entries, one fixed timestamp, fixed permissions, no installer
records, and the bytecode of every module compiled by the runtime's own Python when this
machine has it (``_bytecode``). Its digest is taken over names and contents, so an
unchanged build has the same digest (and S3 key) on any machine with that Python, and is
not uploaded again.

Never in a bundle: ``tether.local`` (the local runtime) and ``tether.deploy`` (this
tooling), the local extra's dependencies, tests, benchmarks, console scripts.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import shutil
import subprocess
import sys
import tempfile
import zipfile
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Literal

import tether
from tether.deploy import template_text
from tether.errors import ConfigurationError, InvalidInputError
from tether.folders import make_folder

log = logging.getLogger("tether.deploy")

Architecture = Literal["arm64", "x86_64"]
Driver = Literal["psycopg", "supabase"]

DEFAULT_PYTHON = "3.13"
"""The Lambda runtime the template names (python3.13)."""

ZIP_EPOCH = (1980, 1, 1, 0, 0, 0)
FILE_MODE = 0o100644  # a regular file, rw-r--r--
UNZIPPED_LIMIT_BYTES = 250 * 1024 * 1024  # Lambda's limit for code and layers, unzipped

# Packages of tether that never run in Lambda.
LOCAL_ONLY_PACKAGES = ("local", "deploy")
# Installer bookkeeping that differs between machines and means nothing at run time.
DIST_INFO_DROPPED = frozenset({"RECORD", "INSTALLER", "REQUESTED", "direct_url.json"})
SKIPPED_DIRS = frozenset({"__pycache__"})
SKIPPED_SUFFIXES = (".pyc", ".pyo")
LAMBDA_TASK_ROOT = "/var/task"
"""Where Lambda unpacks the bundle: the file name each module's bytecode records."""

# Run by the runtime's Python: compiles the (source, bytecode, name) triples read from
# stdin, says how many could not be compiled (a module of another Python's, in a test
# folder of a dependency, say: never imported), and refuses to compile for another tag.
_COMPILE = """
import json, py_compile, sys
tag, jobs = json.load(sys.stdin)
if sys.implementation.cache_tag != tag:
    sys.exit(3)
failed = 0
for source, cfile, dfile in jobs:
    try:
        py_compile.compile(source, cfile=cfile, dfile=dfile, doraise=True,
                           invalidation_mode=py_compile.PycInvalidationMode.UNCHECKED_HASH)
    except py_compile.PyCompileError:
        failed += 1
print(failed)
"""


@dataclass(frozen=True)
class Target:
    """What the bundle runs on: the Lambda runtime's Python and the architecture."""

    architecture: Architecture = "arm64"
    python_version: str = DEFAULT_PYTHON

    @property
    def machine(self) -> str:
        return "aarch64" if self.architecture == "arm64" else "x86_64"

    @property
    def platforms(self) -> tuple[str, ...]:
        """Wheel platform tags the runtime accepts (Amazon Linux 2023: glibc 2.34)."""
        return tuple(
            f"{tag}_{self.machine}"
            for tag in ("manylinux_2_34", "manylinux_2_28", "manylinux_2_17", "manylinux2014")
        )

    @property
    def runtime(self) -> str:
        return f"python{self.python_version}"


@dataclass(frozen=True)
class Bundle:
    path: Path
    digest: str
    """sha-256 over every entry's name and content: the same for the same files."""
    target: Target
    files: int
    unzipped_bytes: int
    requirements: tuple[str, ...]

    @property
    def key(self) -> str:
        """The S3 key: named by content, so an unchanged bundle is already there."""
        return f"tether/bundles/{self.digest[:40]}.zip"

    @property
    def size(self) -> int:
        return self.path.stat().st_size


def runtime_requirements(extras: Iterable[str]) -> tuple[str, ...]:
    """tether's dependencies, plus those of the given extras, from its installed metadata."""
    wanted = set(extras)
    try:
        declared = metadata.requires("tether") or []
    except metadata.PackageNotFoundError:
        raise ConfigurationError(
            "tether is not installed as a package (pip install tether); cannot tell its "
            "dependencies"
        ) from None
    chosen: list[str] = []
    for line in declared:
        requirement, _, marker = (part.strip() for part in line.partition(";"))
        if marker:
            extra = _extra_of(marker)
            if extra is None:
                chosen.append(line)  # an environment marker: pip evaluates it
            elif extra in wanted:
                chosen.append(requirement)
        else:
            chosen.append(requirement)
    return tuple(sorted(set(chosen), key=str.lower))


def _extra_of(marker: str) -> str | None:
    """The extra of a marker that is only ``extra == "name"``, else None."""
    text = marker.replace(" ", "")
    for quote in ('"', "'"):
        prefix = f"extra=={quote}"
        if text.startswith(prefix) and text.endswith(quote) and text.count(quote) == 2:
            return text[len(prefix) : -1]
    return None


def handler_modules() -> list[str]:
    """The modules of ``functions/`` the template's handler strings name."""
    return sorted(set(re.findall(r"Handler: functions\.(\w+)\.lambda_handler", template_text())))


def bundle_extras(driver: Driver) -> tuple[str, ...]:
    """The admin function ships in the same bundle; supabase-py only for its driver."""
    return ("admin", "supabase") if driver == "supabase" else ("admin",)


def build_bundle(
    *,
    functions_dir: Path,
    target: Target,
    driver: Driver = "psycopg",
    include: Sequence[Path] = (),
    cache_dir: Path,
    refresh: bool = False,
) -> Bundle:
    """Build the zip into ``cache_dir/bundles`` and describe it."""
    if not (functions_dir / "__init__.py").is_file():
        raise InvalidInputError(
            f"--functions: {functions_dir} is not the functions package (no __init__.py): name "
            "the folder of the Lambda entry points, or leave --functions out for tether's own"
        )
    missing = [
        f"{name}.py" for name in handler_modules() if not (functions_dir / f"{name}.py").is_file()
    ]
    if missing:
        # Each would be a function of the stack that fails at every invocation.
        raise InvalidInputError(
            f"--functions: {functions_dir} has no {', '.join(missing)}, which the stack's "
            "handlers (functions.<name>.lambda_handler) name: name the folder of the Lambda "
            "entry points, or leave --functions out for tether's own"
        )
    requirements = runtime_requirements(bundle_extras(driver))
    site = dependencies(requirements, target, cache_dir=cache_dir, refresh=refresh)
    entries = _collect(site, functions_dir, include)
    entries.update(_bytecode(entries, target, cache_dir=cache_dir))
    unzipped = sum(path.stat().st_size for path in entries.values())
    if unzipped > UNZIPPED_LIMIT_BYTES:
        raise InvalidInputError(
            f"the bundle would hold {unzipped / 2**20:.0f} MiB unzipped, over Lambda's "
            f"{UNZIPPED_LIMIT_BYTES / 2**20:.0f} MiB"
        )
    digest = _digest(entries, target)
    out = cache_dir / "bundles" / f"tether-{target.architecture}-{digest[:16]}.zip"
    if not out.is_file():
        make_folder(out.parent)
        _write_zip(out, entries)
    return Bundle(
        path=out,
        digest=digest,
        target=target,
        files=len(entries),
        unzipped_bytes=unzipped,
        requirements=requirements,
    )


def _check_pip() -> None:
    """pip fetches the dependencies, run by this interpreter: an environment made without
    it (as ``uv tool install`` and ``python -m venv --without-pip`` make them) is said so,
    with the way to add it, rather than left to pip's "No module named pip"."""
    try:
        probe = subprocess.run(
            [sys.executable, "-m", "pip", "--version"],
            capture_output=True,
            check=False,
            timeout=60,
        )
    except (OSError, subprocess.TimeoutExpired):
        return  # said by the install itself, which fails the same way
    if probe.returncode != 0:
        raise ConfigurationError(
            "the functions' dependencies are fetched with pip, and the Python tether runs"
            f" on has none ({sys.executable}): add it with `{sys.executable} -m ensurepip`"
            " (or install tether where pip is), then deploy again"
        )


def dependencies(
    requirements: Sequence[str], target: Target, *, cache_dir: Path, refresh: bool = False
) -> Path:
    """The dependencies installed for the target, once per requirement set (cached)."""
    key = hashlib.sha256(
        json.dumps([list(requirements), target.python_version, list(target.platforms)]).encode()
    ).hexdigest()[:16]
    site = cache_dir / "site" / f"{target.runtime}-{target.architecture}-{key}"
    if site.is_dir() and not refresh:
        return site
    _check_pip()
    make_folder(site.parent)
    staging = Path(tempfile.mkdtemp(prefix=".staging-", dir=site.parent))
    command = [
        sys.executable,
        "-m",
        "pip",
        "install",
        "--quiet",
        "--disable-pip-version-check",
        "--no-input",
        "--no-compile",
        "--target",
        str(staging),
        "--cache-dir",
        str(cache_dir / "pip"),
        "--implementation",
        "cp",
        "--python-version",
        target.python_version,
        "--only-binary=:all:",
        *(option for platform in target.platforms for option in ("--platform", platform)),
        *requirements,
    ]
    log.info("installing dependencies for %s %s", target.runtime, target.architecture)
    try:
        done = subprocess.run(  # noqa: S603 - pip, with arguments built here
            command, capture_output=True, text=True, check=False, timeout=900
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        shutil.rmtree(staging, ignore_errors=True)
        raise ConfigurationError(f"pip could not run: {exc}") from None
    if done.returncode != 0:
        shutil.rmtree(staging, ignore_errors=True)
        detail = (done.stderr or done.stdout).strip().splitlines()[-5:]
        raise ConfigurationError(
            f"pip could not install the dependencies for {target.runtime} "
            f"{target.architecture}: " + " / ".join(detail)
        )
    if refresh and site.exists():
        shutil.rmtree(site)
    try:
        staging.rename(site)
    except OSError:
        shutil.rmtree(staging, ignore_errors=True)
        # Another build installed the same requirements meanwhile; it may be zipping
        # them now, so its copy stays and this one goes.
        if not site.is_dir():
            raise
    return site


def _collect(site: Path, functions_dir: Path, include: Sequence[Path]) -> dict[str, Path]:
    """Every file of the bundle, by its name in the zip."""
    entries: dict[str, Path] = {}

    def add(name: str, path: Path) -> None:
        if name in entries:
            raise InvalidInputError(f"two files would be {name} in the bundle")
        entries[name] = path

    for name, path in _walk(site):
        top = name.split("/", 1)[0]
        if top == "bin":
            continue  # console scripts, with this machine's interpreter in their first line
        if top == "tether" or top.startswith("tether-"):
            continue  # tether comes from the installed package, below
        if top.endswith(".dist-info") and name.rsplit("/", 1)[-1] in DIST_INFO_DROPPED:
            continue
        add(name, path)
    package = Path(tether.__file__).resolve().parent
    for name, path in _walk(package):
        if name.split("/", 1)[0] in LOCAL_ONLY_PACKAGES:
            continue
        add(f"tether/{name}", path)
    for name, path in _walk(functions_dir):
        if name.endswith(".py"):
            add(f"functions/{name}", path)
    for extra in include:
        for name, path in _included(extra):
            add(name, path)
    return entries


def _bytecode(entries: dict[str, Path], target: Target, *, cache_dir: Path) -> dict[str, Path]:
    """The bytecode of every module in ``entries``, by its name in the zip, compiled by
    the target's Python; none (said once) when this machine has no such Python.

    Lambda unpacks the bundle into a read-only /var/task, where Python cannot keep what
    it compiles: without bytecode in the bundle, every cold start compiles each module
    it imports, about as long again as the import itself. The bytecode is hash-based
    and unchecked (PEP 552): the zip's fixed timestamps would make timestamp-checked
    bytecode stale, and nothing changes the files under it. Each file's is compiled
    once, kept by its name and content in the cache."""
    tag = f"cpython-{target.python_version.replace('.', '')}"
    python = _runtime_python(target)
    if python is None:
        _without_bytecode(target, f"no Python {target.python_version} here to compile it with")
        return {}
    store = cache_dir / "bytecode" / tag
    made: dict[str, Path] = {}
    missing: list[tuple[str, str, str]] = []
    for name, path in entries.items():
        if not name.endswith(".py"):
            continue
        key = hashlib.sha256(name.encode() + b"\0" + path.read_bytes()).hexdigest()
        compiled = store / key[:2] / f"{key}.pyc"
        folder, _, file = name.rpartition("/")
        made[f"{folder}/__pycache__/{file[:-3]}.{tag}.pyc".lstrip("/")] = compiled
        if not compiled.is_file():
            missing.append((str(path), str(compiled), f"{LAMBDA_TASK_ROOT}/{name}"))
    if missing:
        broken = _does_not_run(python)
        if broken is not None:
            _without_bytecode(target, broken)
            return {}
        log.info("compiling %d module(s) for %s", len(missing), target.runtime)
        try:
            done = subprocess.run(  # noqa: S603 - a Python interpreter, with our own script
                [python, "-I", "-c", _COMPILE],
                input=json.dumps([tag, missing]),
                capture_output=True,
                text=True,
                check=False,
                timeout=900,
            )
        except (OSError, subprocess.TimeoutExpired) as exc:
            _without_bytecode(target, f"{python} could not run: {exc}")
            return {}
        if done.returncode != 0:
            detail = (done.stderr or done.stdout).strip().splitlines()[-1:]
            why = "is not CPython" if done.returncode == 3 else "failed: " + " ".join(detail)
            _without_bytecode(target, f"{python} {why}")
            return {}
        if done.stdout.strip() not in {"", "0"}:
            log.info("%s module(s) could not be compiled: they ship as source", done.stdout.strip())
    # A module the runtime's Python cannot compile ships without: it fails as it would.
    return {name: compiled for name, compiled in made.items() if compiled.is_file()}


def _without_bytecode(target: Target, why: str) -> None:
    """The bundle still works without bytecode, slower to start: said, not refused."""
    log.warning(
        "the bundle ships no bytecode (%s): each cold start will compile every module it"
        " imports, about twice the import's time; build with Python %s, or with python%s"
        " on PATH",
        why,
        target.python_version,
        target.python_version,
    )


def _does_not_run(python: str) -> str | None:
    """Why ``python`` cannot run a script, or None. A pyenv shim of a version that is
    installed but not selected is on PATH all the same: it exits 127, its first line
    saying why, its last a tip that would read as a compiler's failure."""
    try:
        probe = subprocess.run(  # noqa: S603 - a Python interpreter, with nothing of ours
            [python, "-I", "-c", "pass"],
            capture_output=True,
            text=True,
            check=False,
            timeout=60,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"{python} could not run: {exc}"
    if probe.returncode == 0:
        return None
    said = next(
        (line.strip() for line in (probe.stderr + probe.stdout).splitlines() if line.strip()), ""
    )
    return f"{python} does not run: exit status {probe.returncode}" + (f", {said}" if said else "")


def _runtime_python(target: Target) -> str | None:
    """A CPython of the target's version: this one, or python3.X on PATH."""
    if sys.implementation.name == "cpython" and target.python_version == "{}.{}".format(
        *sys.version_info[:2]
    ):
        return sys.executable
    return shutil.which(f"python{target.python_version}")


def _included(extra: Path) -> Iterable[tuple[str, Path]]:
    """An application module or package shipped at the bundle's root, by its own name."""
    if not extra.exists():
        raise InvalidInputError(f"--include: {extra} does not exist")
    # "." and "pkg/.." end in no name of their own: the zip got "/pkg/..." and
    # "../pkg/..." entries. Made absolute without following links, a linked package
    # keeps the name it is included by.
    named = Path(os.path.abspath(extra))
    if not named.name:
        raise InvalidInputError(f"--include: {extra} is the root folder; name a package or module")
    if named.is_file():
        yield named.name, extra
        return
    for name, path in _walk(extra):
        yield f"{named.name}/{name}", path


def _walk(root: Path) -> Iterable[tuple[str, Path]]:
    """Files under root (following links, as tether/sql is one), as relative names."""
    for folder, dirs, files in os.walk(root, followlinks=True):
        dirs[:] = sorted(d for d in dirs if d not in SKIPPED_DIRS and not d.startswith("."))
        here = Path(folder)
        for file in sorted(files):
            if file.endswith(SKIPPED_SUFFIXES) or file.startswith("."):
                continue
            path = here / file
            yield path.relative_to(root).as_posix(), path


def _digest(entries: dict[str, Path], target: Target) -> str:
    digest = hashlib.sha256(f"{target.runtime} {target.architecture}\n".encode())
    for name in sorted(entries):
        content = hashlib.sha256(entries[name].read_bytes()).hexdigest()
        digest.update(f"{name}\0{content}\n".encode())
    return digest.hexdigest()


def _write_zip(out: Path, entries: dict[str, Path]) -> None:
    # A partial file of this build's own: two builds of one bundle at once each write
    # theirs, and the zip appears whole or not at all.
    partial = out.with_name(f".{out.name}.{os.getpid()}-{os.urandom(4).hex()}.partial")
    try:
        with zipfile.ZipFile(partial, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=9) as z:
            for name in sorted(entries):
                info = zipfile.ZipInfo(name, date_time=ZIP_EPOCH)
                info.external_attr = FILE_MODE << 16
                info.compress_type = zipfile.ZIP_DEFLATED
                info.create_system = 3  # unix, so the permissions above are read
                z.writestr(info, entries[name].read_bytes())
        partial.replace(out)
    finally:
        partial.unlink(missing_ok=True)
