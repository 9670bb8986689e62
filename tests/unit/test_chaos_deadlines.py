"""How `tether chaos` judges a late end: one bound after the client went away, or
one bound after a fault that overlapped the wait (the README's "recovery + bound")."""

from __future__ import annotations

from tether.local.chaos import BOUND_SECONDS, Fault, _deadline


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
