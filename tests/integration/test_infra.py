"""The template, read as CloudFormation reads it: cfn-lint passes; every route reaches a
function of the template through an integration, with an invoke permission for that API
only; the schedule reaches the sweep; SessionEnded reaches its subscriber with retries
and a dead-letter queue; IAM is least privilege; secrets are references, never values;
the alarms watch what the sweep reports.

moto's CloudFormation creates no ``AWS::ApiGatewayV2::*`` resources (nor alarms, invoke
configs, queue policies): the deploy test cannot see them, this test covers them.
"""

from __future__ import annotations

import importlib
import json
import re
import subprocess
import sys
from collections.abc import Iterator
from functools import cache
from pathlib import Path
from typing import Any

import pytest
from cfnlint.decode import decode_str

from tests.conftest import ROOT
from tether.aws.secrets import is_secrets_manager_arn, is_ssm_reference, resolve_secret
from tether.deploy import template_text

TEMPLATE = ROOT / "infra" / "template.yaml"
LAMBDA = "AWS::Lambda::Function"
WEBSOCKET_ROUTES = {"$connect", "$disconnect", "$default", "heartbeat"}
SECRET_PARAMETERS = {"DatabaseSecret", "JwtSecret", "OperatorKeySecret"}
SECRET_SETTINGS = {
    "TETHER_DATABASE_URL",
    "TETHER_SUPABASE_SERVICE_KEY",
    "TETHER_JWT_SECRET",
    "TETHER_OPERATOR_KEY",
}


@cache
def load_template() -> dict[str, Any]:
    template, problems = decode_str(TEMPLATE.read_text())
    assert not problems, problems
    assert template is not None
    return dict(template)


def resources(kind: str | None = None) -> dict[str, dict[str, Any]]:
    every: dict[str, dict[str, Any]] = load_template()["Resources"]
    return {k: v for k, v in every.items() if kind is None or v["Type"] == kind}


def props(logical_id: str) -> dict[str, Any]:
    properties: dict[str, Any] = resources()[logical_id].get("Properties", {})
    return properties


def pick(value: Any, conditions: dict[str, bool]) -> Any:
    """A value with its Fn::If resolved for these conditions."""
    while isinstance(value, dict) and "Fn::If" in value:
        condition, when_true, when_false = value["Fn::If"]
        value = when_true if conditions[condition] else when_false
    return value


def handlers() -> dict[str, str]:
    """Function logical id -> handler string, from the template."""
    return {name: str(r["Properties"]["Handler"]) for name, r in resources(LAMBDA).items()}


def references(node: Any) -> set[str]:
    """Every resource or parameter a node refers to (Ref, GetAtt, ${...} in Sub)."""
    found: set[str] = set()
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "Ref":
                found.add(str(value))
            elif key == "Fn::GetAtt":
                found.add(str(value[0]))
            elif key == "Fn::Sub":
                text, names = (value, {}) if isinstance(value, str) else (value[0], value[1])
                for name in re.findall(r"\$\{([^}!]+)\}", text):
                    if name not in names:
                        found.add(name.split(".")[0])
                found |= references(names)
            elif key == "Fn::If":
                found |= references(value[1]) | references(value[2])
            else:
                found |= references(value)
    elif isinstance(node, list):
        for item in node:
            found |= references(item)
    return {name for name in found if not name.startswith("AWS::")}


def branches(node: Any) -> list[Any]:
    """Both sides of an Fn::If (SnapStart on and off), or the node itself."""
    if isinstance(node, dict) and "Fn::If" in node:
        return [node["Fn::If"][1], node["Fn::If"][2]]
    return [node]


def function_of(node: Any) -> str:
    """The function a target names: itself, or the function of its version."""
    (target,) = references(node) - {"EnableSnapStart"}
    kind = resources()[target]["Type"]
    if kind == "AWS::Lambda::Version":
        (function,) = references(props(target)["FunctionName"])
        return function
    assert kind == LAMBDA, f"{target} is a {kind}, not a function"
    return target


def target_of(node: Any) -> Any:
    """The invocation target inside an integration URI (Sub with a Target variable)."""
    if isinstance(node, dict) and "Fn::Sub" in node and isinstance(node["Fn::Sub"], list):
        return node["Fn::Sub"][1]["Target"]
    return node


def statements() -> Iterator[tuple[str, dict[str, Any]]]:
    """(policy owner, statement) for every inline and managed policy of the template."""
    for name, resource in resources().items():
        kind = resource["Type"]
        if kind == "AWS::IAM::Role":
            for policy in resource["Properties"].get("Policies", []):
                for statement in policy["PolicyDocument"]["Statement"]:
                    yield name, statement
        elif kind in {"AWS::IAM::ManagedPolicy", "AWS::IAM::Policy"}:
            for statement in resource["Properties"]["PolicyDocument"]["Statement"]:
                yield name, statement


def listed(value: Any) -> list[Any]:
    return list(value) if isinstance(value, list) else [value]


def role_statements(role: str) -> list[dict[str, Any]]:
    """What a role may do: its inline policies and every policy attached to it."""
    attached = {name for name in references(props(role).get("ManagedPolicyArns", []))}
    found = []
    for owner, statement in statements():
        kind = resources()[owner]["Type"]
        attaches = kind in {"AWS::IAM::Policy", "AWS::IAM::ManagedPolicy"} and role in references(
            props(owner).get("Roles", [])
        )
        if owner == role or owner in attached or attaches:
            found.append(statement)
    return found


def actions_of(role: str) -> set[str]:
    return {action for s in role_statements(role) for action in listed(s["Action"])}


# --- lint -----------------------------------------------------------------------------------


def test_cfn_lint_passes() -> None:
    cfn_lint = Path(sys.executable).parent / "cfn-lint"
    done = subprocess.run(  # noqa: S603 - the linter of the dev extra
        [str(cfn_lint), str(TEMPLATE)], capture_output=True, text=True, timeout=300, check=False
    )
    assert done.returncode == 0, done.stdout + done.stderr


def readme_routes_template() -> str:
    """The README's stack for the application's own routes, as a team copies it."""
    readme = (TEMPLATE.parent.parent / "README.md").read_text()
    section = readme.split("### The application's own routes", 1)[1].split("\n## ", 1)[0]
    return section.split("```yaml\n", 1)[1].split("```", 1)[0]


def test_the_readme_s_stack_for_the_application_s_routes_passes_cfn_lint(
    tmp_path: Path,
) -> None:
    routes = tmp_path / "routes.yaml"
    routes.write_text(readme_routes_template())
    cfn_lint = Path(sys.executable).parent / "cfn-lint"
    done = subprocess.run(  # noqa: S603 - the linter of the dev extra
        [str(cfn_lint), str(routes)], capture_output=True, text=True, timeout=300, check=False
    )
    assert done.returncode == 0, done.stdout + done.stderr


def test_the_websocket_api_s_id_is_exported_for_the_application_s_routes() -> None:
    """A team's routes are functions of its own, on this stack's API: without its id,
    found nowhere but inside the WebSocket URL, a stack of theirs could not name it.
    (moto skips API Gateway v2 resources and the outputs of a stack a change set made:
    the template and the README's stack are read here.)"""
    output = load_template()["Outputs"]["WebSocketApiId"]
    assert output["Value"] == {"Ref": "WebSocketApi"}
    assert output["Export"]["Name"] == {"Fn::Sub": "${AWS::StackName}-WebSocketApiId"}
    # The stage deploys what another stack adds to the API.
    assert props("WebSocketStage")["AutoDeploy"] is True

    routes, problems = decode_str(readme_routes_template())
    assert not problems and routes is not None, problems
    made = routes["Resources"]
    imported = {"Fn::ImportValue": {"Fn::Sub": "${TetherStack}-WebSocketApiId"}}
    for logical in ("ChatIntegration", "ChatRoute", "ChatRouteResponse"):
        assert made[logical]["Properties"]["ApiId"] == imported, logical
    route = made["ChatRoute"]["Properties"]
    assert route["Target"] == {"Fn::Sub": "integrations/${ChatIntegration}"}
    # Its answer goes back to the client, as tether's own $default's does.
    assert route["RouteResponseSelectionExpression"] == "$default"
    assert made["ChatRouteResponse"]["Properties"]["RouteId"] == {"Ref": "ChatRoute"}
    integration = made["ChatIntegration"]["Properties"]
    assert "${ChatFunction.Arn}" in integration["IntegrationUri"]["Fn::Sub"]
    source = made["ChatInvokePermission"]["Properties"]["SourceArn"]["Fn::Sub"]
    assert source[1] == {"Api": imported}
    # Its own route on any stage of the API, no other route.
    assert source[0].endswith(f"${{Api}}/*/{route['RouteKey']}"), source[0]
    # The wrapped handler touches the session with the stack's database secret.
    function = made["ChatFunction"]["Properties"]
    assert function["Environment"]["Variables"]["TETHER_DATABASE_URL"] == {"Ref": "DatabaseSecret"}
    (statement,) = made["ChatRole"]["Properties"]["Policies"][0]["PolicyDocument"]["Statement"]
    # Either kind of reference the stack takes: a Secrets Manager secret, an SSM parameter.
    assert set(statement["Action"]) == {"secretsmanager:GetSecretValue", "ssm:GetParameter"}
    assert statement["Resource"] == {"Ref": "DatabaseSecret"}
    # Runs where tether's functions run, on the bundle's architecture (its compiled
    # dependencies are built for it).
    assert function["Runtime"] == props("ConnectFunction")["Runtime"]
    assert function["Architectures"] == [{"Ref": "Architecture"}]
    ours = load_template()["Parameters"]["Architecture"]
    theirs = routes["Parameters"]["Architecture"]
    assert (theirs["Default"], theirs["AllowedValues"]) == (ours["Default"], ours["AllowedValues"])


def test_the_installed_package_carries_this_template() -> None:
    assert template_text() == TEMPLATE.read_text()


# --- wiring ---------------------------------------------------------------------------------


def test_the_websocket_api_routes_on_the_action() -> None:
    (api,) = [
        name
        for name, r in resources("AWS::ApiGatewayV2::Api").items()
        if r["Properties"]["ProtocolType"] == "WEBSOCKET"
    ]
    assert props(api)["RouteSelectionExpression"] == "$request.body.action"
    keys = {
        r["Properties"]["RouteKey"]
        for r in resources("AWS::ApiGatewayV2::Route").values()
        if references(r["Properties"]["ApiId"]) == {api}
    }
    assert keys == WEBSOCKET_ROUTES


def test_every_route_reaches_a_function_allowed_for_this_api_only() -> None:
    permissions = resources("AWS::Lambda::Permission")
    routes = resources("AWS::ApiGatewayV2::Route")
    assert routes
    for name, route in routes.items():
        api = references(route["Properties"]["ApiId"])
        target = route["Properties"]["Target"]["Fn::Sub"]
        match = re.fullmatch(r"integrations/\$\{(\w+)\}", target)
        assert match, f"{name}: target {target}"
        integration = props(match.group(1))
        assert references(integration["ApiId"]) == api, name
        assert integration["IntegrationType"] == "AWS_PROXY", name
        targets = branches(target_of(integration["IntegrationUri"]))
        functions = {function_of(t) for t in targets}
        assert len(functions) == 1, f"{name} reaches {functions}"
        (function,) = functions
        # Each invocation target (the version with SnapStart, the function without) has a
        # permission for API Gateway, scoped to this API's ARN.
        for each in targets:
            allowed = [
                p
                for p in permissions.values()
                if p["Properties"]["Principal"] == "apigateway.amazonaws.com"
                and each in branches(p["Properties"]["FunctionName"])
            ]
            assert allowed, f"{name}: no permission for {each}"
            for permission in allowed:
                source = permission["Properties"]["SourceArn"]["Fn::Sub"]
                (api_name,) = api
                assert source.startswith(
                    f"arn:${{AWS::Partition}}:execute-api:${{AWS::Region}}:${{AWS::AccountId}}:"
                    f"${{{api_name}}}/"
                ), f"{name}: permission not scoped to {api_name}: {source}"
        assert resources()[function]["Type"] == LAMBDA


def test_each_websocket_function_may_be_invoked_by_its_own_routes_on_the_stage_alone() -> None:
    """A WebSocket route's source ARN is api-id/stage/route-key: a permission naming
    ``${WebSocketApi}/*`` let any route or stage of the API invoke the function (a route
    added by hand to $connect's function, say, would skip nothing but still run it)."""
    permissions = resources("AWS::Lambda::Permission")
    prefix = "arn:${AWS::Partition}:execute-api:${AWS::Region}:${AWS::AccountId}:${WebSocketApi}/"
    routed: dict[str, set[str]] = {}
    for route in resources("AWS::ApiGatewayV2::Route").values():
        if references(route["Properties"]["ApiId"]) != {"WebSocketApi"}:
            continue
        match = re.fullmatch(r"integrations/\$\{(\w+)\}", route["Properties"]["Target"]["Fn::Sub"])
        assert match
        for target in branches(target_of(props(match.group(1))["IntegrationUri"])):
            routed.setdefault(json.dumps(target, sort_keys=True), set()).add(
                route["Properties"]["RouteKey"]
            )
    allowed: dict[str, set[str]] = {}
    for name, permission in permissions.items():
        source = permission["Properties"]["SourceArn"]
        text = source.get("Fn::Sub") if isinstance(source, dict) else None
        if not isinstance(text, str) or not text.startswith(prefix):
            continue
        stage, _, route_key = text.removeprefix(prefix).partition("/")
        assert stage == "${Stage}", f"{name}: {text} is not for the stage alone"
        assert route_key and "*" not in route_key, f"{name}: {text} names no single route"
        for target in branches(permission["Properties"]["FunctionName"]):
            allowed.setdefault(json.dumps(target, sort_keys=True), set()).add(route_key)
    assert routed
    assert allowed == routed


def test_routes_that_answer_the_client_have_a_route_response() -> None:
    answering = {
        r["Properties"]["RouteKey"]
        for name, r in resources("AWS::ApiGatewayV2::Route").items()
        if any(
            references(rr["Properties"]["RouteId"]) == {name}
            for rr in resources("AWS::ApiGatewayV2::RouteResponse").values()
        )
    }
    assert answering == {"$default", "heartbeat"}


def test_the_admin_api_is_an_http_api_with_payload_format_2() -> None:
    (api,) = [
        name
        for name, r in resources("AWS::ApiGatewayV2::Api").items()
        if r["Properties"]["ProtocolType"] == "HTTP"
    ]
    (route,) = [
        r
        for r in resources("AWS::ApiGatewayV2::Route").values()
        if references(r["Properties"]["ApiId"]) == {api}
    ]
    assert route["Properties"]["RouteKey"] in {"$default", "ANY /{proxy+}"}
    integration = props(re.findall(r"\$\{(\w+)\}", route["Properties"]["Target"]["Fn::Sub"])[0])
    assert integration["PayloadFormatVersion"] == "2.0"
    function = {function_of(t) for t in branches(integration["IntegrationUri"])}
    assert function == {"AdminFunction"}
    assert props("AdminFunction")["Handler"] == "functions.admin.lambda_handler"


def test_the_stages_throttle_and_log_access() -> None:
    for name, stage in resources("AWS::ApiGatewayV2::Stage").items():
        settings = stage["Properties"]
        assert settings["AutoDeploy"] is True, name
        assert {"ThrottlingRateLimit", "ThrottlingBurstLimit"} <= set(
            settings["DefaultRouteSettings"]
        ), name
        (group,) = references(settings["AccessLogSettings"]["DestinationArn"])
        assert resources()[group]["Type"] == "AWS::Logs::LogGroup", name
        assert "$context.requestId" in settings["AccessLogSettings"]["Format"], name


def test_the_operators_api_throttle_is_a_parameter_apart_from_the_websocket_stage_s() -> None:
    """The operators' API's only throttle is its stage's, shared by every caller (those
    without credentials too): it was written into the template, 50/s and 100 at once."""
    parameters = load_template()["Parameters"]
    for name, stage, default in (
        ("AdminThrottlingRateLimit", "AdminStage", 50),
        ("AdminThrottlingBurstLimit", "AdminStage", 100),
        ("ThrottlingRateLimit", "WebSocketStage", 500),
        ("ThrottlingBurstLimit", "WebSocketStage", 1000),
    ):
        assert parameters[name]["Default"] == default, name
        assert parameters[name]["MinValue"] == 1, name
        setting = name.removeprefix("Admin")
        assert props(stage)["DefaultRouteSettings"][setting] == {"Ref": name}, name


def test_the_schedule_runs_the_sweep() -> None:
    (rule,) = [
        name
        for name, r in resources("AWS::Events::Rule").items()
        if "ScheduleExpression" in r["Properties"]
    ]
    (target,) = props(rule)["Targets"]
    sweep = function_of(target["Arn"])
    assert props(sweep)["Handler"] == "functions.sweep.lambda_handler"
    assert any(
        p["Properties"]["Principal"] == "events.amazonaws.com"
        and references(p["Properties"]["FunctionName"]) == {sweep}
        and references(p["Properties"]["SourceArn"]) == {rule}
        for p in resources("AWS::Lambda::Permission").values()
    )
    # Runs cannot pile up: reserved concurrency, no retries, a one-minute event age.
    assert "ReservedConcurrentExecutions" in props(sweep)
    (config,) = [
        c["Properties"]
        for c in resources("AWS::Lambda::EventInvokeConfig").values()
        if references(c["Properties"]["FunctionName"]) == {sweep}
    ]
    assert config["MaximumRetryAttempts"] == 0
    assert config["MaximumEventAgeInSeconds"] <= 60
    # A run checks for its whole period: for each period its schedule, its setting and a
    # timeout that outlasts the period by less than 20 s agree.
    environment = props(sweep)["Environment"]["Variables"]
    assert environment["TETHER_SWEEP_SCHEDULE_SECONDS"] == {"Ref": "SweepPeriodSeconds"}
    periods = load_template()["Parameters"]["SweepPeriodSeconds"]["AllowedValues"]
    for period in periods:
        chosen = {
            "SweepEvery60": period == "60",
            "SweepEvery120": period == "120",
            "SweepEvery300": period == "300",
        }
        timeout = pick(props(sweep)["Timeout"], chosen)
        assert int(period) < timeout <= int(period) + 20
        minutes = int(period) // 60
        rate = pick(props(rule)["ScheduleExpression"], chosen)
        assert rate == f"rate({minutes} minute{'s' if minutes > 1 else ''})"


def test_the_schedule_may_be_held_off_and_its_alarm_with_it() -> None:
    """While an adopted table's old server still writes, the sweep must not run (tether
    adopt's cut-over); the stack deploys its schedule DISABLED on request, and the alarm
    that the sweep has not run notifies no one then."""
    parameter = load_template()["Parameters"]["SweepScheduleState"]
    assert parameter["Default"] == "ENABLED"
    assert parameter["AllowedValues"] == ["ENABLED", "DISABLED"]
    (rule,) = [
        name
        for name, r in resources("AWS::Events::Rule").items()
        if "ScheduleExpression" in r["Properties"]
    ]
    assert props(rule)["State"] == {"Ref": "SweepScheduleState"}
    assert load_template()["Conditions"]["SweepScheduled"] == {
        "Fn::Equals": [{"Ref": "SweepScheduleState"}, "ENABLED"]
    }
    actions = props("SweepNotRunningAlarm")["ActionsEnabled"]
    assert (pick(actions, {"SweepScheduled": True}), pick(actions, {"SweepScheduled": False})) == (
        True,
        False,
    )


def test_session_ended_goes_to_its_bus_and_subscriber_with_retries_and_dead_letters() -> None:
    (rule,) = [
        name
        for name, r in resources("AWS::Events::Rule").items()
        if "EventBusName" in r["Properties"]
    ]
    (bus,) = references(props(rule)["EventBusName"])
    assert resources()[bus]["Type"] == "AWS::Events::EventBus"
    assert props(rule)["EventPattern"]["detail-type"] == ["SessionEnded"]
    (target,) = props(rule)["Targets"]
    subscriber = function_of(target["Arn"])
    assert props(subscriber)["Handler"] == "functions.session_ended.lambda_handler"
    assert target["RetryPolicy"]["MaximumRetryAttempts"] > 0
    (queue,) = references(target["DeadLetterConfig"]["Arn"])
    assert resources()[queue]["Type"] == "AWS::SQS::Queue"
    # A finalizer that fails: Lambda's own retries, then the same queue.
    (config,) = [
        c["Properties"]
        for c in resources("AWS::Lambda::EventInvokeConfig").values()
        if references(c["Properties"]["FunctionName"]) == {subscriber}
    ]
    assert references(config["DestinationConfig"]["OnFailure"]["Destination"]) == {queue}
    (policy,) = resources("AWS::SQS::QueuePolicy").values()
    (statement,) = policy["Properties"]["PolicyDocument"]["Statement"]
    assert statement["Principal"] == {"Service": "events.amazonaws.com"}
    assert references(statement["Condition"]) == {rule}


def test_functions_run_the_current_runtime_with_their_own_log_group() -> None:
    parameters = load_template()["Parameters"]
    assert parameters["Architecture"]["Default"] == "arm64"
    for name, function in resources(LAMBDA).items():
        settings = function["Properties"]
        assert settings["Runtime"] == "python3.13", name
        assert references(settings["Architectures"]) == {"Architecture"}, name
        assert settings["Handler"].startswith("functions."), name
        assert settings["Handler"].endswith(".lambda_handler"), name
        (group,) = listed(function["DependsOn"])
        group_name = props(group)["LogGroupName"]["Fn::Sub"]
        assert group_name == "/aws/lambda/" + settings["FunctionName"]["Fn::Sub"], name
        assert "RetentionInDays" in props(group), name


def test_snapstart_serves_the_websocket_routes_and_the_admin_api() -> None:
    with_snapstart = {
        name for name, r in resources(LAMBDA).items() if "SnapStart" in r["Properties"]
    }
    assert with_snapstart == {
        "ConnectFunction",
        "DisconnectFunction",
        "MessageFunction",
        "AdminFunction",
    }
    versions = {
        function_of(v["Properties"]["FunctionName"])
        for v in resources("AWS::Lambda::Version").values()
    }
    assert versions == with_snapstart
    for version in resources("AWS::Lambda::Version").values():
        # A new version for every new code or configuration.
        assert "CodeRevision" in references(version["Properties"]["Description"])


def test_the_outputs_name_the_endpoints() -> None:
    outputs = load_template()["Outputs"]
    assert outputs["WebSocketUrl"]["Value"]["Fn::Sub"].startswith("wss://${WebSocketApi}.")
    endpoint = outputs["ConnectionsEndpoint"]["Value"]["Fn::Sub"]
    assert endpoint.startswith("https://${WebSocketApi}.") and endpoint.endswith("/${Stage}")
    assert props("SweepFunction")["Environment"]["Variables"]["TETHER_CONNECTIONS_ENDPOINT"] == {
        "Fn::Sub": endpoint
    }
    assert outputs["AdminUrl"]["Value"]["Fn::Sub"].startswith("https://${AdminApi}.")
    assert references(outputs["EventBusName"]["Value"]) == {"SessionEventBus"}


# --- IAM ------------------------------------------------------------------------------------


def test_one_role_per_function() -> None:
    roles = {name: function_of_role(name) for name in resources(LAMBDA)}
    assert len(set(roles.values())) == len(roles), roles
    for role in roles.values():
        (statement,) = props(role)["AssumeRolePolicyDocument"]["Statement"]
        assert statement["Principal"] == {"Service": "lambda.amazonaws.com"}


def function_of_role(function: str) -> str:
    (role,) = references(props(function)["Role"])
    assert resources()[role]["Type"] == "AWS::IAM::Role"
    return role


def test_no_wildcard_action_and_no_unscoped_resource() -> None:
    seen = 0
    for owner, statement in statements():
        seen += 1
        for action in listed(statement["Action"]):
            assert "*" not in action, f"{owner}: action {action}"
        for resource in listed(statement["Resource"]):
            assert resource != "*", f"{owner}: {statement.get('Sid')} on every resource"
            assert references(resource) or resource.startswith("arn:"), (owner, resource)
    assert seen > 10


def test_manage_connections_only_on_this_apis_connections() -> None:
    allowed = re.compile(
        r"arn:\$\{AWS::Partition\}:execute-api:\$\{AWS::Region\}:\$\{AWS::AccountId\}:"
        r"\$\{WebSocketApi\}/\$\{Stage\}/(GET|POST|DELETE)/@connections/\*"
    )
    holders = set()
    for owner, statement in statements():
        if "execute-api:ManageConnections" in listed(statement["Action"]):
            holders.add(owner)
            for resource in listed(statement["Resource"]):
                assert allowed.fullmatch(resource["Fn::Sub"]), resource
    # The message function closes a connection without a session: DELETE alone.
    assert holders == {"SweepRole", "AdminRole", "MessageRole"}
    for owner, statement in statements():
        if owner == "MessageRole" and "execute-api:ManageConnections" in listed(
            statement["Action"]
        ):
            assert [r["Fn::Sub"].split("/")[-3] for r in listed(statement["Resource"])] == [
                "DELETE"
            ]


def test_put_events_only_on_this_bus() -> None:
    holders = set()
    for owner, statement in statements():
        if "events:PutEvents" in listed(statement["Action"]):
            holders.add(owner)
            assert listed(statement["Resource"]) == [{"Fn::GetAtt": ["SessionEventBus", "Arn"]}]
    assert holders == {"DisconnectRole", "SweepRole", "AdminRole"}


def test_secrets_readable_only_by_their_exact_arns() -> None:
    readers = {"secretsmanager:GetSecretValue", "ssm:GetParameter"}
    for owner, statement in statements():
        if readers & set(listed(statement["Action"])):
            for resource in listed(statement["Resource"]):
                assert references(resource) <= SECRET_PARAMETERS, (owner, resource)
    for function in resources(LAMBDA):
        role = function_of_role(function)
        readable = {
            name
            for s in role_statements(role)
            if readers & set(listed(s["Action"]))
            for name in references(s["Resource"])
        }
        assert "DatabaseSecret" in readable, function
        assert readable <= SECRET_PARAMETERS
    for role in ("ConnectRole", "AdminRole"):  # both verify tokens
        assert "JwtSecret" in {
            n for s in role_statements(role) for n in references(s["Resource"])
        }, role
    assert "OperatorKeySecret" in {
        n for s in role_statements("AdminRole") for n in references(s["Resource"])
    }


def test_operator_tokens_are_verified_with_the_settings_connect_uses() -> None:
    # The operators' API accepts the same tokens as $connect: same keys, issuer, audience.
    token_settings = {
        "SUPABASE_URL",
        "TETHER_JWKS_URL",
        "TETHER_JWT_ISSUER",
        "TETHER_JWT_AUDIENCE",
        "TETHER_JWT_SECRET",
        # How the signing keys are fetched: without these a deployed stack could not
        # set them at all.
        "TETHER_JWKS_TIMEOUT_SECONDS",
        "TETHER_JWKS_CACHE_SECONDS",
        "TETHER_JWKS_REFRESH_COOLDOWN_SECONDS",
        # The clock skew allowed, and the roles whose tokens verify (an operator's claim
        # is read on a token of an allowed role).
        "TETHER_JWT_LEEWAY_SECONDS",
        "TETHER_ALLOWED_ROLES",
    }

    def token_environment(function: str) -> dict[str, Any]:
        variables = props(function)["Environment"]["Variables"]
        return {key: variables.get(key) for key in token_settings}

    assert token_environment("AdminFunction") == token_environment("ConnectFunction")
    assert all(token_environment("ConnectFunction").values())


def test_who_may_connect_and_who_is_an_operator_are_the_stack_s_to_say() -> None:
    """Without parameters for them, every deployed stack let in `authenticated` tokens
    alone and took the default operators' roles and claim, whatever the team's."""
    from tether.deploy.stack import parameter_constraints  # noqa: PLC0415
    from tether.settings import Settings  # noqa: PLC0415

    parameters = load_template()["Parameters"]
    connect = props("ConnectFunction")["Environment"]["Variables"]
    admin = props("AdminFunction")["Environment"]["Variables"]
    assert connect["TETHER_ALLOWED_ROLES"] == {"Ref": "AllowedRoles"}
    for setting, parameter in (
        ("allowed_roles", "AllowedRoles"),
        ("operator_roles", "OperatorRoles"),
        ("operator_claim", "OperatorClaim"),
    ):
        assert admin[f"TETHER_{setting.upper()}"] == {"Ref": parameter}
        assert parameters[parameter]["Default"] == Settings.model_fields[setting].default
    # Roles the functions would refuse (none named) are refused by the template.
    constraint = parameter_constraints(template_text())["AllowedRoles"]
    for roles in ("authenticated", "authenticated,anon", " anon ", "a, b", "", ",", " , ", " "):
        assert (constraint.refusal(roles) is None) == _settings_take("allowed_roles", roles), roles


def _probes(low: float, high: float) -> list[float]:
    """Values at, just inside and just outside each bound, and between them."""
    steps = (1.0, 0.001)
    return sorted(
        {low, high, (low + high) / 2, *(low - d for d in steps), *(low + d for d in steps)}
        | {*(high - d for d in steps), *(high + d for d in steps)}
    )


def _settings_take(name: str, value: object) -> bool:
    from pydantic import ValidationError  # noqa: PLC0415

    from tether.settings import Settings  # noqa: PLC0415

    try:
        Settings.model_validate({name: value})
    except ValidationError as exc:
        # Its own bounds only: how it must agree with others is deploy's check.
        return not any(error["loc"] == (name,) for error in exc.errors())
    return True


def _seconds_parameters() -> dict[str, str]:
    """Setting -> the parameter every function that sets it takes it from."""
    found: dict[str, set[str]] = {}
    for function in resources(LAMBDA):
        variables = props(function).get("Environment", {}).get("Variables", {})
        for variable, value in variables.items():
            if variable.startswith("TETHER_") and variable.endswith("_SECONDS"):
                found.setdefault(variable.removeprefix("TETHER_").lower(), set()).add(value["Ref"])
    assert all(len(parameters) == 1 for parameters in found.values()), found
    return {setting: parameters.pop() for setting, parameters in found.items()}


# Bounds the template states exactly as the settings do (others are narrower: whole
# seconds, a few digits).
EXACT_BOUNDS = {
    "jwks_timeout_seconds",
    "jwks_cache_seconds",
    "jwks_refresh_cooldown_seconds",
    "jwt_leeway_seconds",
}


@pytest.mark.parametrize("setting", sorted(set(_seconds_parameters()) | EXACT_BOUNDS))
def test_a_duration_the_template_takes_is_one_the_functions_take(setting: str) -> None:
    """`tether deploy --parameter` and the console check the template's bounds; a value
    past them the functions would refuse, at every invocation, once deployed."""
    from tether.deploy.stack import parameter_constraints  # noqa: PLC0415
    from tether.settings import Settings  # noqa: PLC0415

    name = _seconds_parameters()[setting]
    constraint = parameter_constraints(template_text())[name]
    spec = load_template()["Parameters"][name]
    assert float(spec["Default"]) == Settings.model_fields[setting].default, name
    schema = Settings.model_json_schema(by_alias=False)["properties"][setting]
    (bounds,) = [part for part in schema.get("anyOf", [schema]) if part["type"] == "number"]
    low = float(bounds.get("minimum", bounds.get("exclusiveMinimum")))
    high = float(bounds["maximum"])
    for value in _probes(low, high):
        shown = f"{value:.3f}".rstrip("0").rstrip(".")
        template_takes = constraint.refusal(shown) is None
        if template_takes or setting in EXACT_BOUNDS:
            assert template_takes == _settings_take(setting, float(shown)), (name, shown)


def test_each_function_writes_only_its_own_logs() -> None:
    for function in resources(LAMBDA):
        role = function_of_role(function)
        (group,) = listed(resources()[function]["DependsOn"])
        for statement in role_statements(role):
            if any(action.startswith("logs:") for action in listed(statement["Action"])):
                assert references(statement["Resource"]) == {group}, function
        assert "logs:PutLogEvents" in actions_of(role)
        assert not any(a.startswith("cloudwatch:") for a in actions_of(role))  # EMF: logs


@pytest.mark.parametrize(
    ("value", "reference"),
    [
        ("arn:aws:secretsmanager:us-east-1:123456789012:secret:tether/db-AbCdEf", True),
        ("arn:aws-us-gov:secretsmanager:us-gov-west-1:123456789012:secret:db-AbCdEf", True),
        ("arn:aws-cn:ssm:cn-north-1:123456789012:parameter/tether/db", True),
        ("arn:aws-iso-b:ssm:us-isob-east-1:123456789012:parameter/tether/db", True),
        ("arn:awsx:ssm:us-east-1:123456789012:parameter/tether/db", False),
        ("arn:aws:s3:::bucket", False),
        ("xarn:aws:ssm:us-east-1:123456789012:parameter/tether/db", False),
    ],
)
def test_the_template_accepts_as_a_secret_exactly_what_the_functions_read_as_one(
    value: str, reference: bool
) -> None:
    """A parameter the template accepts reaches the functions as a reference they must
    resolve: were the two to disagree, an ARN would be taken for the secret's value."""
    pattern = load_template()["Parameters"]["DatabaseSecret"]["AllowedPattern"]
    assert bool(re.fullmatch(pattern, value)) is reference
    assert (is_secrets_manager_arn(value) or is_ssm_reference(value)) is reference
    if not reference:  # a plain value is the value: no AWS call is made for it
        assert resolve_secret(value, None) == value


def test_secrets_reach_the_functions_as_references_never_values() -> None:
    parameters = load_template()["Parameters"]
    for name in SECRET_PARAMETERS:
        assert parameters[name]["AllowedPattern"].lstrip("^(").startswith("arn:aws"), name
    for function, resource in resources(LAMBDA).items():
        variables = resource["Properties"]["Environment"]["Variables"]
        for key, value in variables.items():
            if key in SECRET_SETTINGS:
                assert references(value) <= SECRET_PARAMETERS | {
                    "UsePostgres",
                    "UseSupabase",
                    "HasJwtSecret",
                    "HasOperatorKey",
                }, (function, key)
        assert "TETHER_DATABASE_URL" in variables or "TETHER_SUPABASE_SERVICE_KEY" in variables
    # No parameter takes a secret's value itself.
    for name, parameter in parameters.items():
        assert parameter.get("NoEcho") is None, name
        assert not re.search(r"(Url|Key|Password)$", name) or name in {
            "SupabaseUrl",
            "JwksUrl",
            "BundleKey",
        }, name


# --- alarms ---------------------------------------------------------------------------------


def test_the_orphan_alarm_watches_the_sweeps_metric_above_five() -> None:
    alarm = props("OrphanedSessionsAlarm")
    assert alarm["MetricName"] == "OrphanedSessions"
    assert (
        alarm["Namespace"]
        == props("SweepFunction")["Environment"]["Variables"]["TETHER_METRICS_NAMESPACE"]
    )
    assert alarm["ComparisonOperator"] == "GreaterThanThreshold"
    assert references(alarm["Threshold"]) == {"OrphanAlarmThreshold"}
    assert load_template()["Parameters"]["OrphanAlarmThreshold"]["Default"] == 5
    assert references(alarm["AlarmActions"]) == {"AlarmTopic"}


def test_sweep_errors_and_dead_letters_raise_alarms() -> None:
    errors = props("SweepErrorsAlarm")
    assert (errors["Namespace"], errors["MetricName"]) == ("AWS/Lambda", "Errors")
    assert references(errors["Dimensions"]) == {"SweepFunction"}
    dead = props("DeadLetterQueueAlarm")
    assert (dead["Namespace"], dead["MetricName"]) == (
        "AWS/SQS",
        "ApproximateNumberOfMessagesVisible",
    )
    assert references(dead["Dimensions"]) == {"SessionEndedDeadLetterQueue"}
    assert dead["Threshold"] == 0 and dead["ComparisonOperator"] == "GreaterThanThreshold"


def test_cloudwatch_may_publish_the_alarms_to_their_encrypted_topic() -> None:
    """CloudWatch publishes to an encrypted topic only with a key whose policy lets it;
    the AWS managed key of SNS (alias/aws/sns) cannot say so, and no alarm would reach
    anyone."""
    key_id = props("AlarmTopic")["KmsMasterKeyId"]
    assert isinstance(key_id, dict), f"the alarm topic is encrypted with {key_id!r}"
    (key,) = references(key_id)
    assert resources()[key]["Type"] == "AWS::KMS::Key"
    assert props(key)["EnableKeyRotation"] is True
    policy = props(key)["KeyPolicy"]["Statement"]
    cloudwatch = [
        s
        for s in policy
        if s["Effect"] == "Allow"
        and listed(s["Principal"].get("Service")) == ["cloudwatch.amazonaws.com"]
    ]
    assert len(cloudwatch) == 1
    assert set(listed(cloudwatch[0]["Action"])) == {"kms:Decrypt", "kms:GenerateDataKey*"}
    # Only on behalf of this account's alarms.
    assert cloudwatch[0]["Condition"] == {
        "StringEquals": {"aws:SourceAccount": {"Ref": "AWS::AccountId"}}
    }
    # Every alarm of the template notifies through that topic.
    for name, alarm in resources("AWS::CloudWatch::Alarm").items():
        assert references(alarm["Properties"]["AlarmActions"]) == {"AlarmTopic"}, name


def _sweep_metrics(capsys: pytest.CaptureFixture[str]) -> dict[str, set[frozenset[str]]]:
    """The metrics a sweep run emits, read from its EMF lines: each name with the
    dimension sets it is emitted with (an alarm matches a metric's dimensions exactly)."""
    from tether.sweep import SweepReport  # noqa: PLC0415
    from tether.sweep_and_admin_models import SessionHealth  # noqa: PLC0415
    from tether.sweep_metrics import emit_sweep_metrics  # noqa: PLC0415

    report = SweepReport()
    report.ended_by_reason["idle_timeout"] = 1
    report.health = SessionHealth(
        active_sessions=1, oldest_active_start=None, orphaned_sessions=0, unannounced=0
    )
    capsys.readouterr()
    emit_sweep_metrics(report)
    emitted: dict[str, set[frozenset[str]]] = {}
    for line in capsys.readouterr().out.splitlines():
        for directive in json.loads(line)["_aws"]["CloudWatchMetrics"]:
            for metric in directive["Metrics"]:
                for dimension_set in directive["Dimensions"]:
                    emitted.setdefault(metric["Name"], set()).add(frozenset(dimension_set))
    return emitted


def test_failing_checks_refused_announcements_and_bugs_raise_alarms(
    capsys: pytest.CaptureFixture[str],
) -> None:
    emitted = _sweep_metrics(capsys)
    namespace = props("SweepFunction")["Environment"]["Variables"]["TETHER_METRICS_NAMESPACE"]
    for alarm_id, metric, periods in (
        ("SweepChecksFailingAlarm", "SweepChecksFailed", 2),
        ("AnnouncementsFailingAlarm", "AnnouncementsFailed", 3),
        ("SweepBugsAlarm", "SweepBugs", 1),
    ):
        alarm = props(alarm_id)
        assert alarm["MetricName"] == metric
        assert metric in emitted, f"{alarm_id} watches {metric}, which the sweep never emits"
        assert alarm["Namespace"] == namespace
        assert (alarm["Statistic"], alarm["Threshold"]) == ("Sum", 1)
        assert alarm["ComparisonOperator"] == "GreaterThanOrEqualToThreshold"
        # Persistent, not one blip: every period of the window must breach.
        assert alarm["EvaluationPeriods"] == alarm["DatapointsToAlarm"] == periods
        assert alarm["TreatMissingData"] == "notBreaching"
        assert references(alarm["AlarmActions"]) == {"AlarmTopic"}


def test_every_alarm_on_tether_s_namespace_watches_a_metric_the_sweep_emits(
    capsys: pytest.CaptureFixture[str],
) -> None:
    emitted = _sweep_metrics(capsys)
    namespace = props("SweepFunction")["Environment"]["Variables"]["TETHER_METRICS_NAMESPACE"]
    watched = {
        alarm_id: (
            alarm["Properties"]["MetricName"],
            frozenset(d["Name"] for d in alarm["Properties"].get("Dimensions", [])),
        )
        for alarm_id, alarm in resources("AWS::CloudWatch::Alarm").items()
        if alarm["Properties"]["Namespace"] == namespace
    }
    assert len(watched) >= 3
    # A name the sweep never emits, or dimensions it never emits it with: never fires.
    never_fire = {
        alarm_id: (name, sorted(dimensions))
        for alarm_id, (name, dimensions) in watched.items()
        if dimensions not in emitted.get(name, set())
    }
    assert never_fire == {}


@pytest.mark.parametrize("function", sorted(handlers()))
def test_every_handler_names_a_module_of_functions(function: str) -> None:
    module, attribute = handlers()[function].rsplit(".", 1)
    path = ROOT / Path(*module.split(".")).with_suffix(".py")
    assert path.is_file(), f"{function}: {path} missing"
    assert callable(getattr(importlib.import_module(module), attribute, None)), function


def test_tether_deploy_reads_every_parameter_constraint_as_cloudformation_does() -> None:
    """`tether deploy` checks values against the template before it builds; its reading
    of the Parameters section must be the template's, parameter for parameter."""
    from tether.deploy.stack import parameter_constraints  # noqa: PLC0415

    read = parameter_constraints(template_text())
    declared = load_template()["Parameters"]
    assert set(read) == set(declared)
    for name, spec in declared.items():
        constraint = read[name]
        assert constraint.pattern == spec.get("AllowedPattern"), name
        allowed = spec.get("AllowedValues")
        assert constraint.allowed == (tuple(str(v) for v in allowed) if allowed else None), name
        for field, key in (("minimum", "MinValue"), ("maximum", "MaxValue")):
            bound = spec.get(key)
            assert getattr(constraint, field) == (None if bound is None else float(bound)), name
        assert constraint.number == (spec["Type"] == "Number"), name
        assert constraint.described == spec.get("ConstraintDescription"), name


def test_tether_deploy_takes_as_a_number_only_what_cloudformation_reads_as_one() -> None:
    """Python's float() reads nan, inf, 1_000, padding and other scripts' digits as
    numbers: a MemorySize of nan passed every bound and failed only once deployed."""
    from tether.deploy.stack import parameter_constraints  # noqa: PLC0415

    read = parameter_constraints(template_text())
    numbers = {
        name: spec
        for name, spec in load_template()["Parameters"].items()
        if spec["Type"] == "Number"
    }
    assert numbers
    for name, spec in numbers.items():
        assert read[name].refusal(str(spec["Default"])) is None, name
        for value in (
            "nan",
            "inf",
            "-inf",
            "1_000",
            " 512",
            "512 ",
            "\u0665\u0661\u0662",
            "1e3",
            "",
        ):
            assert read[name].refusal(value) is not None, (name, value)


def test_the_readme_says_how_often_a_failing_finalizer_is_retried() -> None:
    """The README said a failing finalizer was left to EventBridge's retry policy (185
    tries over a day): EventBridge hands the event to Lambda asynchronously, so Lambda's
    own two retries are all a finalizer gets before the dead-letter queue."""
    invoke = resources("AWS::Lambda::EventInvokeConfig")["SessionEndedInvokeConfig"]
    assert invoke["Properties"]["MaximumRetryAttempts"] == 2
    readme = " ".join((ROOT / "README.md").read_text().split())
    assert "a finalizer that fails is retried by Lambda twice" in readme
    assert "dead-letter queue for you to redrive it" in readme
