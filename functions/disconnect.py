"""``$disconnect``: end the session exactly once, with its reason, and announce it."""

from tether.handlers.disconnect import lambda_handler

__all__ = ["lambda_handler"]
