"""boto3 clients, built one way: the region users set, short timeouts, clear errors.

boto3 itself reads only ``AWS_DEFAULT_REGION`` (and the profile's region); Lambda
and most tools set ``AWS_REGION``. Both are honoured here, and a client with no
region at all fails with a message saying what to set, not ``NoRegionError``.
"""

from __future__ import annotations

import functools
import os
import re
from collections.abc import Callable
from typing import Any, Literal
from urllib.parse import urlparse, urlsplit

from tether.errors import ConfigurationError

_REGION_IN_HOST = re.compile(r"\.([a-z]{2}(?:-[a-z]+)+-\d)\.amazonaws\.com$")
LOCAL_HOSTS = frozenset({"localhost", "127.0.0.1", "::1"})


def configured_region(endpoint_url: str | None = None, session: Any = None) -> str | None:
    """The region from the environment, the profile, or an AWS endpoint's host name;
    ``session``: a named profile's, whose region is the one asked, not the default's."""
    value = _environment_region()
    if value:
        return value
    host = urlparse(endpoint_url).hostname if endpoint_url else None
    match = _REGION_IN_HOST.search(host or "")
    if match:
        return match.group(1)
    import boto3  # noqa: PLC0415 - only callers that talk to AWS load it

    return (session or boto3.session.Session()).region_name


def _environment_region() -> str | None:
    for name in ("AWS_REGION", "AWS_DEFAULT_REGION"):
        value = os.environ.get(name, "").strip()
        if value:
            return value
    return None


def endpoint_flaw(
    text: str, *, as_called: Callable[[str], str] | None = None
) -> Literal["shape", "host"] | None:
    """Whether botocore can take ``text`` as an endpoint (it raises a bare ValueError at
    the first client otherwise): "shape" for no http(s) URL with a host and a numeric
    port, "host" for a host botocore's own check refuses (applied to ``as_called(text)``,
    the URL as a client is given it), None when it can."""
    from botocore.utils import is_valid_endpoint_url, is_valid_ipv6_endpoint_url  # noqa: PLC0415

    try:
        parts = urlsplit(text)
        parts.port  # noqa: B018 - raises on a port that is not one
    except ValueError:
        return "shape"
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return "shape"
    called = as_called(text) if as_called else text
    if not (is_valid_endpoint_url(called) or is_valid_ipv6_endpoint_url(called)):
        return "host"
    return None


def endpoint_url_problem(url: str) -> str | None:
    """What makes ``url`` unusable as an AWS endpoint, without repeating it; None when
    it is usable."""
    shape = "must be an http(s) URL with a host, such as http://127.0.0.1:5000"
    flaw = endpoint_flaw(url.strip())
    if flaw == "shape":
        return shape
    if flaw == "host":
        return f"{shape} (its host is not a valid host name)"
    return None


def is_local(endpoint_url: str | None) -> bool:
    return bool(endpoint_url) and urlparse(endpoint_url).hostname in LOCAL_HOSTS


def client(
    service: str,
    *,
    endpoint_url: str | None = None,
    region_name: str | None = None,
    timeout_seconds: float = 5.0,
    max_attempts: int = 3,
    profile: str | None = None,
    max_pool_connections: int | None = None,
) -> Any:
    from botocore.exceptions import BotoCoreError, ProfileNotFound  # noqa: PLC0415

    try:
        return _client(
            service,
            endpoint_url=endpoint_url,
            region_name=region_name,
            timeout_seconds=timeout_seconds,
            max_attempts=max_attempts,
            profile=profile,
            max_pool_connections=max_pool_connections,
        )
    except BotoCoreError as exc:
        # Raised before any call, by the configuration itself (an AWS_PROFILE naming no
        # profile, a config file that does not parse): a traceback from every command
        # that reads a secret, announces or asks the gateway.
        # Only the profile is AWS_PROFILE's: a file that does not parse is named by itself.
        named = (
            " (named by AWS_PROFILE)"
            if isinstance(exc, ProfileNotFound) and not profile and os.environ.get("AWS_PROFILE")
            else ""
        )
        raise ConfigurationError(f"AWS: {exc}{named}") from None


def _client(
    service: str,
    *,
    endpoint_url: str | None,
    region_name: str | None,
    timeout_seconds: float,
    max_attempts: int,
    profile: str | None,
    max_pool_connections: int | None,
) -> Any:
    import boto3  # noqa: PLC0415
    from botocore.config import Config  # noqa: PLC0415

    session = boto3.session.Session(profile_name=profile) if profile else None
    credentials: dict[str, str] = {}
    region: str | None
    if is_local(endpoint_url) and session is None:
        # A local stand-in answers for any region, but keeps what is made in each: the
        # profile's region is where a user's earlier calls (the AWS CLI's, a deploy's)
        # put things, when the profile can be read at all.
        region = region_name or _environment_region() or _readable_profile_region() or "us-east-1"
        credentials = _local_credentials()
        session = _without_aws_files()
    else:
        region = region_name or configured_region(endpoint_url, session)
    if session is not None and not region:
        region = session.region_name
    if not region and is_local(endpoint_url):
        region = "us-east-1"  # a local stand-in answers for any region
    if not region:
        raise ConfigurationError(
            f"no AWS region configured for {service}: set AWS_REGION (or AWS_DEFAULT_REGION), "
            "or a region in your AWS profile"
        )
    factory = session.client if session is not None else boto3.client
    return factory(  # type: ignore[call-overload]
        service,
        endpoint_url=endpoint_url,
        region_name=region,
        config=Config(
            # Every call in all, the first included: botocore's max_attempts counts only
            # the retries after it, one call more than each caller reckons with.
            retries={"mode": "standard", "total_max_attempts": max_attempts},
            connect_timeout=timeout_seconds,
            read_timeout=timeout_seconds,
            # botocore keeps 10 by default: callers that send more at once say so.
            max_pool_connections=max_pool_connections or 10,
        ),
        **credentials,
    )


def _readable_profile_region() -> str | None:
    """The region of AWS_PROFILE (or the default profile), or None when there is none or
    the profile or the config file cannot be read: a stand-in needs no profile."""
    import boto3  # noqa: PLC0415
    from botocore.exceptions import BotoCoreError  # noqa: PLC0415

    try:
        return boto3.session.Session().region_name or None
    except BotoCoreError:
        return None


def _local_credentials() -> dict[str, str]:
    """The environment's credentials, given as they are read, else any: local stand-ins
    check no signature, but botocore insists on signing."""
    key, secret = os.environ.get("AWS_ACCESS_KEY_ID"), os.environ.get("AWS_SECRET_ACCESS_KEY")
    if not (key and secret):
        return {"aws_access_key_id": "local", "aws_secret_access_key": "local"}
    given = {"aws_access_key_id": key, "aws_secret_access_key": secret}
    token = os.environ.get("AWS_SESSION_TOKEN")
    return given | {"aws_session_token": token} if token else given


@functools.cache
def _without_aws_files() -> Any:
    """A session that reads neither AWS_PROFILE nor the AWS config and credentials files:
    a stand-in on this machine (tether dev's gateway, moto) takes any credentials, and
    a profile exported for another project, or a file that does not parse, would stop
    every call to it (tether dev's sweep among them)."""
    import boto3  # noqa: PLC0415
    import botocore.session  # noqa: PLC0415

    core = botocore.session.Session(
        session_vars={
            "profile": (None, None, None, None),
            "config_file": (None, None, os.devnull, None),
            "credentials_file": (None, None, os.devnull, None),
        }
    )
    return boto3.session.Session(botocore_session=core)


def _aws_error(exc: Exception) -> dict[str, Any]:
    # botocore's timeouts and dropped connections carry ``response = None``.
    response = getattr(exc, "response", None) or {}
    error = response.get("Error") if isinstance(response, dict) else None
    return error if isinstance(error, dict) else {}


def error_code(exc: Exception) -> str:
    """The AWS error code of a botocore error (``ResourceNotFoundException``, ``404``),
    or the exception's class name when AWS sent none (a network or credentials error,
    a timeout)."""
    return str(_aws_error(exc).get("Code") or type(exc).__name__)


def error_message(exc: Exception) -> str:
    """AWS's own words for the error, else its code, else the exception's text."""
    error = _aws_error(exc)
    return str(error.get("Message") or error.get("Code") or exc)
