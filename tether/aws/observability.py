"""Structured JSON logs and CloudWatch EMF metrics, Powertools style, and the
prologue every Lambda entry point shares.

Module-level objects are created once per container. Per-invocation keys
(connection_id, session_id, the correlation id) are Powertools' thread-safe keys:
they live in the invocation's own context, so invocations running at once in
the local runtime never see each other's keys, and each invocation starts clean.
"""

from __future__ import annotations

import functools
import os
import sys
from collections.abc import Callable
from typing import Any, TypeVar

from aws_lambda_powertools import Logger
from aws_lambda_powertools.metrics import MetricUnit, single_metric

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


logger = Logger(service="tether", stream=_stream)  # type: ignore[arg-type]

NAMESPACE_ENV = "TETHER_METRICS_NAMESPACE"


def emit_metric(
    name: str,
    value: float = 1.0,
    *,
    unit: MetricUnit = MetricUnit.Count,
    dimensions: dict[str, str] | None = None,
) -> None:
    """Write one EMF line now, so a metric is never lost with a failed invocation."""
    namespace = os.environ.get(NAMESPACE_ENV) or os.environ.get(
        "POWERTOOLS_METRICS_NAMESPACE", "tether"
    )
    with single_metric(name=name, unit=unit, value=value, namespace=namespace) as metric:
        for key, dimension in (dimensions or {}).items():
            metric.add_dimension(name=key, value=dimension)


def add_log_keys(**keys: object) -> None:
    """Keys for every line the current invocation logs from here on."""
    present = {key: value for key, value in keys.items() if value is not None}
    if present:
        logger.thread_safe_append_keys(**present)


_cold = True


def invocation(handler: Callable[[Any, Any], R]) -> Callable[[Any, Any], R]:
    """The prologue of every entry point: clean per-invocation log keys, the Lambda
    context's request id as the correlation id, and the cold start flag."""

    @functools.wraps(handler)
    def entry(event: Any, context: Any) -> R:
        global _cold
        cold, _cold = _cold, False
        logger.thread_safe_clear_keys()
        add_log_keys(
            function_name=getattr(context, "function_name", None),
            function_request_id=getattr(context, "aws_request_id", None),
            cold_start=cold,
        )
        try:
            return handler(event, context)
        finally:
            logger.thread_safe_clear_keys()

    return entry
