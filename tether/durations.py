"""Human durations for the command line: ``90s``, ``15m``, ``2h``, ``1d12h``."""

from __future__ import annotations

import math
import re

from tether import limits
from tether.errors import InvalidInputError

# ASCII digits only: \d would also read full-width and other scripts' digits.
_BARE_NUMBER = re.compile(r"[0-9]+(?:\.[0-9]+)?")
_PART = re.compile(r"([0-9]+(?:\.[0-9]+)?)([smhd])")
_UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400}

_N = r"[0-9]+(\.[0-9]+)?"
DURATION_PATTERN = (
    rf"^\s*{_N}([dD]({_N}[hH])?({_N}[mM])?({_N}[sS])?|[hH]({_N}[mM])?({_N}[sS])?"
    rf"|[mM]({_N}[sS])?|[sS])?\s*$"
)
"""What ``parse_duration`` reads, as a regular expression for a published schema (the
values it refuses apart: 0, too long): a number alone, or each unit once, largest first."""


def parse_duration(text: str, *, zero_allowed: bool = False) -> float:
    """Seconds, more than 0 (or 0 itself, where it means "none"): ``90`` (a bare number
    is seconds), ``90s``, ``1d12h``. The errors never quote the text: the operators'
    API answers with them."""
    value = text.strip().lower()
    if not value:
        raise InvalidInputError("a duration is required, such as 90s, 15m, 2h or 1d")
    seconds = float(value) if is_bare_number(value) else _with_units(value)
    if seconds < 0 or (seconds == 0 and not zero_allowed):
        raise InvalidInputError("a duration must be more than 0")
    if seconds == math.inf:
        raise InvalidInputError("too long a duration")
    return seconds


def parse_age(text: str) -> float:
    """How far back to look for orphans, the operators' API's and close-orphans' one
    reading: a duration, at most the year and a day the functions reach back."""
    seconds = parse_duration(text)
    if seconds > limits.ORPHAN_AGE_MAX_SECONDS:
        raise InvalidInputError(f"must be at most {limits.ORPHAN_AGE_MAX_SECONDS / 86400:g} days")
    return seconds


def is_bare_number(text: str) -> bool:
    """Whether the text is a number without a unit, such as 90 or 1.5."""
    return _BARE_NUMBER.fullmatch(text.strip()) is not None


def _with_units(value: str) -> float:
    position = 0
    seconds = 0.0
    smallest = math.inf
    for match in _PART.finditer(value):
        size = _UNIT_SECONDS[match.group(2)]
        # Each unit once, largest first (1d12h, not 5m5m nor 30m1h): a repeated unit
        # is more likely a slip than a sum.
        if match.start() != position or size >= smallest:
            break
        seconds += float(match.group(1)) * size
        smallest = size
        position = match.end()
    if position != len(value):
        raise InvalidInputError(
            "not a duration; use a number with s, m, h or d, such as 90s, 2h or 1d12h"
            " (each unit once, largest first)"
        )
    return seconds


def describe_seconds(seconds: float) -> str:
    """An age or a duration as a person says it, in one unit: "20 seconds" (not "0
    minutes"), "90 seconds", "90 minutes", "1 hour", "2 hours", "2.5 hours", "18.5
    days"; a tenth is shown only where it is not 0. The one wording of every human output's
    durations (the live page's script keeps the same rules)."""
    # Each unit up to two of the next (90 seconds, 90 minutes: not 1.5 of it), but
    # one of the next by its name (1 minute, 1 hour). Halves round up, as a person
    # (and the page's Math.round) does: round() would say 150 s is 2 minutes.
    whole = max(0, _half_up(seconds))
    if whole < 120:
        return _amount(1, "minute") if whole == 60 else _amount(whole, "second")
    minutes = _half_up(seconds / 60)
    if minutes < 120:
        return _amount(1, "hour") if minutes == 60 else _amount(minutes, "minute")
    hours = _half_up(seconds / 360) / 10
    if hours < 48:
        return _amount(hours, "hour")
    return _amount(_half_up(seconds / 8640) / 10, "day")


def _half_up(value: float) -> int:
    """The nearest whole number, a half rounding up: JavaScript's Math.round."""
    whole = math.floor(value)
    return whole + 1 if value - whole >= 0.5 else whole


def _amount(value: float, unit: str) -> str:
    text = f"{value:.1f}".removesuffix(".0")
    return f"{text} {unit}" if text == "1" else f"{text} {unit}s"


def estimate(seconds: float) -> str:
    """An estimate in words, no more precise than it is: "about 12 seconds", "about 3
    minutes"; in describe_seconds' words, from whole minutes up past 90 seconds."""
    if seconds < 1:
        return "under a second"
    if seconds >= 90:
        seconds = _half_up(seconds / 60) * 60.0
    return f"about {describe_seconds(seconds)}"


def format_duration(seconds: float) -> str:
    """The shortest text ``parse_duration`` reads back as ``seconds``: 600 -> 10m."""
    for unit in ("d", "h", "m"):
        size = _UNIT_SECONDS[unit]
        if seconds >= size and seconds % size == 0:
            return f"{seconds / size:g}{unit}"
    return f"{seconds:g}s"
