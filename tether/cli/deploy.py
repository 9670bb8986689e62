"""``tether deploy`` and ``tether destroy``: from a checkout to a running stack, and back.

``deploy`` builds the bundle for the target runtime and architecture, uploads it unless
that content is already there, creates or updates the stack through a change set it shows
first, waits, and prints the endpoints. ``--migrate`` applies the migrations first (new SQL
functions before the code that calls them). An update keeps every setting not given again.
"""

from __future__ import annotations

import argparse
import ast
import functools
import ipaddress
import sys
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast, get_args

from tether.cli.common import (
    at_most,
    aws_endpoint,
    confirm,
    database_url_flag,
    declined,
    duration,
    duration_or_zero,
    grace,
    in_flags,
    say,
    say_aside,
    whole_number,
)
from tether.durations import format_duration
from tether.errors import (
    ConfigurationError,
    Interrupted,
    InvalidInputError,
    NotFoundError,
    PartlyDoneError,
)
from tether.limits import HEARTBEATS_OFF

if TYPE_CHECKING:
    from tether.deploy.stack import Aws, Outcome, StackState

DEFAULT_CACHE = Path(".tether") / "bundle-cache"

# Command-line options and the template parameters they set.
OPTION_PARAMETERS = {
    "stage": "Stage",
    "driver": "DatabaseDriver",
    "supabase_url": "SupabaseUrl",
    "kms_key": "SecretsKmsKeyArn",
    "jwks_url": "JwksUrl",
    "jwt_issuer": "JwtIssuer",
    "jwt_audience": "JwtAudience",
    "allowed_roles": "AllowedRoles",
    "architecture": "Architecture",
    "memory": "MemorySize",
    "finalizer": "Finalizer",
    "alarm_email": "AlarmEmail",
    "metrics_namespace": "MetricsNamespace",
}


# How long to wait between two looks at a change set or a stack: a duration as every
# other (a bare number is seconds); past a minute, a typo (1e9) that would wait for ever.
POLL_MAX_SECONDS = 60.0
poll_wait = at_most(duration, POLL_MAX_SECONDS, format_duration(POLL_MAX_SECONDS))


def _aws_errors_said(
    command: Callable[[argparse.Namespace], int],
) -> Callable[[argparse.Namespace], int]:
    """botocore's own refusals (no credentials, an unknown profile, a malformed region
    or request), AWS's refusals no step expected, and answers that are no AWS response,
    as one line naming the cause, not a traceback."""

    @functools.wraps(command)
    def run(args: argparse.Namespace) -> int:
        from botocore.exceptions import (  # noqa: PLC0415
            BotoCoreError,
            ClientError,
            NoCredentialsError,
        )
        from botocore.parsers import ResponseParserError  # noqa: PLC0415

        from tether.deploy.stack import DeployError  # noqa: PLC0415

        try:
            return command(args)
        except NoCredentialsError:
            raise DeployError(
                "no AWS credentials: set them in the environment (AWS_ACCESS_KEY_ID, ...),"
                " or name a profile with --profile"
            ) from None
        except (BotoCoreError, ClientError) as exc:
            raise DeployError(f"AWS: {exc}") from None
        except ResponseParserError as exc:
            # An answer that is no AWS response (a proxy's error page, an emulator's
            # 500): its first line, not botocore's traceback with the page's HTML.
            said = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            raise DeployError(
                f"AWS (or --endpoint-url) answered with something that is not an AWS response:"
                f" {said.rstrip(':')}"
            ) from None

    return run


def _aws(args: argparse.Namespace) -> Any:
    import boto3  # noqa: PLC0415

    from tether.aws.clients import configured_region, is_local  # noqa: PLC0415
    from tether.deploy.stack import Aws  # noqa: PLC0415

    if not (args.region or is_local(args.endpoint_url) or configured_region(args.endpoint_url)):
        profile_region = (
            boto3.session.Session(profile_name=args.profile).region_name if args.profile else None
        )
        if not profile_region:
            # The clients' own words name only the environment: this command has a flag.
            # A setting that is not set, as every other command treats it (exit 1).
            raise ConfigurationError(
                "no AWS region: pass --region, or set AWS_REGION (or a region in your AWS profile)"
            )
    return Aws(endpoint_url=args.endpoint_url, region=args.region, profile=args.profile)


SWEEP_PERIODS = (1, 2, 5, 10)
"""Sweep schedules the template offers, in minutes."""


def whole_seconds(seconds: float) -> int | None:
    """``seconds`` as a whole number, or None if it has a fraction. A parsed duration
    such as 4.1m is 245.99999999999997 in floating point: that is 246, not a fraction."""
    whole = round(seconds)
    return whole if abs(seconds - whole) < 1e-6 else None


def _minutes(seconds: float, option: str) -> int:
    whole = whole_seconds(seconds)
    minutes, rest = divmod(whole or 0, 60)
    if whole is None or rest or minutes not in SWEEP_PERIODS:
        choices = ", ".join(f"{m}m" for m in SWEEP_PERIODS)
        raise InvalidInputError(f"{option}: one of {choices}, got {format_duration(seconds)}")
    return minutes


def requested_parameters(args: argparse.Namespace) -> dict[str, str]:
    """What this command line sets; everything else keeps its current (or default) value."""
    chosen: dict[str, str] = {}
    for option, parameter in OPTION_PARAMETERS.items():
        value = getattr(args, option, None)
        if value is not None:
            chosen[parameter] = str(value)
    if args.allow_anonymous is not None:
        chosen["AllowAnonymous"] = "true" if args.allow_anonymous else "false"
    if args.snapstart is not None:
        chosen["SnapStart"] = "true" if args.snapstart else "false"
    if args.sweep_rate is not None:
        chosen["SweepPeriodSeconds"] = str(60 * _minutes(args.sweep_rate, "--sweep-rate"))
    for option, parameter in (
        ("heartbeat_grace", "HeartbeatGraceSeconds"),
        ("suspect_after", "SuspectAfterSeconds"),
        ("check_every", "CheckEverySeconds"),
        ("heartbeat_interval", "HeartbeatIntervalSeconds"),
    ):
        value = getattr(args, option, None)
        if value == HEARTBEATS_OFF and option == "heartbeat_grace":
            chosen[parameter] = "off"
        elif value is not None:
            flag = f"--{option.replace('_', '-')}"
            if value > 7200:
                raise InvalidInputError(f"{flag}: at most 2h")
            whole = whole_seconds(value)
            if whole is None:
                # The stack takes whole seconds; rounding 0.4s to 0 would change its meaning.
                raise InvalidInputError(f"{flag}: whole seconds only, got {value:g}s")
            chosen[parameter] = str(whole)
    return chosen | _given_parameters(args.parameter, set_by_flags=chosen)


def _given_parameters(items: list[str], *, set_by_flags: dict[str, str]) -> dict[str, str]:
    """The --parameter KEY=VALUE pairs, refused where one would be lost without a word:
    a key given twice, or also by its own flag, or one each deploy sets itself."""
    given: dict[str, str] = {}
    for item in items:
        key, value = _key_and_value(item)
        if key in given:
            raise InvalidInputError(f"--parameter {key}: given more than once: give it once")
        if key in set_by_flags:
            raise InvalidInputError(
                f"--parameter {key} and {FLAG_OF_PARAMETER[key]} both set it: give one"
            )
        if key in _SET_BY_DEPLOY:
            # It would be replaced by what this deploy builds and uploads.
            raise InvalidInputError(
                f"--parameter {key}: tether deploy sets it itself"
                + (" (name the bucket with --bucket)" if key == "BundleBucket" else "")
            )
        given[key] = value
    return given


def _checked_choice(value: str, choices: tuple[str, ...]) -> str:
    """A template parameter's value among the bundle's own choices: the template's
    AllowedValues were checked already, so one it has that the bundle does not is a
    template out of step with the code."""
    if value not in choices:
        raise ConfigurationError(
            f"the template allows {value!r}, which this version of tether cannot build for"
        )
    return value


def _key_and_value(item: str) -> tuple[str, str]:
    """A --parameter KEY=VALUE; refused without ever repeating the value, which may be a
    secret given where its reference belongs."""
    key, sep, value = item.partition("=")
    if not sep:
        raise InvalidInputError("--parameter: expected KEY=VALUE, such as Stage=prod")
    if not key.isidentifier():
        raise InvalidInputError(
            "--parameter: what comes before '=' is no parameter's name (letters, digits"
            " and _); expected KEY=VALUE, such as Stage=prod"
        )
    return key, value


def _parameters(
    args: argparse.Namespace, aws: Any, defaults: dict[str, str | None], previous: dict[str, str]
) -> dict[str, str]:
    """Every parameter, explicitly: the template's default, else the stack's current value,
    else this command line's. Secrets are checked to exist and named by their full ARN."""
    from tether.deploy import stack as stacks  # noqa: PLC0415

    requested = requested_parameters(args)
    unknown = sorted(set(requested) - set(defaults))
    if unknown:
        raise InvalidInputError(f"--parameter: the template has no {', '.join(unknown)}")
    parameters: dict[str, str] = {k: v for k, v in defaults.items() if v is not None}
    parameters.update({k: v for k, v in previous.items() if k in defaults})
    parameters.update(requested)
    for option, key, what in (
        (args.database_secret, "DatabaseSecret", "--database-secret"),
        (args.jwt_secret, "JwtSecret", "--jwt-secret"),
        (args.operator_key, "OperatorKeySecret", "--operator-key"),
    ):
        if option is not None and key in requested:
            raise InvalidInputError(f"--parameter {key} and {what} both set it: give one")
        if option == "":
            # Empty, as every other flag's: cleared, not kept (an operator key revoked
            # with --operator-key '' stayed in force).
            parameters[key] = ""
            continue
        # A secret given as --parameter is checked to exist as its flag's is.
        reference, said = (option, what) if option else (requested.get(key), f"--parameter {key}")
        if not reference and key not in requested and previous.get(key):
            # Kept from the stack: deleted since, every function reading it would fail
            # from the update on, and the deploy would have said nothing.
            try:
                stacks.secret_arn(aws, previous[key], what=f"{what} (the stack's, kept)")
            except NotFoundError as exc:
                raise NotFoundError(f"{exc}; give {what} with one that exists") from None
        if reference:
            parameters[key] = stacks.secret_arn(aws, reference, what=said)
    if "DatabaseSecret" not in parameters:
        raise InvalidInputError(
            "--database-secret: required to create the stack (the ARN or name of the secret "
            "holding the database URL, or ssm:/name of a SecureString parameter)"
        )
    return parameters


def _checked_stack_and_flags(args: argparse.Namespace) -> str:
    """The stack's name, once it and the flags that go together are checked."""
    from tether.deploy import stack as stacks  # noqa: PLC0415

    if args.database_url and not args.migrate:
        # Left alone it would be read by nothing: the deploy would go on unmigrated.
        raise InvalidInputError(
            "--database-url names the database --migrate applies the migrations to: add"
            " --migrate, or leave it out"
        )
    # Blank, each is refused whatever the stack keeps: said before AWS is asked, so
    # an unreachable AWS does not turn a flag's typo into a failure (exit 1).
    if args.database_secret is not None and not args.database_secret.strip():
        raise InvalidInputError(
            "--database-secret: the value given is not allowed: empty (every function reads"
            " the database through it); name the secret, or leave the flag out to keep the"
            " stack's"
        )
    if args.jwt_audience is not None and not args.jwt_audience.strip():
        raise InvalidInputError(
            "--jwt-audience: is empty: give a value, or leave it unset for the default"
        )
    return stacks.check_stack_name(args.stack)


def _settings_kept(aws: Aws, name: str) -> dict[str, str]:
    """The stack's parameters, which an update keeps where they are not given again."""
    from tether.deploy import stack as stacks  # noqa: PLC0415

    current = stacks.describe(aws, name)
    if current.status != stacks.NEVER_CREATED:
        return current.parameters
    if not stacks.made_by_tether(aws, current):
        # Said before anything is built or uploaded.
        raise stacks.foreign_review_stack(name, then="nothing was changed")
    # A stack in review never ran: its parameters are those of a first deploy cut off
    # (its change set not run), which this one replaces, not settings the stack keeps.
    return {}


def cmd_deploy(args: argparse.Namespace) -> int:
    from tether.deploy import bundle as bundles  # noqa: PLC0415
    from tether.deploy import stack as stacks  # noqa: PLC0415
    from tether.deploy import template_text  # noqa: PLC0415

    name = _checked_stack_and_flags(args)
    template = template_text()
    # The values on the command line are refused before AWS is asked anything: a typo
    # is named as such, not hidden behind missing credentials or an unreachable region.
    requested = requested_parameters(args)
    _check_template_constraints(template, requested)
    for key in ("SupabaseUrl", "JwksUrl"):
        _check_https(key, requested.get(key))
    aws = _aws(args)
    previous = _settings_kept(aws, name)
    account = stacks.account_id(aws)
    bucket = (
        args.bucket
        or previous.get("BundleBucket")
        or stacks.default_bucket(account, stacks.region_of(aws))
    )
    defaults = stacks.template_defaults(aws, template)
    parameters = _parameters(args, aws, defaults, previous)
    # Everything is checked before anything is built, uploaded or migrated (the
    # template's constraints include the architectures and drivers there are).
    _check_template_constraints(template, parameters, given=_given(args, requested))
    _check_settings(parameters)
    architecture = cast(
        "bundles.Architecture",
        _checked_choice(parameters.get("Architecture", "arm64"), get_args(bundles.Architecture)),
    )
    driver = cast(
        "bundles.Driver",
        _checked_choice(parameters.get("DatabaseDriver", "psycopg"), get_args(bundles.Driver)),
    )
    target = bundles.Target(architecture=architecture)
    say(f"building the bundle for {target.runtime} {target.architecture} ...")
    bundle = bundles.build_bundle(
        functions_dir=_entry_points_folder(args),
        target=target,
        driver=driver,
        include=[Path(p) for p in args.include],
        cache_dir=Path(args.cache_dir),
        refresh=args.rebuild,
    )
    say(
        f"bundle {bundle.digest[:16]}: {bundle.files} files, "
        f"{bundle.unzipped_bytes / 2**20:.1f} MiB unzipped, {bundle.size / 2**20:.1f} MiB zipped"
    )
    _check_finalizer_ships(
        parameters.get("Finalizer"), bundle.path, runtime=bundle.target.python_version
    )
    stacks.ensure_bucket(aws, bucket, say)
    stacks.upload_bundle(aws, bucket, bundle, say)

    parameters["BundleBucket"] = bucket
    parameters["BundleKey"] = bundle.key
    if previous.get("CreateApiGatewayLogsRole") == "true" or stacks.needs_logs_role(aws):
        parameters["CreateApiGatewayLogsRole"] = "true"
    parameters.pop("CodeRevision", None)
    parameters["CodeRevision"] = stacks.revision(bundle.digest, template, parameters)

    migrated = False
    unchanged = f"the stack was not changed (the bundle stays in s3://{bucket}/{bundle.key})"

    def confirmed(question: str) -> bool:
        # The migrations go in once the change set is accepted and before it runs:
        # a new tether_*_vN+1 is in place before the code that calls it.
        nonlocal migrated
        if not confirm(question, assume_yes=args.yes):
            return False
        if args.migrate:
            try:
                _migrate(args, aws, parameters)
            except BaseException:
                # The change set listed above is deleted, not run: said after that list,
                # as a declined one is, whatever stopped the migrations.
                say(unchanged)
                raise
            migrated = True
        return True

    outcome = stacks.deploy(
        aws,
        stack=name,
        template=template,
        parameters=dict(sorted(parameters.items())),
        bucket=bucket,
        report=say,
        confirm=confirmed,
        poll_seconds=args.poll_seconds,
    )
    if outcome.declined:
        say(unchanged)
        return 1
    if args.migrate and not migrated:
        _migrate(args, aws, parameters)
    _say_if_the_sweep_is_held_off(parameters)
    return _said_where_the_stack_is(aws, name, outcome)


def _say_if_the_sweep_is_held_off(parameters: dict[str, str]) -> None:
    # Kept from the stack by every later deploy, and its alarm is silenced with it: said
    # each time, or a schedule held off for an adoption's cut-over is forgotten off.
    if parameters.get("SweepScheduleState") == "DISABLED":
        say(
            "the sweep is off its schedule (SweepScheduleState=DISABLED): sessions whose"
            " $disconnect is lost stay active, and the sweep-not-running alarm notifies no"
            " one, until a deploy with --parameter SweepScheduleState=ENABLED"
        )


def _said_where_the_stack_is(aws: Aws, name: str, outcome: Outcome) -> int:
    """The stack's state once deployed, with its failures or its outputs; the exit status."""
    from tether.deploy import stack as stacks  # noqa: PLC0415

    state = outcome.state if outcome.changed else stacks.describe(aws, name)
    if outcome.problems or state.status not in {"CREATE_COMPLETE", "UPDATE_COMPLETE"}:
        say(f"stack {name} is {state.status}")
        for problem in outcome.problems:
            say(f"  {problem}")
        return 1
    say(f"stack {name} is {state.status}")
    for key, value in sorted(state.outputs.items()):
        say(f"  {key:<20} {value}")
    return 0


FLAG_OF_PARAMETER = {
    parameter: f"--{option.replace('_', '-')}" for option, parameter in OPTION_PARAMETERS.items()
} | {
    "DatabaseSecret": "--database-secret",
    "JwtSecret": "--jwt-secret",
    "OperatorKeySecret": "--operator-key",
    "SweepPeriodSeconds": "--sweep-rate",
    "CheckEverySeconds": "--check-every",
    "HeartbeatIntervalSeconds": "--heartbeat-interval",
    "HeartbeatGraceSeconds": "--heartbeat-grace",
    "SuspectAfterSeconds": "--suspect-after",
    "BundleBucket": "--bucket",
}


_SECRET_PARAMETERS = frozenset({"DatabaseSecret", "JwtSecret", "OperatorKeySecret"})
# What each deploy sets from what it built and uploaded.
_SET_BY_DEPLOY = frozenset({"BundleBucket", "BundleKey", "CodeRevision"})


def _check_template_constraints(
    template: str, parameters: dict[str, str], given: set[str] | None = None
) -> None:
    """What CloudFormation would refuse only after the build and the upload, refused now:
    each value against the template's own AllowedPattern, AllowedValues and bounds.
    ``given``: what the command line set, where ``parameters`` also holds values kept
    from the stack."""
    from tether.deploy import stack as stacks  # noqa: PLC0415

    for key, constraint in stacks.parameter_constraints(template).items():
        value = parameters.get(key)
        why = None if value is None else constraint.refusal(value)
        if not why:
            continue
        flag = FLAG_OF_PARAMETER.get(key, f"--parameter {key}")
        if given is not None and key not in given:
            # Not on this command line: a value an earlier deploy set, which this
            # template no longer takes. Naming the flag alone would say it was given.
            setting = f"{flag}=VALUE" if flag.startswith("--parameter ") else f"{flag} VALUE"
            # A kept secret's reference is not repeated, and was not "the value given".
            kept = "" if key in _SECRET_PARAMETERS else f": {value!r}"
            raise ConfigurationError(
                f"{flag}: the stack's current value, kept as it was not given, is not allowed"
                f" now{kept} ({why}); give {setting} with a value it allows"
            )
        raise InvalidInputError(f"{flag}: {_shown(key, value)} is not allowed: {why}")


def _given(args: argparse.Namespace, requested: dict[str, str]) -> set[str]:
    """The parameters this command line sets: its flags' and --parameter's, and the
    secrets named by their own flags."""
    secrets = {
        key
        for key, option in (
            ("DatabaseSecret", args.database_secret),
            ("JwtSecret", args.jwt_secret),
            ("OperatorKeySecret", args.operator_key),
        )
        if option is not None
    }
    return set(requested) | secrets


def _shown(key: str, value: str | None) -> str:
    # A secret's reference may be the secret itself, given by mistake.
    return "the value given" if key in _SECRET_PARAMETERS else repr(value)


def _top_level_names(source: bytes) -> set[str] | None:
    """The names a module's source binds at its top level, or None when that cannot be
    told without running it (a syntax error, ``import *``, ``globals()``, a module
    ``__getattr__``)."""
    try:
        tree = ast.parse(source)
        everything = list(ast.walk(tree))
    except (SyntaxError, ValueError, RecursionError, MemoryError):
        return None
    if any(
        (isinstance(node, ast.ImportFrom) and any(a.name == "*" for a in node.names))
        or (isinstance(node, ast.Call) and getattr(node.func, "id", None) == "globals")
        for node in everything
    ):
        return None
    # A function may bind a module name through `global`.
    names = {name for node in everything if isinstance(node, ast.Global) for name in node.names}
    # The module's own scope: its statements, and those under if/try/with/for/match, not
    # the bodies of its functions, classes and lambdas, nor a comprehension's variables.
    pending: list[ast.AST] = list(tree.body)
    while pending:
        node = pending.pop()
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            names.add(node.name)
            continue
        if isinstance(node, ast.Lambda):
            continue
        if isinstance(node, ast.comprehension):
            pending.extend([node.iter, *node.ifs])
            continue
        if isinstance(node, ast.AnnAssign) and node.value is None:
            continue  # `finalize: Callable` declares, binds nothing
        if isinstance(node, ast.Import | ast.ImportFrom):
            names.update((a.asname or a.name).partition(".")[0] for a in node.names)
        elif isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store):
            names.add(node.id)
        elif isinstance(node, ast.MatchAs | ast.MatchStar) and node.name:
            names.add(node.name)
        elif isinstance(node, ast.MatchMapping) and node.rest:
            names.add(node.rest)
        pending.extend(ast.iter_child_nodes(node))
    return None if "__getattr__" in names else names


def _check_finalizer_ships(finalizer: str | None, bundle: Path, *, runtime: str) -> None:
    """The finalizer's module must be in the bundle (or Python's own), and define the
    function: otherwise every SessionEnded would fail to load it, and go to the
    dead-letter queue. ``runtime``: the functions' Python version (3.13). The bundle
    comes first, as Lambda searches it (/var/task) before Python's own library: a module
    of the bundle named as one of Python's is the one imported."""
    module, _, function = (finalizer or "").partition(":")
    if not module:
        return
    path = module.replace(".", "/")
    with zipfile.ZipFile(bundle) as archive:
        names = set(archive.namelist())
        # A package is what Python imports when a module of the same name sits beside it.
        source_name = next((n for n in (f"{path}/__init__.py", f"{path}.py") if n in names), None)
        source = None if source_name is None else archive.read(source_name)
    if source is None:
        if module.split(".")[0] in sys.stdlib_module_names:
            _check_standard_library_finalizer(module, function, runtime=runtime)
            return
        raise InvalidInputError(
            f"--finalizer: module {module} is not in the bundle; ship it with --include"
            " (nothing was uploaded)"
        )
    defined = _top_level_names(source)
    if function and defined is not None and function not in defined:
        raise InvalidInputError(
            f"--finalizer: module {module} defines no {function} (nothing was uploaded)"
        )


def _check_standard_library_finalizer(module: str, function: str, *, runtime: str) -> None:
    defined = _standard_library_names(module)
    if not function or defined is None or function in defined:
        return
    here = _this_python()
    if here != runtime:
        # Each version adds names and removes others: only the library of the functions'
        # own version could refuse it.
        say_aside(
            f"--finalizer: module {module} defines no {function} in this Python's ({here})"
            f" standard library; the functions run {runtime}, whose library was not read:"
            " check the name"
        )
        return
    raise InvalidInputError(
        f"--finalizer: module {module} defines no {function} (in Python {here}'s standard"
        " library); nothing was uploaded"
    )


def _this_python() -> str:
    """This interpreter's version as the functions' runtime is named (3.13)."""
    return f"{sys.version_info.major}.{sys.version_info.minor}"


def _standard_library_names(module: str) -> set[str] | None:
    """The names a module of Python's standard library binds at its top level, read from
    this Python's source of it, not run; a module built into the interpreter is asked.
    None when that cannot be told (a module written in C and loaded from a file, or one
    whose names are made as it runs)."""
    import importlib  # noqa: PLC0415
    import sysconfig  # noqa: PLC0415

    path = Path(sysconfig.get_paths()["stdlib"]).joinpath(*module.split("."))
    for source in (path / "__init__.py", path.with_name(f"{path.name}.py")):
        if source.is_file():
            text = source.read_bytes()
            # An enum's _convert_ puts its members among the module's names as it runs.
            return None if b"._convert_(" in text else _top_level_names(text)
    if module in sys.builtin_module_names:
        # Compiled into the interpreter: importing it runs no Python code.
        return set(dir(importlib.import_module(module)))
    return None


_SETTING_FLAGS = {
    "heartbeat_interval_seconds": "--heartbeat-interval",
    "heartbeat_grace_seconds": "--heartbeat-grace",
    "suspect_after_seconds": "--suspect-after",
    "sweep_check_every_seconds": "--check-every",
    "sweep_schedule_seconds": "--sweep-rate",
    "jwt_audience": "--jwt-audience",
    "allowed_roles": "--allowed-roles",
    "jwt_leeway_seconds": "--parameter JwtLeewaySeconds",
    "jwks_timeout_seconds": "--parameter JwksTimeoutSeconds",
    "jwks_cache_seconds": "--parameter JwksCacheSeconds",
    "jwks_refresh_cooldown_seconds": "--parameter JwksRefreshCooldownSeconds",
    # Not a parameter of the stack: its functions keep the default.
    "heartbeat_throttle_seconds": "the heartbeat throttle",
}


def _entry_points_folder(args: argparse.Namespace) -> Path:
    """--functions, else the entry points this tether ships. A project that kept a copy
    of them (as tether's checkout once had to be used) deploys tether's own unless it
    says otherwise: said, not silent."""
    from tether.deploy import entry_points  # noqa: PLC0415

    if args.functions:
        return Path(args.functions)
    shipped = entry_points()
    if _edited_copy_here(shipped):
        say_aside(
            "tether deploy: ./functions differs from the entry points this tether ships,"
            " which are deployed; pass --functions functions to deploy yours"
        )
    return shipped


def _edited_copy_here(shipped: Path) -> bool:
    """Whether ./functions is a copy of the entry points (it holds one of their modules)
    whose files differ from the ones this tether ships (a checkout of tether has the
    same, by the link)."""
    here = Path("functions")
    if not (here / "__init__.py").is_file():
        return False
    if here.resolve() == shipped.resolve():
        return False
    shipped_names = {p.name for p in shipped.glob("*.py")} - {"__init__.py"}
    if not any((here / name).is_file() for name in shipped_names):
        return False  # a package of the project's that is no copy of the entry points
    names = {p.name for p in here.glob("*.py")} | {p.name for p in shipped.glob("*.py")}
    return any(
        not (here / name).is_file()
        or not (shipped / name).is_file()
        or (here / name).read_bytes() != (shipped / name).read_bytes()
        for name in names
    )


def _check_https(key: str, url: str | None) -> None:
    """An address the functions fetch from (Supabase, its signing keys): https, a host."""
    from urllib.parse import urlsplit  # noqa: PLC0415

    if not url:
        return
    try:
        parts = urlsplit(url)
        hostname = parts.hostname
    except ValueError:  # an unclosed '[' (Invalid IPv6 URL): no address at all
        parts, hostname = None, None
    if parts is None or parts.scheme != "https" or not hostname or any(c.isspace() for c in url):
        flag = FLAG_OF_PARAMETER.get(key, key)
        raise InvalidInputError(f"{flag}: an https:// address is expected, got {url!r}")


def _check_settings(parameters: dict[str, str]) -> None:
    """The functions' settings as this stack would set them must load, or every
    function would fail at its first invocation: refuse now, naming what is wrong."""
    from tether.settings import load_settings  # noqa: PLC0415

    def seconds(key: str, default: str) -> float:
        # Digits: the template's patterns were checked first (_check_template_constraints).
        return float(parameters.get(key, default))

    grace = parameters.get("HeartbeatGraceSeconds", "30")
    every = seconds("CheckEverySeconds", "10")
    period = seconds("SweepPeriodSeconds", "60")
    if every > period:
        raise InvalidInputError(
            f"--check-every ({format_duration(every)}) must not be longer than the sweep's"
            f" period ({format_duration(period)})"
        )
    try:
        config = load_settings(
            heartbeat_interval_seconds=seconds("HeartbeatIntervalSeconds", "15"),
            heartbeat_grace_seconds=None
            if grace == "off"
            else seconds("HeartbeatGraceSeconds", "30"),
            suspect_after_seconds=seconds("SuspectAfterSeconds", "20"),
            sweep_check_every_seconds=every,
            sweep_schedule_seconds=period,
            jwks_timeout_seconds=seconds("JwksTimeoutSeconds", "3"),
            jwks_cache_seconds=seconds("JwksCacheSeconds", "300"),
            jwks_refresh_cooldown_seconds=seconds("JwksRefreshCooldownSeconds", "30"),
            # Only whether each is set matters here (the secret is its ARN).
            supabase_url=parameters.get("SupabaseUrl") or None,
            jwks_url=parameters.get("JwksUrl") or None,
            jwt_issuer=parameters.get("JwtIssuer") or None,
            jwt_secret=parameters.get("JwtSecret") or None,
            jwt_audience=parameters.get("JwtAudience", "authenticated"),
            jwt_leeway_seconds=seconds("JwtLeewaySeconds", "5"),
            allowed_roles=parameters.get("AllowedRoles", "authenticated"),
            allow_anonymous=parameters.get("AllowAnonymous") == "true",
        )
    except ConfigurationError as exc:
        raise InvalidInputError(in_flags(str(exc), _SETTING_FLAGS)) from None
    try:
        config.require_authentication()
    except ConfigurationError:
        raise InvalidInputError(
            "every $connect would be refused, with no way to verify access tokens: pass"
            " --supabase-url, or --jwks-url or --jwt-secret with --jwt-issuer, or"
            " --allow-anonymous"
        ) from None
    for key in ("SupabaseUrl", "JwksUrl"):
        _check_https(key, parameters.get(key))
    if parameters.get("DatabaseDriver") == "supabase" and not config.supabase_url:
        raise InvalidInputError("--driver supabase: needs --supabase-url")


def _migrate(args: argparse.Namespace, aws: Any, parameters: dict[str, str]) -> None:
    from tether import migrate, row_security  # noqa: PLC0415
    from tether.aws.secrets import is_reference  # noqa: PLC0415
    from tether.cli.migrations import say_done  # noqa: PLC0415
    from tether.dburl import check  # noqa: PLC0415
    from tether.deploy.stack import read_secret  # noqa: PLC0415

    # The database the functions will use, the one in the secret, unless named on the
    # command line: a DATABASE_URL left in the shell (the quick start's) would have
    # been migrated instead, and the new code deployed on an unmigrated database.
    url, source = args.database_url, "--database-url"
    if url and is_reference(url):
        # A secret's reference, as --database-url takes everywhere: read through this
        # command's AWS session, as the stack's own secret is.
        source = f"the secret {url} (--database-url)"
        url = read_secret(aws, url)
    if not url:
        if parameters.get("DatabaseDriver", "psycopg") != "psycopg":
            raise InvalidInputError(
                "--migrate: the secret holds a Supabase service key, not a Postgres URL; "
                "pass --database-url (or run `supabase db push`)"
            )
        url = read_secret(aws, parameters["DatabaseSecret"])
        source = f"the secret {parameters['DatabaseSecret']}"
    try:
        check(url)
    except ConfigurationError as exc:
        # Said alone ("the database URL must look like ..."), it sent the user to a
        # DATABASE_URL this command does not read: the secret's value is at fault.
        raise ConfigurationError(
            f"--migrate: {source} holds no usable database URL: {exc}"
        ) from None
    say(f"migrating {_database_named(check(url))}, from {source}")
    # Waits for a busy table as `tether migrate` does by default, saying so on stderr.
    try:
        done = migrate.apply_pending(
            check(url),
            progress=say_aside,
            again=(
                "run the deploy again when the table is quieter, or first `tether migrate`,"
                " which can wait longer (--lock-timeout, --attempts)"
            ),
        )
    except KeyboardInterrupt:
        raise Interrupted(
            "nothing of the migrations was applied (they run in one transaction)"
        ) from None
    say_done(done, say)
    # As `tether migrate` does: up to date is not working, and new code would open no
    # session either. Before the change set runs, so the stack is left as it was.
    problems = row_security.problems_at(check(url))
    if problems:
        raise PartlyDoneError(
            f"{'; '.join(problems)}. The migrations are applied; the stack was not changed:"
            " mend the table, then deploy again"
        )


def _database_named(url: str) -> str:
    """Which database a URL names, as an operator would check it: never its password."""
    from psycopg.conninfo import conninfo_to_dict  # noqa: PLC0415

    parts = conninfo_to_dict(url)
    host, port = parts.get("host") or "the local socket", parts.get("port")
    return f"database {parts.get('dbname') or '(default)'} on {host}{f':{port}' if port else ''}"


def cmd_destroy(args: argparse.Namespace) -> int:
    from tether.deploy import stack as stacks  # noqa: PLC0415

    name = stacks.check_stack_name(args.stack)
    aws = _aws(args)
    current = stacks.describe(aws, name)
    if current.status is None:
        if args.delete_bucket and args.bucket:
            # What an earlier destroy left: its stack deleted, its bucket not.
            return _delete_bucket_of_deleted_stack(aws, args.bucket, name, assume_yes=args.yes)
        # A name that names nothing, as `kick --session` of no session: found, not
        # given wrong (exit 1).
        raise NotFoundError(f"--stack: stack {name} does not exist")
    _check_stack_may_go(aws, current, untagged_review_stack=args.untagged_review_stack)
    bucket = args.bucket or current.parameters.get("BundleBucket")
    if args.delete_bucket:
        _check_bucket_may_go(aws, bucket, name)
    holds = (
        "never created, it holds nothing"
        if current.status == stacks.NEVER_CREATED
        else "its APIs, functions, schedule, bus, queue, alarms and logs"
    )
    question = f"delete stack {name} ({current.status}): {holds}" + (
        f", then bucket {bucket} and every bundle in it?" if args.delete_bucket else "?"
    )
    # Asked before the stack goes: once deleted, it no longer says what it made.
    logs_role = stacks.kept_logs_role(aws, current)
    if not confirm(question, assume_yes=args.yes):
        return declined()
    try:
        outcome = stacks.destroy(aws, stack=name, report=say, poll_seconds=args.poll_seconds)
    except Interrupted as exc:
        if bucket and args.delete_bucket:
            raise Interrupted(
                f"{exc.what_became}; bucket {bucket} is not deleted: `tether destroy --stack"
                f" {name} --delete-bucket --bucket {bucket}` deletes it once the stack is gone"
            ) from None
        raise

    if outcome.state.status not in {None, "DELETE_COMPLETE"}:
        say(f"stack {name} is {outcome.state.status}")
        for problem in outcome.problems:
            say(f"  {problem}")
        return 1
    say(f"stack {name} deleted")
    if bucket and args.delete_bucket:
        _delete_bucket(aws, bucket, name)
    elif bucket:
        say(f"kept: bucket {bucket} with the bundles (--delete-bucket removes it)")
    if logs_role:
        say(f"kept: API Gateway's account-wide CloudWatch role {logs_role} (other APIs may use it)")
    say("kept: the database and its secrets, which the stack never owned")
    return 0


def _check_stack_may_go(aws: Aws, current: StackState, *, untagged_review_stack: bool) -> None:
    """Only a stack tether deploy made is deleted (or, said so, one in review)."""
    from tether.deploy import stack as stacks  # noqa: PLC0415

    if current.status == stacks.NEVER_CREATED:
        # It holds no resources, but may hold another tool's change set awaiting review:
        # deleted only as tether's, or when the user says so.
        if not untagged_review_stack and not stacks.made_by_tether(aws, current):
            raise stacks.foreign_review_stack(current.name, then="nothing was deleted")
    elif stacks.STACK_TAG not in current.tags:
        # A name mistyped, or another team's stack in the same account: deleted, with
        # --yes, as if it were tether's.
        raise stacks.DeployError(
            f"--stack: stack {current.name} is not one tether deploy made (it has no"
            f" {stacks.STACK_TAG} tag); nothing was deleted"
        )


def _delete_bucket_of_deleted_stack(aws: Aws, bucket: str, stack: str, *, assume_yes: bool) -> int:
    from tether.deploy import stack as stacks  # noqa: PLC0415

    if not stacks.bucket_exists(aws, bucket):
        # Run twice, or after the bucket went another way: nothing it names is left.
        raise NotFoundError(
            f"--stack: stack {stack} does not exist, nor does bucket {bucket}: nothing to delete"
        )
    _check_bucket_may_go(aws, bucket, stack, known_to_exist=True)
    question = f"stack {stack} is already deleted: delete bucket {bucket} and every bundle in it?"
    if not confirm(question, assume_yes=assume_yes):
        return declined()
    _delete_bucket(aws, bucket, stack)
    return 0


def _delete_bucket(aws: Aws, bucket: str, stack: str) -> None:
    """Deletes the bundle bucket once its stack is gone; if it cannot, says how to finish:
    the stack is no longer there to name it."""
    from botocore.exceptions import BotoCoreError  # noqa: PLC0415

    from tether.deploy import stack as stacks  # noqa: PLC0415

    try:
        stacks.delete_bucket(aws, bucket, say)
    except (BotoCoreError, stacks.DeployError) as exc:
        said = (
            str(exc)
            if isinstance(exc, stacks.DeployError)
            else f"cannot delete bucket {bucket}: {exc}"
        )
        raise stacks.DeployError(
            f"stack {stack} is deleted; {said}. `tether destroy --stack {stack}"
            f" --delete-bucket --bucket {bucket}` deletes it"
        ) from None


def _check_bucket_may_go(
    aws: Any, bucket: str | None, stack: str, *, known_to_exist: bool = False
) -> None:
    """Before anything is deleted: only a bucket tether made, and only its last user.
    Refused for what is found in the account, not for the flag itself (exit 1).
    ``known_to_exist``: the caller has just asked S3, which is not asked again."""
    from tether.deploy import stack as stacks  # noqa: PLC0415

    if not bucket:
        raise stacks.DeployError("--delete-bucket: the stack names no bundle bucket")
    if not known_to_exist and not stacks.bucket_exists(aws, bucket):
        # Else said to be "not a bucket tether deploy created": one to delete by hand.
        raise NotFoundError(
            f"--delete-bucket: bucket {bucket} does not exist; nothing was deleted (destroy"
            " without --delete-bucket)"
        )
    if not stacks.bucket_is_tethers(aws, bucket):
        raise stacks.DeployError(
            f"--delete-bucket: {bucket} is not a bucket tether deploy created; nothing was"
            " deleted (delete it yourself if you mean to)"
        )
    others = stacks.stacks_using_bucket(aws, bucket, besides=stack)
    if others:
        raise stacks.DeployError(
            f"--delete-bucket: stack(s) {', '.join(others)} keep their bundles in {bucket};"
            " nothing was deleted (destroy without --delete-bucket)"
        )


# S3's names for general purpose buckets: a name it refuses failed only once the
# bundle was built, and an emulator took it.
_BUCKET_NAME_CHARACTERS = frozenset("abcdefghijklmnopqrstuvwxyz0123456789.-")
_RESERVED_BUCKET_PREFIXES = ("xn--", "sthree-", "amzn-s3-demo-")
_RESERVED_BUCKET_SUFFIXES = ("-s3alias", "--ol-s3", ".mrap", "--x-s3", "--table-s3")


def bucket_name_problem(name: str) -> str | None:
    """The S3 bucket naming rule ``name`` breaks, or None when it keeps them all."""
    if not 3 <= len(name) <= 63:
        return f"between 3 and 63 characters, got {len(name)}"
    if not set(name) <= _BUCKET_NAME_CHARACTERS:
        return "lowercase letters, digits, periods (.) and hyphens (-) only"
    if not (name[0].isalnum() and name[-1].isalnum()):
        return "must begin and end with a letter or a digit"
    if ".." in name:
        return "must not hold two adjacent periods"
    try:
        ipaddress.IPv4Address(name)
    except ValueError:
        pass
    else:
        return "must not be formatted as an IP address"
    for prefix in _RESERVED_BUCKET_PREFIXES:
        if name.startswith(prefix):
            return f"must not begin with {prefix}, which S3 reserves"
    for suffix in _RESERVED_BUCKET_SUFFIXES:
        if name.endswith(suffix):
            return f"must not end with {suffix}, which S3 reserves"
    return None


def bucket_name(text: str) -> str:
    """--bucket: a name S3 takes for a general purpose bucket."""
    problem = bucket_name_problem(text)
    if problem is not None:
        raise argparse.ArgumentTypeError(f"{text!r} is not an S3 bucket name: {problem}")
    return text


def aws_region(text: str) -> str:
    """--region: a name botocore takes for a region (a host label). Refused at the
    command line, as every flag it cannot read: once AWS was asked, it was a failure
    (exit 1). Whether such a region exists, only AWS can say."""
    from botocore.exceptions import InvalidRegionError  # noqa: PLC0415
    from botocore.utils import validate_region_name  # noqa: PLC0415

    try:
        validate_region_name(text)
    except InvalidRegionError:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not an AWS region's name (such as us-east-1)"
        ) from None
    if not text:
        raise argparse.ArgumentTypeError("empty: name a region, such as us-east-1")
    return text


def aws_profile(text: str) -> str:
    """--profile: a name. Empty, it was taken as no flag at all, and $AWS_PROFILE (or the
    default profile) used, another account perhaps, without a word."""
    if not text.strip():
        raise argparse.ArgumentTypeError("empty: name a profile, or leave --profile out")
    return text


def _add_aws_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--stack", required=True, metavar="NAME", help="the CloudFormation stack")
    parser.add_argument(
        "--region", type=aws_region, help="AWS region (default: $AWS_REGION, the profile's)"
    )
    parser.add_argument("--profile", type=aws_profile, help="AWS profile (default: $AWS_PROFILE)")
    parser.add_argument(
        "--endpoint-url",
        type=aws_endpoint,
        metavar="URL",
        help="send every AWS call here (a local moto server)",
    )
    parser.add_argument(
        "--bucket",
        type=bucket_name,
        metavar="NAME",
        help="bundle bucket (default: tether-deploy-ACCOUNT-REGION)",
    )
    parser.add_argument("--yes", action="store_true", help="do not ask before changing anything")
    parser.add_argument("--poll-seconds", type=poll_wait, default=5.0, help=argparse.SUPPRESS)


def register(commands: Any, common: argparse.ArgumentParser) -> None:
    deploy_cmd = commands.add_parser(
        "deploy",
        parents=[common],
        help="build, upload and create or update the AWS stack",
        description="Create or update the stack; settings not given keep their current value.",
    )
    _add_aws_options(deploy_cmd)
    group = deploy_cmd.add_argument_group("database")
    group.add_argument(
        "--database-secret",
        metavar="ARN",
        help="secret with the database URL (or the Supabase service key): a Secrets Manager "
        "ARN or name, or ssm:/name of a SecureString; required to create",
    )
    group.add_argument("--driver", choices=["psycopg", "supabase"], help="default psycopg")
    group.add_argument("--supabase-url", metavar="URL", help="https://PROJECT.supabase.co")
    group.add_argument("--kms-key", metavar="ARN", help="customer managed key of the secrets")
    group.add_argument(
        "--migrate", action="store_true", help="apply the migrations before updating the code"
    )
    group.add_argument(
        "--database-url",
        type=database_url_flag,
        metavar="URL",
        help="for --migrate (default: the URL in the database secret; $DATABASE_URL is not read)",
    )
    group = deploy_cmd.add_argument_group("authentication")
    group.add_argument("--jwks-url", metavar="URL", help="default: from --supabase-url")
    group.add_argument("--jwt-issuer", metavar="ISS", help="default: from --supabase-url")
    group.add_argument("--jwt-audience", metavar="AUD", help="default: authenticated")
    group.add_argument("--jwt-secret", metavar="ARN", help="secret with a legacy HS256 JWT secret")
    group.add_argument(
        "--allowed-roles",
        metavar="ROLES",
        help="comma-separated token roles that may connect (default: authenticated)",
    )
    group.add_argument(
        "--allow-anonymous",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="accept connections without a token",
    )
    group.add_argument("--operator-key", metavar="ARN", help="secret with the operators' API key")
    group = deploy_cmd.add_argument_group("sessions")
    group.add_argument("--stage", help="WebSocket stage name (default: prod)")
    group.add_argument(
        "--sweep-rate",
        type=duration,
        metavar="DURATION",
        help="how often a sweep run starts: 1m, 2m, 5m or 10m (default: 1m)",
    )
    group.add_argument(
        "--check-every",
        type=duration,
        metavar="DURATION",
        help="how often a sweep run checks (default: 10s)",
    )
    group.add_argument(
        "--heartbeat-interval",
        type=duration,
        metavar="DURATION",
        help="how often clients are asked to send a heartbeat (default: 15s)",
    )
    group.add_argument(
        "--heartbeat-grace",
        type=grace,
        metavar="DURATION|off",
        help="disconnect clients silent this long; off: heartbeats optional (default: 30s)",
    )
    group.add_argument(
        "--suspect-after",
        type=duration_or_zero,
        metavar="DURATION",
        help="ask the gateway about sessions silent this long (default: 20s)",
    )
    group.add_argument("--finalizer", metavar="MODULE:FUNCTION", help="called per SessionEnded")
    group = deploy_cmd.add_argument_group("functions")
    group.add_argument("--architecture", choices=["arm64", "x86_64"], help="default arm64")
    group.add_argument(
        "--memory", type=whole_number, metavar="MB", help="per function (default: 512)"
    )
    group.add_argument(
        "--snapstart",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="SnapStart on the WebSocket and admin functions (default: on)",
    )
    group.add_argument(
        "--functions",
        metavar="DIR",
        help="the Lambda entry points (default: the ones this tether ships)",
    )
    group.add_argument(
        "--include",
        action="append",
        default=[],
        metavar="PATH",
        help="also ship this module or package (your finalizer, your routes)",
    )
    group.add_argument(
        "--cache-dir", default=str(DEFAULT_CACHE), metavar="DIR", help=argparse.SUPPRESS
    )
    group.add_argument("--rebuild", action="store_true", help="download the dependencies again")
    group = deploy_cmd.add_argument_group("alarms and the rest")
    group.add_argument("--alarm-email", metavar="ADDRESS", help="subscribed to the alarm topic")
    group.add_argument("--metrics-namespace", metavar="NS", help="default tether/STACK")
    group.add_argument(
        "--parameter",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="any other template parameter (e.g. LogRetentionDays=90)",
    )
    deploy_cmd.set_defaults(handler=_aws_errors_said(cmd_deploy))

    destroy_cmd = commands.add_parser(
        "destroy", parents=[common], help="delete the AWS stack (asks first)"
    )
    _add_aws_options(destroy_cmd)
    destroy_cmd.add_argument(
        "--delete-bucket", action="store_true", help="also empty and delete the bundle bucket"
    )
    destroy_cmd.add_argument(
        "--untagged-review-stack",
        action="store_true",
        help="delete a stack in review (REVIEW_IN_PROGRESS) though nothing marks it as tether's",
    )
    destroy_cmd.set_defaults(handler=_aws_errors_said(cmd_destroy))
