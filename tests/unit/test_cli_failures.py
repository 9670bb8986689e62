"""A command that fails says so in one line on stderr, whatever raised."""

from __future__ import annotations

import argparse
from pathlib import Path

import boto3
import psycopg
import pytest

from tether.cli import adopt, main
from tether.errors import ConfigurationError, DatabaseError
from tether.settings import load_settings


@pytest.mark.parametrize(
    ("error", "said"),
    [
        (
            psycopg.errors.InsufficientPrivilege("permission denied for table t"),
            "42501: permission denied for table t",
        ),
        # Input refused before any work exits 2; a constraint broken partway through a
        # command may follow work already done: 1, whatever its SQLSTATE.
        (
            psycopg.errors.CheckViolation("new row violates check constraint"),
            "new row violates check constraint",
        ),
    ],
)
def test_a_database_error_no_command_mapped_is_one_line_and_a_failure(
    error: psycopg.Error,
    said: str,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    def raising(_: argparse.Namespace) -> int:
        raise error

    monkeypatch.setattr(adopt, "cmd_adopt", raising)
    assert main(["adopt", "--check"]) == 1
    printed = capsys.readouterr()
    assert printed.err == f"tether adopt: {said}\n"
    assert printed.out == ""


def test_a_failure_s_control_characters_are_shown_not_run(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """A server's or a proxy's message is quoted in a failure's line: an escape sequence
    in it (clearing the screen, setting the window's title) reached the terminal as it
    came, and ran there."""

    def refused(_: argparse.Namespace) -> int:
        raise DatabaseError("PGRST000: \x1b]0;owned\x07\x1b[2Jgone\x9b")

    monkeypatch.setattr(adopt, "cmd_adopt", refused)
    assert main(["adopt", "--check"]) == 1
    err = capsys.readouterr().err
    assert err == "tether adopt: PGRST000: \\x1b]0;owned\\x07\\x1b[2Jgone\\x9b\n"


def test_any_other_error_is_not_hidden(monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(_: argparse.Namespace) -> int:
        raise ZeroDivisionError

    monkeypatch.setattr(adopt, "cmd_adopt", broken)
    with pytest.raises(ZeroDivisionError):
        main(["adopt", "--check"])


def test_a_server_that_cannot_be_reached_is_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    """libpq says it in two lines (a hint on the second, after a tab)."""
    assert main(["migrate", "--database-url", "postgresql://nobody@127.0.0.1:1/x"]) == 1
    said = capsys.readouterr().err
    assert said.count("\n") == 1 and "\t" not in said
    assert said.startswith("tether migrate: cannot connect to the database: connection failed:")
    assert "Is the server running on that host" in said


def test_ctrl_c_while_adopt_reads_the_table_says_nothing_changed(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from tether.adopt import inspect  # noqa: PLC0415

    def interrupted(*_: object, **__: object) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(inspect, "inspect", interrupted)
    url = "postgresql://nobody@127.0.0.1:1/x"
    assert main(["adopt", "--apply", "--yes", "--database-url", url]) == 130
    assert capsys.readouterr().err == (
        "tether adopt: interrupted while reading the table: nothing was changed\n"
    )


@pytest.mark.parametrize("command", ["deploy", "destroy"])
def test_deploy_and_destroy_without_a_region_name_their_own_flag(
    command: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """They said to set AWS_REGION, as the functions are told, where the command itself
    takes --region. No region anywhere is a setting that is not set: 1, as every other
    command that needs one exits (it had become 2, as if the command line were unreadable)."""
    for name in ("AWS_REGION", "AWS_DEFAULT_REGION", "AWS_PROFILE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-config"))
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    assert main([command, "--stack", "tether-prod", "--yes"]) == 1
    said = capsys.readouterr()
    assert said.out == ""
    assert said.err == (
        f"tether {command}: no AWS region: pass --region, or set AWS_REGION (or a region in"
        " your AWS profile)\n"
    )


@pytest.mark.parametrize("given", ["notaurl", "ftp://127.0.0.1:5000", "http://bad host:5000"])
def test_an_aws_endpoint_that_is_no_url_is_one_line_not_a_traceback(
    given: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """botocore raised a bare ValueError ("Invalid endpoint: notaurl") at the first
    client: a traceback from deploy, destroy, and any command reading a secret."""
    monkeypatch.setenv("AWS_REGION", "us-east-1")
    for command in ("deploy", "destroy"):
        with pytest.raises(SystemExit) as refused:
            main([command, "--stack", "tether-prod", "--endpoint-url", given, "--yes"])
        assert refused.value.code == 2
        assert capsys.readouterr().err.endswith(
            f"tether {command}: error: argument --endpoint-url: must be an http(s) URL"
            " with a host, such as http://127.0.0.1:5000"
            + (" (its host is not a valid host name)\n" if " " in given else "\n")
        )
    monkeypatch.setenv("TETHER_AWS_ENDPOINT_URL", given)
    secret = "arn:aws:secretsmanager:us-east-1:123456789012:secret:tether/db-AbCdEf"
    assert main(["sessions", "--database-url", secret]) == 1
    assert capsys.readouterr().err.startswith(
        "tether sessions: TETHER_AWS_ENDPOINT_URL must be an http(s) URL with a host"
    )
    monkeypatch.setenv("TETHER_DATABASE_URL", "postgresql://tether@127.0.0.1/app")
    with pytest.raises(ConfigurationError, match="TETHER_AWS_ENDPOINT_URL: must be an http"):
        load_settings()


@pytest.mark.parametrize(
    ("flag", "given", "said"),
    [
        ("--jwks-url", "http://proj.supabase.co/jwks?apikey=S3cr3tPW-opaque", "?apikey=***"),
        ("--supabase-url", "http://proj.supabase.co/?token=S3cr3tPW-opaque", "?token=***"),
    ],
)
def test_a_failure_repeats_no_credential_in_what_it_quotes(
    flag: str,
    given: str,
    said: str,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """A refusal that quotes its input hides what logs hide: the key a JWKS address was
    written with was shown back in full."""
    monkeypatch.setenv("AWS_REGION", "us-east-1")
    argv = ["deploy", "--stack", "tether-prod", "--jwt-issuer", "https://x/auth/v1"]
    assert main([*argv, flag, given, "--yes"]) == 2
    err = capsys.readouterr().err
    assert "an https:// address is expected" in err
    assert said in err
    assert "S3cr3tPW" not in err


@pytest.mark.parametrize("flag", ["--supabase-url", "--jwks-url"])
def test_an_address_python_cannot_split_is_refused_not_a_traceback(
    flag: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """urlsplit raised a bare ValueError ("Invalid IPv6 URL") out of deploy's checks."""
    monkeypatch.setenv("AWS_REGION", "us-east-1")
    argv = ["deploy", "--stack", "tether-prod", "--jwt-issuer", "https://x/auth/v1"]
    assert main([*argv, flag, "https://[proj.supabase.co", "--yes"]) == 2
    assert f"{flag}: an https:// address is expected" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("config", "said"),
    [
        (None, "AWS: The config profile (nosuch) could not be found (named by AWS_PROFILE)"),
        ("[profile nosuch\nregion = eu-west-1\n", "AWS: Unable to parse config file: "),
    ],
    ids=["unknown-profile", "config-that-does-not-parse"],
)
@pytest.mark.parametrize(
    "reference", ["arn:aws:secretsmanager:us-east-1:123456789012:secret:db", "ssm:/tether/db"]
)
def test_an_aws_configuration_that_cannot_be_used_is_one_line_not_a_traceback(
    config: str | None,
    said: str,
    reference: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """A shell whose AWS_PROFILE names no profile (or whose config file does not parse)
    got botocore's traceback from every command that reads a secret reference, announces
    or asks the gateway: the client was made outside the calls' own error handling."""
    written = tmp_path / "aws-config"
    if config is not None:
        written.write_text(config)
    monkeypatch.setenv("AWS_CONFIG_FILE", str(written))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "no-credentials"))
    monkeypatch.setenv("AWS_PROFILE", "nosuch")
    monkeypatch.setenv("AWS_REGION", "us-east-1")
    # boto3's default session keeps the configuration an earlier test read.
    monkeypatch.setattr(boto3, "DEFAULT_SESSION", None)
    assert main(["sessions", "--database-url", reference]) == 1
    err = capsys.readouterr().err
    assert err.startswith(f"tether sessions: {said}"), err
    assert err.count("\n") == 1, err
    # The file is named by its path, not by AWS_PROFILE.
    assert ("named by AWS_PROFILE" in err) is (config is None), err


def test_a_kept_secret_the_template_no_longer_takes_is_not_said_to_be_given() -> None:
    """A stack's secret reference kept from an earlier deploy and refused by this
    template was called "the value given", though nothing was given; it is still not
    repeated (a reference may be the secret itself)."""
    from tether.cli.deploy import _check_template_constraints  # noqa: PLC0415
    from tether.deploy import template_text  # noqa: PLC0415
    from tether.errors import ConfigurationError  # noqa: PLC0415

    kept = "a-secret-where-its-reference-belongs-0123456789"
    with pytest.raises(ConfigurationError) as refused:
        _check_template_constraints(template_text(), {"JwtSecret": kept}, given=set())
    said = str(refused.value)
    assert said.startswith(
        "--jwt-secret: the stack's current value, kept as it was not given, is not allowed"
        " now (must match "
    ), said
    assert "the value given" not in said
    assert kept not in said
