"""The stack: the bucket for bundles, change sets, waiting with progress, teardown.

Every boto3 client comes from ``tether.aws.clients.client``, so ``--endpoint-url``,
``AWS_REGION``/``AWS_DEFAULT_REGION`` and profiles work the same everywhere (and a local
moto server stands in for AWS). Nothing here writes to the terminal: progress goes to
the ``report`` callable the command passes in.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any

from tether.aws.clients import client, error_code, error_message
from tether.deploy.bundle import Bundle
from tether.errors import (
    ConfigurationError,
    Interrupted,
    InterruptedAtQuestion,
    InvalidInputError,
    NotFoundError,
    TetherError,
)

logger = logging.getLogger("tether.deploy")

Report = Callable[[str], None]
Confirm = Callable[[str], bool]

CAPABILITIES = ["CAPABILITY_IAM"]
TEMPLATE_BODY_LIMIT = 51_200  # larger templates must be read from S3
NO_CHANGES = ("didn't contain changes", "No updates are to be performed")
STACK_NAME_MAX = 40  # function names are <stack>-session-ended, at most 64 characters
IN_PROGRESS = "_IN_PROGRESS"
STACK_TAG = "tether:stack"
"""Marks a stack `tether deploy` made: the only kind `tether destroy` deletes."""


class DeployError(TetherError):
    """The stack could not be created, updated or deleted; the message says why."""


@dataclass(frozen=True)
class Aws:
    """Where the commands talk to: a region, a profile, an endpoint (moto, LocalStack)."""

    endpoint_url: str | None = None
    region: str | None = None
    profile: str | None = None
    # What these credentials' account is, asked once per command (STS is a round trip,
    # and a deploy needs it for every call on its bucket).
    _account: list[str] = field(default_factory=list, compare=False, hash=False, repr=False)

    def client(self, service: str) -> Any:
        return client(
            service,
            endpoint_url=self.endpoint_url,
            region_name=self.region,
            profile=self.profile,
            timeout_seconds=30.0,
            max_attempts=5,
        )


@dataclass
class StackState:
    name: str
    status: str | None
    """None when the stack does not exist."""
    parameters: dict[str, str] = field(default_factory=dict)
    outputs: dict[str, str] = field(default_factory=dict)
    stack_id: str | None = None
    tags: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Outcome:
    changed: bool
    state: StackState
    problems: tuple[str, ...] = ()
    declined: bool = False


def check_stack_name(name: str) -> str:
    ok = (
        0 < len(name) <= STACK_NAME_MAX
        and name.isascii()  # CloudFormation's letters and digits are ASCII only
        and name[0].isalpha()
        and all(c.isalnum() or c == "-" for c in name)
    )
    if not ok:
        raise InvalidInputError(
            f"--stack: {name!r} is not a stack name (a letter, then letters, digits and "
            f"hyphens, at most {STACK_NAME_MAX} characters)"
        )
    return name


def describe(aws: Aws, name: str) -> StackState:
    from botocore.exceptions import ClientError  # noqa: PLC0415

    try:
        stacks = aws.client("cloudformation").describe_stacks(StackName=name)["Stacks"]
    except ClientError as exc:
        if "does not exist" in str(exc):
            return StackState(name=name, status=None)
        raise DeployError(f"cannot describe stack {name}: {error_code(exc)}") from None
    stack = stacks[0]
    return StackState(
        name=name,
        status=stack["StackStatus"],
        stack_id=stack["StackId"],
        parameters={
            p["ParameterKey"]: str(p.get("ParameterValue", "")) for p in stack.get("Parameters", [])
        },
        outputs={o["OutputKey"]: str(o["OutputValue"]) for o in stack.get("Outputs", [])},
        tags={str(t.get("Key")): str(t.get("Value", "")) for t in stack.get("Tags", [])},
    )


# --- the bucket -----------------------------------------------------------------------------


def account_id(aws: Aws) -> str:
    from botocore.exceptions import BotoCoreError, ClientError  # noqa: PLC0415

    if not aws._account:
        try:
            aws._account.append(str(aws.client("sts").get_caller_identity()["Account"]))
        except (BotoCoreError, ClientError) as exc:
            raise ConfigurationError(f"no usable AWS credentials: {error_code(exc)}") from None
    return aws._account[0]


def region_of(aws: Aws) -> str:
    return str(aws.client("s3").meta.region_name)


def default_bucket(account: str, region: str) -> str:
    return f"tether-deploy-{account}-{region}"


BUCKET_TAG = {"Key": "tether:bundles", "Value": "true"}
"""Marks a bucket `tether deploy` created: the only kind `tether destroy` deletes."""


def bucket_is_tethers(aws: Aws, bucket: str) -> bool:
    """True for a bucket tether created (tagged, or its default name)."""
    from botocore.exceptions import ClientError  # noqa: PLC0415

    account = account_id(aws)
    if bucket == default_bucket(account, region_of(aws)) and owned(aws, bucket):
        return True
    try:
        tags = (
            aws.client("s3")
            .get_bucket_tagging(Bucket=bucket, ExpectedBucketOwner=account)
            .get("TagSet", [])
        )
    except ClientError:
        return False  # no tags at all (NoSuchTagSet), or not ours to read
    return BUCKET_TAG in tags


def bucket_exists(aws: Aws, bucket: str) -> bool:
    """False only when S3 says there is no bucket of that name (another account's, which
    this one may not read, exists)."""
    from botocore.exceptions import ClientError  # noqa: PLC0415

    try:
        aws.client("s3").head_bucket(Bucket=bucket)
    except ClientError as exc:
        return error_code(exc) not in {"404", "NoSuchBucket", "NotFound"}
    return True


def stacks_using_bucket(aws: Aws, bucket: str, *, besides: str) -> list[str]:
    """The other stacks whose bundles are in this bucket."""
    cloudformation = aws.client("cloudformation")
    users = []
    for page in cloudformation.get_paginator("describe_stacks").paginate():
        for stack in page.get("Stacks", []):
            if stack["StackName"] == besides or stack.get("StackStatus") == "DELETE_COMPLETE":
                continue
            parameters = {
                p["ParameterKey"]: p.get("ParameterValue") for p in stack.get("Parameters", [])
            }
            if parameters.get("BundleBucket") == bucket:
                users.append(str(stack["StackName"]))
    return sorted(users)


def owned(aws: Aws, bucket: str) -> bool:
    """Whether this account owns the bucket. Bucket names are global, and tether's
    default is predictable from the account id: another account may have made it and
    let this one write there, to swap the code the functions run. S3 refuses every
    call of tether's on a bucket of another owner (ExpectedBucketOwner); this asks
    besides, for a plain answer. An identity that may not list its buckets, or a
    client too old to list them by prefix (boto3 before late 2024), is left to S3's
    refusal."""
    from botocore.exceptions import BotoCoreError, ClientError  # noqa: PLC0415

    try:
        listed = aws.client("s3").list_buckets(Prefix=bucket).get("Buckets", [])
    except (BotoCoreError, ClientError):
        return True
    return bucket in {b.get("Name") for b in listed}


FOREIGN_BUCKET = (
    "it belongs to another AWS account (bucket names are global); give one of this"
    " account's with --bucket"
)


def ensure_bucket(aws: Aws, bucket: str, report: Report) -> None:
    """The bundle bucket: this account's, private, encrypted, created if missing."""
    from botocore.exceptions import BotoCoreError, ClientError  # noqa: PLC0415

    s3 = aws.client("s3")
    account = account_id(aws)
    try:
        s3.head_bucket(Bucket=bucket, ExpectedBucketOwner=account)
    except ClientError as exc:
        code = error_code(exc)
        if code in {"403", "AccessDenied"}:
            raise DeployError(
                f"cannot use bucket {bucket}: {code} (another AWS account's, or not this"
                " identity's to read)"
            ) from None
        if code not in {"404", "NoSuchBucket", "NotFound"}:
            raise DeployError(f"cannot use bucket {bucket}: {code}") from None
    else:
        if not owned(aws, bucket):
            raise DeployError(f"cannot use bucket {bucket}: {FOREIGN_BUCKET}")
        return
    region = s3.meta.region_name
    create: dict[str, Any] = {"Bucket": bucket}
    if region != "us-east-1":
        create["CreateBucketConfiguration"] = {"LocationConstraint": region}
    try:
        s3.create_bucket(**create)
    except ClientError as exc:
        raise DeployError(f"cannot create bucket {bucket}: {error_code(exc)}") from None
    try:
        _set_up_bucket(s3, bucket, account)
    except (BotoCoreError, ClientError) as exc:
        # An existing bucket is used as it is: left half set up (public access not
        # blocked, not tagged as tether's to delete), the next deploy would use it so.
        said = error_code(exc) if isinstance(exc, ClientError) else str(exc)
        raise DeployError(
            f"cannot set up bucket {bucket}: {said}; {_removed_empty(s3, bucket)}"
        ) from None
    except KeyboardInterrupt:
        # Ctrl-C (or SIGTERM: a CI job cancelled) in the same gap: the same bucket left.
        raise Interrupted(
            f"bucket {bucket} was made but not set up; {_removed_empty(s3, bucket)}"
        ) from None
    report(f"created bucket {bucket}")


def _set_up_bucket(s3: Any, bucket: str, account: str) -> None:
    """A new bundle bucket made private, encrypted and tether's."""
    s3.put_public_access_block(
        Bucket=bucket,
        ExpectedBucketOwner=account,
        PublicAccessBlockConfiguration={
            "BlockPublicAcls": True,
            "IgnorePublicAcls": True,
            "BlockPublicPolicy": True,
            "RestrictPublicBuckets": True,
        },
    )
    s3.put_bucket_encryption(
        Bucket=bucket,
        ExpectedBucketOwner=account,
        ServerSideEncryptionConfiguration={
            "Rules": [{"ApplyServerSideEncryptionByDefault": {"SSEAlgorithm": "AES256"}}]
        },
    )
    s3.put_bucket_tagging(
        Bucket=bucket, Tagging={"TagSet": [BUCKET_TAG]}, ExpectedBucketOwner=account
    )


def _removed_empty(s3: Any, bucket: str) -> str:
    """Removes the bucket just created, still empty; what became of it, in words."""
    from botocore.exceptions import BotoCoreError, ClientError  # noqa: PLC0415

    try:
        s3.delete_bucket(Bucket=bucket)
    except (BotoCoreError, ClientError) as exc:
        logger.warning("could not remove the bucket", extra={"bucket": bucket, "error": str(exc)})
        return "it could not be removed: delete it (it is empty), then deploy again"
    return "it was removed: deploy again"


def upload_bundle(aws: Aws, bucket: str, bundle: Bundle, report: Report) -> bool:
    """Upload unless an object of that content key is there already; True if uploaded."""
    from botocore.exceptions import ClientError  # noqa: PLC0415

    s3 = aws.client("s3")
    account = account_id(aws)
    try:
        s3.head_object(Bucket=bucket, Key=bundle.key, ExpectedBucketOwner=account)
    except ClientError as exc:
        if error_code(exc) not in {"404", "NoSuchKey", "NotFound"}:
            raise DeployError(
                f"cannot read s3://{bucket}/{bundle.key}: {error_code(exc)}"
            ) from None
    else:
        report(f"bundle unchanged: s3://{bucket}/{bundle.key}")
        return False
    with bundle.path.open("rb") as body:
        s3.put_object(
            Bucket=bucket,
            Key=bundle.key,
            Body=body,
            Metadata={"sha256": bundle.digest, "runtime": bundle.target.runtime},
            ExpectedBucketOwner=account,
        )
    report(f"uploaded s3://{bucket}/{bundle.key} ({bundle.size / 2**20:.1f} MiB)")
    return True


# --- secrets --------------------------------------------------------------------------------


def secret_arn(aws: Aws, reference: str, *, what: str) -> str:
    """The full ARN of a secret (Secrets Manager name or ARN, ``ssm:/name`` or an SSM ARN),
    checked to exist; its value is never read here."""
    from botocore.exceptions import ClientError  # noqa: PLC0415

    from tether.aws.secrets import is_ssm_reference, ssm_parameter_name  # noqa: PLC0415

    aws = _where_kept(aws, reference)
    store = aws.client("ssm" if is_ssm_reference(reference) else "secretsmanager")
    try:
        if is_ssm_reference(reference):
            name = ssm_parameter_name(reference)
            parameter = store.get_parameter(Name=name, WithDecryption=False)["Parameter"]
            if parameter.get("Type") != "SecureString":
                # Found, and not as a secret is kept: refused for what it found (exit 1).
                raise ConfigurationError(
                    f"{what}: parameter {name} is a {parameter.get('Type')}, not a SecureString"
                )
            return str(parameter["ARN"])
        answer = store.describe_secret(SecretId=reference)
        return str(answer["ARN"])
    except ClientError as exc:
        code = error_code(exc)
        if code in _NOT_FOUND_CODES:
            # A secret kept in another region is the usual cause: say which was asked.
            region = store.meta.region_name
            # A reference that names nothing: refused for what it found (exit 1).
            raise NotFoundError(
                f"{what}: cannot find, in {region}, {_named(reference)}: {code}"
            ) from None
        # Access denied, an expired session, throttling: AWS failed, not the flag.
        raise DeployError(f"{what}: cannot read {_named(reference)}: {code}") from None


def _named(reference: str) -> str:
    """A secret's reference as an error may repeat it. An ARN or ``ssm:`` reference has
    a shape no secret has; anything else may be the secret's value itself, given where
    its name was expected (the settings of the same names hold values), so it is not
    repeated."""
    if reference.startswith(("arn:", "ssm:")):
        return reference
    return "a secret by the name given (not repeated: it may be the secret's value itself)"


# What AWS answers for a secret or parameter that is not there.
_NOT_FOUND_CODES = frozenset(
    {"ResourceNotFoundException", "ParameterNotFound", "ValidationException"}
)


def read_secret(aws: Aws, arn: str) -> str:
    """The value of a secret (for ``--migrate``), through this command's AWS session
    (profile, endpoint); read as the functions read it (``tether.aws.secrets``)."""
    from tether.aws.secrets import read_reference  # noqa: PLC0415

    return read_reference(_where_kept(aws, arn).client, arn)


def _where_kept(aws: Aws, reference: str) -> Aws:
    """This session, asking in the region a secret's ARN names, where the functions
    read it too: a secret kept in another region than the stack's is found there."""
    from tether.aws.secrets import arn_region  # noqa: PLC0415

    region = arn_region(reference)
    return replace(aws, region=region) if region else aws


LOGS_ROLE = "ApiGatewayLogsRole"
"""The template's API Gateway CloudWatch role: account-wide, kept when the stack goes."""
NEVER_CREATED = "REVIEW_IN_PROGRESS"
"""A stack made for a first change set that never ran: it holds no resources."""


def made_by_tether(aws: Aws, state: StackState) -> bool:
    """Whether `tether deploy` made the stack: it carries the tether:stack tag. A stack in
    review (made by a first change set that never ran) counts too when one of its change
    sets carries it: CloudFormation documents a change set's tags as those the stack gets
    once the change set runs, and says nothing of before. So does one in review holding
    no change set at all: nothing in it waits for anyone, and a deploy cut off between
    deleting its change set and deleting its stack (_discard) leaves its own so."""
    if STACK_TAG in state.tags:
        return True
    if state.status != NEVER_CREATED:
        return False
    cfn = aws.client("cloudformation")
    held = False
    for page in cfn.get_paginator("list_change_sets").paginate(
        StackName=state.stack_id or state.name
    ):
        for summary in page.get("Summaries", []):
            if state.stack_id and summary.get("StackId") not in {None, state.stack_id}:
                continue
            held = True
            tags = cfn.describe_change_set(ChangeSetName=summary["ChangeSetId"]).get("Tags", [])
            if any(tag.get("Key") == STACK_TAG for tag in tags):
                return True
    return not held


def foreign_review_stack(stack: str, *, then: str) -> DeployError:
    """The refusal of a stack in review that nothing marks as tether's: it may hold
    another tool's change set, waiting for someone to review it."""
    return DeployError(
        f"stack {stack} is in review ({NEVER_CREATED}), and nothing marks it as one tether"
        f" deploy made (no {STACK_TAG} tag, on it or on a change set of it): it may hold"
        f" another tool's change set, waiting to be reviewed; {then}. If it is yours to"
        f" remove, `tether destroy --stack {stack} --untagged-review-stack` deletes it"
    )


def kept_logs_role(aws: Aws, state: StackState) -> str | None:
    """The name of the account-wide CloudWatch role this stack made, which its deletion
    keeps; None when it made none (it was not asked to, never ran, or failed first)."""
    from botocore.exceptions import ClientError  # noqa: PLC0415

    if state.status in {None, NEVER_CREATED}:
        return None
    if state.parameters.get("CreateApiGatewayLogsRole") != "true":
        return None
    pages = (
        aws.client("cloudformation")
        .get_paginator("list_stack_resources")
        .paginate(StackName=state.stack_id or state.name)
    )
    try:
        for page in pages:
            for resource in page.get("StackResourceSummaries", []):
                made = resource.get("PhysicalResourceId")
                if (
                    resource.get("LogicalResourceId") == LOGS_ROLE
                    and made
                    and resource.get("ResourceStatus") not in {"CREATE_FAILED", "DELETE_COMPLETE"}
                ):
                    return str(made)
    except ClientError:
        return None  # gone meanwhile: nothing said kept
    return None


def needs_logs_role(aws: Aws) -> bool:
    """True when API Gateway has no CloudWatch role in this account and region yet."""
    from botocore.exceptions import BotoCoreError, ClientError  # noqa: PLC0415

    try:
        account = aws.client("apigateway").get_account()
    except (BotoCoreError, ClientError):
        return False  # cannot tell: leave the account as it is
    return not account.get("cloudwatchRoleArn")


# --- the change set -------------------------------------------------------------------------


def template_defaults(aws: Aws, template: str) -> dict[str, str | None]:
    """Every parameter the template declares, with its default (None: required).

    A deploy passes every parameter explicitly, so the same inputs give the same request
    (and an unchanged stack is recognised as unchanged), whatever the defaults become."""
    from botocore.exceptions import ClientError  # noqa: PLC0415

    try:
        summary = aws.client("cloudformation").get_template_summary(
            TemplateBody=_parameters_alone(template)
        )
    except ClientError as exc:
        raise DeployError(f"CloudFormation refused the template: {error_message(exc)}") from None
    return {
        p["ParameterKey"]: None if p.get("DefaultValue") is None else str(p["DefaultValue"])
        for p in summary.get("Parameters", [])
    }


def _parameters_section(template: str) -> str:
    """The lines of the template's own Parameters section (plain YAML, two-space
    indented, up to the next top-level key)."""
    section = template.split("\nParameters:\n", 1)[1]
    return re.split(r"^\S", section, maxsplit=1, flags=re.MULTILINE)[0]


def _parameters_alone(template: str) -> str:
    """The template's parameters, and a resource that creates nothing: all a summary of
    its parameters needs, sent in the request whatever the whole template's size. (Past
    51,200 bytes a template is read from S3, and putting it there made the deploy's
    bucket, silently, before the deploy's own inputs were checked.)"""
    return (
        'AWSTemplateFormatVersion: "2010-09-09"\nParameters:\n'
        + _parameters_section(template)
        + "Resources:\n  Nothing:\n    Type: AWS::CloudFormation::WaitConditionHandle\n"
    )


@dataclass(frozen=True)
class Constraint:
    """What the template allows of one parameter: CloudFormation refuses anything else,
    but only once the change set is asked for, after the build and the upload."""

    pattern: str | None = None
    allowed: tuple[str, ...] | None = None
    minimum: float | None = None
    maximum: float | None = None
    number: bool = False
    described: str | None = None
    """ConstraintDescription: what CloudFormation says of a value the pattern refuses."""

    def refusal(self, value: str) -> str | None:
        """Why the template refuses ``value``; None when it allows it."""
        if self.allowed is not None and value not in self.allowed:
            return f"one of {', '.join(self.allowed)}"
        if self.pattern is not None and not re.fullmatch(self.pattern, value):
            return self.described or f"must match {self.pattern}"
        if self.number or self.minimum is not None or self.maximum is not None:
            # Not float(): it takes nan and inf (past every bound), 1_000, padding and
            # other scripts' digits, none of which the stack's properties take.
            if not _DECIMAL.fullmatch(value):
                return "must be a number in ASCII digits, such as 50 or 2.5"
            number = float(value)
            if self.minimum is not None and number < self.minimum:
                return f"at least {self.minimum:g}"
            if self.maximum is not None and number > self.maximum:
                return f"at most {self.maximum:g}"
        return None


_DECIMAL = re.compile(r"-?[0-9]+(?:\.[0-9]+)?", re.ASCII)

_PARAMETER = re.compile(r"^  (?P<name>[A-Za-z0-9]+):\n(?P<body>(?:    .*\n)+)", re.MULTILINE)


def parameter_constraints(template: str) -> dict[str, Constraint]:
    """Each parameter's AllowedPattern (and its ConstraintDescription), AllowedValues,
    MinValue and MaxValue, read from the template's own Parameters section (PyYAML is
    not a runtime dependency, and that section is plain YAML: one key per line, patterns
    double-quoted)."""
    section = _parameters_section(template)
    constraints = {}
    for match in _PARAMETER.finditer(section):
        fields = dict(
            line.strip().split(": ", 1) for line in match.group("body").splitlines() if ": " in line
        )
        allowed = fields.get("AllowedValues")
        constraints[match.group("name")] = Constraint(
            # YAML's double-quoted escapes are JSON's for these patterns (\\s, \\.).
            pattern=json.loads(fields["AllowedPattern"]) if "AllowedPattern" in fields else None,
            allowed=tuple(v.strip().strip('"') for v in allowed.strip("[]").split(","))
            if allowed
            else None,
            minimum=float(fields["MinValue"]) if "MinValue" in fields else None,
            maximum=float(fields["MaxValue"]) if "MaxValue" in fields else None,
            number=fields.get("Type") == "Number",
            described=fields.get("ConstraintDescription"),
        )
    return constraints


def revision(bundle_digest: str, template: str, parameters: Mapping[str, str]) -> str:
    """Changes with the code, the template or any parameter: a new function version then."""
    # An empty value and an absent one are the same to the template: count neither.
    settings = sorted((key, value) for key, value in parameters.items() if value != "")
    payload = json.dumps([bundle_digest, hashlib.sha256(template.encode()).hexdigest(), settings])
    return hashlib.sha256(payload.encode()).hexdigest()[:20]


def deploy(
    aws: Aws,
    *,
    stack: str,
    template: str,
    parameters: Mapping[str, str],
    bucket: str,
    report: Report,
    confirm: Confirm,
    poll_seconds: float = 5.0,
    timeout_seconds: float = 3600.0,
) -> Outcome:
    """Create or update the stack through a change set shown before it runs."""
    cfn = aws.client("cloudformation")
    before = describe(aws, stack)
    if before.status in {"ROLLBACK_COMPLETE", "ROLLBACK_FAILED", "DELETE_FAILED"}:
        raise DeployError(
            f"stack {stack} is {before.status} and cannot be updated: remove it with "
            f"`tether destroy --stack {stack}` and deploy again"
        )
    if (
        before.status
        and before.status.endswith(IN_PROGRESS)
        and before.status != ("REVIEW_IN_PROGRESS")
    ):
        raise DeployError(f"stack {stack} is busy ({before.status}); try again when it is done")
    if before.status == NEVER_CREATED:
        if not made_by_tether(aws, before):
            raise foreign_review_stack(stack, then="nothing was changed")
        # A first deploy cut off before its change set ran (AWS unreachable, the command
        # killed): an empty stack, whose change set nobody saw run. Removed, so this one
        # starts as that one should have, and no change set of it stays runnable.
        report(f"removing stack {stack}: an earlier deploy left it empty ({before.status})")
        _forget_review_stack(aws, stack)
        wait(
            aws,
            stack,
            since=datetime.now(UTC),
            report=report,
            poll_seconds=poll_seconds,
            timeout_seconds=timeout_seconds,
            stack_id=before.stack_id,
        )
    creating = before.status in {None, "REVIEW_IN_PROGRESS"}
    name = f"tether-{datetime.now(UTC):%Y%m%d%H%M%S}"
    request: dict[str, Any] = {
        "StackName": stack,
        "ChangeSetName": name,
        "ChangeSetType": "CREATE" if creating else "UPDATE",
        "Parameters": [{"ParameterKey": k, "ParameterValue": v} for k, v in parameters.items()],
        "Capabilities": CAPABILITIES,
        "Description": "tether deploy",
        "Tags": [{"Key": STACK_TAG, "Value": stack}],
    }
    request.update(_template_source(aws, bucket, template))
    from botocore.exceptions import BotoCoreError, ClientError  # noqa: PLC0415

    try:
        created = cfn.create_change_set(**request)
    except ClientError as exc:
        raise DeployError(
            f"CloudFormation refused the change set: {error_message(exc)}"
            + (
                _name_it_localhost(aws.endpoint_url)
                if "TemplateURL" in request and error_code(exc) == "NoSuchBucket"
                else ""
            )
        ) from None
    try:
        # Whatever stops the deploy before the change set runs (AWS unreachable while it
        # is computed, what runs on acceptance failing: the migrations) leaves nothing
        # behind that could be run later from the console.
        change_set = _computed(cfn, created["Id"], poll_seconds, timeout_seconds)
        if change_set is None:
            _discard(aws, created["Id"], stack, creating=creating)
            report(f"stack {stack} is up to date")
            return Outcome(changed=False, state=before)
        report(f"{'creating' if creating else 'updating'} stack {stack}:")
        for line in describe_changes(change_set.get("Changes", [])):
            report(line)
        accepted = confirm(
            f"{'create' if creating else 'update'} stack {stack} with these changes?"
        )
    except BaseException as exc:
        _discard(aws, created["Id"], stack, creating=creating)
        if isinstance(exc, KeyboardInterrupt) and (
            not isinstance(exc, Interrupted) or isinstance(exc, InterruptedAtQuestion)
        ):
            # Ctrl-C at the question, say: "what it had done is kept" read as if the
            # change set shown had been kept, or run.
            raise Interrupted(
                f"the stack was not {'created' if creating else 'changed'}: its change set"
                " was deleted"
            ) from None
        raise
    if not accepted:
        _discard(aws, created["Id"], stack, creating=creating)
        return Outcome(changed=False, state=before, declined=True)
    started = datetime.now(UTC)
    try:
        cfn.execute_change_set(ChangeSetName=created["Id"])
    except ClientError as exc:
        _discard(aws, created["Id"], stack, creating=creating)
        raise DeployError(
            f"CloudFormation could not run the change set: {error_message(exc)}"
        ) from None
    except BotoCoreError:
        # No answer: if the change set did start, it can no longer be deleted, and the
        # stack is no longer empty; both are left as they are.
        _discard(aws, created["Id"], stack, creating=creating)
        raise
    state = _watched(
        f"{'creating' if creating else 'updating'} stack {stack}",
        then=", and deploy again once it is done",
        wait_for=lambda: wait(
            aws,
            stack,
            since=started,
            report=report,
            poll_seconds=poll_seconds,
            timeout_seconds=timeout_seconds,
        ),
    )
    problems = (
        ()
        if state.status in {"CREATE_COMPLETE", "UPDATE_COMPLETE"}
        else failures(aws, stack, since=started)
    )
    return Outcome(changed=True, state=state, problems=problems)


def _watched(doing: str, *, wait_for: Callable[[], StackState], then: str = "") -> StackState:
    """The stack's state once ``wait_for`` has followed it to rest. Interrupted, only the
    watching stops: the change runs in CloudFormation, not here, and is said so."""
    try:
        return wait_for()
    except KeyboardInterrupt:
        raise Interrupted(
            f"CloudFormation goes on {doing} (only the watching stopped): see it in the"
            f" CloudFormation console{then}"
        ) from None


def _name_it_localhost(endpoint_url: str | None) -> str:
    """What to do when a local server named by its address could not read the template
    from the bundle bucket: moto finds a bucket in a URL only under the name localhost."""
    import ipaddress  # noqa: PLC0415
    from urllib.parse import urlsplit  # noqa: PLC0415

    parts = urlsplit(endpoint_url or "")
    try:
        ipaddress.ip_address(parts.hostname or "")
    except ValueError:
        return ""
    port = f":{parts.port}" if parts.port else ""
    return (
        f" (the template is read from the bundle bucket by its address, which a local server"
        f" named by its IP address may not find: name it localhost, --endpoint-url"
        f" {parts.scheme}://localhost{port})"
    )


def _template_source(aws: Aws, bucket: str, template: str) -> dict[str, str]:
    if len(template.encode()) <= TEMPLATE_BODY_LIMIT:
        return {"TemplateBody": template}
    digest = hashlib.sha256(template.encode()).hexdigest()[:40]
    key = f"tether/templates/{digest}.yaml"
    ensure_bucket(aws, bucket, lambda _line: None)
    s3 = aws.client("s3")
    s3.put_object(
        Bucket=bucket, Key=key, Body=template.encode(), ExpectedBucketOwner=account_id(aws)
    )
    url = s3.generate_presigned_url(
        "get_object", Params={"Bucket": bucket, "Key": key}, ExpiresIn=3600
    )
    return {"TemplateURL": str(url)}


def _computed(
    cfn: Any, change_set_id: str, poll_seconds: float, timeout_seconds: float
) -> dict[str, Any] | None:
    """The change set once computed, None when it changes nothing; DeployError if it
    failed."""
    change_set = _wait_for_change_set(cfn, change_set_id, poll_seconds, timeout_seconds)
    if change_set["Status"] != "FAILED":
        return change_set
    reason = str(change_set.get("StatusReason", ""))
    if any(text in reason for text in NO_CHANGES):
        return None
    raise DeployError(f"the change set failed: {reason}")


def _wait_for_change_set(
    cfn: Any, change_set_id: str, poll_seconds: float, timeout_seconds: float
) -> dict[str, Any]:
    deadline = time.monotonic() + timeout_seconds
    while True:
        change_set: dict[str, Any] = cfn.describe_change_set(ChangeSetName=change_set_id)
        if change_set["Status"] in {"CREATE_COMPLETE", "FAILED"}:
            # Large change sets come in pages.
            changes = list(change_set.get("Changes", []))
            token = change_set.get("NextToken")
            while token:
                page = cfn.describe_change_set(ChangeSetName=change_set_id, NextToken=token)
                changes.extend(page.get("Changes", []))
                token = page.get("NextToken")
            change_set["Changes"] = changes
            return change_set
        if time.monotonic() > deadline:
            raise DeployError("the change set took too long to be computed")
        time.sleep(poll_seconds)


def describe_changes(changes: list[dict[str, Any]]) -> list[str]:
    """One line per resource: + add, ~ modify (replacement said), - remove."""
    marks = {"Add": "+", "Modify": "~", "Remove": "-", "Import": "<", "Dynamic": "?"}
    lines = []
    for change in changes:
        resource = change.get("ResourceChange", {})
        action = resource.get("Action", "?")
        replacement = resource.get("Replacement")
        note = ""
        if action == "Modify" and replacement in {"True", "Conditional"}:
            note = "  (replaced)" if replacement == "True" else "  (may be replaced)"
        lines.append(
            f"  {marks.get(action, '?')} {resource.get('LogicalResourceId', '?'):<36}"
            f" {resource.get('ResourceType', '')}{note}"
        )
    return sorted(lines, key=lambda line: line[4:]) or ["  (no resource changes)"]


def _discard(aws: Aws, change_set: str, stack: str, *, creating: bool) -> None:
    """A change set not run is deleted, so nobody runs it later from the console; a new
    stack that never got one is removed."""
    from botocore.exceptions import BotoCoreError, ClientError  # noqa: PLC0415

    # Said, not raised: the error that stopped the deploy is the one to report (AWS
    # unreachable fails these too). The next deploy removes an empty stack left so.
    try:
        aws.client("cloudformation").delete_change_set(ChangeSetName=change_set)
    except (BotoCoreError, ClientError) as exc:
        logger.warning(
            "could not delete the change set",
            extra={"change_set": change_set, "error": _said(exc)},
        )
    if not creating:
        return
    try:
        _forget_review_stack(aws, stack)
    except (BotoCoreError, ClientError, DeployError) as exc:
        logger.warning(
            "could not remove the stack left empty", extra={"stack": stack, "error": _said(exc)}
        )


def _said(exc: Exception) -> str:
    from botocore.exceptions import ClientError  # noqa: PLC0415

    return error_message(exc) if isinstance(exc, ClientError) else str(exc)


def _forget_review_stack(aws: Aws, stack: str) -> None:
    """A refused first change set leaves an empty stack in REVIEW_IN_PROGRESS: remove it."""
    state = describe(aws, stack)
    if state.status == "REVIEW_IN_PROGRESS":
        aws.client("cloudformation").delete_stack(StackName=stack)


# --- waiting and reporting ------------------------------------------------------------------


def wait(
    aws: Aws,
    stack: str,
    *,
    since: datetime,
    report: Report,
    poll_seconds: float,
    timeout_seconds: float,
    stack_id: str | None = None,
) -> StackState:
    """Follow the stack's events until it settles; one progress line per event."""
    cfn = aws.client("cloudformation")
    seen: set[str] = set()
    deadline = time.monotonic() + timeout_seconds
    target = stack_id or stack
    while True:
        for event in reversed(_events(cfn, target, since)):
            if event["EventId"] in seen:
                continue
            seen.add(event["EventId"])
            reason = event.get("ResourceStatusReason") or ""
            stamp = event["Timestamp"].astimezone(UTC).strftime("%H:%M:%S")
            report(
                f"  {stamp}  {event.get('ResourceStatus', ''):<24} "
                f"{event.get('LogicalResourceId', '')}"
                + (f"  {reason}" if reason and "FAILED" in event.get("ResourceStatus", "") else "")
            )
        state = describe(aws, target)
        if state.status is None or not state.status.endswith(IN_PROGRESS):
            return state
        if time.monotonic() > deadline:
            raise DeployError(f"stack {stack} is still {state.status}; stopped waiting")
        time.sleep(poll_seconds)


def _events(cfn: Any, stack: str, since: datetime) -> list[dict[str, Any]]:
    """Events newer than ``since``, newest first."""
    from botocore.exceptions import ClientError  # noqa: PLC0415

    events: list[dict[str, Any]] = []
    token: str | None = None
    try:
        while True:
            page = cfn.describe_stack_events(
                StackName=stack, **({"NextToken": token} if token else {})
            )
            for event in page.get("StackEvents", []):
                if event["Timestamp"] < since:
                    return events
                events.append(event)
            token = page.get("NextToken")
            if not token:
                return events
    except ClientError as exc:
        if "does not exist" in str(exc):
            return events
        raise


def failures(aws: Aws, stack: str, *, since: datetime) -> tuple[str, ...]:
    """The resources that failed since the deploy started, with CloudFormation's reasons."""
    cfn = aws.client("cloudformation")
    lines = []
    for event in reversed(_events(cfn, stack, since)):
        status = event.get("ResourceStatus", "")
        if status.endswith("_FAILED") and event.get("LogicalResourceId") != stack:
            lines.append(
                f"{event.get('LogicalResourceId')} ({event.get('ResourceType')}): "
                f"{event.get('ResourceStatusReason') or status}"
            )
    return tuple(dict.fromkeys(lines))


# --- teardown -------------------------------------------------------------------------------


def destroy(
    aws: Aws,
    *,
    stack: str,
    report: Report,
    poll_seconds: float = 5.0,
    timeout_seconds: float = 3600.0,
) -> Outcome:
    before = describe(aws, stack)
    if before.status is None:
        raise DeployError(f"stack {stack} does not exist")
    started = datetime.now(UTC)
    aws.client("cloudformation").delete_stack(StackName=stack)
    state = _watched(
        f"deleting stack {stack}",
        wait_for=lambda: wait(
            aws,
            stack,
            since=started,
            report=report,
            poll_seconds=poll_seconds,
            timeout_seconds=timeout_seconds,
            stack_id=before.stack_id,
        ),
    )
    problems: tuple[str, ...] = ()
    if state.status not in {None, "DELETE_COMPLETE"}:
        problems = failures(aws, before.stack_id or stack, since=started)
    return Outcome(changed=True, state=state, problems=problems)


def delete_bucket(aws: Aws, bucket: str, report: Report) -> None:
    """Empty the bundle bucket (every version) and delete it."""
    from botocore.exceptions import ClientError  # noqa: PLC0415

    s3 = aws.client("s3")
    account = account_id(aws)
    try:
        paginator = s3.get_paginator("list_object_versions")
        for page in paginator.paginate(Bucket=bucket, ExpectedBucketOwner=account):
            doomed = [
                {"Key": item["Key"], "VersionId": item["VersionId"]}
                for item in page.get("Versions", []) + page.get("DeleteMarkers", [])
            ]
            if doomed:
                s3.delete_objects(
                    Bucket=bucket,
                    Delete={"Objects": doomed, "Quiet": True},
                    ExpectedBucketOwner=account,
                )
        s3.delete_bucket(Bucket=bucket, ExpectedBucketOwner=account)
    except ClientError as exc:
        raise DeployError(f"cannot delete bucket {bucket}: {error_code(exc)}") from None
    report(f"deleted bucket {bucket}")
