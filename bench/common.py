"""What every benchmark shares: the run's mode, medians and spreads, the result
entries, and the one writer of results (JSON, a table, an SVG chart)."""

from __future__ import annotations

import itertools
import json
import math
import os
import platform
import statistics
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any
from xml.sax.saxutils import escape

RESULTS = Path(__file__).resolve().parent / "results"

Entry = dict[str, Any]


@dataclass(frozen=True)
class Run:
    """How a benchmark runs: ``quick`` is the reduced version (``make bench-quick``)."""

    quick: bool = False

    def pick(self, full: Any, quick: Any) -> Any:
        return quick if self.quick else full


@dataclass(frozen=True)
class Size:
    """A full run's size an environment variable may set, and its bounds: below them the
    comparison means nothing, above them a run would take hours or fill the disk."""

    variable: str
    default: int
    minimum: int
    maximum: int


SIZES = {
    size.variable: size
    for size in (
        # The large history of sweep_history_independence, set against 100,000 rows.
        Size("TETHER_BENCH_HISTORY", 5_000_000, 100_000, 50_000_000),
        # The handshakes gateway_connect_rate makes and holds (a file descriptor each).
        Size("TETHER_BENCH_CONNECTIONS", 3_000, 100, 10_000),
        # The origin table adoption_blocking adopts.
        Size("TETHER_BENCH_ADOPT_ROWS", 1_000_000, 10_000, 20_000_000),
    )
}


class SizeError(ValueError):
    """An environment variable that sets a benchmark's size holds no size it can use."""


def size(variable: str) -> int:
    """The size ``variable`` sets (its default when unset), within its bounds."""
    bounds = SIZES[variable]
    text = os.environ.get(variable, "").strip()
    if not text:
        return bounds.default
    try:
        value = int(text)
    except ValueError:
        value = None
    if value is None or not bounds.minimum <= value <= bounds.maximum:
        raise SizeError(
            f"{variable}={text!r} is not a size this benchmark can use: a whole number from"
            f" {bounds.minimum:,} to {bounds.maximum:,} (unset: {bounds.default:,})"
        )
    return value


def check_sizes() -> None:
    """Raise SizeError now, before anything starts, for any size set wrong."""
    for variable in SIZES:
        size(variable)


def report(line: str) -> None:
    print(line, flush=True)


def spread(values: Sequence[float], digits: int = 4) -> dict[str, Any]:
    """Median, the extremes and each run, for a repeated (noisy) measurement."""
    ordered = sorted(values)
    return {
        "median": round(statistics.median(ordered), digits),
        "min": round(ordered[0], digits),
        "max": round(ordered[-1], digits),
        "runs": [round(v, digits) for v in values],
    }


UNSETTLED_BASELINE_SPREAD = 1.5
"""How far apart a baseline's own repeats may be (fastest over slowest) before the run
is judged too disturbed to say whether the goal was met."""


def unsettled(result: Entry, why: str) -> None:
    """Mark a result whose measurement the machine disturbed: its figures stand as
    measured, but whether the goal was met is not said (``goal_met`` null)."""
    result["goal_met"] = None
    result["unsettled"] = why


def goal_met(value: float | None, goal: str | None) -> bool | None:
    """``goal`` is ``"<= 1.3"`` or ``">= 500"``."""
    if goal is None or value is None or (isinstance(value, float) and math.isnan(value)):
        return None
    operator, _, threshold = goal.partition(" ")
    limit = float(threshold)
    return value <= limit if operator == "<=" else value >= limit


def entry(
    workload: str,
    *,
    measured: dict[str, Any],
    baseline: dict[str, Any] | None = None,
    ratio: float | None = None,
    goal: str | None = None,
    goal_on: str = "ratio",
    value: float | None = None,
    notes: str | None = None,
) -> Entry:
    """One benchmark's result. The goal applies to ``ratio`` unless ``goal_on`` names
    another figure, whose value is then ``value``."""
    figure = ratio if goal_on == "ratio" else value
    result: Entry = {
        "workload": workload,
        "measured": measured,
        "baseline": baseline,
        "ratio": None if ratio is None else round(ratio, 4),
        "goal": goal,
        "goal_on": goal_on,
        "goal_met": goal_met(figure, goal),
    }
    if goal_on != "ratio":
        result["value"] = None if value is None else round(value, 4)
    if notes:
        result["notes"] = notes
    return result


def _memory_bytes() -> int | None:
    try:
        return int(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"))
    except (ValueError, OSError, AttributeError):
        return None


def load_average() -> list[float]:
    """The system's load over 1, 5 and 15 minutes."""
    return [round(x, 2) for x in os.getloadavg()]


def meta(run: Run, postgres_version: str, started: datetime, extra: dict[str, Any]) -> Entry:
    memory = _memory_bytes()
    return {
        # To the millisecond: two runs begun in the same second are told apart, in their
        # dated copies' names and in the entries' ``run``.
        "date": started.isoformat(timespec="milliseconds"),
        "mode": "quick" if run.quick else "full",
        "cpu_count": os.cpu_count(),
        "memory_gib": round(memory / 2**30, 1) if memory else None,
        "postgres_version": postgres_version,
        "python": platform.python_version(),
        "machine": platform.machine(),
        # At the end, the run's own load included; what else ran is in the start's.
        "load_average": load_average(),
        **extra,
    }


def check_results_writable() -> None:
    """Raise OSError now, before minutes of benchmarks, if ``RESULTS`` cannot be written."""
    RESULTS.mkdir(exist_ok=True)
    probe = RESULTS / f".writable-{os.getpid()}"
    probe.write_text("")
    probe.unlink()


def write_results(document: dict[str, Any], latest: dict[str, Any] | None = None) -> list[Path]:
    """The dated copy of ``document`` (the run's own results), and ``latest.json`` and
    ``ratios.svg`` of ``latest`` (a partial run's merged with the earlier ones: see
    ``merge``; the run's own by default): each written aside and renamed into place,
    latest.json last, so that a run stopped or failing while it writes leaves the last
    complete run's files, never a half-written one or a chart of another run. The
    dated copy takes a name no other run's has (see ``_dated_names``), which the run's
    ``meta`` and entries in both files name as their ``dated_copy``."""
    latest = document if latest is None else latest
    RESULTS.mkdir(exist_ok=True)
    chart = RESULTS / "ratios.svg"
    latest_json = RESULTS / "latest.json"
    names = _dated_names(document["meta"])
    while True:
        dated = next(names)
        if dated.exists():
            continue
        own, merged = _naming(document, latest, dated.name)
        contents = {chart: svg_chart(merged), dated: _json(own), latest_json: _json(merged)}
        aside = {path: path.with_name(f".{path.name}.{os.getpid()}.tmp") for path in contents}
        try:
            for path, content in contents.items():
                aside[path].write_text(content)
            aside[chart].replace(chart)
            if not _claim_name(aside[dated], dated):
                continue  # taken since it was looked at: the next name, and the texts again
            aside[latest_json].replace(latest_json)
        finally:
            for partial in aside.values():
                partial.unlink(missing_ok=True)
        return [latest_json, dated, chart]


def _claim_name(written: Path, name: Path) -> bool:
    """Put ``written`` in place as ``name`` only if no file has that name; whether it did.
    A hard link does both at once and never shows a half-written file; where the file
    system has none, the name is claimed by an exclusive create, then replaced."""
    try:
        os.link(written, name)
    except FileExistsError:
        return False
    except OSError:
        try:
            name.open("x").close()
        except FileExistsError:
            return False
        written.replace(name)
    return True


def _dated_names(meta_: dict[str, Any]) -> Iterator[Path]:
    """The names a run's dated copy may take, in order: its start and mode
    (``2026-12-01T014900.512Z-full.json``), then ``-2``, ``-3`` and so on after it, for a
    run begun in the same millisecond as another."""
    base = f"{meta_['date'].replace(':', '').replace('+0000', 'Z')}-{meta_['mode']}"
    yield RESULTS / f"{base}.json"
    for number in itertools.count(2):
        yield RESULTS / f"{base}-{number}.json"


def _naming(
    document: dict[str, Any], latest: dict[str, Any], dated_copy: str
) -> tuple[dict[str, Any], dict[str, Any]]:
    """``document`` and ``latest`` with the run's ``meta`` and own entries' ``run`` naming
    ``dated_copy``: where a reader of either file finds the whole of the run (its machine,
    load and Postgres), as each carried-over entry names its own run's."""
    named = []
    for source in (document, latest):
        copy = json.loads(json.dumps(source, default=str))
        copy["meta"]["dated_copy"] = dated_copy
        for name in document["benchmarks"]:
            run = copy["benchmarks"].get(name, {}).get("run")
            if isinstance(run, dict):
                run["dated_copy"] = dated_copy
        named.append(copy)
    return named[0], named[1]


def _json(document: dict[str, Any]) -> str:
    return json.dumps(document, indent=2, default=str) + "\n"


class UnreadableResults(ValueError):
    """``latest.json`` cannot be read, or holds no results this runner can merge with."""


def run_of(source: Any) -> dict[str, str] | None:
    """The run a document's ``meta`` or an entry's ``run`` names (its date and mode, and
    its dated copy where said), or None where it names none."""
    if not isinstance(source, dict):
        return None
    date, mode = source.get("date"), source.get("mode")
    if not isinstance(date, str) or mode not in ("quick", "full"):
        return None
    try:
        datetime.fromisoformat(date)
    except ValueError:
        return None
    run = {"date": date, "mode": mode}
    dated_copy = source.get("dated_copy")
    # A file's name in the results folder, never a path: a reader may open it there.
    if (
        isinstance(dated_copy, str)
        and dated_copy == Path(dated_copy).name
        and dated_copy.endswith(".json")
        and not dated_copy.startswith(".")
    ):
        run["dated_copy"] = dated_copy
    return run


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _entry_problem(result: Any) -> str | None:
    """What keeps an earlier entry from the table and the chart, if anything."""
    if not isinstance(result, dict):
        return "not an object"
    if "run" in result and run_of(result["run"]) is None:
        return "its run names no date and mode"
    if "error" in result:
        return None
    missing = [key for key in ("workload", "goal", "goal_on", "goal_met") if key not in result]
    if missing:
        return f"no {', '.join(missing)}"
    goal, goal_on = result["goal"], result["goal_on"]
    if not isinstance(goal_on, str) or result["goal_met"] not in (True, False, None):
        return "its goal_on or goal_met is of another kind"
    figure = result.get("ratio") if goal_on == "ratio" else result.get("value")
    if figure is not None and not _is_number(figure):
        return f"its {goal_on} is not a number"
    if goal is not None:
        operator, _, threshold = str(goal).partition(" ")
        try:
            limit = float(threshold)
        except ValueError:
            limit = 0.0
        if operator not in ("<=", ">=") or not limit:
            return f"its goal {goal!r} reads neither '<= N' nor '>= N'"
    return None


def earlier_results() -> dict[str, Entry]:
    """The benchmarks ``latest.json`` holds, each with the run it came from (``run``: an
    entry written before entries said so came from the file's own run); empty when
    there is no latest.json yet. UnreadableResults when it cannot be read, or is not a
    results file this runner could have written."""
    try:
        text = (RESULTS / "latest.json").read_text()
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as exc:  # ValueError: bytes that are not UTF-8
        raise UnreadableResults(f"cannot be read ({exc})") from exc
    try:
        document = json.loads(text)
    except ValueError as exc:
        raise UnreadableResults(f"is not JSON ({exc})") from exc
    if not isinstance(document, dict):
        raise UnreadableResults("holds no results (no meta, no benchmarks)")
    file_run = run_of(document.get("meta"))
    benchmarks = document.get("benchmarks")
    if file_run is None or not isinstance(benchmarks, dict):
        raise UnreadableResults(
            "is in another format (no meta with its run's date and mode, or no benchmarks)"
        )
    earlier: dict[str, Entry] = {}
    for name, result in benchmarks.items():
        problem = _entry_problem(result)
        if problem is not None:
            raise UnreadableResults(f"is in another format ({name}: {problem})")
        earlier[name] = {**result, "run": run_of(result.get("run")) or file_run}
    return earlier


def merge(
    document: dict[str, Any], earlier: dict[str, Entry], order: Sequence[str]
) -> tuple[dict[str, Any], list[str]]:
    """What ``latest.json`` holds after a partial run: each benchmark of ``order`` from
    the latest run that ran it, the run's own (``document``) first among equals. The
    meta is the run's own, with ``carried_over``: each benchmark kept from an earlier
    run, and that run's date, mode and dated copy (an entry's own ``run`` says it too).
    ``sizes`` covers every benchmark held. Also the earlier benchmarks ``order`` no
    longer names, which are not kept."""
    own = document["benchmarks"]
    carried = {n: r for n, r in earlier.items() if n not in own and n in order}
    held = {**carried, **own}
    benchmarks = {n: held[n] for n in order if n in held}
    benchmarks.update({n: r for n, r in own.items() if n not in benchmarks})
    meta_ = {
        **document["meta"],
        "sizes": {n: r["size"] for n, r in benchmarks.items() if r.get("size")},
        "carried_over": {n: r["run"] for n, r in benchmarks.items() if n in carried},
    }
    gone = [n for n in earlier if n not in own and n not in order]
    return {"meta": meta_, "benchmarks": benchmarks}, gone


def _figure(result: Entry) -> float | None:
    # get: an earlier run's entry, carried into latest.json, may lack its figure.
    value = result.get("value" if result.get("goal_on", "ratio") != "ratio" else "ratio")
    return None if value is None else float(value)


def _format(value: float | None) -> str:
    if value is None:
        return "-"
    if abs(value) >= 100:
        return f"{value:,.0f}"
    return f"{value:.3g}" if abs(value) < 10 else f"{value:.1f}"


def table(document: dict[str, Any]) -> str:
    """The one table: each benchmark, the figure its goal is on, the goal, met or not."""
    meta_ = document["meta"]
    lines = [
        f"tether benchmarks, {meta_['mode']} run of {meta_['date']}: {meta_['cpu_count']} CPUs,"
        f" {meta_['memory_gib']} GiB, Postgres {meta_['postgres_version']}",
        "",
        f"{'benchmark':<32} {'figure':<28} {'value':>10}  {'goal':<10} {'met':<4} spread",
        "-" * 100,
    ]
    for name, result in document["benchmarks"].items():
        if "error" in result:
            lines.append(f"{name:<32} failed: {result['error']}")
            continue
        figure = result.get("goal_on", "ratio")
        met = {True: "yes", False: "NO", None: "-"}[result.get("goal_met")]
        if "unsettled" in result:
            met = "?"
        lines.append(
            f"{name:<32} {figure:<28} {_format(_figure(result)):>10}  {result['goal'] or '-':<10}"
            f" {met:<4} {result.get('spread_note', '')}"
        )
    return "\n".join(lines)


# Room for a character of the chart's 12 px sans-serif text: its widest digits and
# lowercase letters, so that no label runs past the chart's right edge.
CHAR_WIDTH = 7.5


def svg_chart(document: dict[str, Any]) -> str:
    """Each goal's figure against its goal, as a bar scaled so the goal sits at one
    line: a bar on the right side of the line has missed it."""
    rows = [
        (name, result)
        for name, result in document["benchmarks"].items()
        if "error" not in result and result.get("goal") and _figure(result) is not None
    ]
    left, bar_area, row_height = 250, 360, 28
    label_x = left + bar_area + 8
    carried = document["meta"].get("carried_over") or {}
    labels = [
        f"{_format(_figure(result))} ({result['goal_on']} {result['goal']})"
        + (f", {carried[name]['mode']} run of {carried[name]['date']}" if name in carried else "")
        for name, result in rows
    ]
    # A chart of several runs says so: the title's run is the latest only.
    earlier = f"; {len(carried)} from earlier runs" if carried else ""
    title = (
        "tether benchmarks: each figure against its goal"
        f" ({document['meta']['mode']}, {document['meta']['date']}{earlier})"
    )
    # Without it a ">=" goal's bar reads backwards: the higher the figure, the shorter.
    legend = (
        "Each bar is the figure over its goal (for a >= goal, the goal over the figure):"
        " a bar past the line missed its goal."
    )
    # Wide enough for the longest label and the title: an SVG clips what passes its edge.
    width = math.ceil(
        max(
            [760, 10 + len(title) * CHAR_WIDTH * 14 / 12, 10 + len(legend) * CHAR_WIDTH]
            + [label_x + len(label) * CHAR_WIDTH + 10 for label in labels]
        )
    )
    goal_x = left + bar_area / 2
    height = 80 + row_height * len(rows)
    # Text is escaped: a goal reads "<= 1.3", and a bare "<" makes the file unreadable.
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}"'
        ' font-family="sans-serif" font-size="12">',
        f'<text x="10" y="20" font-size="14">{escape(title)}</text>',
        f'<line x1="{goal_x}" y1="30" x2="{goal_x}" y2="{height - 30}" stroke="#333"'
        ' stroke-dasharray="4 3"/>',
        f'<text x="{goal_x + 4}" y="42" fill="#333">goal</text>',
    ]
    for index, ((name, result), label) in enumerate(zip(rows, labels, strict=True)):
        figure = _figure(result) or 0.0
        operator, _, threshold = str(result["goal"]).partition(" ")
        limit = float(threshold)
        # Where the figure sits, the goal being 1: lower is better for "<=" goals,
        # higher for ">=" ones; either way the bar must stay left of the line.
        relative = figure / limit if operator == "<=" else (limit / figure if figure else 2.0)
        length = min(relative, 2.0) * bar_area / 2
        y = 50 + index * row_height
        colour = {True: "#2e7d32", False: "#c62828", None: "#9e9e9e"}[result.get("goal_met")]
        parts += [
            f'<text x="10" y="{y + 14}">{escape(name)}</text>',
            f'<rect x="{left}" y="{y + 3}" width="{max(length, 1):.1f}" height="16"'
            f' fill="{colour}"/>',
            f'<text x="{label_x}" y="{y + 14}">{escape(label)}</text>',
        ]
    parts.append(f'<text x="10" y="{height - 10}" fill="#333">{escape(legend)}</text>')
    parts.append("</svg>")
    return "\n".join(parts) + "\n"
