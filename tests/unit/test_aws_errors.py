"""The AWS error code and message of whatever botocore raised, whether AWS answered
or not."""

from __future__ import annotations

import pytest
from botocore.exceptions import (
    ClientError,
    ConnectionClosedError,
    EndpointConnectionError,
    ReadTimeoutError,
)

from tether.aws.clients import error_code, error_message


@pytest.mark.parametrize(
    ("exc", "code"),
    [
        (ReadTimeoutError(endpoint_url="https://events.example"), "ReadTimeoutError"),
        (ConnectionClosedError(endpoint_url="https://events.example"), "ConnectionClosedError"),
        (EndpointConnectionError(endpoint_url="https://events.example"), "EndpointConnectionError"),
        (
            ClientError({"Error": {"Code": "ThrottlingException", "Message": "slow down"}}, "X"),
            "ThrottlingException",
        ),
        (ClientError({}, "X"), "ClientError"),
        (RuntimeError("boom"), "RuntimeError"),
    ],
)
def test_every_failure_has_a_code_and_a_message(exc: Exception, code: str) -> None:
    assert error_code(exc) == code
    assert error_message(exc)
