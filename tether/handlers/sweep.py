"""The scheduled sweep (EventBridge schedule, every minute by default).

``run_sweep`` is the one way a sweep is run and reported, by this Lambda, by
``tether sweep`` and by ``tether dev``: see ``tether.sweep`` for what a run does.
The run stops taking new batches before its time runs out; what is left waits
for the next run. A database failure fails the run: everything committed so far
stays, and the next run carries on from there.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from tether import runtime
from tether.aws.observability import emit_metric, invocation, logger
from tether.errors import TetherError
from tether.sweep import RemainingSeconds, Sleep, SweepReport
from tether.sweep_metrics import emit_outage_metrics, emit_sweep_metrics

if TYPE_CHECKING:
    from tether.store import SessionStore


def run_sweep(
    remaining_seconds: RemainingSeconds,
    *,
    metrics: bool = True,
    keep_checking: bool = True,
    sleep: Sleep | None = None,
    store: SessionStore | None = None,
    report: SweepReport | None = None,
) -> SweepReport:
    """Run one sweep from this process's configuration: checks at its cadence for
    its schedule period (``keep_checking``), or one check. Logs and (optionally)
    emits its metrics; a failure is logged with what the run had done, and raised.
    A ``report`` given is filled as the run goes: after a failure, it says what was done."""
    sweep = None
    try:
        sweep = runtime.sweep(
            remaining_seconds,
            keep_checking=keep_checking,
            sleep=sleep,
            session_store=store,
            report=report,
        )
        report = sweep.run()
    except TetherError as exc:
        if metrics:
            emit_metric("SweepFailed")
            if sweep is not None:
                emit_outage_metrics(sweep.report)
        done = sweep.report.as_dict() if sweep is not None else {}
        did_something = sweep is not None and sweep.report.ended_closed_or_announced
        logger.error(
            "sweep failed; what it did is kept" if did_something else "sweep failed; nothing done",
            extra={"error": str(exc), **done},
        )
        raise
    if metrics:
        emit_sweep_metrics(report)
    logger.info("sweep finished", extra=report.as_dict())
    return report


@invocation
def lambda_handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    report = run_sweep(lambda: context.get_remaining_time_in_millis() / 1000)
    return report.as_dict()
