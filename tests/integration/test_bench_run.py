"""`make bench` as a script sees it: its exit status and what it leaves behind. Each
test runs a stand-in benchmark (one of `bench.__main__.MODULES`), never a real one,
on the suite's own fresh embedded Postgres, in a folder of its own."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
import types
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psutil
import pytest

import bench.__main__ as bench_main
from bench import common
from bench.common import Entry, Run, entry
from tests.conftest import ROOT
from tether.local import embedded
from tether.local import state as dev_state


def _stand_in(
    monkeypatch: pytest.MonkeyPatch, name: str, run: Callable[[Run], dict[str, Entry]]
) -> None:
    module = types.ModuleType(f"bench.{name}")
    module.run = run  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, f"bench.{name}", module)
    monkeypatch.setitem(bench_main.MODULES, name, (name,))


@pytest.fixture
def folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The run's folder (its `.tether/bench-pgdata`) and its results, both apart."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(common, "RESULTS", tmp_path / "results")
    return tmp_path


def _exit_status(monkeypatch: pytest.MonkeyPatch, *args: str) -> int:
    monkeypatch.setattr(sys, "argv", ["python -m bench", *args])
    try:
        status = bench_main.main()
    except SystemExit as stop:
        return stop.code if isinstance(stop.code, int) else 1
    return status or 0


def _fails(mode: Run) -> dict[str, Entry]:
    raise RuntimeError("pgbench printed no tps")


def _passes(mode: Run) -> dict[str, Entry]:
    return {"bench_stand_in_ok": entry("nothing", measured={}, ratio=1.0, goal="<= 2")}


def _counted_stand_in(monkeypatch: pytest.MonkeyPatch) -> list[Run]:
    """``bench_stand_in_ok``, and the runs it was given: empty if it never ran."""
    ran: list[Run] = []

    def counted(mode: Run) -> dict[str, Entry]:
        ran.append(mode)
        return _passes(mode)

    _stand_in(monkeypatch, "bench_stand_in_ok", counted)
    return ran


def test_a_run_in_which_a_benchmark_failed_exits_1(
    folder: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # It exited 0: a script or CI job took a run whose benchmark had failed for a good one.
    _stand_in(monkeypatch, "bench_stand_in_fails", _fails)
    _stand_in(monkeypatch, "bench_stand_in_ok", _passes)
    assert _exit_status(monkeypatch, "--quick", "bench_stand_in_fails", "bench_stand_in_ok") == 1
    said = capsys.readouterr()
    assert "bench_stand_in_fails" in said.out
    assert "failed: RuntimeError: pgbench printed no tps" in said.out
    assert "failed: bench_stand_in_fails" in said.err
    results = json.loads((folder / "results" / "latest.json").read_text())
    assert results["benchmarks"]["bench_stand_in_fails"]["error"].startswith("RuntimeError")


def test_a_run_whose_benchmarks_all_ran_exits_0(
    folder: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _stand_in(monkeypatch, "bench_stand_in_ok", _passes)
    assert _exit_status(monkeypatch, "--quick", "bench_stand_in_ok") == 0
    meta = json.loads((folder / "results" / "latest.json").read_text())["meta"]
    # The load at the end includes the run's own (two busy CPUs for most benchmarks);
    # how busy the machine was with other work is the load at the start.
    assert len(meta["load_average_at_start"]) == 3
    assert len(meta["load_average"]) == 3


def test_a_benchmark_of_client_cpu_runs_once_the_background_one_has_ended(
    folder: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """In a full run: the handlers' ratio paid for detection_latency's processes running
    beside it."""
    spans: dict[str, tuple[float, float]] = {}

    def timed(name: str, seconds: float) -> Callable[[Run], dict[str, Entry]]:
        def run(mode: Run) -> dict[str, Entry]:
            started = time.monotonic()
            time.sleep(seconds)
            spans[name] = (started, time.monotonic())
            return {name: entry("nothing", measured={}, ratio=1.0, goal="<= 2")}

        return run

    monkeypatch.setattr(bench_main, "MODULES", {})
    for name, seconds in (
        ("bench_stand_in_bg", 1.0),
        ("bench_stand_in_ok", 0.1),
        ("bench_stand_in_alone", 0.1),
        ("bench_stand_in_after", 0.1),
    ):
        _stand_in(monkeypatch, name, timed(name, seconds))
    monkeypatch.setattr(bench_main, "IN_BACKGROUND", {"bench_stand_in_bg"})
    monkeypatch.setattr(bench_main, "ALONE", {"bench_stand_in_alone"}, raising=False)
    # A quick run does not wait, to stay short.
    assert _exit_status(monkeypatch, "--quick") == 0
    assert spans["bench_stand_in_alone"][1] < spans["bench_stand_in_bg"][1]
    spans.clear()
    assert _exit_status(monkeypatch) == 0
    background_ended = spans["bench_stand_in_bg"][1]
    assert spans["bench_stand_in_alone"][0] >= background_ended
    # One listed before it still runs beside the background one; the order holds.
    assert spans["bench_stand_in_ok"][1] < background_ended
    assert spans["bench_stand_in_after"][0] >= spans["bench_stand_in_alone"][1]
    latest = json.loads((folder / "results" / "latest.json").read_text())
    assert list(latest["benchmarks"]) == [
        "bench_stand_in_bg",
        "bench_stand_in_ok",
        "bench_stand_in_alone",
        "bench_stand_in_after",
    ]


def _other(mode: Run) -> dict[str, Entry]:
    return {"bench_stand_in_other": entry("more", measured={}, ratio=0.5, goal="<= 1")}


def _results(folder: Path, name: str = "latest.json") -> dict[str, Any]:
    return dict(json.loads((folder / "results" / name).read_text()))


def _dated_name(latest: dict[str, Any]) -> str:
    """The name of the dated copy of the run that wrote ``latest``."""
    stamp = latest["meta"]["date"].replace(":", "").replace("+0000", "Z")
    return f"{stamp}-{latest['meta']['mode']}.json"


def _dated_copy(folder: Path, latest: dict[str, Any]) -> dict[str, Any]:
    """The dated copy of the run that wrote ``latest``."""
    return _results(folder, _dated_name(latest))


def _only_stand_ins(monkeypatch: pytest.MonkeyPatch) -> None:
    """A full run (no names) of two stand-ins, and no real benchmark."""
    monkeypatch.setattr(bench_main, "MODULES", {})
    _stand_in(monkeypatch, "bench_stand_in_ok", _passes)
    _stand_in(monkeypatch, "bench_stand_in_other", _other)


def test_a_partial_run_keeps_the_other_benchmarks_latest_figures(
    folder: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # `make bench ARGS=lifecycle_throughput` replaced latest.json and the chart with its
    # one benchmark: every other benchmark's latest figures were gone.
    _only_stand_ins(monkeypatch)
    assert _exit_status(monkeypatch) == 0
    full = _results(folder)
    full_run = {"date": full["meta"]["date"], "mode": "full", "dated_copy": _dated_name(full)}
    assert full["benchmarks"]["bench_stand_in_other"]["run"] == full_run
    assert full["meta"]["carried_over"] == {}
    capsys.readouterr()

    # A quick run of one of them: its mode is the entry's, beside the full run's.
    assert _exit_status(monkeypatch, "--quick", "bench_stand_in_ok") == 0
    latest = _results(folder)
    partial_run = {
        "date": latest["meta"]["date"],
        "mode": "quick",
        "dated_copy": _dated_name(latest),
    }
    assert list(latest["benchmarks"]) == ["bench_stand_in_ok", "bench_stand_in_other"]
    assert latest["benchmarks"]["bench_stand_in_ok"]["run"] == partial_run
    assert (
        latest["benchmarks"]["bench_stand_in_other"] == full["benchmarks"]["bench_stand_in_other"]
    )
    assert latest["meta"]["mode"] == "quick"
    assert latest["meta"]["carried_over"] == {"bench_stand_in_other": full_run}
    said = capsys.readouterr().out
    assert f"the full run of {full_run['date']}: bench_stand_in_other" in said
    # The dated copy is the run's own.
    dated = _dated_copy(folder, latest)
    assert list(dated["benchmarks"]) == ["bench_stand_in_ok"]
    assert dated["meta"]["carried_over"] == {}
    # The chart is drawn from latest.json's benchmarks, the carried one saying its run.
    chart = (folder / "results" / "ratios.svg").read_text()
    assert ">bench_stand_in_other<" in chart
    assert f"0.5 (ratio &lt;= 1), full run of {full_run['date']}<" in chart
    assert ">bench_stand_in_ok<" in chart

    # A full run writes its own results alone, as before.
    assert _exit_status(monkeypatch) == 0
    latest = _results(folder)
    assert latest["meta"]["carried_over"] == {}
    assert latest == _dated_copy(folder, latest)


def test_each_entry_of_a_merged_latest_json_names_where_its_whole_run_is(
    folder: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A merged latest.json's meta (machine, load, Postgres, seconds) is its last run's:
    # for a carried-over entry a reader had its run's date and mode, and had to know how
    # the runner names its dated copies to find the rest of that run.
    _only_stand_ins(monkeypatch)
    assert _exit_status(monkeypatch) == 0
    assert _exit_status(monkeypatch, "--quick", "bench_stand_in_ok") == 0
    latest = _results(folder)
    runs = {name: result["run"] for name, result in latest["benchmarks"].items()}
    assert runs["bench_stand_in_ok"] != runs["bench_stand_in_other"]
    assert latest["meta"]["carried_over"] == {"bench_stand_in_other": runs["bench_stand_in_other"]}
    for name, run in runs.items():
        copy = _results(folder, run["dated_copy"])
        assert {"date": copy["meta"]["date"], "mode": copy["meta"]["mode"]} == {
            "date": run["date"],
            "mode": run["mode"],
        }
        assert copy["meta"]["dated_copy"] == run["dated_copy"]
        assert copy["benchmarks"][name] == latest["benchmarks"][name]
    # The meta's own run is the one that measured what it did not carry over.
    assert latest["meta"]["dated_copy"] == runs["bench_stand_in_ok"]["dated_copy"]


def test_runs_begun_in_the_same_second_each_keep_their_dated_copy(
    folder: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A stand-in run takes under a second: the second one's dated copy, named to the
    # second, replaced the first one's.
    ran = _counted_stand_in(monkeypatch)
    for _ in range(3):
        assert _exit_status(monkeypatch, "--quick", "bench_stand_in_ok") == 0
    assert len(ran) == 3
    copies = sorted(p.name for p in (folder / "results").glob("*-quick*.json"))
    assert len(copies) == 3
    # Each names its run's start, and sorts by it.
    dates = [_results(folder, name)["meta"]["date"] for name in copies]
    assert dates == sorted(dates)
    assert all(re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}\+00:00", d) for d in dates)
    assert _results(folder, copies[-1]) == _results(folder)


@pytest.mark.parametrize(
    ("content", "said"),
    [
        ('{"meta": {"date": "2026-11-30T18:11', "is not JSON"),
        ('{"benchmarks": []}\n', "is in another format"),
    ],
)
def test_a_partial_run_over_a_latest_json_it_cannot_read_writes_its_own(
    folder: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    content: str,
    said: str,
) -> None:
    # After the run's minutes of work, a damaged latest.json must not cost its figures.
    _only_stand_ins(monkeypatch)
    (folder / "results").mkdir()
    (folder / "results" / "latest.json").write_text(content)
    assert _exit_status(monkeypatch, "--quick", "bench_stand_in_ok") == 0
    latest = _results(folder)
    assert list(latest["benchmarks"]) == ["bench_stand_in_ok"]
    assert latest["meta"]["carried_over"] == {}
    err = capsys.readouterr().err
    assert f"latest.json {said}" in err
    assert "it now holds this run's benchmarks alone" in err
    assert "Traceback" not in err


def test_a_second_run_at_once_leaves_the_first_ones_server_alone(
    folder: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # Two runs shared .tether/bench-pgdata: the second stopped the first one's server and
    # removed its data, and the first failed halfway ("the database system is shutting
    # down").
    ran = _counted_stand_in(monkeypatch)
    first_runs_data = folder / ".tether" / "bench-pgdata"
    first_runs_data.mkdir(parents=True)
    (first_runs_data / "PG_VERSION").write_text("18\n")
    first_run = dev_state.hold(folder / ".tether" / "bench.lock")
    assert first_run is not None
    try:
        first_run.write("4242\n")
        first_run.flush()
        assert _exit_status(monkeypatch, "--quick", "bench_stand_in_ok") == 1
    finally:
        first_run.close()
    assert (first_runs_data / "PG_VERSION").exists()
    assert not ran
    assert not (folder / "results" / "latest.json").exists()
    said = capsys.readouterr().err
    assert "another benchmark run (pid 4242) is using .tether/bench-pgdata" in said
    # Once the first has ended, the next run goes ahead.
    assert _exit_status(monkeypatch, "--quick", "bench_stand_in_ok") == 0
    assert ran


def test_results_that_cannot_be_written_stop_the_run_before_it_starts(
    folder: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # The run went to its end (10 minutes in full), then died on a traceback at the
    # first write: no table, no figures. (A file stands where the folder would be: as
    # root, a read-only folder's mode would not stop the write.)
    ran = _counted_stand_in(monkeypatch)
    (folder / "not-a-folder").write_text("")
    monkeypatch.setattr(common, "RESULTS", folder / "not-a-folder" / "results")
    assert _exit_status(monkeypatch, "--quick", "bench_stand_in_ok") == 1
    assert not ran
    assert not (folder / ".tether" / "bench-pgdata").exists()
    assert "cannot write the results in" in capsys.readouterr().err


def test_results_that_could_not_be_written_at_the_end_leave_the_table(
    folder: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    def then_unwritable(mode: Run) -> dict[str, Entry]:
        if (folder / "results").is_dir():
            (folder / "results").rmdir()
        (folder / "results").write_text("")  # the folder went meanwhile
        return _passes(mode)

    _stand_in(monkeypatch, "bench_stand_in_ok", then_unwritable)
    assert _exit_status(monkeypatch, "--quick", "bench_stand_in_ok") == 1
    said = capsys.readouterr()
    assert "bench_stand_in_ok" in said.out
    assert "<= 2" in said.out
    assert "could not write the results in" in said.err


def test_a_size_set_wrong_stops_the_run_before_it_starts(
    folder: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # Read when the sweep benchmark's turn came: minutes of other benchmarks, then a
    # ValueError; in a quick run, which does not even use it, too.
    ran = _counted_stand_in(monkeypatch)
    monkeypatch.setenv("TETHER_BENCH_HISTORY", "abc")
    assert _exit_status(monkeypatch, "--quick", "bench_stand_in_ok") == 1
    assert not ran
    assert not (folder / ".tether" / "bench-pgdata").exists()
    assert "TETHER_BENCH_HISTORY='abc' is not a size" in capsys.readouterr().err


INTERRUPTED = "interrupted: the benchmarks' Postgres is stopped and no results were written\n"


def _start_run(folder: Path, script: str) -> subprocess.Popen[str]:
    """A benchmark run of ``script`` in ``folder``, Ctrl-C reaching it as at a terminal."""
    return subprocess.Popen(  # noqa: S603 - this interpreter
        [sys.executable, "-c", script],
        cwd=folder,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=_ctrl_c_as_at_a_terminal,  # noqa: PLW1509 - one thread starts it
    )


def _wait_for(run: subprocess.Popen[str], sign: Path) -> None:
    """Until the run has written ``sign`` (it got where the test stops it), a minute at most."""
    deadline = time.monotonic() + 60
    while not sign.exists():
        assert run.poll() is None, run.communicate()
        assert time.monotonic() < deadline
        time.sleep(0.05)


def _ctrl_c_as_at_a_terminal() -> None:
    # A test runner's worker may ignore SIGINT, and a child inherits that: the run would
    # never hear the Ctrl-C it is sent, as it would not from a background job's.
    signal.signal(signal.SIGINT, signal.SIG_DFL)


SLOW_RUN = """
import pathlib, sys, time, types
import bench.__main__ as bench_main
from bench import common
common.RESULTS = pathlib.Path("results").resolve()
module = types.ModuleType("bench.bench_stand_in_slow")
def run(mode):
    pathlib.Path("running").touch()
    time.sleep(60)
    return {}
module.run = run
sys.modules["bench.bench_stand_in_slow"] = module
bench_main.MODULES["bench_stand_in_slow"] = ("bench_stand_in_slow",)
sys.argv = ["python -m bench", "--quick", "bench_stand_in_slow"]
sys.exit(bench_main.main())
"""


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_a_run_stopped_midway_stops_its_postgres_and_writes_nothing(
    tmp_path: Path, signum: signal.Signals
) -> None:
    # SIGTERM (a CI job cancelled, `kill`) ended the run at once and left its embedded
    # Postgres running; Ctrl-C stopped it, with a traceback.
    data = tmp_path / ".tether" / "bench-pgdata"
    run = _start_run(tmp_path, SLOW_RUN)
    try:
        _wait_for(run, tmp_path / "running")
        postmaster = embedded.postmaster_pid(data)
        assert postmaster is not None
        run.send_signal(signum)
        _, said = run.communicate(timeout=60)
        assert run.returncode == 130, said
        assert said.endswith(INTERRUPTED)
        assert "Traceback" not in said
        assert not psutil.pid_exists(postmaster) or not embedded.is_running(data)
        assert not (tmp_path / "results" / "latest.json").exists()
    finally:
        if run.poll() is None:
            run.kill()
        embedded.stop_if_running(data)


BACKGROUND_RUN = """
import pathlib, subprocess, sys, types
import bench.__main__ as bench_main
from bench import common
common.RESULTS = pathlib.Path("results").resolve()
module = types.ModuleType("bench.bench_stand_in_beside")
def run(mode):
    # As detection_latency does: a child process of its own (tether simulate), waited on.
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(300)"])
    pathlib.Path("child").write_text(str(child.pid))
    child.wait()
    raise RuntimeError("the child was stopped")
module.run = run
sys.modules["bench.bench_stand_in_beside"] = module
bench_main.MODULES["bench_stand_in_beside"] = ("bench_stand_in_beside",)
bench_main.IN_BACKGROUND.add("bench_stand_in_beside")
sys.argv = ["python -m bench", "--quick", "bench_stand_in_beside"]
sys.exit(bench_main.main())
"""


def test_a_run_stopped_while_a_benchmark_runs_beside_it_ends_with_its_children(
    tmp_path: Path,
) -> None:
    """SIGTERM reaches the run alone (a CI job cancelled, `kill PID`), not the processes
    its benchmarks started: the detection benchmark, which runs in a thread beside the
    others, went on waiting for its tether simulate and tether dev after the run had
    said it was interrupted, so the run did not end for minutes, and once killed
    left them running against a stopped Postgres."""
    data = tmp_path / ".tether" / "bench-pgdata"
    run = _start_run(tmp_path, BACKGROUND_RUN)
    child = None
    try:
        deadline = time.monotonic() + 60
        while not (tmp_path / "child").exists() or not (tmp_path / "child").read_text():
            assert run.poll() is None, run.communicate()
            assert time.monotonic() < deadline
            time.sleep(0.05)
        child = int((tmp_path / "child").read_text())
        run.send_signal(signal.SIGTERM)
        _, said = run.communicate(timeout=30)
        assert run.returncode == 130, said
        assert said.endswith(INTERRUPTED)
        assert "Traceback" not in said
        assert not psutil.pid_exists(child) or psutil.Process(child).status() == "zombie"
    finally:
        if run.poll() is None:
            run.kill()
        if child is not None and psutil.pid_exists(child):
            psutil.Process(child).kill()
        embedded.stop_if_running(data)


STOPPING_RUN = """
import pathlib, sys, time, types
import bench.__main__ as bench_main
from bench import common, database
common.RESULTS = pathlib.Path("results").resolve()
module = types.ModuleType("bench.bench_stand_in_quick")
module.run = lambda mode: {}
sys.modules["bench.bench_stand_in_quick"] = module
bench_main.MODULES["bench_stand_in_quick"] = ("bench_stand_in_quick",)
stop = database.stop
def slow_stop():
    # The moment a signal lands in: the run's end, its Postgres being stopped.
    pathlib.Path("stopping").touch()
    time.sleep(3)
    stop()
database.stop = slow_stop
sys.argv = ["python -m bench", "--quick", "bench_stand_in_quick"]
sys.exit(bench_main.main())
"""


def test_a_signal_while_the_run_stops_its_postgres_does_not_leave_it_running(
    tmp_path: Path,
) -> None:
    """A Ctrl-C as the run ended (or a second one, while the first stopped the run) was
    raised inside the stopping of its Postgres: the run said the Postgres was stopped
    and left it running."""
    data = tmp_path / ".tether" / "bench-pgdata"
    run = _start_run(tmp_path, STOPPING_RUN)
    try:
        _wait_for(run, tmp_path / "stopping")
        run.send_signal(signal.SIGINT)
        _, said = run.communicate(timeout=60)
        assert run.returncode == 130, said
        assert said.endswith(INTERRUPTED)
        assert not embedded.is_running(data)
        assert not (tmp_path / "results" / "latest.json").exists()
    finally:
        if run.poll() is None:
            run.kill()
        embedded.stop_if_running(data)


MERGING_RUN = """
import pathlib, sys, time, types
import bench.__main__ as bench_main
from bench import common
from bench.common import entry
common.RESULTS = pathlib.Path("results").resolve()
module = types.ModuleType("bench.bench_stand_in_ok")
module.run = lambda mode: {"bench_stand_in_ok": entry("w", measured={}, ratio=1.0, goal="<= 2")}
sys.modules["bench.bench_stand_in_ok"] = module
bench_main.MODULES.clear()
bench_main.MODULES["bench_stand_in_ok"] = ("bench_stand_in_ok",)
bench_main.MODULES["bench_stand_in_other"] = ("bench_stand_in_other",)
read = bench_main.earlier_results
def slow_read():
    # The moment another run may end in: latest.json read, this run's merge not written.
    earlier = read()
    pathlib.Path("merging").touch()
    deadline = time.monotonic() + 60
    while not pathlib.Path("go").exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    return earlier
bench_main.earlier_results = slow_read
sys.argv = ["python -m bench", "--quick", "bench_stand_in_ok"]
sys.exit(bench_main.main())
"""


def test_two_runs_ending_together_do_not_lose_either_ones_figures(
    folder: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """The claim on the folder's benchmark server was let go as its Postgres stopped,
    before the run merged its figures into latest.json: a run started then merged into
    the same old file, and whichever wrote last dropped the other's figures, though
    both had said they were written."""
    monkeypatch.setattr(bench_main, "MODULES", {})
    _stand_in(monkeypatch, "bench_stand_in_ok", _passes)
    _stand_in(monkeypatch, "bench_stand_in_other", _other)
    first = _start_run(folder, MERGING_RUN)
    try:
        _wait_for(first, folder / "merging")
        second = _exit_status(monkeypatch, "--quick", "bench_stand_in_other")
        (folder / "go").touch()
        _, said = first.communicate(timeout=60)
        assert first.returncode == 0, said
    finally:
        if first.poll() is None:
            first.kill()
        embedded.stop_if_running(folder / ".tether" / "bench-pgdata")
    latest = _results(folder)
    # A run that says it wrote its figures has them in latest.json.
    assert "bench_stand_in_ok" in latest["benchmarks"]
    if second == 0:
        assert "bench_stand_in_other" in latest["benchmarks"], latest["benchmarks"]
    # The second is refused while the first writes, as while it measures.
    assert second == 1
    assert f"another benchmark run (pid {first.pid})" in capsys.readouterr().err
    # Once the first has ended, its claim is gone with it: the next run merges into its
    # results.
    assert _exit_status(monkeypatch, "--quick", "bench_stand_in_other") == 0
    assert list(_results(folder)["benchmarks"]) == ["bench_stand_in_ok", "bench_stand_in_other"]


def test_a_postgres_that_cannot_start_is_said_in_one_line(tmp_path: Path) -> None:
    # A folder too deep for the server's socket, and a runtime folder as deep: the
    # message saying so and what to do came at the end of a 20-line traceback.
    deep = tmp_path / ("d" * 100)
    deep.mkdir()
    environment = {**os.environ, "PYTHONPATH": str(ROOT), "TMPDIR": str(deep)}
    environment["XDG_RUNTIME_DIR"] = str(deep)
    try:
        refused = subprocess.run(
            [sys.executable, "-m", "bench", "--quick", "connect_cold_start"],
            cwd=deep,
            env=environment,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        assert refused.returncode == 1
        assert refused.stderr.startswith(
            "the benchmarks could not run: the embedded Postgres has no place for its socket:"
        ), refused.stderr
        assert "Traceback" not in refused.stderr
    finally:
        embedded.stop_if_running(deep / ".tether" / "bench-pgdata")
