"""tether outside its checkout: the wheel built from it, installed into a fresh
virtual environment elsewhere, migrates a fresh database with the SQL it carries."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tarfile
import tomllib
import zipfile
from collections.abc import Iterator
from pathlib import Path

import boto3
import pytest

import tether
from tests.conftest import ROOT
from tests.integration.test_bundle import CACHE
from tests.origin_fixture import build_origin
from tether import migrate


def _run(*args: str | Path, cwd: Path, timeout: float = 600) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k not in {"PYTHONPATH", "VIRTUAL_ENV"}}
    env.pop("DATABASE_URL", None)
    env.pop("TETHER_DATABASE_URL", None)
    return subprocess.run(  # noqa: S603 - tools this test chose
        [str(a) for a in args],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
        cwd=cwd,
        env=env,
    )


@pytest.fixture(scope="module")
def venv(wheel: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A fresh environment outside the checkout with the wheel (no extras) installed."""
    place = tmp_path_factory.mktemp("elsewhere")
    assert ROOT not in place.parents
    created = _run(sys.executable, "-m", "venv", place / "venv", cwd=place)
    assert created.returncode == 0, created.stderr
    python = place / "venv" / "bin" / "python"
    installed = _run(python, "-m", "pip", "install", "--quiet", "--prefer-binary", wheel, cwd=place)
    assert installed.returncode == 0, installed.stderr
    yield place


def test_the_wheel_holds_tether_only_and_its_sql(wheel: Path) -> None:
    with zipfile.ZipFile(wheel) as archive:
        names = archive.namelist()
    top = {
        name.split("/", 1)[0] for name in names if not name.split("/", 1)[0].endswith(".dist-info")
    }
    assert top == {"tether"}
    shipped = sorted(n.rsplit("/", 1)[1] for n in names if n.startswith("tether/sql/"))
    assert shipped == [m.filename for m in migrate.discover()]
    adoption = sorted(n.rsplit("/", 1)[1] for n in names if n.startswith("tether/adopt/sql/"))
    assert adoption == sorted(p.name for p in (ROOT / "tether" / "adopt" / "sql").glob("*.sql"))


def test_the_wheel_and_the_sdist_carry_the_licence_their_metadata_names(
    wheel: Path, sdist: Path
) -> None:
    licence = (ROOT / "LICENSE").read_bytes()
    assert b"Apache License" in licence
    with zipfile.ZipFile(wheel) as archive:
        info = next(n for n in archive.namelist() if n.endswith(".dist-info/METADATA"))
        metadata = archive.read(info).decode()
        shipped = archive.read(info.replace("METADATA", "licenses/LICENSE"))
    assert "License-Expression: Apache-2.0" in metadata
    assert "License-File: LICENSE" in metadata
    assert shipped == licence
    with tarfile.open(sdist) as archive:
        member = archive.extractfile(f"{sdist.name.removesuffix('.tar.gz')}/LICENSE")
        assert member is not None
        assert member.read() == licence


def test_the_sdist_alone_builds_the_same_wheel(wheel: Path, sdist: Path, tmp_path: Path) -> None:
    """As a distribution's build from source does it: the sdist unpacked away from the
    checkout (no link to follow back into it) gives the wheel the checkout gives, file
    for file: the migrations, the template, the entry points, the page's assets."""
    with tarfile.open(sdist) as archive:
        archive.extractall(tmp_path, filter="data")
    (source,) = tmp_path.glob("tether-*")
    out = tmp_path / "wheel"
    built = _run(
        sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", out, source, cwd=tmp_path
    )
    assert built.returncode == 0, built.stderr
    (rebuilt,) = out.glob("tether-*.whl")

    def files(path: Path) -> dict[str, bytes]:
        with zipfile.ZipFile(path) as archive:
            return {n: archive.read(n) for n in archive.namelist() if not n.endswith("/RECORD")}

    assert files(rebuilt) == files(wheel)


def test_the_version_is_written_once_in_the_package(source: Path, tmp_path: Path) -> None:
    """tether.__version__ is the one place the version is written: a release that changes
    it there has it in the wheel's metadata, and in what --version, the API and the page
    say, from the wheel as from a checkout, with nothing else to keep in step."""
    project = tomllib.loads((source / "pyproject.toml").read_text())["project"]
    assert "version" not in project, "pyproject.toml writes the version a second time"
    copy = tmp_path / "tether"
    shutil.copytree(source, copy, symlinks=True)
    init = copy / "tether" / "__init__.py"
    text = init.read_text()
    assert text.count(f'__version__ = "{tether.__version__}"') == 1
    init.write_text(text.replace(f'"{tether.__version__}"', '"7.8.9"'))

    out = tmp_path / "wheel"
    built = _run(
        sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", out, copy, cwd=tmp_path
    )
    assert built.returncode == 0, built.stderr
    (rebuilt,) = out.glob("tether-*.whl")
    assert rebuilt.name.startswith("tether-7.8.9-")
    with zipfile.ZipFile(rebuilt) as archive:
        info = next(n for n in archive.namelist() if n.endswith(".dist-info/METADATA"))
        assert "\nVersion: 7.8.9\n" in archive.read(info).decode()

    # The checkout's files, run as they are: not the metadata of what is installed here.
    said = subprocess.run(
        [sys.executable, "-m", "tether", "--version"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        cwd=copy,
        env={**os.environ, "PYTHONPATH": str(copy)},
    )
    assert said.returncode == 0, said.stderr
    assert said.stdout.strip() == "tether 7.8.9"


def test_the_live_page_and_its_assets_are_in_the_wheel(wheel: Path) -> None:
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
    assert {
        "tether/admin/app.py",
        "tether/admin/routers/sessions.py",
        "tether/admin/templates/dashboard.html",
        "tether/admin/static/dashboard.js",
        "tether/admin/static/dashboard.css",
    } <= names


def test_every_file_of_the_package_is_in_the_wheel(wheel: Path) -> None:
    """The wheel's packages are a list in pyproject.toml: a subpackage left out of it (or
    a file type its package data does not name) was missing from every install, with
    nothing in the checkout to show it."""
    source = set()
    for folder, dirs, files in os.walk(ROOT / "tether", followlinks=True):
        dirs[:] = [d for d in dirs if d != "__pycache__"]
        here = Path(folder).relative_to(ROOT)
        source |= {(here / f).as_posix() for f in files if not f.endswith(".pyc")}
    with zipfile.ZipFile(wheel) as archive:
        shipped = {n for n in archive.namelist() if n.startswith("tether/")}
    assert shipped == source


def test_the_lambda_entry_points_are_in_the_wheel(wheel: Path) -> None:
    with zipfile.ZipFile(wheel) as archive:
        shipped = {
            name.rsplit("/", 1)[1]: archive.read(name)
            for name in archive.namelist()
            if name.startswith("tether/deploy/functions/")
        }
    assert shipped == {p.name: p.read_bytes() for p in (ROOT / "functions").glob("*.py")}


# moto's CloudFormation, in this process, warns of the resources it skips.
@pytest.mark.filterwarnings("ignore:Tried to parse:UserWarning")
def test_installed_elsewhere_it_deploys_the_entry_points_it_carries(
    venv: Path, aws: str, empty_database_url: str
) -> None:
    """A team's project has no functions/ of tether's: the deploy bundles the ones the
    installed tether ships (it was refused, as if run outside a checkout)."""
    boto3.client("secretsmanager", endpoint_url=aws).create_secret(
        Name="tether/elsewhere", SecretString=empty_database_url
    )
    assert not (venv / "functions").exists()
    deployed = _run(
        venv / "venv" / "bin" / "tether",
        "deploy",
        "--stack",
        "tether-elsewhere",
        "--endpoint-url",
        aws,
        "--poll-seconds",
        "0.05",
        "--cache-dir",
        CACHE,
        "--database-secret",
        "tether/elsewhere",
        "--supabase-url",
        "https://project.supabase.co",
        "--no-snapstart",
        "--yes",
        cwd=venv,
    )
    assert deployed.returncode == 0, deployed.stderr
    assert "stack tether-elsewhere is CREATE_COMPLETE" in deployed.stdout
    digest = re.search(r"^bundle ([0-9a-f]{16}):", deployed.stdout, re.MULTILINE)
    assert digest is not None, deployed.stdout
    (bundle,) = (CACHE / "bundles").glob(f"tether-*-{digest[1]}.zip")
    with zipfile.ZipFile(bundle) as archive:
        entry_points = {
            name.split("/", 1)[1]: archive.read(name)
            for name in archive.namelist()
            if name.startswith("functions/") and name.endswith(".py")
        }
    assert entry_points == {p.name: p.read_bytes() for p in (ROOT / "functions").glob("*.py")}


def test_installed_elsewhere_it_migrates_a_fresh_database(
    venv: Path, empty_database_url: str
) -> None:
    tether = venv / "venv" / "bin" / "tether"
    first = _run(tether, "migrate", "--database-url", empty_database_url, cwd=venv)
    assert first.returncode == 0, first.stderr
    assert f"{len(migrate.discover())} migration(s) applied" in first.stdout
    again = _run(tether, "migrate", "--status", "--database-url", empty_database_url, cwd=venv)
    assert again.returncode == 0, again.stderr
    assert ", 0 pending" in again.stdout
    where = _run(tether, "migrations", "path", cwd=venv)
    assert "site-packages/tether/sql" in where.stdout
    # The installed version, as the package's metadata has it.
    version = _run(tether, "--version", cwd=venv)
    python = venv / "venv" / "bin" / "python"
    metadata = _run(
        python, "-c", "import importlib.metadata as m; print(m.version('tether'))", cwd=venv
    )
    assert version.stdout.strip() == f"tether {metadata.stdout.strip()}"


def test_installed_elsewhere_it_adopts_an_existing_table(
    venv: Path, empty_database_url: str
) -> None:
    build_origin(empty_database_url, team_objects=False)
    tether = venv / "venv" / "bin" / "tether"
    checked = _run(tether, "adopt", "--check", "--database-url", empty_database_url, cwd=venv)
    assert checked.returncode == 0, checked.stderr
    assert "85 rows" in checked.stdout
    applied = _run(
        tether, "adopt", "--apply", "--yes", "--database-url", empty_database_url, cwd=venv
    )
    assert applied.returncode == 0, applied.stderr
    status = _run(tether, "migrate", "--status", "--database-url", empty_database_url, cwd=venv)
    assert ", 0 pending" in status.stdout


def test_installed_elsewhere_nothing_named_functions_comes_with_it(venv: Path) -> None:
    python = venv / "venv" / "bin" / "python"
    probe = _run(python, "-c", "import functions", cwd=venv)
    assert probe.returncode != 0
    assert "No module named 'functions'" in probe.stderr
    public = _run(
        python,
        "-c",
        "from tether import counts_as_sign_of_life, SessionEnded, EndReason, SessionStore",
        cwd=venv,
    )
    assert public.returncode == 0, public.stderr


def test_installed_elsewhere_an_application_type_checks_against_it(venv: Path) -> None:
    """The application's mypy reads tether's types (PEP 561's py.typed); without them it
    stops at the import ("module is installed, but missing library stubs or py.typed
    marker") and calls each decorated route untyped."""
    (venv / "team_routes.py").write_text(
        "from tether import SessionEnded, counts_as_sign_of_life\n\n\n"
        "@counts_as_sign_of_life\n"
        "def chat(event: dict[str, object], context: object) -> dict[str, object]:\n"
        "    return {'statusCode': 200}\n\n\n"
        "def finalize(event: SessionEnded) -> str:\n"
        "    return event.session_id\n"
    )
    checked = _run(
        sys.executable,
        "-m",
        "mypy",
        "--strict",
        "--no-incremental",
        "--python-executable",
        venv / "venv" / "bin" / "python",
        "team_routes.py",
        cwd=venv,
    )
    assert checked.returncode == 1, checked.stdout
    assert "Skipping analyzing" not in checked.stdout
    assert "Found 1 error" in checked.stdout
    # A str where SessionEnded says UUID: tether's own types are what is checked.
    assert 'Incompatible return value type (got "UUID", expected "str")' in checked.stdout


def test_a_local_command_without_its_extra_says_which_to_install(venv: Path) -> None:
    result = _run(venv / "venv" / "bin" / "tether", "dev", cwd=venv)
    assert result.returncode == 1
    assert "pip install 'tether[local]'" in result.stderr
    assert "Traceback" not in result.stderr
