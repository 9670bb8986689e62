"""The sweep's report as CloudWatch EMF metrics."""

from __future__ import annotations

from datetime import UTC, datetime

from aws_lambda_powertools.metrics import MetricUnit

from tether.aws.observability import emit_metric
from tether.sweep import SweepReport


def emit_outage_metrics(report: SweepReport) -> None:
    """What a database outage cost the run (announcements it could not record, checks
    it cut short): emitted by every run, a failed one too, since an outage that fails
    the run is the one these are there to show."""
    emit_metric("AnnouncementsUnrecorded", report.announced_unrecorded)
    # A check the database's absence cut short: the run carried on, but an outage
    # long enough to cost checks is worth an alarm of its own.
    emit_metric("SweepChecksFailed", report.failed_checks)


def emit_sweep_metrics(report: SweepReport) -> None:
    """EMF metrics for one run."""
    for reason, count in sorted(report.ended_by_reason.items()):
        emit_metric("SessionsEnded", count, dimensions={"Reason": reason})
    emit_metric("AnnouncementsRedelivered", report.redelivered)
    emit_metric("AnnouncementsFailed", report.announce_failed)
    emit_metric("GatewayErrors", report.gateway_errors)
    # Calls never started for want of a check's time: no failure, so not GatewayErrors.
    emit_metric("SuspectsLeftForTime", report.left_unasked + report.left_unclosed)
    emit_metric("SweepBugs", report.bugs)
    emit_outage_metrics(report)
    health = report.health
    if health is not None:
        emit_metric("ActiveSessions", health.active_sessions)
        emit_metric("OrphanedSessions", health.orphaned_sessions)
        emit_metric("UnannouncedSessions", health.unannounced)
        oldest = 0.0
        if health.oldest_active_start is not None:
            oldest = (datetime.now(UTC) - health.oldest_active_start).total_seconds()
        emit_metric("OldestActiveSessionAgeSeconds", max(oldest, 0.0), unit=MetricUnit.Seconds)
