"""The operators' API's own typed errors (mapped to problem details in one place,
``tether.admin.problems``)."""

from __future__ import annotations

from tether.errors import InvalidInputError, TetherError


class NotFoundError(TetherError):
    """No such session (or other resource) by that id."""


class InvalidFieldError(InvalidInputError):
    """One request parameter is wrong; the message says why, ``field`` names it."""

    def __init__(self, field: str, message: str, *, location: str = "query") -> None:
        super().__init__(message)
        self.field = field
        self.location = location
