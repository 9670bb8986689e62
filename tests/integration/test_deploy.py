"""``tether deploy`` and ``tether destroy`` against a moto server on loopback (the ``aws``
fixture: a ThreadedMotoServer on 127.0.0.1, reset for each test).

What moto's CloudFormation does with this template, checked against moto 5:
- it creates the Lambda functions, their permissions, the IAM roles and policies, the log
  groups, the EventBridge rules and bus, the SQS queue and the SNS topic;
- it skips, with a warning only, ``AWS::ApiGatewayV2::*`` (both APIs, routes,
  integrations, stages), ``AWS::ApiGateway::Account``, ``AWS::CloudWatch::Alarm``,
  ``AWS::Lambda::EventInvokeConfig``, ``AWS::SQS::QueuePolicy`` and the wait-condition
  handle: ``tests/integration/test_infra.py`` covers those from the template itself;
- its ``AWS::Lambda::Version`` has no ARN to ``Ref``, so these deploys pass
  ``--no-snapstart`` (routes then invoke the functions, not versions); the SnapStart
  wiring is covered by the template test;
- a stack created through a change set gets no ``Outputs`` in moto (the template test
  checks what they say), and moto ignores ``Architectures``.
"""

from __future__ import annotations

import http.client
import http.server
import io
import json
import threading
import urllib.parse
from pathlib import Path
from typing import Any, ClassVar

import boto3
import psycopg
import pytest
from psycopg.conninfo import conninfo_to_dict

from tests.conftest import AWS_REGION, ROOT
from tests.integration.test_bundle import CACHE
from tests.integration.test_infra import handlers
from tether import migrate
from tether.cli import deploy as deploy_cli
from tether.cli import main
from tether.deploy import bundle as bundles

STACK = "tether-test"
pytestmark = [
    pytest.mark.filterwarnings("ignore:Tried to parse:UserWarning"),
    pytest.mark.timeout(300),
]


def tether(aws: str, *args: str, stack: str = STACK) -> list[str]:
    return [
        *args,
        "--stack",
        stack,
        "--endpoint-url",
        aws,
        "--poll-seconds",
        "0.05",
    ]


def deploy_args(aws: str, *extra: str, verifying: bool = True, stack: str = STACK) -> list[str]:
    """A deploy of this repository's functions; ``verifying``: with what verifies
    tokens, as the README's deploy has it (--supabase-url)."""
    return [
        *tether(aws, "deploy", stack=stack),
        "--functions",
        str(ROOT / "functions"),
        "--cache-dir",
        str(CACHE),
        *(("--supabase-url", "https://project.supabase.co") if verifying else ()),
        *extra,
    ]


def aws_client(service: str, endpoint: str) -> Any:
    factory: Any = boto3.client
    return factory(service, endpoint_url=endpoint, region_name=AWS_REGION)


def physical_ids(endpoint: str) -> dict[str, str]:
    listed = aws_client("cloudformation", endpoint).describe_stack_resources(StackName=STACK)
    return {
        r["LogicalResourceId"]: r.get("PhysicalResourceId", "")
        for r in listed["StackResources"]
        if "LogicalResourceId" in r
    }


@pytest.mark.parametrize("through", ["body", "s3"])
def test_a_template_of_either_size_deploys(
    through: str,
    aws: str,
    empty_database_url: str,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """CloudFormation takes a template of up to 51,200 bytes in the request, a larger
    one from S3: both ways deploy, whichever side of the limit the template is today
    (it crossed it once, and every deploy failed)."""
    from tether.deploy import stack as stack_module  # noqa: PLC0415

    template_bytes = len((ROOT / "infra" / "template.yaml").read_bytes())
    limit = template_bytes + 1 if through == "body" else template_bytes - 1
    monkeypatch.setattr(stack_module, "TEMPLATE_BODY_LIMIT", limit)
    aws_client("secretsmanager", aws).create_secret(
        Name="tether/test-database", SecretString=empty_database_url
    )
    code = main(
        [
            *deploy_args(aws, "--database-secret", "tether/test-database", "--no-snapstart"),
            "--yes",
        ]
    )
    said = capsys.readouterr()
    assert code == 0, said.out + said.err
    assert f"stack {STACK} is CREATE_COMPLETE" in said.out
    account = aws_client("sts", aws).get_caller_identity()["Account"]
    listed = aws_client("s3", aws).list_objects_v2(
        Bucket=f"tether-deploy-{account}-{AWS_REGION}", Prefix="tether/templates/"
    )
    assert listed.get("KeyCount", 0) == (1 if through == "s3" else 0)


def test_deploy_migrate_redeploy_and_destroy(
    aws: str,
    empty_database_url: str,
    database_url: str,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    secret = aws_client("secretsmanager", aws).create_secret(
        Name="tether/test-database", SecretString=empty_database_url
    )["ARN"]
    # Another database in the shell (the quick start's): --migrate migrates the one
    # the functions will use, the secret's. It migrated this one, "up to date".
    monkeypatch.setenv("DATABASE_URL", database_url)

    code = main(
        [
            *deploy_args(aws, "--database-secret", "tether/test-database", "--no-snapstart"),
            *("--parameter", "AdminThrottlingRateLimit=20"),
            *("--parameter", "JwksTimeoutSeconds=1.5", "--parameter", "JwksCacheSeconds=600"),
            # Who may connect and who is an operator: the stack's to say.
            *("--allowed-roles", "authenticated,anon", "--parameter", "JwtLeewaySeconds=30"),
            *("--parameter", "OperatorRoles=service_role,ops", "--parameter", "OperatorClaim="),
            "--migrate",
            "--yes",
        ]
    )
    first = capsys.readouterr()
    assert code == 0, first.out + first.err
    (said,) = [line for line in first.out.splitlines() if line.startswith("migrating")]
    dbname = conninfo_to_dict(empty_database_url)["dbname"]
    assert said.startswith(f"migrating database {dbname} on "), said
    assert said.endswith(f"from the secret {secret}"), said
    assert f"{len(migrate.discover())} migration(s) applied" in first.out
    assert migrate.status(empty_database_url).pending == []
    assert f"stack {STACK} is CREATE_COMPLETE" in first.out
    assert "+ SweepFunction" in first.out  # the change set was shown
    assert empty_database_url not in first.out + first.err

    cfn = aws_client("cloudformation", aws)
    (stack,) = cfn.describe_stacks(StackName=STACK)["Stacks"]
    assert stack["StackStatus"] == "CREATE_COMPLETE"
    parameters = {p["ParameterKey"]: p["ParameterValue"] for p in stack["Parameters"]}
    assert parameters["DatabaseSecret"] == secret
    # The operators' API's throttle, shared by every caller, is the stack's to set.
    assert (parameters["AdminThrottlingRateLimit"], parameters["AdminThrottlingBurstLimit"]) == (
        "20",
        "100",
    )

    # The functions, with the template's handlers, their own roles, and the secret's ARN.
    ids = physical_ids(aws)
    lam = aws_client("lambda", aws)
    roles = set()
    for logical, handler in handlers().items():
        function = lam.get_function(FunctionName=ids[logical])["Configuration"]
        assert function["Handler"] == handler
        assert function["Runtime"] == "python3.13"
        assert function["Role"].endswith(f"/{ids[logical.replace('Function', 'Role')]}")
        roles.add(function["Role"])
        variables = function["Environment"]["Variables"]
        assert variables["TETHER_DATABASE_URL"] == secret
        assert empty_database_url not in {str(v) for v in variables.values()}
    assert len(roles) == len(handlers())
    # Both functions that verify tokens fetch the signing keys as the stack says (moto
    # keeps a Number parameter's Ref a number; CloudFormation makes every Ref a string).
    for logical in ("ConnectFunction", "AdminFunction"):
        variables = lam.get_function(FunctionName=ids[logical])["Configuration"]["Environment"][
            "Variables"
        ]
        assert {
            key: str(variables.get(key))
            for key in (
                "TETHER_JWKS_TIMEOUT_SECONDS",
                "TETHER_JWKS_CACHE_SECONDS",
                "TETHER_JWKS_REFRESH_COOLDOWN_SECONDS",
            )
        } == {
            "TETHER_JWKS_TIMEOUT_SECONDS": "1.5",
            "TETHER_JWKS_CACHE_SECONDS": "600",
            "TETHER_JWKS_REFRESH_COOLDOWN_SECONDS": "30",
        }, logical
        assert (variables["TETHER_ALLOWED_ROLES"], str(variables["TETHER_JWT_LEEWAY_SECONDS"])) == (
            "authenticated,anon",
            "30",
        ), logical
    admin = lam.get_function(FunctionName=ids["AdminFunction"])["Configuration"]
    operators = {
        key: admin["Environment"]["Variables"].get(key)
        for key in ("TETHER_OPERATOR_ROLES", "TETHER_OPERATOR_CLAIM")
    }
    # An empty claim: no claim makes an operator (the default names one).
    assert operators == {"TETHER_OPERATOR_ROLES": "service_role,ops", "TETHER_OPERATOR_CLAIM": ""}
    sweep = lam.get_function(FunctionName=ids["SweepFunction"])["Configuration"]
    assert sweep["Environment"]["Variables"]["TETHER_EVENT_BUS_NAME"] == f"{STACK}-sessions"
    assert f"{STACK}-sessions" in {
        bus["Name"] for bus in aws_client("events", aws).list_event_buses()["EventBuses"]
    }

    # The schedule targets the sweep; SessionEnded targets its subscriber, dead letters set.
    events = aws_client("events", aws)
    (rule,) = events.list_rules(NamePrefix=f"{STACK}-sweep")["Rules"]
    assert rule["ScheduleExpression"] == "rate(1 minute)"
    (target,) = events.list_targets_by_rule(Rule=rule["Name"])["Targets"]
    assert target["Arn"] == sweep["FunctionArn"]
    (target,) = events.list_targets_by_rule(
        Rule=f"{STACK}-session-ended", EventBusName=f"{STACK}-sessions"
    )["Targets"]
    assert target["Arn"].endswith(f":function:{STACK}-session-ended")
    assert target["DeadLetterConfig"]["Arn"].endswith(f":{STACK}-session-ended-dlq")

    # The bundle is in S3, named by its content.
    s3 = aws_client("s3", aws)
    bucket = parameters["BundleBucket"]
    (bundle,) = s3.list_objects_v2(Bucket=bucket, Prefix="tether/bundles/")["Contents"]
    assert bundle["Key"] == parameters["BundleKey"]
    assert f"uploaded s3://{bucket}/{bundle['Key']}" in first.out
    assert s3.get_bucket_encryption(Bucket=bucket)["ServerSideEncryptionConfiguration"]
    assert {"Key": "tether:bundles", "Value": "true"} in s3.get_bucket_tagging(Bucket=bucket)[
        "TagSet"
    ]

    # Again, with nothing changed: nothing uploaded, no change set run.
    events_before = len(cfn.describe_stack_events(StackName=STACK)["StackEvents"])
    change_sets_before = cfn.list_change_sets(StackName=STACK)["Summaries"]
    # --database-url names another database, kept in a secret as it may be everywhere.
    aws_client("ssm", aws).put_parameter(
        Name="/tether/other-database", Value=database_url, Type="SecureString"
    )
    code = main(
        [*deploy_args(aws, "--yes"), "--migrate", "--database-url", "ssm:/tether/other-database"]
    )
    second = capsys.readouterr()
    assert code == 0, second.out + second.err
    other = conninfo_to_dict(database_url)["dbname"]
    (said,) = [line for line in second.out.splitlines() if line.startswith("migrating")]
    assert said.startswith(f"migrating database {other} on ") and "--database-url" in said
    assert database_url not in second.out + second.err
    assert "bundle unchanged" in second.out
    assert "uploaded" not in second.out
    assert f"stack {STACK} is up to date" in second.out
    (again,) = s3.list_objects_v2(Bucket=bucket, Prefix="tether/bundles/")["Contents"]
    assert again["LastModified"] == bundle["LastModified"]
    assert len(cfn.describe_stack_events(StackName=STACK)["StackEvents"]) == events_before
    # The empty change set was removed again.
    assert cfn.list_change_sets(StackName=STACK)["Summaries"] == change_sets_before
    kept = cfn.describe_stacks(StackName=STACK)["Stacks"][0]["Parameters"]
    assert {"ParameterKey": "AdminThrottlingRateLimit", "ParameterValue": "20"} in kept

    # Destroy asks first: without a terminal and without --yes, the answer is no.
    code = main(tether(aws, "destroy"))
    refused = capsys.readouterr()
    assert code == 1
    assert "nothing was changed" in refused.err
    assert cfn.describe_stacks(StackName=STACK)["Stacks"][0]["StackStatus"] == "CREATE_COMPLETE"

    code = main([*tether(aws, "destroy"), "--yes"])
    gone = capsys.readouterr()
    assert code == 0, gone.out + gone.err
    assert f"stack {STACK} deleted" in gone.out
    assert f"kept: bucket {bucket}" in gone.out
    assert lam.list_functions()["Functions"] == []
    assert events.list_rules(NamePrefix=STACK)["Rules"] == []
    s3.head_bucket(Bucket=bucket)  # kept, with the bundles


def test_the_sweep_s_schedule_is_held_off_while_an_adopted_table_s_old_server_writes(
    aws: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """tether adopt's cut-over deploys tether's functions while the old server still
    writes, and the sweep must wait for it to stop (its sessions send no heartbeats: the
    sweep ends each at its start once past the idle limit, and announces it). The stack's
    schedule was always ENABLED: deploying as the README said put the sweep to work at
    once. SweepScheduleState=DISABLED deploys it off, and ENABLED puts it on again (moto
    makes no alarms: test_infra checks the not-running alarm is silent meanwhile)."""
    aws_client("secretsmanager", aws).create_secret(
        Name="tether/db", SecretString="postgresql://tether:pw@127.0.0.1:5432/app"
    )
    events = aws_client("events", aws)
    off = "the sweep is off its schedule (SweepScheduleState=DISABLED)"
    # A deploy that does not name it keeps the stack's: said each time while it is off.
    for given, state in (("DISABLED", "DISABLED"), (None, "DISABLED"), ("ENABLED", "ENABLED")):
        code = main(
            [
                *deploy_args(aws, "--database-secret", "tether/db", "--no-snapstart", "--yes"),
                *(("--parameter", f"SweepScheduleState={given}") if given else ()),
            ]
        )
        said = capsys.readouterr()
        assert code == 0, said.out + said.err
        (rule,) = events.list_rules(NamePrefix=f"{STACK}-sweep")["Rules"]
        assert rule["State"] == state
        assert (off in said.out + said.err) == (state == "DISABLED"), said.out + said.err


def test_a_refused_change_set_changes_nothing(
    aws: str, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    aws_client("secretsmanager", aws).create_secret(
        Name="tether/db", SecretString="postgresql://tether:pw@127.0.0.1:5432/app"
    )
    monkeypatch.setattr("sys.stdin", io.StringIO(""))  # not a terminal, no --yes
    code = main(deploy_args(aws, "--database-secret", "tether/db", "--no-snapstart"))
    said = capsys.readouterr()
    assert code == 1
    assert "create stack tether-test with these changes? [y/N] no" in said.err
    assert "the stack was not changed" in said.out
    stacks = aws_client("cloudformation", aws).list_stacks()["StackSummaries"]
    assert all(s["StackStatus"] == "DELETE_COMPLETE" for s in stacks if s["StackName"] == STACK)
    assert aws_client("lambda", aws).list_functions()["Functions"] == []


def test_bad_values_are_refused_before_aws_is_asked_anything(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # No credentials and nothing listening: a typo is still named as a typo (exit 2),
    # not hidden behind AWS's failure (exit 1).
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", "/nonexistent")
    monkeypatch.setenv("AWS_CONFIG_FILE", "/nonexistent")
    nowhere = "http://127.0.0.1:9"
    for flags, says in (
        (("--memory", "5"), "--memory: '5' is not allowed"),
        (("--supabase-url", "http://project.supabase.co"), "--supabase-url: an https://"),
        # A secret's value where its reference belongs is not repeated.
        (("--parameter", "JwtSecret=mysupersecretjwt"), "the value given is not allowed"),
        # Malformed: a value with no key, or a key no parameter could have.
        (("--parameter", "mysupersecretjwt"), "--parameter: expected KEY=VALUE"),
        (("--parameter", "Jwt-Secret=mysupersecretjwt"), "is no parameter's name"),
        # A --parameter that would be lost without a word: given twice, or by its flag
        # too, or one each deploy sets from what it built.
        (("--parameter", "Stage=blue", "--parameter", "Stage=green"), "given more than once"),
        (("--parameter", "Stage=blue", "--stage", "green"), "Stage and --stage both set it"),
        (("--parameter", "BundleKey=mine.zip"), "--parameter BundleKey: tether deploy sets it"),
        # A database named without --migrate would be read by nothing.
        (
            ("--database-url", "postgresql://u:mysupersecretjwt@127.0.0.1:9/app"),
            "--database-url names the database --migrate applies the migrations to",
        ),
    ):
        code = main([*deploy_args(nowhere, verifying=False), "--region", "us-east-1", *flags])
        said = capsys.readouterr()
        assert code == 2, said.err
        assert says in said.err
        assert said.out == ""
        assert "mysupersecretjwt" not in said.err


def test_bad_input_is_refused_before_anything_changes(
    aws: str, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    code = main(deploy_args(aws, "--yes"))
    err = capsys.readouterr().err
    assert code == 2  # refused input: nothing was done
    assert "--database-secret: required to create the stack" in err
    # A secret that is not there names nothing: refused for what was found (1), as
    # one kept as a plain String parameter is.
    code = main(deploy_args(aws, "--database-secret", "tether/missing", "--yes"))
    err = capsys.readouterr().err
    assert code == 1
    assert "--database-secret: cannot find, in us-east-1, a secret by the name given" in err
    aws_client("ssm", aws).put_parameter(Name="/tether/plain", Value="x", Type="String")
    code = main(deploy_args(aws, "--database-secret", "ssm:/tether/plain", "--yes"))
    err = capsys.readouterr().err
    assert code == 1
    assert "--database-secret: parameter /tether/plain is a String, not a SecureString" in err
    # A secret's value given where its name belongs is not repeated; an ARN is.
    aws_client("secretsmanager", aws).create_secret(
        Name="tether/db-found", SecretString="postgresql://tether:pw@127.0.0.1:5432/app"
    )
    arn = "arn:aws:secretsmanager:us-east-1:123456789012:secret:tether/missing-AbCdEf"
    for flag, given in (
        ("--jwt-secret", "mysupersecretjwt"),
        ("--operator-key", "plainTextOperatorKey123"),
        ("--jwt-secret", arn),
    ):
        code = main(deploy_args(aws, "--database-secret", "tether/db-found", flag, given, "--yes"))
        said = capsys.readouterr()
        assert code == 1
        assert f"{flag}: cannot find, in us-east-1, " in said.err
        assert (given in said.err + said.out) is given.startswith("arn:")
    # A secret given as --parameter is checked as its flag's is, and not by both.
    code = main(deploy_args(aws, "--parameter", f"DatabaseSecret={arn}", "--yes"))
    said = capsys.readouterr()
    assert code == 1
    assert f"--parameter DatabaseSecret: cannot find, in us-east-1, {arn}" in said.err
    code = main(
        deploy_args(
            aws,
            "--database-secret",
            "tether/db-found",
            "--parameter",
            f"JwtSecret={arn}",
            "--jwt-secret",
            arn,
            "--yes",
        )
    )
    said = capsys.readouterr()
    assert code == 2
    assert "--parameter JwtSecret and --jwt-secret both set it" in said.err
    code = main([*tether(aws, "deploy", stack="9-bad"), "--yes"])
    err = capsys.readouterr().err
    assert code == 2
    assert "--stack: '9-bad' is not a stack name" in err
    # A stack that is not there names nothing: refused for what was found (1).
    code = main([*tether(aws, "destroy"), "--yes"])
    err = capsys.readouterr().err
    assert code == 1
    assert f"stack {STACK} does not exist" in err
    # botocore's own refusals are one line, not a traceback (a malformed --region is
    # refused at the command line, exit 2; set in the environment, it is botocore's).
    for flags, says in (
        (("--profile", "nope"), "AWS: The config profile (nope) could not be found"),
        ((), "AWS: Provided region_name 'not a region'"),
    ):
        with monkeypatch.context() as environment:
            if not flags:
                environment.setenv("AWS_REGION", "not a region")
                environment.setenv("AWS_DEFAULT_REGION", "not a region")
            code = main([*tether(aws, "destroy"), *flags, "--yes"])
        err = capsys.readouterr().err
        assert code == 1
        assert says in err and "Traceback" not in err
    # Heartbeat settings the functions could not load are refused before any build.
    aws_client("secretsmanager", aws).create_secret(
        Name="tether/db", SecretString="postgresql://tether:pw@127.0.0.1:5432/app"
    )
    for flags, says in (
        (("--heartbeat-interval", "30s"), "--heartbeat-grace (30) must be more than"),
        (
            ("--heartbeat-interval", "10s"),
            "the heartbeat throttle (10) must be under --heartbeat-interval (10)",
        ),
        (
            ("--check-every", "2m"),
            "--check-every (2m) must not be longer than the sweep's period (1m)",
        ),
        (("--check-every", "0.4s"), "--check-every: whole seconds only, got 0.4s"),
        # Blank, every access token would be refused as not meant for this stack.
        (("--jwt-audience", " "), "--jwt-audience: is empty"),
        # No role, every token refused: the template's pattern says so first.
        (("--allowed-roles", " , "), "--allowed-roles: ' , ' is not allowed: names at least one"),
        (
            ("--parameter", "JwtLeewaySeconds=301"),
            "--parameter JwtLeewaySeconds: '301' is not allowed: at most 300",
        ),
    ):
        code = main(deploy_args(aws, "--database-secret", "tether/db", *flags, "--yes"))
        err = capsys.readouterr().err
        assert code == 2, flags
        assert says in err, err
    # A stack whose $connect could verify no token (and may not let anyone in without
    # one) would refuse every connection: refused before any build.
    # What the template would refuse only after the build and upload: refused now.
    refused_now: list[tuple[tuple[str, ...], str]] = [
        (("--stage", "pr od"), "--stage: 'pr od' is not allowed: must match"),
        (("--memory", "99999"), "--memory: '99999' is not allowed: at most 10240"),
        (("--alarm-email", "notanemail"), "--alarm-email: 'notanemail' is not allowed"),
        (("--finalizer", "notafinalizer"), "--finalizer: 'notafinalizer' is not allowed"),
        (("--parameter", "LogRetentionDays=2"), "--parameter LogRetentionDays: '2' is not"),
        (
            ("--parameter", "AdminThrottlingRateLimit=0"),
            "--parameter AdminThrottlingRateLimit: '0' is not allowed: at least 1",
        ),
        # A namespace CloudWatch refuses would leave three alarms silent.
        (("--metrics-namespace", "bad ns!"), "--metrics-namespace: 'bad ns!' is not allowed"),
        (("--metrics-namespace", "AWS/Lambda"), "--metrics-namespace: 'AWS/Lambda' is not"),
        (("--metrics-namespace", "   "), "--metrics-namespace: '   ' is not allowed"),
        (("--metrics-namespace", ":app"), "--metrics-namespace: ':app' is not allowed"),
        (("--metrics-namespace", "n" * 256), "--metrics-namespace: 'nnnn"),
        (("--parameter", "Architecture=sparc"), "--architecture: 'sparc' is not allowed: one of"),
        (("--parameter", "CheckEverySeconds=abc"), "--check-every: 'abc' is not allowed: must"),
        # The functions' bounds on fetching the signing keys (tether.settings).
        (
            ("--parameter", "JwksTimeoutSeconds=0"),
            "--parameter JwksTimeoutSeconds: '0' is not allowed",
        ),
        (
            ("--parameter", "JwksTimeoutSeconds=5.5"),
            "--parameter JwksTimeoutSeconds: '5.5' is not allowed",
        ),
        (
            ("--parameter", "JwksCacheSeconds=0.5"),
            "--parameter JwksCacheSeconds: '0.5' is not allowed: at least 1",
        ),
        (
            ("--parameter", "JwksRefreshCooldownSeconds=3601"),
            "--parameter JwksRefreshCooldownSeconds: '3601' is not allowed: at most 3600",
        ),
        # float() reads these as numbers (nan past every bound); CloudFormation does not.
        (("--parameter", "MemorySize=nan"), "--memory: 'nan' is not allowed: must be a number"),
        (
            ("--parameter", "AdminThrottlingRateLimit=\u0663"),
            "--parameter AdminThrottlingRateLimit: '\u0663' is not allowed: must be a number",
        ),
    ]
    for more, why in refused_now:
        code = main(deploy_args(aws, "--database-secret", "tether/db", *more, "--yes"))
        err = capsys.readouterr().err
        assert code == 2, more
        assert why in err, err
    code = main([*tether(aws, "deploy", stack="stäck"), "--yes"])
    assert code == 2
    assert "is not a stack name" in capsys.readouterr().err
    unverified: list[tuple[tuple[str, ...], str]] = [
        ((), "every $connect would be refused, with no way to verify access tokens"),
        (("--jwks-url", "https://keys.example/jwks.json"), "with --jwt-issuer"),
        (("--allow-anonymous", "--driver", "supabase"), "--driver supabase: needs --supabase-url"),
        (("--supabase-url", "ftp://x y"), "--supabase-url: an https:// address is expected"),
        (("--jwks-url", "http://keys.example/jwks.json", "--jwt-issuer", "iss"), "--jwks-url: an"),
    ]
    for more, why in unverified:
        args = deploy_args(aws, "--database-secret", "tether/db", *more, "--yes", verifying=False)
        code = main(args)
        err = capsys.readouterr().err
        assert code == 2, more
        assert why in err, err
    assert aws_client("lambda", aws).list_functions()["Functions"] == []
    assert aws_client("s3", aws).list_buckets()["Buckets"] == []


def test_a_kept_value_the_template_no_longer_takes_is_said_to_be_the_stack_s(
    aws: str,
    empty_database_url: str,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A deploy keeps the values not given again; one a newer template refuses (a bound
    or pattern tightened since) was refused as if this command line had given it
    ("--memory: '1024' is not allowed"), exit 2, though no --memory was given."""
    import tether.deploy  # noqa: PLC0415

    aws_client("secretsmanager", aws).create_secret(
        Name="tether/test-database", SecretString=empty_database_url
    )
    first = [
        *deploy_args(aws, "--database-secret", "tether/test-database", "--no-snapstart"),
        "--memory",
        "1024",
        "--yes",
    ]
    code = main(first)
    said = capsys.readouterr()
    assert code == 0, said.out + said.err
    tightened = tether.deploy.template_text().replace(
        "    MinValue: 128\n    MaxValue: 10240\n", "    MinValue: 2048\n    MaxValue: 10240\n"
    )
    assert tightened != tether.deploy.template_text()
    monkeypatch.setattr(tether.deploy, "template_text", lambda: tightened)
    code = main([*deploy_args(aws, "--no-snapstart"), "--yes"])
    said = capsys.readouterr()
    assert code == 1, said.out + said.err
    assert said.out == ""
    assert said.err == (
        "tether deploy: --memory: the stack's current value, kept as it was not given, is not"
        " allowed now: '1024' (at least 2048); give --memory VALUE with a value it allows\n"
    )
    # Given on the command line, it is the usage error it always was.
    code = main([*deploy_args(aws, "--no-snapstart"), "--memory", "1024", "--yes"])
    assert code == 2
    assert "--memory: '1024' is not allowed: at least 2048" in capsys.readouterr().err


def test_a_bucket_name_s3_refuses_is_refused_before_anything_is_built_or_made(
    aws: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """--bucket Bad_Bucket failed only after the bundle was built, and moto, which does
    not check names, made the bucket and deployed the stack."""
    aws_client("secretsmanager", aws).create_secret(
        Name="tether/db", SecretString="postgresql://tether:pw@127.0.0.1:5432/app"
    )
    with pytest.raises(SystemExit) as exited:
        main(deploy_args(aws, "--database-secret", "tether/db", "--bucket", "Bad_Bucket", "--yes"))
    said = capsys.readouterr()
    assert exited.value.code == 2
    assert (
        "argument --bucket: 'Bad_Bucket' is not an S3 bucket name: lowercase letters, digits,"
        " periods (.) and hyphens (-) only"
    ) in said.err
    assert "building the bundle" not in said.out + said.err
    assert aws_client("s3", aws).list_buckets()["Buckets"] == []
    assert aws_client("cloudformation", aws).describe_stacks()["Stacks"] == []


_BARE_STACK = """
Parameters:
  BundleBucket: {Type: String}
Resources:
  Topic: {Type: "AWS::SNS::Topic"}
"""


def _bare_stack(aws: str, name: str, bucket: str) -> None:
    """A stack that keeps its bundles in ``bucket``, made without a build: destroy's
    refusals come before anything else it does."""
    aws_client("cloudformation", aws).create_stack(
        StackName=name,
        TemplateBody=_BARE_STACK,
        Parameters=[{"ParameterKey": "BundleBucket", "ParameterValue": bucket}],
        Tags=[{"Key": "tether:stack", "Value": name}],
    )


def _destroy(aws: str, name: str, *extra: str) -> list[str]:
    return ["destroy", "--stack", name, "--endpoint-url", aws, "--poll-seconds", "0.05", *extra]


def test_delete_bucket_deletes_only_a_bucket_tether_made_and_no_other_stack_uses(
    aws: str, capsys: pytest.CaptureFixture[str]
) -> None:
    s3 = aws_client("s3", aws)
    cfn = aws_client("cloudformation", aws)
    s3.create_bucket(Bucket="important-data")
    s3.put_object(Bucket="important-data", Key="customers.csv", Body=b"keep me")
    _bare_stack(aws, "wrong", "important-data")
    # Refused for what was found, not for the flag (1), and before anything is deleted.
    code = main([*_destroy(aws, "wrong", "--delete-bucket"), "--yes"])
    said = capsys.readouterr()
    assert code == 1
    assert "important-data is not a bucket tether deploy created; nothing was deleted" in said.err
    assert s3.get_object(Bucket="important-data", Key="customers.csv")["Body"].read()
    assert cfn.describe_stacks(StackName="wrong")["Stacks"][0]["StackStatus"] == "CREATE_COMPLETE"

    # The default bucket, shared by two stacks: not while the other one uses it.
    account = aws_client("sts", aws).get_caller_identity()["Account"]
    shared = f"tether-deploy-{account}-{AWS_REGION}"
    s3.create_bucket(Bucket=shared)
    _bare_stack(aws, "one", shared)
    _bare_stack(aws, "two", shared)
    code = main([*_destroy(aws, "one", "--delete-bucket"), "--yes"])
    said = capsys.readouterr()
    assert code == 1
    assert f"stack(s) two keep their bundles in {shared}; nothing was deleted" in said.err
    assert cfn.describe_stacks(StackName="one")["Stacks"][0]["StackStatus"] == "CREATE_COMPLETE"

    # The last user goes, and its bucket with it; the prompt names the bucket.
    assert main(_destroy(aws, "two")) == 1
    assert f"then bucket {shared} and every bundle in it?" not in capsys.readouterr().err
    assert main([*_destroy(aws, "two"), "--yes"]) == 0
    capsys.readouterr()
    assert main(_destroy(aws, "one", "--delete-bucket")) == 1
    assert f"then bucket {shared} and every bundle in it? [y/N] no" in capsys.readouterr().err
    assert main([*_destroy(aws, "one", "--delete-bucket"), "--yes"]) == 0
    assert f"deleted bucket {shared}" in capsys.readouterr().out
    assert shared not in {b["Name"] for b in s3.list_buckets()["Buckets"]}


def test_a_migration_that_fails_leaves_no_stack_and_no_change_set(
    aws: str, capsys: pytest.CaptureFixture[str]
) -> None:
    aws_client("secretsmanager", aws).create_secret(
        Name="tether/db", SecretString="postgresql://tether:pw@127.0.0.1:9/app"
    )
    unreachable = "postgresql://tether:never-shown@127.0.0.1:9/app"
    args = deploy_args(aws, "--database-secret", "tether/db", "--no-snapstart", "--yes")
    code = main([*args, "--migrate", "--database-url", unreachable])
    said = capsys.readouterr()
    assert code == 1
    assert "never-shown" not in said.out + said.err
    # The change set was listed as the stack to create: what became of it is said.
    assert "creating stack tether-test:" in said.out
    assert said.out.splitlines()[-1].startswith("the stack was not changed (the bundle stays in")
    assert "tether deploy: cannot connect to the database" in said.err
    # Nothing that could be run later from the console: no change set, no stack.
    cfn = aws_client("cloudformation", aws)
    live = [s for s in cfn.list_stacks()["StackSummaries"] if s["StackStatus"] != "DELETE_COMPLETE"]
    assert live == []
    assert aws_client("lambda", aws).list_functions()["Functions"] == []


def test_a_database_whose_row_security_refuses_tether_stops_the_deploy_before_its_stack(
    aws: str, plain_owner_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """Migrated, but a table forcing row level security on its owner (no superuser, no
    BYPASSRLS) refuses every session tether's functions open: as `tether migrate` says,
    so does the deploy that migrates, before the new code goes out."""
    migrate.migrate(plain_owner_url)
    with psycopg.connect(plain_owner_url, autocommit=True) as owner:
        owner.execute("alter table public.conversation_sessions force row level security")
    aws_client("secretsmanager", aws).create_secret(
        Name="tether/db", SecretString="postgresql://tether:pw@127.0.0.1:9/app"
    )
    args = deploy_args(aws, "--database-secret", "tether/db", "--no-snapstart", "--yes")
    code = main([*args, "--migrate", "--database-url", plain_owner_url])
    said = capsys.readouterr()
    assert code == 1
    assert "database is up to date" in said.out
    assert "public.conversation_sessions forces row level security on its owner" in said.err
    assert "the stack was not changed" in said.err
    cfn = aws_client("cloudformation", aws)
    live = [s for s in cfn.list_stacks()["StackSummaries"] if s["StackStatus"] != "DELETE_COMPLETE"]
    assert live == []


def test_a_secret_in_another_region_may_be_decrypted_with_its_own_key(
    aws: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """A customer managed key lives in its secret's region, and KMS is asked through
    that region's Secrets Manager: the stack's region alone refused the decrypt."""
    elsewhere = boto3.client("secretsmanager", endpoint_url=aws, region_name="eu-west-1")
    secret = elsewhere.create_secret(
        Name="tether/db", SecretString="postgresql://tether:pw@127.0.0.1:5432/app"
    )["ARN"]
    key = "arn:aws:kms:eu-west-1:123456789012:key/1234abcd-12ab-34cd-56ef-1234567890ab"
    args = deploy_args(aws, "--database-secret", secret, "--kms-key", key, "--no-snapstart")
    code = main([*args, "--yes"])
    said = capsys.readouterr()
    assert code == 0, said.out + said.err
    iam = aws_client("iam", aws)
    (policy,) = [
        p
        for p in iam.list_policies(Scope="Local")["Policies"]
        if p["PolicyName"].startswith(f"{STACK}-SecretsKeyDecryptPolicy")
    ]
    version = iam.get_policy_version(PolicyArn=policy["Arn"], VersionId=policy["DefaultVersionId"])[
        "PolicyVersion"
    ]
    document = version["Document"]
    if isinstance(document, str):
        document = json.loads(urllib.parse.unquote(document))
    (statement,) = document["Statement"]
    assert statement["Resource"] == key
    assert statement["Condition"]["StringEquals"]["kms:ViaService"] == [
        "secretsmanager.eu-west-1.amazonaws.com",
        "ssm.eu-west-1.amazonaws.com",
    ]


def test_a_finalizer_that_is_not_in_the_bundle_is_refused_before_the_upload(
    aws: str, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    aws_client("secretsmanager", aws).create_secret(
        Name="tether/db", SecretString="postgresql://tether:pw@127.0.0.1:5432/app"
    )
    finalizer = ("--finalizer", "nosuch.module:finalize")
    code = main(deploy_args(aws, "--database-secret", "tether/db", *finalizer, "--yes"))
    err = capsys.readouterr().err
    assert code == 2
    assert "--finalizer: module nosuch.module is not in the bundle; ship it with --include" in err
    # The module ships but has no such function: every SessionEnded would fail to load it.
    finalizer = ("--finalizer", "tether.handlers.session_ended:nope")
    code = main(deploy_args(aws, "--database-secret", "tether/db", *finalizer, "--yes"))
    err = capsys.readouterr().err
    assert code == 2
    assert "--finalizer: module tether.handlers.session_ended defines no nope" in err
    # A module of Python's own, which has no such function in the functions' version (read
    # here as this Python's): as refused.
    monkeypatch.setattr(deploy_cli, "_this_python", lambda: bundles.DEFAULT_PYTHON)
    finalizer = ("--finalizer", "json:nosuch")
    code = main(deploy_args(aws, "--database-secret", "tether/db", *finalizer, "--yes"))
    err = capsys.readouterr().err
    assert code == 2
    assert "--finalizer: module json defines no nosuch (in " in err
    assert "standard library" in err and "nothing was uploaded" in err
    assert aws_client("s3", aws).list_buckets()["Buckets"] == []


class _NotAws(http.server.BaseHTTPRequestHandler):
    """What a proxy or an emulator in trouble answers: an HTML error page."""

    def _page(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        self.rfile.read(length)
        body = b"<!doctype html>\n<title>500 Internal Server Error</title>\n<h1>Oops</h1>\n"
        self.send_response(500)
        self.send_header("Content-Type", "text/html")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_GET = do_POST = _page

    def log_message(self, format: str, *args: Any) -> None:
        pass


def test_an_answer_that_is_no_aws_response_is_one_line(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AWS_MAX_ATTEMPTS", "1")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _NotAws)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        endpoint = f"http://127.0.0.1:{server.server_address[1]}"
        code = main([*tether(endpoint, "destroy"), "--region", AWS_REGION, "--yes"])
    finally:
        server.shutdown()
        server.server_close()
    err = capsys.readouterr().err
    assert code == 1
    assert "answered with something that is not an AWS response: Unable to parse" in err
    assert "Traceback" not in err and "<h1>" not in err


class _Between(http.server.BaseHTTPRequestHandler):
    """A way to the moto server that breaks as AWS does mid-deploy: the calls named in
    ``dropped`` (an action, or an S3 setting such as ``tagging``) get no answer (their
    connection closed), and once a call named ``last`` went through, no call gets one
    (AWS unreachable from then on). ``heard`` lists each request as METHOD /path."""

    upstream = ""
    dropped: frozenset[str] = frozenset()
    last = ""
    cut = threading.Event()
    heard: ClassVar[list[str]] = []

    def _forward(self) -> None:
        self.heard.append(f"{self.command} {urllib.parse.urlsplit(self.path).path}")
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        form = urllib.parse.parse_qs(body.decode("latin-1"))
        action = form.get("Action", [""])[0]
        # S3 names its bucket's settings in the query: PUT /bucket?tagging.
        query = urllib.parse.parse_qs(
            urllib.parse.urlsplit(self.path).query, keep_blank_values=True
        )
        if self.cut.is_set() or {action, *query} & self.dropped:
            self.close_connection = True
            self.connection.close()
            return
        if action and action == self.last:
            self.cut.set()
        target = urllib.parse.urlsplit(self.upstream)
        upstream = http.client.HTTPConnection(target.netloc, timeout=60)
        headers = {k: v for k, v in self.headers.items() if k.lower() != "host"}
        upstream.request(self.command, self.path, body=body or None, headers=headers)
        answer = upstream.getresponse()
        data = answer.read()
        self.send_response(answer.status)
        for name, value in answer.getheaders():
            if name.lower() not in {"content-length", "transfer-encoding", "connection"}:
                self.send_header(name, value)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)
        upstream.close()

    do_GET = do_POST = do_PUT = do_HEAD = do_DELETE = _forward

    def log_message(self, format: str, *args: Any) -> None:
        pass


def _deploy_between(aws: str, *extra: str, dropped: frozenset[str], last: str = "") -> int:
    handler = type(
        "Between",
        (_Between,),
        {"upstream": aws, "dropped": dropped, "last": last, "cut": threading.Event()},
    )
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        way = f"http://localhost:{server.server_address[1]}"  # as the moto fixture names it
        return main(
            [*deploy_args(way, "--database-secret", "tether/db", "--no-snapstart", *extra), "--yes"]
        )
    finally:
        server.shutdown()
        server.server_close()


@pytest.mark.parametrize(
    ("dropped", "last"),
    [
        pytest.param(frozenset({"DescribeChangeSet"}), "", id="change-set-unread"),
        pytest.param(frozenset(), "CreateChangeSet", id="aws-gone-after-change-set"),
    ],
)
def test_a_deploy_cut_off_before_its_change_set_ran_leaves_none_to_run_and_a_rerun_finishes(
    aws: str,
    dropped: frozenset[str],
    last: str,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """AWS stops answering once the change set is made (moto killed, a network gone):
    the deploy fails (exit 1). What it can still reach, it removes (the change set that
    nobody saw, the empty stack made for it); what it cannot, the next deploy does, and
    that deploy creates the stack."""
    monkeypatch.setenv("AWS_MAX_ATTEMPTS", "1")
    aws_client("secretsmanager", aws).create_secret(
        Name="tether/db", SecretString="postgresql://tether:pw@127.0.0.1:5432/app"
    )
    code = _deploy_between(aws, dropped=dropped, last=last)
    said = capsys.readouterr()
    assert code == 1, said.out + said.err
    assert "tether deploy: AWS: " in said.err
    cfn = aws_client("cloudformation", aws)
    live = [s for s in cfn.list_stacks()["StackSummaries"] if s["StackStatus"] != "DELETE_COMPLETE"]
    if not last:
        # AWS still answered the clean-up: no stack, so no change set left to run.
        assert live == []
    else:
        assert [s["StackStatus"] for s in live] == ["REVIEW_IN_PROGRESS"]

    code = main([*deploy_args(aws, "--database-secret", "tether/db", "--no-snapstart"), "--yes"])
    said = capsys.readouterr()
    assert code == 0, said.out + said.err
    assert f"stack {STACK} is CREATE_COMPLETE" in said.out
    (stack,) = cfn.describe_stacks(StackName=STACK)["Stacks"]
    assert stack["StackStatus"] == "CREATE_COMPLETE"
    assert {f["FunctionName"] for f in aws_client("lambda", aws).list_functions()["Functions"]} >= {
        f"{STACK}-admin"
    }


def _lists_its_change_set_s_parameters(aws: str, name: str) -> None:
    """A stack in review as CloudFormation may describe it, with the parameters of the
    change set it was made for; moto's lists none (its template is empty until the
    change set runs): the moto server of the tests, in this process, is given them."""
    from moto.cloudformation.models import cloudformation_backends  # noqa: PLC0415

    account = aws_client("sts", aws).get_caller_identity()["Account"]
    for stack in cloudformation_backends[account][AWS_REGION].stacks.values():
        if stack.name == name and stack.status == "REVIEW_IN_PROGRESS":
            stack.resource_map.resolved_parameters.update(stack.parameters)


def test_a_first_deploy_cut_off_in_review_lends_the_next_one_none_of_its_settings(
    aws: str, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The stack a first deploy left in review (REVIEW_IN_PROGRESS) when AWS stopped
    answering never ran: the next deploy took its parameters as the stack's settings,
    kept as not given again, and created the stack with a sweep rate and a bucket no
    one asked for this time."""
    monkeypatch.setenv("AWS_MAX_ATTEMPTS", "1")
    aws_client("secretsmanager", aws).create_secret(
        Name="tether/db", SecretString="postgresql://tether:pw@127.0.0.1:5432/app"
    )
    first = ("--sweep-rate", "5m", "--bucket", "team-bundles")
    code = _deploy_between(aws, *first, dropped=frozenset(), last="CreateChangeSet")
    said = capsys.readouterr()
    assert code == 1, said.out + said.err
    cfn = aws_client("cloudformation", aws)
    (left,) = cfn.describe_stacks(StackName=STACK)["Stacks"]
    assert left["StackStatus"] == "REVIEW_IN_PROGRESS"
    _lists_its_change_set_s_parameters(aws, STACK)
    (left,) = cfn.describe_stacks(StackName=STACK)["Stacks"]
    assert {"ParameterKey": "SweepPeriodSeconds", "ParameterValue": "300"} in left["Parameters"]

    code = main([*deploy_args(aws, "--database-secret", "tether/db", "--no-snapstart"), "--yes"])
    said = capsys.readouterr()
    assert code == 0, said.out + said.err
    (stack,) = cfn.describe_stacks(StackName=STACK)["Stacks"]
    assert stack["StackStatus"] == "CREATE_COMPLETE"
    settings = {p["ParameterKey"]: p["ParameterValue"] for p in stack["Parameters"]}
    assert settings["SweepPeriodSeconds"] == "60"
    account = aws_client("sts", aws).get_caller_identity()["Account"]
    assert settings["BundleBucket"] == f"tether-deploy-{account}-{AWS_REGION}"


def test_a_bucket_that_could_not_be_set_up_is_not_left_for_the_next_deploy(
    aws: str, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """AWS stops answering once the bucket is made, before it is tagged as tether's (and
    private): the deploy removes it, so the next one makes it whole rather than use it
    as it was left."""
    monkeypatch.setenv("AWS_MAX_ATTEMPTS", "1")
    aws_client("secretsmanager", aws).create_secret(
        Name="tether/db", SecretString="postgresql://tether:pw@127.0.0.1:5432/app"
    )
    code = _deploy_between(aws, "--bucket", "team-bundles", dropped=frozenset({"tagging"}))
    said = capsys.readouterr()
    assert code == 1, said.out + said.err
    assert "tether deploy: cannot set up bucket team-bundles: " in said.err
    assert "it was removed: deploy again" in said.err
    s3 = aws_client("s3", aws)
    assert "team-bundles" not in {b["Name"] for b in s3.list_buckets()["Buckets"]}

    deploy = deploy_args(aws, "--database-secret", "tether/db", "--no-snapstart")
    code = main([*deploy, "--bucket", "team-bundles", "--yes"])
    said = capsys.readouterr()
    assert code == 0, said.out + said.err
    assert "created bucket team-bundles" in said.out
    assert {"Key": "tether:bundles", "Value": "true"} in s3.get_bucket_tagging(
        Bucket="team-bundles"
    )["TagSet"]
    blocked = s3.get_public_access_block(Bucket="team-bundles")["PublicAccessBlockConfiguration"]
    assert all(blocked.values())


def _destroy_between(
    aws: str, *args: str, dropped: frozenset[str], heard: list[str] | None = None
) -> int:
    handler = type(
        "Between",
        (_Between,),
        {
            "upstream": aws,
            "dropped": dropped,
            "last": "",
            "cut": threading.Event(),
            "heard": [] if heard is None else heard,
        },
    )
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        return main([*_destroy(f"http://127.0.0.1:{server.server_address[1]}", *args), "--yes"])
    finally:
        server.shutdown()
        server.server_close()


def test_a_destroy_whose_bucket_could_not_go_says_how_to_finish_and_that_finishes(
    aws: str, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The stack is deleted, then AWS does not answer as the bucket is emptied: the
    stack no longer names the bucket, so the error says the command that deletes it,
    and that command does."""
    monkeypatch.setenv("AWS_MAX_ATTEMPTS", "1")
    s3 = aws_client("s3", aws)
    s3.create_bucket(Bucket="team-bundles")
    s3.put_bucket_tagging(
        Bucket="team-bundles", Tagging={"TagSet": [{"Key": "tether:bundles", "Value": "true"}]}
    )
    s3.put_object(Bucket="team-bundles", Key="tether/bundles/old.zip", Body=b"zip")
    _bare_stack(aws, STACK, "team-bundles")

    code = _destroy_between(aws, STACK, "--delete-bucket", dropped=frozenset({"delete"}))
    said = capsys.readouterr()
    assert code == 1, said.out + said.err
    assert f"stack {STACK} deleted" in said.out
    finish = f"tether destroy --stack {STACK} --delete-bucket --bucket team-bundles"
    assert (
        f"tether destroy: stack {STACK} is deleted; cannot delete bucket team-bundles" in said.err
    )
    assert f"`{finish}` deletes it" in said.err
    assert "team-bundles" in {b["Name"] for b in s3.list_buckets()["Buckets"]}

    code = main([*_destroy(aws, STACK, "--delete-bucket", "--bucket", "team-bundles"), "--yes"])
    said = capsys.readouterr()
    assert code == 0, said.out + said.err
    assert "deleted bucket team-bundles" in said.out
    assert "team-bundles" not in {b["Name"] for b in s3.list_buckets()["Buckets"]}
    # Without --delete-bucket, or a bucket to delete, a stack that is not there is refused.
    assert main([*_destroy(aws, STACK), "--yes"]) == 1
    assert f"--stack: stack {STACK} does not exist" in capsys.readouterr().err


def test_the_bucket_of_a_stack_already_gone_is_asked_after_once(
    aws: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """`destroy --delete-bucket --bucket B` once the stack is gone asks S3 whether B
    exists for its own message: the checks before deleting it did not ask again."""
    s3 = aws_client("s3", aws)
    s3.create_bucket(Bucket="team-bundles")
    s3.put_bucket_tagging(
        Bucket="team-bundles", Tagging={"TagSet": [{"Key": "tether:bundles", "Value": "true"}]}
    )
    heard: list[str] = []
    code = _destroy_between(
        aws, STACK, "--delete-bucket", "--bucket", "team-bundles", dropped=frozenset(), heard=heard
    )
    said = capsys.readouterr()
    assert code == 0, said.out + said.err
    assert "deleted bucket team-bundles" in said.out
    assert heard.count("HEAD /team-bundles") == 1, heard


def test_a_bucket_of_tether_s_name_that_another_account_made_is_never_used(
    aws: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """Bucket names are global and the default one is predictable from the account id,
    which is no secret: another account can make it first and let this one write to it.
    The deploy then uploaded the bundle (and any template too large to pass inline) to a
    stranger's bucket, who could swap the code the functions run with the database
    secret. It is refused, nothing uploaded, no stack made."""
    sts = aws_client("sts", aws)
    account = sts.get_caller_identity()["Account"]
    credentials = sts.assume_role(
        RoleArn="arn:aws:iam::111111111111:role/squatter", RoleSessionName="squatter"
    )["Credentials"]
    squatter = boto3.client(
        "s3",
        endpoint_url=aws,
        region_name=AWS_REGION,
        aws_access_key_id=credentials["AccessKeyId"],
        aws_secret_access_key=credentials["SecretAccessKey"],
        aws_session_token=credentials["SessionToken"],
    )
    bucket = f"tether-deploy-{account}-{AWS_REGION}"
    squatter.create_bucket(Bucket=bucket)
    assert bucket not in {b["Name"] for b in aws_client("s3", aws).list_buckets()["Buckets"]}
    aws_client("secretsmanager", aws).create_secret(
        Name="tether/db", SecretString="postgresql://tether:pw@127.0.0.1:5432/app"
    )

    code = main([*deploy_args(aws, "--database-secret", "tether/db", "--no-snapstart"), "--yes"])
    said = capsys.readouterr()
    assert code == 1, said.out + said.err
    assert (
        f"tether deploy: cannot use bucket {bucket}: it belongs to another AWS account"
    ) in said.err
    assert squatter.list_objects_v2(Bucket=bucket).get("KeyCount", 0) == 0
    assert aws_client("cloudformation", aws).describe_stacks()["Stacks"] == []


def test_a_bucket_of_this_account_is_used_when_its_buckets_cannot_be_listed_by_prefix(
    aws: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The owner check lists this account's buckets by prefix, a parameter S3 clients
    older than late 2024 do not have (boto3 1.34, which tether accepts, refuses it before
    sending anything): the deploy then failed on its own bucket, every time. As when the
    listing is denied, the check is left to S3's ExpectedBucketOwner."""
    from botocore.exceptions import ParamValidationError  # noqa: PLC0415

    from tether.deploy import stack  # noqa: PLC0415

    made = stack.Aws.client

    def without_prefix(self: stack.Aws, service: str) -> Any:
        client = made(self, service)

        def refuse(params: dict[str, Any], **_: Any) -> None:
            if "Prefix" in params:
                raise ParamValidationError(report='Unknown parameter in input: "Prefix"')

        client.meta.events.register("provide-client-params.s3.ListBuckets", refuse)
        return client

    monkeypatch.setattr(stack.Aws, "client", without_prefix)
    target = stack.Aws(endpoint_url=aws, region=AWS_REGION)
    bucket = stack.default_bucket(stack.account_id(target), AWS_REGION)
    aws_client("s3", aws).create_bucket(Bucket=bucket)
    said: list[str] = []
    stack.ensure_bucket(target, bucket, said.append)
    assert said == []  # used as it is, not made again


def test_deploy_with_a_profile_asks_in_that_profile_s_region(
    aws: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """`--profile work`, with no --region or AWS_REGION, deployed to the default
    profile's region (the AWS CLI, given the same profile, uses work's)."""
    config = tmp_path / "config"
    config.write_text("[default]\nregion = us-east-1\n[profile work]\nregion = eu-west-1\n")
    credentials = tmp_path / "credentials"
    credentials.write_text("[work]\naws_access_key_id = testing\naws_secret_access_key = testing\n")
    monkeypatch.setenv("AWS_CONFIG_FILE", str(config))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(credentials))
    for name in ("AWS_REGION", "AWS_DEFAULT_REGION", "AWS_PROFILE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr(boto3, "DEFAULT_SESSION", None)
    code = main(deploy_args(aws, "--profile", "work", "--database-secret", "tether/none", "--yes"))
    assert code == 1
    assert "--database-secret: cannot find, in eu-west-1, " in capsys.readouterr().err


def test_ctrl_c_while_the_stack_changes_says_cloudformation_goes_on(
    aws: str, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Once its change set (or deletion) runs, the stack changes in CloudFormation
    whatever becomes of the command: Ctrl-C while it was followed said "what it had
    done is kept", as if the deploy had been stopped where it was."""
    from tether.deploy import stack as stack_module  # noqa: PLC0415

    aws_client("secretsmanager", aws).create_secret(
        Name="tether/db", SecretString="postgresql://tether:pw@127.0.0.1:5432/app"
    )

    def ctrl_c(*_args: object, **_kwargs: object) -> list[dict[str, Any]]:
        raise KeyboardInterrupt

    with monkeypatch.context() as watching:
        watching.setattr(stack_module, "_events", ctrl_c)
        code = main(
            [*deploy_args(aws, "--database-secret", "tether/db", "--no-snapstart"), "--yes"]
        )
    said = capsys.readouterr()
    assert code == 130, said.err
    assert (
        f"tether deploy: interrupted; CloudFormation goes on creating stack {STACK}"
        " (only the watching stopped)" in said.err
    )
    cfn = aws_client("cloudformation", aws)
    assert cfn.describe_stacks(StackName=STACK)["Stacks"][0]["StackStatus"] == "CREATE_COMPLETE"

    account = aws_client("sts", aws).get_caller_identity()["Account"]
    bucket = f"tether-deploy-{account}-{AWS_REGION}"
    with monkeypatch.context() as watching:
        watching.setattr(stack_module, "_events", ctrl_c)
        code = main([*_destroy(aws, STACK, "--delete-bucket"), "--yes"])
    said = capsys.readouterr()
    assert code == 130, said.err
    assert f"tether destroy: interrupted; CloudFormation goes on deleting stack {STACK}" in said.err
    # The bucket's deletion was to follow the stack's: how to finish it is said.
    assert f"`tether destroy --stack {STACK} --delete-bucket --bucket {bucket}`" in said.err
    assert bucket in {b["Name"] for b in aws_client("s3", aws).list_buckets()["Buckets"]}
    assert main([*_destroy(aws, STACK, "--delete-bucket", "--bucket", bucket), "--yes"]) == 0
    assert f"deleted bucket {bucket}" in capsys.readouterr().out


def test_ctrl_c_while_deploy_migrates_says_nothing_was_migrated_nor_deployed(
    aws: str,
    empty_database_url: str,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    aws_client("secretsmanager", aws).create_secret(
        Name="tether/db", SecretString=empty_database_url
    )
    run_or_record = migrate.run_or_record
    ran: list[str] = []

    def interrupted_at_the_third(conn: Any, migration: migrate.Migration, planned: Any) -> Any:
        if len(ran) == 2:
            raise KeyboardInterrupt
        ran.append(migration.filename)
        return run_or_record(conn, migration, planned)

    monkeypatch.setattr(migrate, "run_or_record", interrupted_at_the_third)
    code = main(
        [
            *deploy_args(aws, "--database-secret", "tether/db", "--no-snapstart", "--migrate"),
            "--yes",
        ]
    )
    said = capsys.readouterr()
    assert code == 130, said.err
    assert "the stack was not changed" in said.out
    assert (
        "tether deploy: interrupted; nothing of the migrations was applied (they run in one"
        " transaction)" in said.err
    )
    with psycopg.connect(empty_database_url) as conn:
        assert conn.execute("select to_regnamespace('tether')").fetchone() == (None,)
    live = [
        s
        for s in aws_client("cloudformation", aws).list_stacks()["StackSummaries"]
        if s["StackStatus"] != "DELETE_COMPLETE"
    ]
    assert live == []


def test_a_bucket_that_is_gone_is_said_to_be_gone_not_to_be_someone_else_s(
    aws: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """The README's command to finish a destroy, run twice, or --delete-bucket on a stack
    whose bucket went another way, said "BUCKET is not a bucket tether deploy created;
    nothing was deleted (delete it yourself if you mean to)": a bucket that is not there."""
    s3 = aws_client("s3", aws)
    account = aws_client("sts", aws).get_caller_identity()["Account"]
    bucket = f"tether-deploy-{account}-{AWS_REGION}"
    s3.create_bucket(Bucket=bucket)
    _bare_stack(aws, "gone", bucket)
    s3.delete_bucket(Bucket=bucket)
    code = main([*_destroy(aws, "gone", "--delete-bucket"), "--yes"])
    said = capsys.readouterr()
    assert code == 1, said.err
    assert (
        f"--delete-bucket: bucket {bucket} does not exist; nothing was deleted (destroy"
        " without --delete-bucket)" in said.err
    )
    assert "not a bucket tether deploy created" not in said.err
    cfn = aws_client("cloudformation", aws)
    assert cfn.describe_stacks(StackName="gone")["Stacks"][0]["StackStatus"] == "CREATE_COMPLETE"
    assert main([*_destroy(aws, "gone"), "--yes"]) == 0
    capsys.readouterr()

    code = main([*_destroy(aws, "gone", "--delete-bucket", "--bucket", bucket), "--yes"])
    said = capsys.readouterr()
    assert code == 1, said.err
    assert (
        f"--stack: stack gone does not exist, nor does bucket {bucket}: nothing to delete"
        in said.err
    )


def test_a_secret_that_holds_no_database_url_is_named_as_the_fault(
    aws: str, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """--migrate reads the URL from the stack's secret, not DATABASE_URL: a secret whose
    value is no URL was said as "the database URL must look like ...", which sends the
    user to the DATABASE_URL in their shell, fine all along."""
    monkeypatch.setenv("DATABASE_URL", "postgresql://tether@127.0.0.1:9/app")
    arn = aws_client("secretsmanager", aws).create_secret(
        Name="tether/db", SecretString="never-shown, no URL"
    )["ARN"]
    args = deploy_args(aws, "--database-secret", "tether/db", "--no-snapstart", "--yes")
    code = main([*args, "--migrate"])
    said = capsys.readouterr()
    assert code == 1, said.err
    assert "never-shown" not in said.out + said.err
    assert (
        f"tether deploy: --migrate: the secret {arn} holds no usable database URL: the"
        " database URL must look like postgresql://" in said.err
    )
    assert said.out.splitlines()[-1].startswith("the stack was not changed")


def test_a_local_server_named_by_its_address_is_told_to_be_named_localhost(
    aws: str, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """moto reads the bucket out of the template's S3 address only under the name
    localhost: named 127.0.0.1, the change set was refused with "The specified bucket
    does not exist" alone, though the bucket was there, just made and uploaded to."""
    from tether.deploy import stack as stack_module  # noqa: PLC0415

    template_bytes = len((ROOT / "infra" / "template.yaml").read_bytes())
    monkeypatch.setattr(stack_module, "TEMPLATE_BODY_LIMIT", template_bytes - 1)
    by_address = aws.replace("//localhost:", "//127.0.0.1:")
    aws_client("secretsmanager", aws).create_secret(
        Name="tether/db", SecretString="postgresql://tether:pw@127.0.0.1:9/app"
    )
    args = [a if a != aws else by_address for a in deploy_args(aws, "--no-snapstart")]
    code = main([*args, "--database-secret", "tether/db", "--yes"])
    said = capsys.readouterr()
    assert code == 1, said.err
    port = by_address.rsplit(":", 1)[1]
    assert (
        "CloudFormation refused the change set: The specified bucket does not exist (the"
        " template is read from the bundle bucket by its address, which a local server named"
        f" by its IP address may not find: name it localhost, --endpoint-url"
        f" http://localhost:{port})" in said.err
    )


def test_an_update_keeping_a_secret_deleted_since_is_refused_before_anything_changes(
    aws: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """A secret given on the command line was checked to exist; one kept from the stack
    was not: an update after the secret was deleted went through, and every function
    reading it failed from then on."""
    secrets = aws_client("secretsmanager", aws)
    secrets.create_secret(Name="tether/db", SecretString="postgresql://tether:pw@127.0.0.1:9/app")
    args = deploy_args(aws, "--no-snapstart", "--yes")
    assert main([*args, "--database-secret", "tether/db"]) == 0
    capsys.readouterr()
    secrets.delete_secret(SecretId="tether/db", ForceDeleteWithoutRecovery=True)

    code = main([*args, "--sweep-rate", "5m"])
    said = capsys.readouterr()
    assert code == 1, said.err
    assert "tether deploy: --database-secret (the stack's, kept): cannot find, in" in said.err
    assert said.err.rstrip().endswith("give --database-secret with one that exists")
    assert "building the bundle" not in said.out
    cfn = aws_client("cloudformation", aws)
    (stack,) = cfn.describe_stacks(StackName=STACK)["Stacks"]
    kept = {p["ParameterKey"]: p["ParameterValue"] for p in stack["Parameters"]}
    assert kept["SweepPeriodSeconds"] == "60"

    secrets.create_secret(Name="tether/db2", SecretString="postgresql://tether:pw@127.0.0.1:9/a")
    assert main([*args, "--sweep-rate", "5m", "--database-secret", "tether/db2"]) == 0


_LOGS_ROLE_STACK = """
Parameters:
  BundleBucket: {Type: String}
  CreateApiGatewayLogsRole: {Type: String, Default: "false"}
Conditions:
  CreateLogsRole: !Equals [!Ref CreateApiGatewayLogsRole, "true"]
Resources:
  Topic: {Type: "AWS::SNS::Topic"}
  ApiGatewayLogsRole:
    Type: AWS::IAM::Role
    Condition: CreateLogsRole
    DeletionPolicy: Retain
    Properties:
      AssumeRolePolicyDocument:
        Version: "2012-10-17"
        Statement:
          - Effect: Allow
            Principal: {Service: apigateway.amazonaws.com}
            Action: "sts:AssumeRole"
"""


def test_destroy_says_it_keeps_the_logs_role_only_where_the_stack_made_one(
    aws: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """A first deploy cut off while its change set was in review leaves a stack that
    never ran, whose parameters ask for the account's CloudWatch role: destroying it
    said it kept that role, and listed APIs and functions it would delete, none of
    which ever existed."""
    cfn = aws_client("cloudformation", aws)
    parameters = [
        {"ParameterKey": "BundleBucket", "ParameterValue": "team-bundles"},
        {"ParameterKey": "CreateApiGatewayLogsRole", "ParameterValue": "true"},
    ]
    cfn.create_change_set(
        StackName="in-review",
        ChangeSetName="tether-20260101000000",
        ChangeSetType="CREATE",
        TemplateBody=_LOGS_ROLE_STACK,
        Parameters=parameters,
        Tags=[{"Key": "tether:stack", "Value": "in-review"}],
    )
    assert main(_destroy(aws, "in-review")) == 1
    asked = capsys.readouterr()
    assert (
        "delete stack in-review (REVIEW_IN_PROGRESS): never created, it holds nothing?" in asked.err
    )
    assert main([*_destroy(aws, "in-review"), "--yes"]) == 0
    said = capsys.readouterr()
    assert "stack in-review deleted" in said.out
    assert "CloudWatch role" not in said.out + said.err

    # A stack that did make the role: said, by its name.
    cfn.create_stack(
        StackName="ran",
        TemplateBody=_LOGS_ROLE_STACK,
        Parameters=parameters,
        Capabilities=["CAPABILITY_IAM"],
        Tags=[{"Key": "tether:stack", "Value": "ran"}],
    )
    (role,) = [
        r["PhysicalResourceId"]
        for r in cfn.describe_stack_resources(StackName="ran")["StackResources"]
        if r["LogicalResourceId"] == "ApiGatewayLogsRole"
    ]
    assert main([*_destroy(aws, "ran"), "--yes"]) == 0
    said = capsys.readouterr()
    assert (
        f"kept: API Gateway's account-wide CloudWatch role {role} (other APIs may use it)"
        in said.out
    )


def test_destroy_deletes_only_a_stack_tether_deploy_made(
    aws: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """Any stack of the account was deleted, with --yes without a word: a mistyped name,
    or another team's stack, went as tether's would, its bucket kept or not."""
    cfn = aws_client("cloudformation", aws)
    cfn.create_stack(
        StackName="their-network",
        TemplateBody=_BARE_STACK.replace(
            "BundleBucket: {Type: String}", "Unused: {Type: String, Default: x}"
        ),
    )
    code = main([*_destroy(aws, "their-network"), "--yes"])
    said = capsys.readouterr()
    assert code == 1, said.err
    assert (
        "tether destroy: --stack: stack their-network is not one tether deploy made (it has"
        " no tether:stack tag); nothing was deleted" in said.err
    )
    (stack,) = cfn.describe_stacks(StackName="their-network")["Stacks"]
    assert stack["StackStatus"] == "CREATE_COMPLETE"


def test_a_stack_in_review_that_nothing_marks_as_tether_s_is_left_to_its_owner(
    aws: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """Another tool's first change set, waiting for review, keeps its stack in review
    (REVIEW_IN_PROGRESS), untagged: destroy deleted it as if tether's, and a deploy of
    the same name removed it to create its own, the change set with it."""
    cfn = aws_client("cloudformation", aws)
    aws_client("secretsmanager", aws).create_secret(
        Name="tether/db", SecretString="postgresql://tether:pw@127.0.0.1:5432/app"
    )
    theirs = cfn.create_change_set(
        StackName="their-pipeline",
        ChangeSetName="awaiting-approval",
        ChangeSetType="CREATE",
        TemplateBody=_BARE_STACK,
        Parameters=[{"ParameterKey": "BundleBucket", "ParameterValue": "theirs"}],
    )

    def in_review() -> bool:
        (stack,) = cfn.describe_stacks(StackName="their-pipeline")["Stacks"]
        return bool(stack["StackStatus"] == "REVIEW_IN_PROGRESS")

    refusal = (
        "stack their-pipeline is in review (REVIEW_IN_PROGRESS), and nothing marks it as one"
        " tether deploy made (no tether:stack tag, on it or on a change set of it)"
    )
    assert main([*_destroy(aws, "their-pipeline"), "--yes"]) == 1
    said = capsys.readouterr()
    assert f"tether destroy: {refusal}" in said.err
    assert "nothing was deleted" in said.err
    assert "`tether destroy --stack their-pipeline --untagged-review-stack` deletes it" in said.err
    assert in_review()

    deploy = deploy_args(
        aws, "--database-secret", "tether/db", "--no-snapstart", "--yes", stack="their-pipeline"
    )
    code = main(deploy)
    said = capsys.readouterr()
    assert code == 1, said.out + said.err
    assert f"tether deploy: {refusal}" in said.err and "nothing was changed" in said.err
    assert "building the bundle" not in said.out
    assert in_review()
    assert cfn.describe_change_set(ChangeSetName=theirs["Id"])["Status"] == "CREATE_COMPLETE"

    # Said so, it goes.
    code = main([*_destroy(aws, "their-pipeline", "--untagged-review-stack"), "--yes"])
    said = capsys.readouterr()
    assert code == 0, said.out + said.err
    assert "stack their-pipeline deleted" in said.out
    live = [s for s in cfn.list_stacks()["StackSummaries"] if s["StackStatus"] != "DELETE_COMPLETE"]
    assert live == []


def test_a_stack_in_review_with_no_change_set_left_is_removed_as_an_empty_one(
    aws: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """A deploy cut off between deleting its change set and deleting the stack made for
    it leaves a stack in review with no change set, and no tag (CloudFormation's tags
    are the change set's until it runs): nothing in it waits for anyone, yet deploy and
    destroy refused it as another tool's."""
    cfn = aws_client("cloudformation", aws)
    aws_client("secretsmanager", aws).create_secret(
        Name="tether/db", SecretString="postgresql://tether:pw@127.0.0.1:5432/app"
    )
    for then in ("destroy", "deploy"):
        made = cfn.create_change_set(
            StackName=STACK,
            ChangeSetName="tether-20260101000000",
            ChangeSetType="CREATE",
            TemplateBody=_BARE_STACK,
            Parameters=[{"ParameterKey": "BundleBucket", "ParameterValue": "team-bundles"}],
        )
        cfn.delete_change_set(ChangeSetName=made["Id"])
        (left,) = cfn.describe_stacks(StackName=STACK)["Stacks"]
        assert left["StackStatus"] == "REVIEW_IN_PROGRESS"
        assert not left.get("Tags")
        if then == "destroy":
            code = main([*tether(aws, "destroy"), "--yes"])
            said = capsys.readouterr()
            assert code == 0, said.out + said.err
            assert f"stack {STACK} deleted" in said.out
        else:
            deploy = deploy_args(aws, "--database-secret", "tether/db", "--no-snapstart")
            code = main([*deploy, "--yes"])
            said = capsys.readouterr()
            assert code == 0, said.out + said.err
            assert f"stack {STACK} is CREATE_COMPLETE" in said.out


def _tagged_as_cloudformation_may_tag_it(aws: str, name: str) -> None:
    """A stack in review as CloudFormation may describe it: its change sets carry the
    tags given (DescribeChangeSet says them), the stack none until one runs. moto tags
    the stack at once and says no change set's tags: the moto server of the tests, in
    this process, is made to."""
    from moto.cloudformation.models import cloudformation_backends  # noqa: PLC0415

    account = aws_client("sts", aws).get_caller_identity()["Account"]
    backend = cloudformation_backends[account][AWS_REGION]
    for stack in backend.stacks.values():
        if stack.name == name and stack.status == "REVIEW_IN_PROGRESS":
            stack.tags = {}
            for change_set in backend.change_sets.values():
                if change_set.stack is stack:
                    given = change_set.tags or {}
                    # As DescribeChangeSet answers them: a list of Key and Value.
                    listed: Any = [{"Key": k, "Value": v} for k, v in given.items()]
                    change_set.tags = listed


def test_tether_s_own_stack_in_review_is_known_by_its_change_set_s_tag(
    aws: str, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A first deploy cut off once its change set was made: the stack it leaves in review
    is tether's by its change set's tag, untagged itself, and the next deploy removes it
    and creates the stack, as destroy deletes it, unasked."""
    monkeypatch.setenv("AWS_MAX_ATTEMPTS", "1")
    aws_client("secretsmanager", aws).create_secret(
        Name="tether/db", SecretString="postgresql://tether:pw@127.0.0.1:5432/app"
    )
    cfn = aws_client("cloudformation", aws)
    for then in ("destroy", "deploy"):
        code = _deploy_between(aws, dropped=frozenset(), last="CreateChangeSet")
        said = capsys.readouterr()
        assert code == 1, said.out + said.err
        _tagged_as_cloudformation_may_tag_it(aws, STACK)
        (left,) = cfn.describe_stacks(StackName=STACK)["Stacks"]
        assert left["StackStatus"] == "REVIEW_IN_PROGRESS"
        assert not left.get("Tags")
        if then == "destroy":
            code = main([*tether(aws, "destroy"), "--yes"])
            said = capsys.readouterr()
            assert code == 0, said.out + said.err
            assert f"stack {STACK} deleted" in said.out
        else:
            deploy = deploy_args(aws, "--database-secret", "tether/db", "--no-snapstart")
            code = main([*deploy, "--yes"])
            said = capsys.readouterr()
            assert code == 0, said.out + said.err
            assert f"stack {STACK} is CREATE_COMPLETE" in said.out


def test_an_empty_secret_flag_clears_the_secret_as_every_empty_flag_clears_its_setting(
    aws: str, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """--supabase-url '' clears the stack's Supabase URL; --operator-key '' kept the
    operator key in force, without a word, for an operator revoking it."""
    from tether.deploy import stack as stack_module  # noqa: PLC0415

    secrets = aws_client("secretsmanager", aws)
    secrets.create_secret(Name="tether/db", SecretString="postgresql://tether:pw@127.0.0.1:9/app")
    key = secrets.create_secret(Name="tether/operator", SecretString="k" * 40)["ARN"]
    args = deploy_args(aws, "--no-snapstart")
    assert main([*args, "--database-secret", "tether/db", "--operator-key", key, "--yes"]) == 0
    capsys.readouterr()

    asked: dict[str, str] = {}
    deploy = stack_module.deploy

    def recorded(aws_: Any, **given: Any) -> Any:
        asked.update(given["parameters"])
        return deploy(aws_, **given)

    monkeypatch.setattr(stack_module, "deploy", recorded)
    # Not confirmed (no terminal to ask): the change set is shown, then deleted.
    assert main([*args, "--operator-key", ""]) == 1
    capsys.readouterr()
    assert asked["OperatorKeySecret"] == ""
    assert ":secret:tether/db-" in asked["DatabaseSecret"]

    assert main([*args, "--database-secret", ""]) == 2
    assert "--database-secret: the value given is not allowed" in capsys.readouterr().err


def test_deploy_migrate_says_recorded_what_db_push_applied(
    aws: str, empty_database_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    from tests.integration.test_migration_paths import _push_like_supabase  # noqa: PLC0415

    files = migrate.discover()
    _push_like_supabase(empty_database_url, files, [m.version for m in files])
    aws_client("secretsmanager", aws).create_secret(
        Name="tether/db", SecretString=empty_database_url
    )
    args = deploy_args(aws, "--database-secret", "tether/db", "--no-snapstart", "--migrate")
    code = main([*args, "--yes"])
    said = capsys.readouterr()
    assert code == 0, said.err
    assert f"recorded {files[0].filename}  (applied by supabase db push: {files[0].version})" in (
        said.out
    )
    assert f"applied  {files[0].filename}" not in said.out
    assert f"{len(files)} recorded as applied by supabase db push" in said.out


def test_a_bucket_whose_set_up_was_interrupted_is_not_left_for_the_next_deploy(
    aws: str, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """As when AWS stops answering there: Ctrl-C once the bucket is made, before it is
    private and tagged, left it so, and the next deploy used it as it was."""
    from tether.deploy import stack as stack_module  # noqa: PLC0415

    aws_client("secretsmanager", aws).create_secret(
        Name="tether/db", SecretString="postgresql://tether:pw@127.0.0.1:5432/app"
    )
    deploy = [*deploy_args(aws, "--database-secret", "tether/db", "--no-snapstart")]
    set_up = stack_module._set_up_bucket

    def ctrl_c_midway(s3: Any, bucket: str, account: str) -> None:
        s3.put_public_access_block(
            Bucket=bucket,
            PublicAccessBlockConfiguration={"BlockPublicAcls": True},
        )
        raise KeyboardInterrupt

    with monkeypatch.context() as interrupted:
        interrupted.setattr(stack_module, "_set_up_bucket", ctrl_c_midway)
        assert main([*deploy, "--bucket", "team-bundles", "--yes"]) == 130
    # Not "what it had done is kept": the bucket it had made is gone.
    assert capsys.readouterr().err.endswith(
        "tether deploy: interrupted; bucket team-bundles was made but not set up; it was"
        " removed: deploy again\n"
    )
    s3 = aws_client("s3", aws)
    assert "team-bundles" not in {b["Name"] for b in s3.list_buckets()["Buckets"]}

    assert stack_module._set_up_bucket is set_up
    assert main([*deploy, "--bucket", "team-bundles", "--yes"]) == 0
    assert "created bucket team-bundles" in capsys.readouterr().out
    assert {"Key": "tether:bundles", "Value": "true"} in s3.get_bucket_tagging(
        Bucket="team-bundles"
    )["TagSet"]


def test_ctrl_c_at_the_question_says_the_change_set_shown_was_not_run(
    aws: str, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from tether.cli import deploy as deploy_command  # noqa: PLC0415

    aws_client("secretsmanager", aws).create_secret(
        Name="tether/db", SecretString="postgresql://tether:pw@127.0.0.1:5432/app"
    )

    def ctrl_c(question: str, *, assume_yes: bool) -> bool:
        raise KeyboardInterrupt

    monkeypatch.setattr(deploy_command, "confirm", ctrl_c)
    code = main(deploy_args(aws, "--database-secret", "tether/db", "--no-snapstart"))
    said = capsys.readouterr()
    assert code == 130, said.err
    assert (
        "tether deploy: interrupted; the stack was not created: its change set was deleted"
        in said.err
    )
    live = [
        s
        for s in aws_client("cloudformation", aws).list_stacks()["StackSummaries"]
        if s["StackStatus"] != "DELETE_COMPLETE"
    ]
    assert live == []
