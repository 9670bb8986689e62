"""The @connections endpoint: what botocore's client takes passes, anything else is
refused where it is given, without repeating it."""

from __future__ import annotations

import pytest

from tether.aws.connections import ConnectionsApi, endpoint_problem
from tether.errors import ConfigurationError
from tether.settings import load_settings


@pytest.mark.parametrize(
    "url",
    [
        "https://abc123.execute-api.us-east-1.amazonaws.com/prod",
        "https://abc123.execute-api.us-east-1.amazonaws.com/prod/@connections/{id}",
        "https://abc123.execute-api.us-east-1.amazonaws.com/prod/@connections",
        "http://localhost:3001/local",
        "http://127.0.0.1:3001/local/@connections/%7Bid%7D",
        "http://[::1]:3001/local",
        "http://u:p@gw.example:8443/stage",
    ],
)
def test_an_endpoint_botocore_takes_passes(url: str) -> None:
    assert endpoint_problem(url) is None
    assert load_settings(connections_endpoint=url).connections_endpoint == url


@pytest.mark.parametrize(
    "url",
    [
        "foo",
        "wss://abc123.execute-api.us-east-1.amazonaws.com/prod",
        "http://",
        "http://tether_gw:3001/local",
        "http://gw:abc/local",
        "http://gw:99999/local",
        "http://gw.example/prod/@connections/AbC123xyz=",
        "http://gw.example/pr od",
        "https//ops:s3cretpass@gw.example/p",
    ],
)
def test_anything_else_is_refused_without_repeating_it(url: str) -> None:
    problem = endpoint_problem(url)
    assert problem is not None
    assert "s3cretpass" not in problem and "tether_gw" not in problem
    with pytest.raises(ConfigurationError) as refused:
        load_settings(connections_endpoint=url)
    assert "s3cretpass" not in str(refused.value)
    with pytest.raises(ConfigurationError):
        ConnectionsApi(url)


def test_an_empty_endpoint_is_none() -> None:
    assert load_settings(connections_endpoint="  ").connections_endpoint is None
