"""Secrets kept in AWS Secrets Manager or SSM Parameter Store, read once per container.

A secret-bearing setting takes either the value itself or a reference:
``arn:aws:secretsmanager:...``, ``arn:aws:ssm:...`` (in any partition: ``aws-cn``,
``aws-us-gov``, ...) or ``ssm:/parameter/name``. boto3 is imported only when a
reference is resolved.
"""

from __future__ import annotations

import functools
import json
import re
from collections.abc import Callable
from typing import Any

from tether.errors import ConfigurationError, SecretUnavailableError

SSM_PREFIX = "ssm:"
# The partition is "aws" or "aws-" and a suffix (aws-cn, aws-us-gov, aws-iso-b, ...),
# as the template's parameter patterns accept.
_ARN = re.compile(r"arn:aws(?:-[a-z]+)*:(secretsmanager|ssm):")


def _arn_service(reference: str) -> str | None:
    found = _ARN.match(reference)
    return found.group(1) if found else None


def is_secrets_manager_arn(reference: str) -> bool:
    return _arn_service(reference) == "secretsmanager"


def is_ssm_reference(reference: str) -> bool:
    """``ssm:/name`` or an SSM parameter's ARN."""
    return reference.startswith(SSM_PREFIX) or _arn_service(reference) == "ssm"


def is_reference(value: str) -> bool:
    """Whether a secret-bearing setting names where the secret is kept (a Secrets
    Manager or SSM ARN, ``ssm:/name``) rather than holding it."""
    return is_secrets_manager_arn(value) or is_ssm_reference(value)


def ssm_parameter_name(reference: str) -> str:
    """What GetParameter takes for ``reference``: the name after ``ssm:``, or the ARN
    itself (GetParameter takes a full ARN as the name too)."""
    return reference[len(SSM_PREFIX) :] if reference.startswith(SSM_PREFIX) else reference


@functools.cache
def resolve_secret(reference: str, endpoint_url: str | None = None) -> str:
    """The value behind a secret reference; plain values come back unchanged.

    A Secrets Manager secret holding a JSON object of one field (as the console's
    key/value editor writes it) yields that field's value.
    """
    if not is_reference(reference):
        return reference
    from tether.aws.clients import client  # noqa: PLC0415

    # An ARN names its region: read there, not in whatever region this process is set to.
    region = arn_region(reference)
    return read_reference(
        lambda service: client(service, endpoint_url=endpoint_url, region_name=region), reference
    )


def arn_region(reference: str) -> str | None:
    """arn:PARTITION:SERVICE:REGION:ACCOUNT:...: its region, when it is an ARN."""
    if not _ARN.match(reference):
        return None
    return reference.split(":")[3] or None  # the pattern matched: four parts at least


def resolve_setting(setting: str, reference: str, endpoint_url: str | None = None) -> str:
    """``resolve_secret`` for the setting named (TETHER_DATABASE_URL, ...): what cannot
    be read is said with the setting's name, to callers as to the logs."""
    try:
        return resolve_secret(reference, endpoint_url)
    except ConfigurationError as exc:
        raise ConfigurationError(f"{setting}: {exc}", public=f"{setting}: {exc.public}") from None
    except SecretUnavailableError as exc:
        raise SecretUnavailableError(f"{setting}: {exc}") from None


def read_reference(client_for: Callable[[str], Any], reference: str) -> str:
    """The value behind a reference, read through the clients ``client_for`` makes (a
    command's own AWS session: its profile, region and endpoint): an SSM one from
    Parameter Store, any other from Secrets Manager."""
    if is_ssm_reference(reference):
        return _from_ssm(client_for("ssm"), reference)
    return _from_secrets_manager(client_for("secretsmanager"), reference)


def _from_secrets_manager(secretsmanager: Any, reference: str) -> str:
    from botocore.exceptions import BotoCoreError, ClientError  # noqa: PLC0415

    from tether.aws.clients import error_code  # noqa: PLC0415

    try:
        answer = secretsmanager.get_secret_value(SecretId=reference)
    except (BotoCoreError, ClientError) as exc:
        raise _failure(
            f"cannot read secret {reference}: {error_code(exc)}",
            exc,
            public=f"cannot read the Secrets Manager secret it names: {error_code(exc)}",
        ) from None
    value = answer.get("SecretString")
    if not value:
        raise ConfigurationError(
            f"secret {reference} has no SecretString",
            public=f"the Secrets Manager secret it names has no SecretString{_SEE_LOGS}",
        )
    return single_value(value, reference)


def _from_ssm(ssm: Any, reference: str) -> str:
    from botocore.exceptions import BotoCoreError, ClientError  # noqa: PLC0415

    from tether.aws.clients import error_code  # noqa: PLC0415

    try:
        parameter = ssm.get_parameter(Name=ssm_parameter_name(reference), WithDecryption=True)
    except (BotoCoreError, ClientError) as exc:
        raise _failure(
            f"cannot read parameter {reference}: {error_code(exc)}",
            exc,
            public=f"cannot read the SSM parameter it names: {error_code(exc)}",
        ) from None
    return str(parameter["Parameter"]["Value"])


# What the service says when it, not the request, failed: the same read may work next.
_PASSING_CODES = frozenset(
    {
        "ThrottlingException",
        "Throttling",
        "TooManyRequestsException",
        "InternalServiceError",
        "InternalServiceErrorException",
        "InternalServerError",
        "ServiceUnavailable",
        "ServiceUnavailableException",
        "RequestTimeout",
        "RequestTimeoutException",
    }
)


# What callers of the operators' API are told instead of the reference.
_SEE_LOGS = "; the logs name it"


def _failure(message: str, exc: Exception, *, public: str) -> Exception:
    """A store that did not answer is unavailable (503, retried); one that answered
    no (not found, access denied, no credentials) is a setting to fix (500)."""
    from botocore.exceptions import (  # noqa: PLC0415
        ConnectionClosedError,
        ConnectTimeoutError,
        EndpointConnectionError,
        ReadTimeoutError,
    )

    from tether.aws.clients import error_code  # noqa: PLC0415

    unanswered = (
        ConnectionClosedError,
        ConnectTimeoutError,
        EndpointConnectionError,
        ReadTimeoutError,
    )
    passing = isinstance(exc, unanswered) or error_code(exc) in _PASSING_CODES
    if passing:
        return SecretUnavailableError(message)
    return ConfigurationError(message, public=public + _SEE_LOGS)


def single_value(value: str, reference: str) -> str:
    """A secret's value: the string itself, or the one field of a JSON object."""
    if not value.lstrip().startswith("{"):
        return value
    try:
        document = json.loads(value)
    except json.JSONDecodeError:
        return value
    if not isinstance(document, dict):
        return value
    if len(document) == 1:
        return str(next(iter(document.values())))
    fields = ", ".join(sorted(document))
    raise ConfigurationError(
        f"secret {reference} holds several fields ({fields}); store the value alone",
        public=f"the secret it names holds several fields ({fields}); store the value"
        f" alone{_SEE_LOGS}",
    )
