"""The types query parameters are read as, where pydantic's lax reading would take
what nobody meant: a number for a time, ``5.0``, ``+5`` or ``5_0`` for a count, ``yes``
or ``1`` for true."""

from __future__ import annotations

import re
from typing import Annotated

from pydantic import AwareDatetime, BeforeValidator

_NUMBER = re.compile(r"[+-]?[0-9]+(\.[0-9]*)?")
# A time, then an offset whose '+' arrived as a space: "...T12:00:00 01:00".
_OFFSET_WITHOUT_SIGN = re.compile(
    r"[0-9]{2}:[0-9]{2}(:[0-9]{2}(\.[0-9]+)?)? [0-9]{2}(:?[0-9]{2})?$"
)


def _written_as_a_moment(value: object) -> object:
    """ISO 8601 only: pydantic also reads a number as Unix seconds (0 is 1970), and a
    '+' sent unencoded arrives as a space, which it calls "extra characters"."""
    if isinstance(value, str):
        if _NUMBER.fullmatch(value.strip()):
            raise ValueError(
                "an ISO 8601 time with an offset is expected, such as 2026-11-29T12:00Z"
            )
        if _OFFSET_WITHOUT_SIGN.search(value.strip()):
            raise ValueError("a '+' in a URL must be written %2B (a bare '+' reads as a space)")
    return value


Moment = Annotated[AwareDatetime, BeforeValidator(_written_as_a_moment)]


# A minus sign may lead: a negative number is a number, which the route's bounds refuse
# by saying them ("greater than or equal to 1"), not as digits it is not written in.
_DIGITS = re.compile(r"-?[0-9]+")


def _written_in_digits(value: object) -> object:
    """Digits alone: pydantic also reads "5.0", "+5", " 5" and "5_0" (as 50)."""
    if isinstance(value, str) and not _DIGITS.fullmatch(value):
        raise ValueError("a whole number written in digits is expected, such as 50")
    return value


IN_DIGITS = BeforeValidator(_written_in_digits)
"""Placed after the route's ``Query`` (``Annotated[int, Query(ge=1, le=500), IN_DIGITS]``):
still read first, and the bounds stay the integer's own, which the schema gives as
``minimum`` and ``maximum``. A type with the check inside (``Annotated[WholeNumber,
Query(ge=1)]``) put them there as ``ge`` and ``le``, words JSON Schema does not have, so
no client generated from the schema knew a page holds at most 500."""


def _written_as_true_or_false(value: object) -> object:
    """``true`` or ``false``: pydantic also reads yes, on, 1, y, t and their opposites."""
    if isinstance(value, str) and value not in {"true", "false"}:
        raise ValueError("true or false is expected")
    return value


TrueOrFalse = Annotated[bool, BeforeValidator(_written_as_true_or_false)]
