"""What `tether -v` prints of what libraries log: every secret hidden, tracebacks too."""

from __future__ import annotations

import io
import logging

from tether.cli import _HideSecrets


def _call_that_cannot_connect() -> None:
    raise ConnectionError(
        'Could not connect to the endpoint URL: "http://u:HUNTER2PW@127.0.0.1:1/local'
        '/@connections/k7a?token=HUNTER2Q"'
    )


def test_a_library_s_logged_traceback_hides_the_secrets_its_exception_quotes() -> None:
    """botocore logs, at debug level, the exception of a call it could not make: its
    message quotes the URL, password and token query parameter included. The message
    lines were hidden; the traceback printed under them was not."""
    out = io.StringIO()
    handler = logging.StreamHandler(out)
    handler.addFilter(_HideSecrets())
    log = logging.getLogger("tests.library")
    log.addHandler(handler)
    log.propagate = False
    try:
        try:
            _call_that_cannot_connect()
        except ConnectionError:
            log.exception("retrying %s", "http://u:HUNTER2PW@127.0.0.1:1/?token=HUNTER2Q")
    finally:
        log.removeHandler(handler)
    printed = out.getvalue()
    assert "Traceback" in printed and "ConnectionError" in printed
    assert "HUNTER2PW" not in printed
    assert "HUNTER2Q" not in printed
