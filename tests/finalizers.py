"""Finalizers the SessionEnded tests name in TETHER_FINALIZER."""

from __future__ import annotations

from tether.models import SessionEnded

calls: list[SessionEnded] = []
failures_left = 0


def recording(detail: SessionEnded) -> None:
    global failures_left  # noqa: PLW0603 - test double state
    if failures_left > 0:
        failures_left -= 1
        raise RuntimeError("memory store unavailable")
    calls.append(detail)


not_callable = 42
