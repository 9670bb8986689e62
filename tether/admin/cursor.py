"""Opaque page cursors for keyset pagination.

A cursor holds the position after which the next page starts (the last row's
``session_start`` and ``session_id``) and a fingerprint of the filters it was issued
for, with a checksum: a cursor that was edited, truncated, or brought to other
filters is refused, naming ``cursor``, rather than silently showing another page.
It is not a secret: it says where a listing stopped, nothing more.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
from datetime import datetime
from uuid import UUID

from tether.admin.errors import InvalidFieldError
from tether.sweep_and_admin_models import SessionFilter

VERSION = 1
_CHECKSUM_LENGTH = 16
MAX_CURSOR_LENGTH = 512


class InvalidCursorError(InvalidFieldError):
    """The cursor was not issued by this API for these filters."""

    def __init__(self, message: str) -> None:
        super().__init__("cursor", message)


def _fingerprint(where: SessionFilter) -> str:
    canonical = json.dumps(where.model_dump(mode="json"), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()[:12]


def _checksum(payload: bytes) -> str:
    return hashlib.sha256(b"tether-cursor:" + payload).hexdigest()[:_CHECKSUM_LENGTH]


def encode(start: datetime, session_id: UUID, where: SessionFilter) -> str:
    payload = json.dumps(
        {"v": VERSION, "s": start.isoformat(), "i": str(session_id), "f": _fingerprint(where)},
        separators=(",", ":"),
        sort_keys=True,
    ).encode()
    token = payload + b"." + _checksum(payload).encode()
    return base64.urlsafe_b64encode(token).decode().rstrip("=")


def decode(cursor: str, where: SessionFilter) -> tuple[datetime, UUID]:
    """The position a cursor holds, or InvalidCursorError saying why it is refused."""
    if not cursor or len(cursor) > MAX_CURSOR_LENGTH:
        raise InvalidCursorError("cursor is not one this API issued")
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
    except (binascii.Error, ValueError):
        raise InvalidCursorError("cursor is not one this API issued") from None
    payload, dot, checksum = raw.rpartition(b".")
    if not dot or checksum != _checksum(payload).encode():
        raise InvalidCursorError("cursor was altered or truncated; use the one a page returned")
    try:
        document = json.loads(payload)
    except ValueError:
        raise InvalidCursorError("cursor is not one this API issued") from None
    if not isinstance(document, dict) or document.get("v") != VERSION:
        raise InvalidCursorError("cursor is not one this API issued")
    try:
        start = datetime.fromisoformat(str(document["s"]))
        session_id = UUID(str(document["i"]))
        fingerprint = str(document["f"])
    except (ValueError, KeyError):
        raise InvalidCursorError("cursor is not one this API issued") from None
    if start.tzinfo is None:
        raise InvalidCursorError("cursor is not one this API issued")
    if fingerprint != _fingerprint(where):
        raise InvalidCursorError(
            "cursor belongs to a listing with other filters; repeat that listing's filters"
            " or start again without a cursor"
        )
    return start, session_id
