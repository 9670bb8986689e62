"""Secrets by reference: Secrets Manager and SSM, over real HTTP to a moto server."""

from __future__ import annotations

import boto3
import pytest

from tether.aws.secrets import resolve_secret
from tether.errors import ConfigurationError


def test_secrets_by_reference_from_secrets_manager_and_ssm(aws: str) -> None:
    secrets = boto3.client("secretsmanager", endpoint_url=aws)
    arn = secrets.create_secret(Name="tether/db", SecretString="postgresql://secret/db")["ARN"]
    ssm = boto3.client("ssm", endpoint_url=aws)
    ssm.put_parameter(Name="/tether/jwt", Value="from-ssm", Type="SecureString")
    assert resolve_secret(arn, aws) == "postgresql://secret/db"
    assert resolve_secret("ssm:/tether/jwt", aws) == "from-ssm"
    assert resolve_secret("plain-value", aws) == "plain-value"
    with pytest.raises(ConfigurationError, match="cannot read parameter ssm:/tether/missing"):
        resolve_secret("ssm:/tether/missing", aws)
