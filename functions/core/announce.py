"""Announces ``SessionEnded`` on an EventBridge bus, at least once.

The caller commits the end first, then announces, then marks the sessions
announced; a session whose event EventBridge did not accept stays in the queue
for the sweep to redeliver. Consumers dedupe by ``session_id``.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any, Protocol
from uuid import UUID

from functions.core.models import EndedSession, QueuedSession

if TYPE_CHECKING:
    from mypy_boto3_events import EventBridgeClient

    from functions.core.store import SessionStore

logger = logging.getLogger("tether.announce")

DETAIL_TYPE = "SessionEnded"
PUT_EVENTS_BATCH = 10  # EventBridge's limit of entries per PutEvents call


def session_ended_detail(session: EndedSession) -> dict[str, Any]:
    return {
        "session_id": str(session.session_id),
        "connection_id": session.connection_id,
        "user_id": str(session.user_id) if session.user_id else None,
        "session_start": session.session_start.isoformat(),
        "session_end": session.session_end.isoformat(),
        "duration_seconds": session.duration_seconds,
        "end_reason": session.end_reason.value,
        "disconnect_status_code": session.disconnect_status_code,
    }


@dataclass
class AnnounceResult:
    announced: list[UUID] = field(default_factory=list)
    failed: list[UUID] = field(default_factory=list)


class Announcer(Protocol):
    def announce(self, sessions: Sequence[EndedSession]) -> AnnounceResult: ...


class EventBridgeAnnouncer:
    def __init__(
        self,
        bus_name: str,
        *,
        source: str = "tether",
        endpoint_url: str | None = None,
        concurrency: int = 8,
        client: EventBridgeClient | None = None,
    ) -> None:
        self._bus_name = bus_name
        self._concurrency = concurrency
        self._source = source
        self._endpoint_url = endpoint_url
        self._client = client

    def _events(self) -> EventBridgeClient:
        if self._client is None:
            import boto3  # noqa: PLC0415 - only the paths that announce load boto3
            from botocore.config import Config  # noqa: PLC0415

            self._client = boto3.client(
                "events",
                endpoint_url=self._endpoint_url,
                config=Config(connect_timeout=2, read_timeout=5, retries={"max_attempts": 2}),
            )
        return self._client

    def announce(self, sessions: Sequence[EndedSession]) -> AnnounceResult:
        batches = [
            sessions[start : start + PUT_EVENTS_BATCH]
            for start in range(0, len(sessions), PUT_EVENTS_BATCH)
        ]
        result = AnnounceResult()
        if not batches:
            return result
        client = self._events()  # built here, once, before any worker thread needs it
        if len(batches) == 1:
            outcomes = [self._put(client, batches[0])]
        else:
            # A redelivery backlog is thousands of PutEvents calls: a few at once.
            with ThreadPoolExecutor(max_workers=self._concurrency) as pool:
                outcomes = list(pool.map(lambda batch: self._put(client, batch), batches))
        for outcome in outcomes:
            result.announced.extend(outcome.announced)
            result.failed.extend(outcome.failed)
        return result

    def _put(self, client: EventBridgeClient, batch: Sequence[EndedSession]) -> AnnounceResult:
        from botocore.exceptions import BotoCoreError, ClientError  # noqa: PLC0415

        result = AnnounceResult()
        entries = [
            {
                "Source": self._source,
                "DetailType": DETAIL_TYPE,
                "Detail": json.dumps(session_ended_detail(session)),
                "EventBusName": self._bus_name,
                "Resources": [],
            }
            for session in batch
        ]
        try:
            response = client.put_events(Entries=entries)  # type: ignore[arg-type]
        except (BotoCoreError, ClientError) as exc:
            logger.warning(
                "PutEvents failed; the sweep will redeliver",
                extra={"sessions": len(batch), "error": str(exc)},
            )
            result.failed.extend(session.session_id for session in batch)
            return result
        # Entries answer in order; a failed one carries an ErrorCode.
        answers = response.get("Entries", [])
        for index, session in enumerate(batch):
            entry = answers[index] if index < len(answers) else {}
            if entry.get("EventId") and not entry.get("ErrorCode"):
                result.announced.append(session.session_id)
            else:
                logger.warning(
                    "EventBridge refused an entry",
                    extra={
                        "session_id": str(session.session_id),
                        "error_code": entry.get("ErrorCode"),
                    },
                )
                result.failed.append(session.session_id)
        return result


class LogAnnouncer:
    """Announces by writing one structured log line per session (local runs, no AWS)."""

    def announce(self, sessions: Sequence[EndedSession]) -> AnnounceResult:
        for session in sessions:
            detail = session_ended_detail(session)
            logger.info(DETAIL_TYPE, extra={"detail_type": DETAIL_TYPE, **detail})
        return AnnounceResult(announced=[session.session_id for session in sessions])


def announce_and_mark(
    store: SessionStore, announcer: Announcer, sessions: Sequence[EndedSession]
) -> AnnounceResult:
    """Announce, then record what EventBridge accepted. What failed stays queued,
    released for the next sweep to retry."""
    if not sessions:
        return AnnounceResult()
    result = announcer.announce(sessions)
    if result.announced:
        store.mark_announced(result.announced)
    if result.failed:
        store.release_announcements(result.failed)
    return result


@dataclass
class DrainResult:
    announced: int = 0
    redelivered: int = 0
    """Of those announced, the ends queued before ``since``: a retry, not a first try."""
    failed: int = 0


def drain_outbox(
    store: SessionStore,
    announcer: Announcer,
    *,
    batch_size: int,
    lease_seconds: float,
    time_left: Callable[[], bool],
    since: datetime | None = None,
) -> DrainResult:
    """Announce what waits in the outbox, a leased batch at a time, while time is left.

    Stops at the first refusal: EventBridge is likely down, and the next run retries
    at once (refused ends are released) rather than this one spinning on them.
    """
    drained = DrainResult()
    while time_left():
        batch: list[QueuedSession] = store.claim_unannounced(
            limit=batch_size, lease_seconds=lease_seconds
        )
        outcome = announce_and_mark(store, announcer, batch)
        accepted = set(outcome.announced)
        drained.announced += len(accepted)
        if since is not None:
            drained.redelivered += sum(
                1
                for queued in batch
                if queued.session_id in accepted and queued.enqueued_at < since
            )
        drained.failed += len(outcome.failed)
        if len(batch) < batch_size or outcome.failed:
            break
    return drained
