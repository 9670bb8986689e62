"""The operators' API's own typed error (statuses come from ``tether.responses``, the
problem details' shape from ``tether.admin.problems``)."""

from __future__ import annotations

from tether.errors import InvalidInputError


class InvalidFieldError(InvalidInputError):
    """One request parameter is wrong; the message says why, ``field`` names it."""

    def __init__(self, field: str, message: str, *, location: str = "query") -> None:
        super().__init__(message)
        self.field = field
        self.location = location
