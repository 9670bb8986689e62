"""How `tether chaos` judges a late end: one bound after the client went away, or
one bound after a fault that overlapped the wait (the README's "recovery + bound")."""

from __future__ import annotations

from tether.local.chaos import BOUND_SECONDS, PROMISES, Fault, Report, _deadline


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
