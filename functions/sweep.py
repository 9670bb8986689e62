"""The scheduled sweep: ends every session whose connection is gone, announces every end."""

from tether.handlers.sweep import lambda_handler

__all__ = ["lambda_handler"]
