"""Secrets kept in AWS Secrets Manager or SSM Parameter Store, read once per container.

A secret-bearing setting takes either the value itself or a reference:
``arn:aws:secretsmanager:...``, ``arn:aws:ssm:...`` or ``ssm:/parameter/name``.
boto3 is imported only when a reference is resolved.
"""

from __future__ import annotations

import functools
import json

from tether.errors import ConfigurationError

SECRETS_MANAGER_PREFIX = "arn:aws:secretsmanager:"
SSM_ARN_PREFIX = "arn:aws:ssm:"
SSM_PREFIX = "ssm:"


def is_reference(value: str) -> bool:
    return value.startswith((SECRETS_MANAGER_PREFIX, SSM_ARN_PREFIX, SSM_PREFIX))


@functools.cache
def resolve_secret(reference: str, endpoint_url: str | None = None) -> str:
    """The value behind a secret reference; plain values come back unchanged.

    A Secrets Manager secret holding a JSON object of one field (as the console's
    key/value editor writes it) yields that field's value.
    """
    if reference.startswith(SECRETS_MANAGER_PREFIX):
        return _from_secrets_manager(reference, endpoint_url)
    if reference.startswith((SSM_ARN_PREFIX, SSM_PREFIX)):
        return _from_ssm(reference, endpoint_url)
    return reference


def _from_secrets_manager(reference: str, endpoint_url: str | None) -> str:
    from botocore.exceptions import BotoCoreError, ClientError  # noqa: PLC0415

    from tether.aws.clients import client, error_code  # noqa: PLC0415

    try:
        answer = client("secretsmanager", endpoint_url=endpoint_url).get_secret_value(
            SecretId=reference
        )
    except (BotoCoreError, ClientError) as exc:
        raise ConfigurationError(f"cannot read secret {reference}: {error_code(exc)}") from None
    value = answer.get("SecretString")
    if not value:
        raise ConfigurationError(f"secret {reference} has no SecretString")
    return single_value(value, reference)


def _from_ssm(reference: str, endpoint_url: str | None) -> str:
    from botocore.exceptions import BotoCoreError, ClientError  # noqa: PLC0415

    from tether.aws.clients import client, error_code  # noqa: PLC0415

    # GetParameter takes a full ARN as the name as well as a plain name.
    name = reference if reference.startswith(SSM_ARN_PREFIX) else reference[len(SSM_PREFIX) :]
    try:
        parameter = client("ssm", endpoint_url=endpoint_url).get_parameter(
            Name=name, WithDecryption=True
        )
    except (BotoCoreError, ClientError) as exc:
        raise ConfigurationError(f"cannot read parameter {reference}: {error_code(exc)}") from None
    return str(parameter["Parameter"]["Value"])


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
    raise ConfigurationError(
        f"secret {reference} holds several fields ({', '.join(sorted(document))}); "
        "store the value alone"
    )
