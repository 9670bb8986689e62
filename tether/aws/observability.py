"""Structured JSON logs and CloudWatch EMF metrics, Powertools style, and the
prologue every Lambda entry point shares.

Module-level objects are created once per container. Per-invocation keys
(connection_id, session_id, the correlation id) are Powertools' thread-safe keys:
they live in the invocation's own context, so invocations running at once in
the local runtime never see each other's keys, and each invocation starts clean.
"""

from __future__ import annotations

import functools
import gc
import json
import logging
import numbers
import os
import sys
import time
from collections.abc import Callable
from typing import Any, TypeVar

from aws_lambda_powertools import Logger
from aws_lambda_powertools.logging.formatter import (
    RESERVED_LOG_ATTRS,
    THREAD_LOCAL_KEYS,
    LambdaPowertoolsFormatter,
)
from aws_lambda_powertools.metrics import MetricUnit

R = TypeVar("R")


class _CurrentStdout:
    """Writes to whatever sys.stdout is now, as the EMF metric lines do, so logs and
    metrics stay one ordered stream even where stdout is swapped (local runtime, tests).
    The command line sends logs to stderr instead, keeping stdout for its output."""

    to_stderr = False

    def write(self, text: str) -> int:
        return (sys.stderr if self.to_stderr else sys.stdout).write(text)

    def flush(self) -> None:
        (sys.stderr if self.to_stderr else sys.stdout).flush()


_stream = _CurrentStdout()


def logs_to_stderr() -> None:
    _stream.to_stderr = True


# A message that cannot begin a JSON document is logged as it is: Powertools would try
# to decode every message (a raised and caught exception per line) to find the few
# that are JSON. These are the first characters a JSON document can have.
_JSON_STARTS = frozenset('{["-0123456789tfnIN')
_JSON_WHITESPACE = " \t\n\r"
_RESERVED = frozenset(RESERVED_LOG_ATTRS)


class _Formatter(LambdaPowertoolsFormatter):
    """Powertools' JSON formatter, line for line, at a fraction of its cost per line:
    no JSON decoding of messages that cannot be JSON, one JSON encoder built once, the
    timestamp's seconds formatted once per second, the keys gathered without copying the
    record, and no asking for an exception a line does not carry."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        if self.json_indent is None and "json_serializer" not in kwargs:
            # json.dumps builds this same encoder on every call when given options.
            self.json_serializer = json.JSONEncoder(
                default=self.json_default, separators=(",", ":"), ensure_ascii=False
            ).encode
        self._second: tuple[int, str, str] = (-1, "", "")

    def format(self, record: logging.LogRecord) -> str:
        if record.exc_info:
            return super().format(record)
        # Without an exception, Powertools' exception and stack trace keys are None (and
        # left out) unless the line's own keys give them: the same line, without asking.
        formatted = self._extract_log_keys(record)
        formatted["message"] = self._extract_log_message(record)
        if self.serialize_stacktrace:
            formatted.pop("stack_trace", None)  # Powertools sets the trace here: None
        formatted["xray_trace_id"] = self._get_latest_trace_id()
        return self.serialize(self._strip_none_records(formatted))

    def _extract_log_keys(self, log_record: logging.LogRecord) -> dict[str, Any]:
        # Powertools' steps in its order, without copying the record's twenty-odd
        # attributes for each line or scanning its tuple of reserved names for each key.
        record = log_record.__dict__
        record["asctime"] = self.formatTime(record=log_record)
        formatted: dict[str, Any] = {}
        for keys in (self.log_format, THREAD_LOCAL_KEYS.get()):
            for key, value in keys.items():
                if value and key in _RESERVED:
                    if not isinstance(value, str):
                        return super()._extract_log_keys(log_record)  # which raises its error
                    formatted[key] = value % record
                else:
                    formatted[key] = value
        for key, value in record.items():
            if key not in _RESERVED:
                formatted[key] = value
        return formatted

    def _extract_log_message(self, log_record: logging.LogRecord) -> Any:
        message = log_record.msg
        if (
            isinstance(message, str)
            and not log_record.args
            and message.lstrip(_JSON_WHITESPACE)[:1] not in _JSON_STARTS
            and message.strip(_JSON_WHITESPACE)
        ):
            return message
        return super()._extract_log_message(log_record)

    # A logged exception quotes whatever the failing code put in its message (the
    # application's finalizer, say, with a database URL or a token in it), twice: in the
    # traceback's text and in its structured copy.
    def formatException(self, ei: Any) -> str:
        from tether.dburl import hide_secrets  # noqa: PLC0415 - only when one is logged

        return hide_secrets(super().formatException(ei))

    def _extract_log_exception(
        self, log_record: logging.LogRecord
    ) -> tuple[str, str, list[Any]] | tuple[None, None, None]:
        extracted = super()._extract_log_exception(log_record)
        if extracted[2]:
            from tether.dburl import hide_secrets  # noqa: PLC0415 - only when one is logged

            # The exception's notes (add_note) are a third copy, logged as they are.
            return extracted[0], extracted[1], [hide_secrets(str(note)) for note in extracted[2]]
        return extracted

    def _serialize_stacktrace(self, log_record: logging.LogRecord) -> Any:
        from tether.dburl import hide_secrets  # noqa: PLC0415 - only when one is logged

        trace = super()._serialize_stacktrace(log_record)
        if trace is not None:
            trace["value"] = hide_secrets(str(trace["value"]))
            # Each frame quotes its line of source, a secret written there included.
            for frame in trace["frames"]:
                if frame.get("statement"):
                    frame["statement"] = hide_secrets(str(frame["statement"]))
        return trace

    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:
        if self.use_rfc3339_iso8601 or datefmt is not None or self.datefmt is not None:
            return super().formatTime(record, datefmt)
        # Powertools' default, 2021-05-03 10:20:19,650+0200: the same strftime, split
        # around the milliseconds, done once per second.
        second = int(record.created)
        cached = self._second
        if cached[0] != second:
            moment = self.converter(record.created)
            head, _, tail = self.default_time_format.partition(self.custom_ms_time_directive)
            cached = (second, time.strftime(head, moment), time.strftime(tail, moment))
            self._second = cached
        return f"{cached[1]}{int(record.msecs):03d}{cached[2]}"


_formatter = _Formatter()
"""The logger's formatter, held so the invocation's keys go to it directly: Powertools'
Logger finds it through three properties on every call, a third of a call's cost."""
logger = Logger(
    service="tether",
    stream=_stream,  # type: ignore[arg-type]
    logger_formatter=_formatter,
)

NAMESPACE_ENV = "TETHER_METRICS_NAMESPACE"
"""Where the metrics go (the stack sets it): read from the environment, not the settings,
since a metric is written even when the settings cannot be read (ConnectRejected for a
misconfigured function)."""
_MAX_METRIC_NAME_LENGTH = 255
_MAX_DIMENSIONS = 29
_metric_encoder = json.JSONEncoder(separators=(",", ":"))


def emf_line(
    name: str,
    value: float = 1.0,
    *,
    unit: MetricUnit = MetricUnit.Count,
    dimensions: dict[str, str] | None = None,
    namespace: str = "tether",
) -> str:
    """One metric as the CloudWatch embedded metric format line Powertools'
    ``single_metric`` prints (the same bytes, newline included)."""
    name = name.strip()
    if not 1 <= len(name) <= _MAX_METRIC_NAME_LENGTH:
        raise ValueError(f"metric name must be 1 to {_MAX_METRIC_NAME_LENGTH} characters")
    if not isinstance(value, numbers.Number):
        raise TypeError(f"metric {name}: {value!r} is not a number")
    dimension_set = {
        key: dimension if isinstance(dimension, str) else str(dimension)
        for key, dimension in (dimensions or {}).items()
    }
    service = os.environ.get("POWERTOOLS_SERVICE_NAME")
    if service and not dimension_set.get("service"):
        dimension_set["service"] = service
    if len(dimension_set) > _MAX_DIMENSIONS:
        raise ValueError(f"metric {name}: more than {_MAX_DIMENSIONS} dimensions")
    # What Powertools writes, without its round trip through local time.
    timestamp = int(time.time() * 1000)
    if name in dimension_set or "_aws" in dimension_set or name == "_aws":
        # A key written twice: the document's own rules say which stays where.
        metadata: dict[str, Any] = {"Timestamp": timestamp}
        metadata.update(_directive(namespace, (*dimension_set,), name, unit))
        document = {
            "_aws": metadata,
            **dimension_set,
            name: [float(value)],
        }
        return _metric_encoder.encode(document) + "\n"
    # The same document's text, its fixed part encoded once per metric and dimension names.
    encode = _metric_encoder.encode
    directive = _directive_text(namespace, (*dimension_set,), name, unit)
    values = "".join(f",{encode(key)}:{encode(text)}" for key, text in dimension_set.items())
    metric = f"{encode(name)}:{encode([float(value)])}"
    return f'{{"_aws":{{"Timestamp":{timestamp},{directive}}}{values},{metric}}}\n'


def _directive(
    namespace: str, dimension_keys: tuple[str, ...], name: str, unit: MetricUnit
) -> dict[str, Any]:
    return {
        "CloudWatchMetrics": [
            {
                "Namespace": namespace,
                "Dimensions": [list(dimension_keys)],
                "Metrics": [{"Name": name, "Unit": unit.value}],
            }
        ]
    }


@functools.lru_cache(maxsize=256)
def _directive_text(
    namespace: str, dimension_keys: tuple[str, ...], name: str, unit: MetricUnit
) -> str:
    """``"CloudWatchMetrics":[...]``: which metric, in what namespace, by which dimensions
    (a handful per function, so each is encoded once)."""
    return _metric_encoder.encode(_directive(namespace, dimension_keys, name, unit))[1:-1]


def emit_metric(
    name: str,
    value: float = 1.0,
    *,
    unit: MetricUnit = MetricUnit.Count,
    dimensions: dict[str, str] | None = None,
) -> None:
    """Write one EMF line now, so a metric is never lost with a failed invocation.
    One write of the whole line, so lines of invocations running at once (the local
    runtime's threads) never interleave."""
    namespace = os.environ.get(NAMESPACE_ENV) or os.environ.get(
        "POWERTOOLS_METRICS_NAMESPACE", "tether"
    )
    sys.stdout.write(emf_line(name, value, unit=unit, dimensions=dimensions, namespace=namespace))


def add_log_keys(**keys: object) -> None:
    """Keys for every line the current invocation logs from here on."""
    present = {key: value for key, value in keys.items() if value is not None}
    if present:
        _formatter.thread_safe_append_keys(**present)


_cold = True

WARM_GC_THRESHOLD = 10_000
"""Allocations between the garbage collector's youngest collections once warm (Python's
default is 700). A warm invocation allocates a few thousand short-lived objects, nearly
all freed by reference counting; collecting every 700 of them costs a connect and
disconnect pair a sixth of its time."""


def _settle_after_cold_start() -> None:
    """After the container's first invocation: what it built (modules, settings, the
    database connection) lives as long as the container, so the collector stops
    traversing it (``gc.freeze``) and collects the young generation less often."""
    gc.freeze()
    threshold, *older = gc.get_threshold()
    if threshold < WARM_GC_THRESHOLD:
        gc.set_threshold(WARM_GC_THRESHOLD, *older)


def remaining_seconds(context: Any) -> float | None:
    """What the Lambda context says is left of the invocation; None from a caller that
    passes no context able to say."""
    remaining = getattr(context, "get_remaining_time_in_millis", None)
    return float(remaining()) / 1000 if callable(remaining) else None


def invocation(handler: Callable[[Any, Any], R]) -> Callable[[Any, Any], R]:
    """The prologue of every entry point: clean per-invocation log keys, the Lambda
    context's request id as the correlation id, and the cold start flag."""

    @functools.wraps(handler)
    def entry(event: Any, context: Any) -> R:
        global _cold
        cold, _cold = _cold, False
        _formatter.thread_safe_clear_keys()
        add_log_keys(
            function_name=getattr(context, "function_name", None),
            function_request_id=getattr(context, "aws_request_id", None),
            cold_start=cold,
        )
        try:
            return handler(event, context)
        finally:
            _formatter.thread_safe_clear_keys()
            if cold:
                _settle_after_cold_start()

    return entry
