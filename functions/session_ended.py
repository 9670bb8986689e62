"""The ``SessionEnded`` subscriber: runs the application's finalizer once per session."""

from tether.handlers.session_ended import lambda_handler

__all__ = ["lambda_handler"]
