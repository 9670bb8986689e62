"""Calls made at once and waited for until a deadline: and, once the answers so far are
enough, no longer."""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence

from tether.bounded_calls import Raised, call_all


def test_answers_found_enough_end_the_wait_and_start_no_other_call() -> None:
    release = threading.Event()
    started: list[str] = []
    made: list[bool] = []

    def call(item: str) -> str:
        started.append(item)
        if item.startswith("slow"):
            release.wait(10)
        return item

    def enough(answers: Sequence[str | Raised | None]) -> bool:
        return "fast" in answers

    began = time.monotonic()
    try:
        answers = call_all(
            call,
            ["fast", "slow1", "slow2", "slow3", "later"],
            concurrency=3,
            seconds=5,
            name="test",
            enough=enough,
            enough_after=0.2,
            made_out=made,
        )
    finally:
        release.set()
    assert time.monotonic() - began < 2
    assert answers == ["fast", None, None, None, None]
    # The unanswered told apart: asked and waiting, or never asked.
    assert made == [True, True, True, True, False]
    time.sleep(0.2)  # the released calls return: none takes the item left
    assert "later" not in started


def test_answers_not_enough_are_waited_for_until_the_deadline() -> None:
    def call(item: float) -> float:
        time.sleep(item)
        return item

    answers = call_all(
        call,
        [0.0, 0.5],
        concurrency=2,
        seconds=3,
        name="test",
        enough=lambda answers: False,
        enough_after=0.1,
    )
    assert answers == [0.0, 0.5]
