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


def test_answers_judged_enough_keep_an_answer_that_came_meanwhile_and_start_no_call() -> None:
    """While the answers so far are judged, a call may answer and a worker be free: the
    answer is kept, not reported missing (its call counted as failed), and no call
    starts after the answers were found enough."""
    answer_slow = threading.Event()
    slow_answered = threading.Event()
    hold_later = threading.Event()
    started: list[str] = []
    made: list[bool] = []

    def call(item: str) -> str:
        started.append(item)
        if item == "slow":
            answer_slow.wait(10)
            slow_answered.set()
        elif item == "later":
            hold_later.wait(10)
        return item

    def enough(answers: Sequence[str | Raised | None]) -> bool:
        # Judging takes a moment, during which the slow call answers.
        answer_slow.set()
        slow_answered.wait(5)
        time.sleep(0.2)  # its answer is stored, and its worker free for another call
        return "silent" in answers

    try:
        answers = call_all(
            call,
            ["silent", "slow", "later"],
            concurrency=1,
            seconds=5,
            name="test",
            enough=enough,
            enough_after=0.2,
            made_out=made,
        )
    finally:
        hold_later.set()
    assert answers == ["silent", "slow", None]
    assert made == [True, True, False]
    time.sleep(0.1)
    assert "later" not in started


def test_answers_that_become_enough_after_the_first_look_end_the_wait() -> None:
    """Nothing enough yet when ``enough_after`` has passed, but an answer that is comes
    later: the wait ends then, not at the deadline, and no further call starts."""
    release = threading.Event()
    started: list[str] = []

    def call(item: str) -> str:
        started.append(item)
        if item == "late":
            time.sleep(0.5)
            return "silent"
        release.wait(10)
        return item

    began = time.monotonic()
    try:
        answers = call_all(
            call,
            ["late", "hang1", "hang2", "never"],
            concurrency=2,
            seconds=5,
            name="test",
            enough=lambda answers: "silent" in answers,
            enough_after=0.2,
        )
    finally:
        release.set()
    assert time.monotonic() - began < 2
    assert answers == ["silent", None, None, None]
    time.sleep(0.2)  # the released calls return: none takes the item left
    assert "never" not in started
