"""Calls to a remote API made at once and waited for until a deadline, no longer.

A remote API that takes requests and never answers (a gateway gone quiet) would hold a
caller as long as its clients' timeouts and retries allow, call after call: longer
than a Lambda invocation or API Gateway's 29 s. Here each call runs on a daemon
thread, at most ``concurrency`` at once; none starts once the deadline has passed,
and the caller gets what was answered by then. A call still in flight at the deadline
holds neither the caller nor the process's exit.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TypeVar

logger = logging.getLogger("tether.bounded_calls")

T = TypeVar("T")
R = TypeVar("R")

JUDGE_EVERY_SECONDS = 0.1
"""How often, once ``enough_after`` has passed, the answers so far are judged: often
enough to stop soon after one makes them enough, seldom enough to cost little with
thousands of answers."""


@dataclass(frozen=True)
class Raised:
    """A call that raised what its caller does not expect: a bug, not the remote API's
    answer nor its silence (logged with its traceback where it was caught)."""

    error: Exception


def call_all(
    call: Callable[[T], R],
    items: Sequence[T],
    *,
    concurrency: int,
    seconds: float,
    name: str,
    enough: Callable[[Sequence[R | Raised | None]], bool] | None = None,
    enough_after: float = 0.0,
    made_out: list[bool] | None = None,
) -> list[R | Raised | None]:
    """``call(item)`` for each item, in order; None where no answer came within
    ``seconds``, Raised where the call raised (a bug, logged). With ``enough``: from
    ``enough_after`` seconds on, as soon as it finds the answers so far enough they are
    returned, and no further call starts. ``made_out``, if given, is filled with
    whether each call was made: a None from a call never made is no answer refused."""
    answers: list[R | Raised | None] = [None] * len(items)
    made = [False] * len(items)
    started = time.monotonic()
    deadline = started + max(seconds, 0.0)
    next_index = iter(range(len(items)))
    taking = threading.Lock()
    stopped = threading.Event()

    def work() -> None:
        while True:
            with taking:
                index = next(next_index, None)
                if index is None or stopped.is_set() or time.monotonic() >= deadline:
                    return
                made[index] = True
            try:
                answers[index] = call(items[index])
            except Exception as exc:
                logger.exception("%s raised", name)
                answers[index] = Raised(exc)

    workers = [
        threading.Thread(target=work, name=name, daemon=True)
        for _ in range(min(max(concurrency, 1), len(items)))
    ]
    for worker in workers:
        worker.start()
    # Judged again and again until the deadline, not once: answers found enough only
    # after ``enough_after`` must end the wait too. Without ``enough``, one wait.
    judge_at = min(started + max(enough_after, 0.0), deadline) if enough else deadline
    while True:
        for worker in workers:
            worker.join(max(0.0, judge_at - time.monotonic()))
        if enough is None or time.monotonic() >= deadline:
            break
        if not any(worker.is_alive() for worker in workers):
            break
        # Under the lock: a call started meanwhile would be counted as made and
        # unanswered (a failure) though it started after the answers were enough.
        with taking:
            if enough(list(answers)):
                stopped.set()
                break
        judge_at = min(time.monotonic() + JUDGE_EVERY_SECONDS, deadline)
    return _stop(stopped, taking, made, made_out, answers)


def _stop(
    stopped: threading.Event,
    taking: threading.Lock,
    made: list[bool],
    made_out: list[bool] | None,
    answers: list[R | Raised | None],
) -> list[R | Raised | None]:
    # Under the lock: no call starts after what was started is read, and the answers
    # are read with it (one arriving later is too late to be counted as answered).
    with taking:
        stopped.set()
        if made_out is not None:
            made_out[:] = made
        return list(answers)
