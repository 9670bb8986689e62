"""``$default`` and ``heartbeat``: a sign of life, or a clear error frame."""

from tether.handlers.message import lambda_handler

__all__ = ["lambda_handler"]
