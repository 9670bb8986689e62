"""Announces ``SessionEnded`` on an EventBridge bus."""

from __future__ import annotations

import logging
import threading
from collections import Counter
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING

from tether.aws.clients import error_code
from tether.models import SESSION_ENDED, SessionEnded
from tether.outbox import DETAIL_FIELDS, AnnounceResult

if TYPE_CHECKING:
    from uuid import UUID

    from mypy_boto3_events import EventBridgeClient

logger = logging.getLogger("tether.eventbridge")

PUT_EVENTS_BATCH = 10  # EventBridge's limit of entries per PutEvents call
# PutEvents answers in tens of milliseconds. A call that takes seconds belongs to an
# outage: two tries of at most 1.5 s to connect and 1.5 s to read keep $disconnect well
# inside its 10 s timeout, and what is not accepted stays queued for the sweep.
CALL_TIMEOUT_SECONDS = 1.5
CALL_ATTEMPTS = 2


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
            from tether.aws.clients import client  # noqa: PLC0415 - boto3 only where announcing

            self._client = client(
                "events",
                endpoint_url=self._endpoint_url,
                timeout_seconds=CALL_TIMEOUT_SECONDS,
                max_attempts=CALL_ATTEMPTS,
            )
        return self._client

    def announce(self, sessions: Sequence[SessionEnded]) -> AnnounceResult:
        batches = [
            sessions[start : start + PUT_EVENTS_BATCH]
            for start in range(0, len(sessions), PUT_EVENTS_BATCH)
        ]
        result = AnnounceResult()
        if not batches:
            return result
        client = self._events()  # built here, once, before any worker thread needs it
        skipped: list[UUID] = []
        if len(batches) == 1:
            outcomes = [self._put(client, batches[0])[0]]
        else:
            # A redelivery backlog is thousands of PutEvents calls: a few at once. Once a
            # call has failed whole (the bus unreachable, silent, or refusing the call),
            # the calls not started yet would wait out the same timeouts, round after
            # round, and hold up the sweep's next check: they are not made, their ends
            # stay queued as the failed ones do. Entries refused one by one in an answer
            # are no such failure: the next calls are made.
            failed_whole = threading.Event()

            def put(batch: Sequence[SessionEnded]) -> AnnounceResult:
                if failed_whole.is_set():
                    not_sent = [session.session_id for session in batch]
                    skipped.extend(not_sent)
                    return AnnounceResult(failed=not_sent)
                outcome, whole = self._put(client, batch)
                if whole:
                    failed_whole.set()
                return outcome

            with ThreadPoolExecutor(max_workers=self._concurrency) as pool:
                outcomes = list(pool.map(put, batches))
        refusals: Counter[str] = Counter()
        for outcome in outcomes:
            result.announced.extend(outcome.announced)
            result.failed.extend(outcome.failed)
            result.errors.update(outcome.errors)
            refusals.update(outcome.errors.values())
        # One line per kind of refusal: an outage refuses thousands of entries.
        for code, count in sorted(refusals.items()):
            logger.warning(
                "EventBridge did not accept SessionEnded; the sweep will redeliver",
                extra={"error_code": code, "sessions": count},
            )
        if skipped:
            logger.warning(
                "SessionEnded not sent, EventBridge having failed a call whole; the sweep"
                " will redeliver",
                extra={"sessions": len(skipped)},
            )
        if refusals:
            result.error = ", ".join(sorted(refusals))
        return result

    def _put(
        self, client: EventBridgeClient, batch: Sequence[SessionEnded]
    ) -> tuple[AnnounceResult, bool]:
        """What was accepted, the error code of each entry that was not (``errors``), and
        whether the call failed whole (no answer, or the call refused)."""
        from botocore.exceptions import BotoCoreError, ClientError  # noqa: PLC0415

        result = AnnounceResult()
        entries = [
            {
                "Source": self._source,
                "DetailType": SESSION_ENDED,
                # The event's fields only: a session from the outbox carries the
                # outbox's bookkeeping too, which a redelivery would add to the event.
                "Detail": session.model_dump_json(include=DETAIL_FIELDS),
                "EventBusName": self._bus_name,
                "Resources": [],
            }
            for session in batch
        ]
        try:
            response = client.put_events(Entries=entries)  # type: ignore[arg-type]
        except (BotoCoreError, ClientError) as exc:
            code = error_code(exc)
            result.failed.extend(session.session_id for session in batch)
            result.errors.update((session.session_id, code) for session in batch)
            return result, True
        # Entries answer in order; a failed one carries an ErrorCode.
        answers = response.get("Entries", [])
        for index, session in enumerate(batch):
            entry = answers[index] if index < len(answers) else {}
            if entry.get("EventId") and not entry.get("ErrorCode"):
                result.announced.append(session.session_id)
            else:
                result.failed.append(session.session_id)
                result.errors[session.session_id] = str(entry.get("ErrorCode") or "NoEventId")
        return result, False
