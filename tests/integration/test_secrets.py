"""Secrets by reference: Secrets Manager and SSM, over real HTTP to a moto server."""

from __future__ import annotations

import json
import socket
from pathlib import Path

import boto3
import pytest

from tether.aws.secrets import resolve_secret, resolve_setting
from tether.errors import ConfigurationError, SecretUnavailableError

SECRET_ARN = "arn:aws:secretsmanager:us-east-1:123456789012:secret:tether/db-AbCdEf"


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


@pytest.mark.parametrize(
    ("region", "partition"), [("us-gov-west-1", "aws-us-gov"), ("cn-north-1", "aws-cn")]
)
def test_secret_arns_of_every_partition_are_read_not_taken_as_values(
    aws: str, monkeypatch: pytest.MonkeyPatch, region: str, partition: str
) -> None:
    """The template accepts ARNs of any partition; the functions must read them too, not
    take ``arn:aws-us-gov:...`` for the database URL itself."""
    monkeypatch.setenv("AWS_REGION", region)
    monkeypatch.setenv("AWS_DEFAULT_REGION", region)
    secrets = boto3.client("secretsmanager", endpoint_url=aws, region_name=region)
    arn = secrets.create_secret(Name="tether/db", SecretString="postgresql://gov/db")["ARN"]
    ssm = boto3.client("ssm", endpoint_url=aws, region_name=region)
    ssm.put_parameter(Name="/tether/jwt", Value="from-gov-ssm", Type="SecureString")
    parameter_arn = ssm.get_parameter(Name="/tether/jwt")["Parameter"]["ARN"]
    assert arn.startswith(f"arn:{partition}:secretsmanager:")
    assert parameter_arn.startswith(f"arn:{partition}:ssm:")

    assert resolve_secret(arn, aws) == "postgresql://gov/db"
    assert resolve_secret(parameter_arn, aws) == "from-gov-ssm"


def _nothing_listening() -> str:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{probe.getsockname()[1]}"


@pytest.mark.parametrize("reference", ["ssm:/tether/jwt", SECRET_ARN])
def test_a_store_that_does_not_answer_is_unavailable_not_a_wrong_setting(reference: str) -> None:
    """A secret store down or throttling says nothing of the setting: the caller is
    told to retry (503), not that tether is misconfigured (500)."""
    with pytest.raises(SecretUnavailableError, match="EndpointConnectionError"):
        resolve_secret(reference, _nothing_listening())


def test_a_store_that_does_not_answer_is_said_with_the_setting_s_name() -> None:
    """A store that answers no was named with its setting (TETHER_JWT_SECRET: ...); one
    that did not answer was not, so `tether dev` stopped on a secret it named nowhere."""
    with pytest.raises(SecretUnavailableError) as raised:
        resolve_setting("TETHER_JWT_SECRET", SECRET_ARN, _nothing_listening())
    assert str(raised.value).startswith(f"TETHER_JWT_SECRET: cannot read secret {SECRET_ARN}: ")
    assert "EndpointConnectionError" in str(raised.value)


def test_a_store_that_answers_no_is_a_wrong_setting(aws: str) -> None:
    with pytest.raises(ConfigurationError, match="ParameterNotFound"):
        resolve_secret("ssm:/tether/never-made", aws)
    with pytest.raises(ConfigurationError, match="ResourceNotFoundException"):
        resolve_secret(SECRET_ARN, aws)


def test_the_command_line_reads_a_database_url_kept_in_a_secret(
    aws: str, database_url: str
) -> None:
    """As the functions do: DATABASE_URL (or --database-url) may name a secret holding
    the URL. The commands refused it as a URL that does not start with postgresql://."""
    from tests.support import run_tether  # noqa: PLC0415

    secrets = boto3.client("secretsmanager", endpoint_url=aws)
    arn = secrets.create_secret(Name="tether/cli-db", SecretString=database_url)["ARN"]
    boto3.client("ssm", endpoint_url=aws).put_parameter(
        Name="/tether/cli-db", Value=database_url, Type="SecureString"
    )
    env = {"TETHER_AWS_ENDPOINT_URL": aws}
    migrated = run_tether("migrate", env={**env, "DATABASE_URL": arn})
    assert migrated.returncode == 0, migrated.stderr
    assert "up to date" in migrated.stdout or "applied" in migrated.stdout
    listed = run_tether("sessions", "--json", "--database-url", "ssm:/tether/cli-db", env=env)
    assert listed.returncode == 0, listed.stderr
    # One that cannot be read is a setting to fix, said without a traceback.
    missing = run_tether("sessions", "--database-url", "ssm:/tether/none", env=env)
    assert missing.returncode == 1
    assert "cannot read parameter ssm:/tether/none: ParameterNotFound" in missing.stderr
    assert "Traceback" not in missing.stderr
    # tether simulate reads it the same way.
    simulated = run_tether(
        "simulate", "--url", "ws://127.0.0.1:9", "--database-url", "ssm:/tether/none", env=env
    )
    assert simulated.returncode == 1
    assert "cannot read parameter ssm:/tether/none: ParameterNotFound" in simulated.stderr


@pytest.mark.parametrize("config", ["", "[profile broken\nregion = eu-west-1\n"])
def test_a_stand_in_on_this_machine_is_reached_whatever_aws_profile_says(
    aws: str, database_url: str, config: str, tmp_path: Path
) -> None:
    """A profile exported for another project (AWS_PROFILE naming none here), or a
    config file that does not parse, stopped every call to a local stand-in: tether
    dev's sweep failed at each run, its forced closes too, though its gateway takes any
    credentials. Only a real AWS endpoint reads them now."""
    from tests.support import run_tether  # noqa: PLC0415

    boto3.client("ssm", endpoint_url=aws).put_parameter(
        Name="/tether/stand-in-db", Value=database_url, Type="SecureString"
    )
    written = tmp_path / "aws-config"
    written.write_text(config)
    env = {
        "TETHER_AWS_ENDPOINT_URL": aws,
        "AWS_PROFILE": "someone-elses",
        "AWS_CONFIG_FILE": str(written),
        # No region either, as on a laptop: the profile was asked for one.
        "AWS_REGION": "",
        "AWS_DEFAULT_REGION": "",
    }
    listed = run_tether("sessions", "--json", "--database-url", "ssm:/tether/stand-in-db", env=env)
    assert listed.returncode == 0, listed.stderr
    assert json.loads(listed.stdout)["sessions"] == []


def test_tether_deploy_reads_a_secret_as_the_functions_do(aws: str) -> None:
    """`tether deploy --migrate` reads the stack's database secret through its own AWS
    session, with the functions' reader: a binary secret is said to hold no string
    (it was a KeyError), a throttled store to be unavailable."""
    from tether.deploy.stack import Aws, read_secret  # noqa: PLC0415

    secrets = boto3.client("secretsmanager", endpoint_url=aws)
    binary = secrets.create_secret(Name="tether/binary", SecretBinary=b"\x00\x01")["ARN"]
    text = secrets.create_secret(Name="tether/text", SecretString='{"url": "postgresql://x/y"}')
    session = Aws(region="us-east-1", endpoint_url=aws)
    assert read_secret(session, text["ARN"]) == "postgresql://x/y"
    with pytest.raises(ConfigurationError, match="has no SecretString"):
        read_secret(session, binary)
    with pytest.raises(SecretUnavailableError, match="EndpointConnectionError"):
        read_secret(Aws(region="us-east-1", endpoint_url=_nothing_listening()), binary)


def test_verbose_commands_never_show_a_secret_they_read(aws: str) -> None:
    """-v logs at debug level, and botocore's debug lines hold the whole answer of
    GetSecretValue: an RDS-managed secret (JSON, its password a field) was shown."""
    from tests.support import run_tether  # noqa: PLC0415

    secrets = boto3.client("secretsmanager", endpoint_url=aws)
    arn = secrets.create_secret(
        Name="tether/rds-managed",
        SecretString='{"username": "tether", "password": "Hunter2SecretRds"}',
    )["ARN"]
    result = run_tether(
        "-v", "sessions", "--database-url", arn, env={"TETHER_AWS_ENDPOINT_URL": aws}
    )
    assert result.returncode == 1
    assert "holds several fields" in result.stderr
    assert "Hunter2SecretRds" not in result.stdout + result.stderr


def test_a_secret_is_read_in_the_region_its_arn_names(aws: str) -> None:
    """A laptop set to one region, a secret kept in another: its ARN says where."""
    secrets = boto3.client("secretsmanager", endpoint_url=aws, region_name="eu-west-1")
    arn = secrets.create_secret(Name="tether/elsewhere", SecretString="postgresql://eu/db")["ARN"]
    assert ":eu-west-1:" in arn
    assert resolve_secret(arn, aws) == "postgresql://eu/db"


def test_commands_reading_a_secret_say_only_their_own_words(aws: str) -> None:
    """Without -v, botocore's info lines stayed on stderr ("INFO botocore.credentials:
    Found credentials in environment variables.") above every command's own answer."""
    from tests.support import run_tether  # noqa: PLC0415

    secrets = boto3.client("secretsmanager", endpoint_url=aws)
    arn = secrets.create_secret(
        Name="tether/rds-managed", SecretString='{"username": "tether", "password": "x"}'
    )["ARN"]
    result = run_tether("sessions", "--database-url", arn, env={"TETHER_AWS_ENDPOINT_URL": aws})
    assert result.returncode == 1
    assert result.stderr.count("\n") == 1, result.stderr
    assert "holds several fields" in result.stderr


def test_tether_deploy_finds_and_reads_a_secret_in_the_region_its_arn_names(aws: str) -> None:
    """A stack deployed in one region with its database secret kept in another: the
    functions read it there, but deploy asked its own region and refused the ARN
    (cannot find it: ResourceNotFoundException), and --migrate could not read it."""
    from tether.deploy.stack import Aws, read_secret, secret_arn  # noqa: PLC0415

    secrets = boto3.client("secretsmanager", endpoint_url=aws, region_name="eu-west-1")
    arn = secrets.create_secret(Name="tether/eu", SecretString="postgresql://eu/db")["ARN"]
    ssm = boto3.client("ssm", endpoint_url=aws, region_name="eu-west-1")
    ssm.put_parameter(Name="/tether/eu", Value="postgresql://eu/p", Type="SecureString")
    parameter = ssm.get_parameter(Name="/tether/eu")["Parameter"]["ARN"]
    session = Aws(region="us-east-1", endpoint_url=aws)
    assert secret_arn(session, arn, what="--database-secret") == arn
    assert read_secret(session, arn) == "postgresql://eu/db"
    assert secret_arn(session, parameter, what="--database-secret") == parameter
    assert read_secret(session, parameter) == "postgresql://eu/p"


def test_a_secret_deploy_cannot_find_is_said_with_the_region_it_asked(aws: str) -> None:
    """A secret kept by name in another region than the deploy's was 'cannot find a
    secret by the name given: ResourceNotFoundException', which region unsaid."""
    from tether.deploy.stack import Aws, secret_arn  # noqa: PLC0415
    from tether.errors import NotFoundError  # noqa: PLC0415

    secrets = boto3.client("secretsmanager", endpoint_url=aws, region_name="eu-west-1")
    secrets.create_secret(Name="tether/kept-in-eu", SecretString="postgresql://eu/db")
    session = Aws(region="us-east-1", endpoint_url=aws)
    with pytest.raises(
        NotFoundError, match="cannot find, in us-east-1, a secret by the name given"
    ):
        secret_arn(session, "tether/kept-in-eu", what="--database-secret")
    with pytest.raises(NotFoundError, match="cannot find, in us-east-1, ssm:/tether/nowhere"):
        secret_arn(session, "ssm:/tether/nowhere", what="--database-secret")
    assert "eu-west-1" in secret_arn(
        Aws(region="eu-west-1", endpoint_url=aws), "tether/kept-in-eu", what="--database-secret"
    )


def test_a_stand_in_on_this_machine_is_asked_in_the_profiles_region(
    aws: str, database_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A profile's region was where commands looked against moto (a parameter put there
    with the AWS CLI, a stack deployed there): a stand-in that need not read the profile
    still takes its region when it can be read, rather than us-east-1."""
    from tests.support import run_tether  # noqa: PLC0415

    boto3.client("ssm", endpoint_url=aws, region_name="eu-west-2").put_parameter(
        Name="/tether/profile-region-db", Value=database_url, Type="SecureString"
    )
    written = tmp_path / "aws-config"
    written.write_text("[profile mine]\nregion = eu-west-2\n")
    env = {
        "TETHER_AWS_ENDPOINT_URL": aws,
        "AWS_PROFILE": "mine",
        "AWS_CONFIG_FILE": str(written),
    }
    # No region in the environment at all: an empty one would hide the profile's.
    monkeypatch.delenv("AWS_REGION")
    monkeypatch.delenv("AWS_DEFAULT_REGION")
    listed = run_tether(
        "sessions", "--json", "--database-url", "ssm:/tether/profile-region-db", env=env
    )
    assert listed.returncode == 0, listed.stderr
    assert json.loads(listed.stdout)["sessions"] == []
