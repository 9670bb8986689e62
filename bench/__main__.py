"""``make bench`` / ``make bench-quick``: every benchmark against a fresh embedded
Postgres, one table, ``bench/results/latest.json`` (and a dated copy) and
``bench/results/ratios.svg``.

``python -m bench [--quick] [NAME ...]`` runs the benchmarks named (an entry's name or
its module's), all by default. A run of some of them merges its results into
``latest.json``'s (and the chart's): the others stay, each saying which run it came
from. It exits 0 when every benchmark ran, 1 when one failed or the run could not
start, 2 on a name it does not know, 130 when interrupted (the bench README says which
refusals come before anything starts).
"""

from __future__ import annotations

import argparse
import contextlib
import difflib
import importlib
import signal
import sys
import threading
import time
import traceback
from datetime import UTC, datetime
from typing import Any

import psutil

from bench import common, database
from bench.common import (
    Entry,
    Run,
    SizeError,
    UnreadableResults,
    check_results_writable,
    check_sizes,
    earlier_results,
    load_average,
    merge,
    meta,
    report,
    table,
    write_results,
)
from tether.errors import TetherError

# Module, and the entries it reports, in the order they are listed. detection_latency
# runs in real time (production timings): it starts first and runs beside the others;
# in a full run, a module of ALONE waits for it to end.
MODULES: dict[str, tuple[str, ...]] = {
    "detection_latency": ("detection_latency",),
    "cold_start": ("connect_cold_start",),
    "heartbeat": ("heartbeat_cost",),
    "active_queries": ("active_query_vs_naive",),
    "gateway_throughput": ("gateway_connect_rate", "gateway_memory_per_connection"),
    "lifecycle": ("lifecycle_throughput",),
    "sweep_cost": ("sweep_history_independence", "sweep_vs_bulk_update"),
    "adoption_blocking": ("adoption_blocking",),
}
IN_BACKGROUND = {"detection_latency"}
ALONE = {"lifecycle"}
"""Modules that measure Python clients' CPU against pgbench's, and would pay for a
background benchmark's processes (its clients, its sweep) more than pgbench does: in a
full run beside detection_latency, the handlers' ratio read 0.64 where alone it read
0.73 to 0.81, psycopg alone's unmoved."""
STOPPING_SIGNALS = (signal.SIGINT, signal.SIGTERM)
JOIN_SECONDS = 10.0
"""How long a stopped run waits for what it started to end, before killing it."""


def _known() -> list[str]:
    return [e for entries in MODULES.values() for e in entries]


def _chosen(parser: argparse.ArgumentParser, names: list[str]) -> list[str]:
    if not names:
        return list(MODULES)
    chosen = []
    for name in names:
        found = [m for m, entries in MODULES.items() if name == m or name in entries]
        if not found:
            close = difflib.get_close_matches(name, [*_known(), *MODULES], n=1)
            hint = f"; did you mean {close[0]}?" if close else ""
            # A usage error, as argparse reports its own (exit 2), before anything starts.
            parser.error(f"unknown benchmark {name!r}{hint} (known: {', '.join(_known())})")
        chosen += [m for m in found if m not in chosen]
    return chosen


def _run_module(module: str, mode: Run, into: dict[str, Entry]) -> None:
    started = time.monotonic()
    try:
        results = importlib.import_module(f"bench.{module}").run(mode)
    except Exception as exc:  # noqa: BLE001 - one failing benchmark must not hide the others
        if _interrupted.is_set():
            return  # failed because the run was stopped under it: nothing to say
        traceback.print_exc()
        results = {name: {"error": f"{type(exc).__name__}: {exc}"} for name in MODULES[module]}
    for result in results.values():
        result["seconds"] = round(time.monotonic() - started, 1)
    into.update(results)


_interrupted = threading.Event()
_stopping = threading.Event()


def _interrupt(signum: int, frame: object) -> None:
    # Ctrl-C, and SIGTERM (a CI job cancelled, `kill`) alike: the run stops its Postgres
    # on the way out. A second SIGTERM is ignored, so as not to cut the stopping short.
    _interrupted.set()
    if signum == signal.SIGTERM:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
    if _stopping.is_set():
        # Already stopping (the run's end, or a first signal): raised in there, it would
        # leave the Postgres running; the run says it was interrupted once stopped.
        return
    raise KeyboardInterrupt


def _run_all(chosen: list[str], mode: Run) -> tuple[dict[str, Entry], str]:
    """The chosen benchmarks on a fresh server, stopped at the end whatever happens;
    their results and the server's version."""
    results: dict[str, Entry] = {}
    background: list[threading.Thread] = []
    _stopping.clear()
    try:
        database.start_fresh()
        for module in chosen:
            if module in IN_BACKGROUND:
                thread = threading.Thread(target=_run_module, args=(module, mode, results))
                thread.start()
                background.append(thread)
                continue
            if module in ALONE and not mode.quick:
                # In a full run those before it outlast the background benchmark: no
                # wait, and it runs before the sweeps' and adoption's millions of rows.
                # A quick run would wait a minute of its two for it, and does not.
                for thread in background:
                    thread.join()
            _run_module(module, mode, results)
        for thread in background:
            thread.join()
        version = database.server_version()
    finally:
        _stopping.set()
        database.stop()
        if _interrupted.is_set():
            _stop_children()
            for thread in background:
                thread.join(timeout=JOIN_SECONDS)
    if _interrupted.is_set():
        raise KeyboardInterrupt  # a signal while the run stopped: nothing is written
    return results, version


def _stop_children() -> None:
    """What the benchmarks started (tether dev, tether simulate, pgbench). Ctrl-C reaches
    them with the run, all in one process group; SIGTERM reaches the run alone, and a
    benchmark beside the others would wait for them, and leave them running."""
    children = psutil.Process().children(recursive=True)
    for child in children:
        with contextlib.suppress(psutil.Error):
            child.terminate()
    _, alive = psutil.wait_procs(children, timeout=JOIN_SECONDS)
    for child in alive:
        with contextlib.suppress(psutil.Error):
            child.kill()


def _with_earlier(document: dict[str, Any]) -> dict[str, Any]:
    """What latest.json holds after a partial run: its benchmarks, and the others as the
    earlier runs left them. Whatever latest.json holds, the run's own results are
    written: minutes of work are not lost to a file damaged or of another format."""
    latest = common.RESULTS / "latest.json"
    try:
        earlier = earlier_results()
    except UnreadableResults as exc:
        sys.stderr.write(
            f"{latest} {exc}: it now holds this run's benchmarks alone (earlier runs'"
            " figures are in their dated copies)\n"
        )
        return document
    merged, gone = merge(document, earlier, _known())
    by_run: dict[tuple[str, str], list[str]] = {}
    for name, run in merged["meta"]["carried_over"].items():
        by_run.setdefault((run["mode"], run["date"]), []).append(name)
    if by_run:
        runs = "; ".join(
            f"the {mode} run of {date}: {', '.join(names)}"
            for (mode, date), names in by_run.items()
        )
        report(f"{latest.name} also holds, from earlier runs, {runs}")
    if gone:
        report(f"{latest.name} drops {', '.join(gone)}: no benchmark of this runner any more")
    return merged


def main() -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench",
        description=__doc__.split("\n\n")[0],
        epilog=f"benchmarks: {', '.join(_known())}",
    )
    parser.add_argument("--quick", action="store_true", help="the reduced version (under 2 min)")
    parser.add_argument("names", nargs="*", help="benchmarks to run (default: all)")
    args = parser.parse_args()
    mode = Run(quick=args.quick)
    chosen = _chosen(parser, args.names)
    try:
        check_sizes()
    except SizeError as exc:
        sys.stderr.write(f"{exc}; nothing was run\n")
        return 1
    try:
        check_results_writable()
    except OSError as exc:
        sys.stderr.write(f"cannot write the results in {common.RESULTS}: {exc}; nothing was run\n")
        return 1
    try:
        return _run_and_write(chosen, mode)
    finally:
        # Held from the server's start until the results are written: a run ending
        # meanwhile would merge into the latest.json this one is about to replace.
        database.release()


def _run_and_write(chosen: list[str], mode: Run) -> int:
    started = datetime.now(UTC)
    clock = time.monotonic()
    # Before the run adds its own: how busy the machine was with other work.
    load_at_start = load_average()
    # Left alone where ignored (a background job's Ctrl-C): the run was not meant to hear it.
    previous = {
        signum: signal.signal(signum, _interrupt)
        for signum in STOPPING_SIGNALS
        if signal.getsignal(signum) is not signal.SIG_IGN
    }
    try:
        results, version = _run_all(chosen, mode)
    except database.AnotherRunError as exc:
        sys.stderr.write(f"{exc}\n")
        return 1
    except TetherError as exc:
        # Its Postgres could not be started or stopped (a path too deep for its socket, a
        # full disk): the message says why and what to do; a traceback would bury it.
        sys.stderr.write(f"the benchmarks could not run: {exc}\n")
        return 1
    except KeyboardInterrupt:
        # The tracebacks would only say where the run was; what matters is what is left.
        sys.stderr.write(
            "interrupted: the benchmarks' Postgres is stopped and no results were written\n"
        )
        return 130
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
    ordered = {name: results[name] for m in chosen for name in MODULES[m] if name in results}
    extra: dict[str, Any] = {
        "load_average_at_start": load_at_start,
        "seconds": round(time.monotonic() - clock, 1),
        "sizes": {name: r.get("size") for name, r in ordered.items() if r.get("size")},
        # A partial run's latest.json names here the benchmarks it kept from earlier runs.
        "carried_over": {},
    }
    document = {"meta": meta(mode, version, started, extra), "benchmarks": ordered}
    for result in ordered.values():
        result["run"] = {"date": document["meta"]["date"], "mode": document["meta"]["mode"]}
    # The table first: if the results cannot be written, the run's figures are still seen.
    report("")
    report(table(document))
    report("")
    # A run of some benchmarks keeps the others' latest figures; a full run replaces them.
    partial = set(chosen) != set(MODULES)
    try:
        paths = write_results(document, _with_earlier(document) if partial else document)
    except OSError as exc:
        sys.stderr.write(f"could not write the results in {common.RESULTS}: {exc}\n")
        return 1
    report(f"written: {', '.join(str(p) for p in paths)} ({extra['seconds']:.0f} s)")
    failed = [name for name, result in ordered.items() if "error" in result]
    if failed:
        sys.stderr.write(
            f"failed: {', '.join(failed)} (their errors are above and in the results)\n"
        )
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
