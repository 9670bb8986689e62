"""How `tether chaos` judges a late end: one bound after the client went away, or
one bound after a fault that overlapped the wait (the README's "recovery + bound")."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

from tether.local.chaos import (
    BOUND_SECONDS,
    PROMISES,
    Attempt,
    Fault,
    Report,
    Run,
    _check,
    _deadline,
)


def test_with_no_fault_nearby_the_bound_is_all_there_is() -> None:
    far = [Fault("postgres stopped", started=0.0, ended=5.0)]
    assert _deadline(100.0, far) == 100.0 + BOUND_SECONDS


def test_a_fault_that_starts_during_the_wait_moves_the_deadline_past_its_end() -> None:
    throttled = [Fault("@connections throttled", started=102.0, ended=120.0)]
    assert _deadline(100.0, throttled) == 120.0 + BOUND_SECONDS


def test_a_fault_under_way_when_the_client_leaves_counts_too() -> None:
    down = [Fault("postgres stopped", started=90.0, ended=104.0)]
    assert _deadline(100.0, down) == 104.0 + BOUND_SECONDS


def test_faults_in_a_row_each_extend_the_wait() -> None:
    chain = [
        Fault("eventbridge down", started=103.0, ended=106.0),
        Fault("gateway killed", started=106.0 + BOUND_SECONDS - 1, ended=115.0),
    ]
    assert _deadline(100.0, chain) == 115.0 + BOUND_SECONDS


def _report(**figures: object) -> Report:
    values: dict[str, object] = {
        "clients": 10,
        "attempts": 12,
        "accepted": 11,
        "faults": ["PutEvents failing"],
        **dict.fromkeys(PROMISES, 0),
        "max_detection_latency_s": 4.25,
        "detection_latency_p99_s": 4.0,
        "bound_s": 5.0,
        "ended_by_reason": {"heartbeat_timeout": 15, "client_disconnect": 9},
        **figures,
    }
    return Report(**values)  # type: ignore[arg-type]


def test_the_report_is_said_in_words_not_python_s_reprs() -> None:
    from tether.cli.local import chaos_lines  # noqa: PLC0415

    said = "\n".join(chaos_lines(_report()))
    assert "detection latency: max 4.25 s, p99 4 s (bound 5 s)" in said
    assert "ended by reason: client_disconnect 9, heartbeat_timeout 15" in said
    assert "{" not in said and "None" not in said
    # A short run whose every lost client met a fault measured no latency: said so,
    # not "max None s".
    short = "\n".join(
        chaos_lines(_report(max_detection_latency_s=None, detection_latency_p99_s=None))
    )
    assert "detection latency: none measured against the 5 s bound" in short
    assert "None" not in short
    untimed = "\n".join(chaos_lines(_report(unmeasured=["silent"])))
    assert "not measured: no silent client went away with no fault near" in untimed
    assert untimed.endswith("FAILED: see above")


def _judged(attempt: Attempt, ended_seen_at: float, faults: list[Fault] | None = None) -> Report:
    """A run of one client, judged from its row ended and announced."""
    session = str(uuid.uuid4())
    start = datetime.fromtimestamp(attempt.started, UTC)
    end = datetime.fromtimestamp(ended_seen_at, UTC)
    run = Run(clients=1, seconds=60, seed=1, progress=lambda _: None, began=attempt.started)
    run.attempts.append(attempt)
    run.faults.extend(faults or [])
    return _check(
        run,
        rows=[
            {
                "session_id": session,
                "user_agent": attempt.agent,
                "is_active": False,
                "session_start": start,
                "session_end": end,
                "end_reason": "heartbeat_timeout",
            }
        ],
        ended_seen={attempt.agent: ended_seen_at},
        announced=[
            {"session_id": session, "end_reason": "heartbeat_timeout", "session_end": str(end)}
        ],
        outputs="",
        secrets_to_hide=[],
    )


def test_a_silent_client_is_timed_from_its_last_word_not_from_the_server_s_close() -> None:
    """Its row ended 12 s after it went mute, with the grace 4 s: late, though the close
    that followed the end came at once."""
    muted = 1_000_000.0
    silent = Attempt(agent="tether-chaos/run1/0/0", plan="silent", started=muted - 3)
    silent.accepted = True
    silent.muted_at = muted
    silent.fate = "server_closed"
    silent.close_code = 1001
    silent.gone_at = muted + 12.3  # when the client saw the server's close
    report = _judged(silent, ended_seen_at=muted + 12.0)
    assert report.late_detections == 1, report.examples
    assert report.max_detection_latency_s == 12.0
    assert not report.passed


def test_a_run_that_timed_no_vanished_or_silent_client_does_not_pass() -> None:
    """A short run whose one lost client went away while Postgres was down: held to
    the fault's deadline, it timed nothing against the bound, and passed with the
    latency null."""
    gone = 1_000_000.0
    vanished = Attempt(agent="tether-chaos/run1/0/0", plan="vanish", started=gone - 3)
    vanished.accepted = True
    vanished.fate = "vanished"
    vanished.gone_at = gone
    report = _judged(
        vanished,
        ended_seen_at=gone + 2,
        faults=[Fault("postgres stopped", started=gone - 1, ended=gone + 1)],
    )
    assert not any(getattr(report, promise) for promise in PROMISES), report.examples
    assert report.max_detection_latency_s is None
    assert report.unmeasured == ["silent", "vanished"]
    assert not report.passed
    assert report.as_dict()["passed"] is False
