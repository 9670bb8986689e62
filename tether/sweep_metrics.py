"""The sweep's report as CloudWatch EMF metrics."""

from __future__ import annotations

from datetime import UTC, datetime

from aws_lambda_powertools.metrics import MetricUnit

from tether.aws.observability import emit_metric
from tether.sweep import SweepReport


def emit_sweep_metrics(report: SweepReport) -> None:
    """EMF metrics for one run."""
    emit = emit_metric  # short: eleven calls below
    for reason, count in sorted(report.ended_by_reason.items()):
        emit("SessionsEnded", count, dimensions={"Reason": reason})
    emit("AnnouncementsRedelivered", report.redelivered)
    emit("AnnouncementsFailed", report.announce_failed)
    emit("GatewayErrors", report.gateway_errors)
    health = report.health
    if health is not None:
        emit("ActiveSessions", health.active_sessions)
        emit("OrphanedSessions", health.orphaned_sessions)
        emit("UnannouncedSessions", health.unannounced)
        oldest = 0.0
        if health.oldest_active_start is not None:
            oldest = (datetime.now(UTC) - health.oldest_active_start).total_seconds()
        emit("OldestActiveSessionAgeSeconds", max(oldest, 0.0), unit=MetricUnit.Seconds)
