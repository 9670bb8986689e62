"""``$connect``: authenticate the handshake and open the session (non-2xx refuses it)."""

from tether.handlers.connect import lambda_handler

__all__ = ["lambda_handler"]
