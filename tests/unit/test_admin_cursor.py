"""Page cursors: opaque, round-tripped, and refused (naming `cursor`) when edited,
truncated, made up, or brought to a listing with other filters."""

from __future__ import annotations

import base64
import uuid
from datetime import UTC, datetime

import pytest

from tether.admin import cursor
from tether.models import EndReason
from tether.sweep_and_admin_models import SessionFilter

START = datetime(2026, 11, 28, 12, 30, 15, 123456, tzinfo=UTC)
ID = uuid.UUID("01a22367-0000-7000-8000-000000000001")


def test_a_cursor_round_trips_its_position() -> None:
    where = SessionFilter(active=True, end_reason=EndReason.GONE)
    token = cursor.encode(START, ID, where)
    assert cursor.decode(token, where) == (START, ID)
    assert str(ID) not in token  # opaque, url-safe
    assert token.replace("-", "").replace("_", "").isalnum()


@pytest.mark.parametrize(
    "mangle",
    [
        lambda t: t[:-1],
        lambda t: t[:10],
        lambda t: t[:5] + ("A" if t[5] != "A" else "B") + t[6:],
        lambda t: "",
        lambda t: "%%%",
        lambda t: "x" * 1000,
        lambda t: base64.urlsafe_b64encode(b'{"v":1}.0000').decode(),
        lambda t: base64.urlsafe_b64encode(b"not json at all").decode(),
    ],
    ids=["truncated", "short", "edited", "empty", "not-base64", "huge", "forged", "garbage"],
)
def test_an_altered_cursor_is_refused_naming_the_field(mangle: object) -> None:
    where = SessionFilter()
    token = cursor.encode(START, ID, where)
    with pytest.raises(cursor.InvalidCursorError) as refused:
        cursor.decode(mangle(token), where)  # type: ignore[operator]
    assert refused.value.field == "cursor"


def test_a_cursor_belongs_to_its_filters() -> None:
    token = cursor.encode(START, ID, SessionFilter(active=True))
    with pytest.raises(cursor.InvalidCursorError, match="other filters"):
        cursor.decode(token, SessionFilter(active=False))
    user = uuid.uuid4()
    token = cursor.encode(START, ID, SessionFilter(user_id=user))
    assert cursor.decode(token, SessionFilter(user_id=user)) == (START, ID)
