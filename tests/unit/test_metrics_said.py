"""The README's table of metrics is the metrics the code writes: every ``emit_metric``
call of the library and the entry points, read from their syntax trees, has its row
(with its unit, dimensions and the function that writes it), every row a call, and
every alarm of the stack on tether's namespace watches a metric of the table, whose
row names the alarm."""

from __future__ import annotations

import ast
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from cfnlint.decode import decode_str

ROOT = Path(__file__).resolve().parents[2]
SOURCES = ("tether", "functions")

WRITERS = {
    "tether/handlers/connect.py": "functions.connect",
    "tether/handlers/disconnect.py": "functions.disconnect",
    "tether/handlers/session_ended.py": "functions.session_ended",
    "tether/handlers/sweep.py": "functions.sweep",
    "tether/sweep_metrics.py": "functions.sweep",
    "tether/liveness.py": "counts_as_sign_of_life",
}
"""Who writes the metrics of each module that writes any, as the README's table says it."""


@dataclass
class Written:
    units: set[str] = field(default_factory=set)
    dimensions: set[frozenset[str]] = field(default_factory=set)
    writers: set[str] = field(default_factory=set)


def _python_files() -> Iterator[Path]:
    for top in SOURCES:
        # Links are not followed: tether/deploy/functions is the entry points again.
        for folder, _, names in os.walk(ROOT / top):
            yield from (Path(folder) / name for name in names if name.endswith(".py"))


def _called_name(call: ast.Call) -> str | None:
    func = call.func
    if isinstance(func, ast.Name):
        return func.id
    if isinstance(func, ast.Attribute):
        return func.attr
    return None


def _unit(call: ast.Call, where: str) -> str:
    for keyword in call.keywords:
        if keyword.arg == "unit":
            value = keyword.value
            assert isinstance(value, ast.Attribute), f"{where}: a unit that is no MetricUnit.X"
            return value.attr
    return "Count"  # emit_metric's default


def _dimensions(call: ast.Call, where: str) -> frozenset[str]:
    for keyword in call.keywords:
        if keyword.arg == "dimensions":
            value = keyword.value
            assert isinstance(value, ast.Dict), f"{where}: dimensions that are no dict literal"
            keys = set()
            for key in value.keys:
                assert isinstance(key, ast.Constant) and isinstance(key.value, str), where
                keys.add(key.value)
            return frozenset(keys)
    return frozenset()


def written_metrics() -> dict[str, Written]:
    """Every metric an ``emit_metric`` call writes, with its units, dimension sets and
    writers. A name that is not a literal fails here: no table could list it."""
    written: dict[str, Written] = {}
    for path in _python_files():
        relative = path.relative_to(ROOT).as_posix()
        tree = ast.parse(path.read_text(), filename=relative)
        for node in ast.walk(tree):
            if not isinstance(node, ast.Call) or _called_name(node) != "emit_metric":
                continue
            where = f"{relative}:{node.lineno}"
            assert node.args, f"{where}: emit_metric without a name"
            name = node.args[0]
            assert isinstance(name, ast.Constant) and isinstance(name.value, str), (
                f"{where}: a metric's name must be a literal, for the README's table to list it"
            )
            assert relative in WRITERS, f"{where}: say in WRITERS which function runs {relative}"
            metric = written.setdefault(name.value, Written())
            metric.units.add(_unit(node, where))
            metric.dimensions.add(_dimensions(node, where))
            metric.writers.add(WRITERS[relative])
    return written


@dataclass(frozen=True)
class Row:
    writers: str
    unit: str
    dimensions: frozenset[str]
    act_when: str


def readme_metrics() -> dict[str, Row]:
    text = (ROOT / "README.md").read_text()
    assert "\n### Metrics\n" in text, "the README has no Metrics section"
    section = text.split("\n### Metrics\n", 1)[1].split("\n## ", 1)[0]
    lines = [line for line in section.splitlines() if line.startswith("|")]
    header = [cell.strip() for cell in lines[0].strip("|").split("|")]
    assert header == [
        "metric",
        "written by",
        "unit",
        "dimensions",
        "what it counts",
        "act when",
    ]
    rows: dict[str, Row] = {}
    for line in lines[2:]:
        cells = [cell.strip() for cell in line.strip("|").split(" | ")]
        assert len(cells) == len(header), line
        name = re.fullmatch(r"`(\w+)`", cells[0])
        assert name is not None, f"the metric's name in backticks: {cells[0]}"
        assert name.group(1) not in rows, f"{name.group(1)} has two rows"
        dimensions = frozenset(re.findall(r"`(\w+)`", cells[3]))
        assert dimensions or cells[3] == "none", line
        rows[name.group(1)] = Row(cells[1], cells[2], dimensions, cells[5])
    return rows


def test_the_readme_lists_every_metric_written_and_no_other() -> None:
    written = written_metrics()
    listed = readme_metrics()
    assert len(written) >= 20  # the reading found the calls
    assert sorted(written.keys() - listed.keys()) == [], "written, not in the README's table"
    assert sorted(listed.keys() - written.keys()) == [], "in the README's table, never written"


def test_each_row_says_the_unit_dimensions_and_writers_of_its_metric() -> None:
    listed = readme_metrics()
    for name, metric in written_metrics().items():
        row = listed[name]
        assert metric.units == {row.unit}, name
        assert metric.dimensions == {row.dimensions}, name
        for writer in metric.writers:
            assert f"`{writer}`" in row.writers, f"{name}: written by {writer}"


def _alarms() -> dict[str, dict[str, object]]:
    template, problems = decode_str((ROOT / "infra" / "template.yaml").read_text())
    assert not problems and template is not None, problems
    return {
        logical_id: resource["Properties"]
        for logical_id, resource in template["Resources"].items()
        if resource["Type"] == "AWS::CloudWatch::Alarm"
    }


def _alarm_suffix(properties: dict[str, object]) -> str:
    """``orphaned-sessions`` of ``!Sub ${AWS::StackName}-orphaned-sessions``."""
    name = properties["AlarmName"]
    assert isinstance(name, dict), name
    text = name["Fn::Sub"]
    assert isinstance(text, str) and text.startswith("${AWS::StackName}-"), text
    return text.removeprefix("${AWS::StackName}-")


def test_every_alarm_on_tethers_metrics_watches_a_listed_metric_whose_row_names_it() -> None:
    listed = readme_metrics()
    ours = {
        logical_id: properties
        for logical_id, properties in _alarms().items()
        if not str(properties["Namespace"]).startswith("AWS/")
    }
    assert len(ours) >= 4
    for logical_id, properties in ours.items():
        metric = properties["MetricName"]
        assert isinstance(metric, str)
        assert metric in listed, f"{logical_id} watches {metric}, which no code writes"
        dimensions = properties.get("Dimensions", [])
        assert isinstance(dimensions, list)
        assert frozenset(d["Name"] for d in dimensions) == listed[metric].dimensions, (
            f"{logical_id}: a metric is matched by its exact dimensions"
        )
        assert f"alarm `{_alarm_suffix(properties)}`" in listed[metric].act_when, metric
