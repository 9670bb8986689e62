"""Structured JSON logs and CloudWatch EMF metrics, Powertools style.

Module-level objects are created once per container. Every logger under the
``tether`` name shares the Powertools handler, so keys appended for one
invocation (connection_id, session_id) appear on every line it logs.
"""

from __future__ import annotations

import os
import sys

from aws_lambda_powertools import Logger
from aws_lambda_powertools.metrics import MetricUnit, single_metric


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


def start_invocation(*, request_id: str | None = None, **keys: object) -> None:
    """Reset the per-invocation log keys: a warm container must not carry old ones."""
    logger.remove_keys(["connection_id", "session_id", "route_key", "user_id"])
    logger.set_correlation_id(request_id)
    logger.append_keys(**{key: value for key, value in keys.items() if value is not None})
