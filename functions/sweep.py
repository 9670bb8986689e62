"""The scheduled sweep (EventBridge schedule, every minute by default).

See ``functions.core.sweeper`` for what one run does. The run stops taking new
batches before the Lambda's remaining time runs out; what is left waits for the
next run. A database failure fails the invocation: everything committed so far
stays, and the next run carries on from there.
"""

from __future__ import annotations

from typing import Any

from functions.core.errors import TetherError
from functions.core.observability import emit_metric, logger, start_invocation
from functions.core.sweeper import Sweep, emit_sweep_metrics


def lambda_handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    request_id = getattr(context, "aws_request_id", None)
    start_invocation(request_id=request_id)
    sweep = Sweep.configured(lambda: context.get_remaining_time_in_millis() / 1000)
    try:
        report = sweep.run()
    except TetherError as exc:
        partial = sweep.report
        emit_metric("SweepFailed")
        logger.error(
            "sweep failed; the next run carries on", extra={"error": str(exc), **partial.as_dict()}
        )
        raise
    emit_sweep_metrics(report)
    logger.info("sweep finished", extra=report.as_dict())
    return report.as_dict()
