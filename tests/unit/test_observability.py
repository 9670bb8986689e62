"""The fast paths of tether's logs and metrics write what Powertools writes."""

from __future__ import annotations

import contextlib
import io
import json
import logging
import re
import sys

import pytest
from aws_lambda_powertools.logging.formatter import LambdaPowertoolsFormatter
from aws_lambda_powertools.metrics import MetricUnit, single_metric

from tether.aws import observability

TIMESTAMP = re.compile(r'"Timestamp":(\d+)')


def _powertools_line(
    name: str, value: float, unit: MetricUnit, dimensions: dict[str, str], namespace: str
) -> str:
    out = io.StringIO()
    with (
        contextlib.redirect_stdout(out),
        single_metric(name=name, unit=unit, value=value, namespace=namespace) as metric,
    ):
        for key, dimension in dimensions.items():
            metric.add_dimension(name=key, value=dimension)
    return out.getvalue()


@pytest.mark.parametrize(
    ("name", "value", "unit", "dimensions"),
    [
        ("SessionsOpened", 1.0, MetricUnit.Count, {}),
        ("SessionsEnded", 1, MetricUnit.Count, {"Reason": "client_disconnect"}),
        ("OldestActiveSessionAgeSeconds", 12.5, MetricUnit.Seconds, {"A": "x", "B": "y"}),
        (" Padded ", 3, MetricUnit.Count, {"Cause": 'ümlaut "quoted"'}),
        ("Twice", 2, MetricUnit.Count, {"Twice": "as a dimension", "service": "own"}),
        ("_aws", 1, MetricUnit.Count, {"Reason": "a metric named as the metadata key"}),
        ("Odd", float("inf"), MetricUnit.Milliseconds, {"Line\nbreak": "\u2028", "k": "\x00"}),
    ],
)
@pytest.mark.parametrize("service", [None, "tether-prod"])
def test_an_emf_line_is_byte_for_byte_what_powertools_prints(
    name: str,
    value: float,
    unit: MetricUnit,
    dimensions: dict[str, str],
    service: str | None,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    if service:
        monkeypatch.setenv("POWERTOOLS_SERVICE_NAME", service)
    else:
        monkeypatch.delenv("POWERTOOLS_SERVICE_NAME", raising=False)
    ours = observability.emf_line(name, value, unit=unit, dimensions=dimensions, namespace="ns")
    theirs = _powertools_line(name, value, unit, dimensions, "ns")
    # A metric named _aws takes the metadata's place: no timestamp is left.
    ours_ms = [int(ms) for ms in TIMESTAMP.findall(ours)]
    theirs_ms = [int(ms) for ms in TIMESTAMP.findall(theirs)]
    assert len(ours_ms) == len(theirs_ms)
    assert all(abs(a - b) < 1000 for a, b in zip(ours_ms, theirs_ms, strict=True))
    assert TIMESTAMP.sub("T", ours) == TIMESTAMP.sub("T", theirs)


def test_emit_metric_writes_one_whole_line_to_stdout(capsys: pytest.CaptureFixture[str]) -> None:
    observability.emit_metric("SessionsOpened")
    observability.emit_metric("SessionsEnded", dimensions={"Reason": "gone"})
    lines = capsys.readouterr().out.splitlines()
    assert [line.count('"_aws"') for line in lines] == [1, 1]
    assert lines[1].endswith('"Reason":"gone","SessionsEnded":[1.0]}')


def test_a_metric_with_a_bad_name_or_value_is_refused() -> None:
    with pytest.raises(ValueError, match="1 to 255"):
        observability.emf_line(" ")
    with pytest.raises(TypeError, match="not a number"):
        observability.emf_line("X", "1")  # type: ignore[arg-type]


def _record(
    message: object, *args: object, exc: bool = False, **extra: object
) -> logging.LogRecord:
    exc_info = None
    if exc:
        error = RuntimeError("boom")
        exc_info = (RuntimeError, error, None)
    record = logging.LogRecord("tether", logging.INFO, __file__, 10, message, args, exc_info)
    record.funcName = "handler"
    record.__dict__.update(extra)
    return record


@pytest.mark.parametrize(
    "record",
    [
        _record("session opened", connection_id="abc=", user_id=""),
        _record('{"a": 1, "b": [true, null]}'),
        _record("  [1, 2]"),
        _record("123"),
        _record("nothing to end"),
        _record("tabs\tand\nnew lines \u00e9"),
        _record(""),
        _record("   "),
        _record("%s opened", "session"),
        _record({"already": "a dict"}),
        _record("failed", exc=True, error="x"),
        _record("its own", exception="e", exception_name="E", stack_trace="s", xray_trace_id="x"),
        _record("its own", exc=True, exception="e", stack_trace="s", xray_trace_id=None),
        _record("its own", exception=None, stack_trace=None),
    ],
)
def test_the_formatter_writes_what_powertools_writes(record: logging.LogRecord) -> None:
    ours = observability._Formatter()
    theirs = LambdaPowertoolsFormatter()
    for formatter in (ours, theirs):
        formatter.append_keys(service="tether")
    assert ours.format(record) == theirs.format(record)


def test_the_formatter_orders_and_overrides_keys_as_powertools_does() -> None:
    ours = observability._Formatter()
    theirs = LambdaPowertoolsFormatter()
    for formatter in (ours, theirs):
        formatter.append_keys(service="tether", region="eu-west-1", location="%(module)s")
    # The invocation's keys: one overrides a key of the format, one is a reserved
    # attribute's template, one is None (left out), one is repeated by the record.
    ours.thread_safe_append_keys(
        region="us-east-1", timestamp="%(created)f", session_id="s-1", gone=None, cold_start=False
    )
    try:
        record = _record("session ended", session_id="s-2", end_reason="gone", nothing=None)
        assert ours.format(record) == theirs.format(record)
        assert '"cold_start":false' in ours.format(record)
    finally:
        ours.thread_safe_clear_keys()


@pytest.mark.parametrize("serialize_stacktrace", [True, False])
def test_the_trace_id_and_a_line_without_stack_traces_are_as_powertools_writes_them(
    serialize_stacktrace: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("_X_AMZN_TRACE_ID", "Root=1-5759e988-bd862e3fe1be46a994272793;Sampled=1")
    ours = observability._Formatter(serialize_stacktrace=serialize_stacktrace)
    theirs = LambdaPowertoolsFormatter(serialize_stacktrace=serialize_stacktrace)
    for record in (
        _record("opened", stack_trace="s", user_id="u"),
        _record("failed", exc=True, stack_trace="s"),
    ):
        assert ours.format(record) == theirs.format(record)
        assert '"xray_trace_id":"1-5759e988-bd862e3fe1be46a994272793"' in ours.format(record)


def test_a_reserved_key_that_is_no_template_is_refused_as_powertools_refuses_it() -> None:
    formatter = observability._Formatter()
    formatter.append_keys(location=42)
    with pytest.raises(ValueError, match="need to be type 'str'"):
        formatter.format(_record("x"))


def test_the_timestamp_changes_with_the_second() -> None:
    formatter = observability._Formatter()
    reference = LambdaPowertoolsFormatter()
    for created in (1_795_893_083.867, 1_795_893_083.999, 1_795_893_084.001, 1_795_893_090.5):
        record = _record("tick")
        record.created = created
        record.msecs = (created - int(created)) * 1000
        assert formatter.formatTime(record) == reference.formatTime(record)


def _fail_with_a_url_in_its_source() -> None:
    raise RuntimeError("could not reach postgresql://app:PW-in-source-123@db.internal/app")


def test_a_secret_in_a_failing_line_of_source_is_hidden_everywhere_the_log_quotes_it() -> None:
    try:
        _fail_with_a_url_in_its_source()
    except RuntimeError:
        record = logging.LogRecord(
            "tether", logging.ERROR, __file__, 1, "failed", None, sys.exc_info()
        )
    line = observability._Formatter().format(record)
    assert "PW-in-source-123" not in line
    # The frames are still there, the failing statement among them.
    frames = json.loads(line)["stack_trace"]["frames"]
    assert any("raise RuntimeError" in str(frame["statement"]) for frame in frames)
