"""Resources moto's CloudFormation does not create, created through their own (moto) APIs.

moto's CloudFormation skips `AWS::SecretsManager::Secret`, `AWS::Cognito::*` and some
`AWS::ApiGateway::*` types, and a `Ref`/`Fn::GetAtt` to a skipped resource resolves to
nothing (an IAM statement without resources, an env var without a value). Before the stack
is created, each such resource is created here through the service API that moto does
emulate (Secrets Manager, Cognito user pools) and every reference to it in the template is
replaced by its real identifier, so the functions get a real secret ARN and the CLI real
outputs. API Gateway stages and authorizers are replaced by what the local API gateway needs
(the stage name; authorizers are not evaluated locally: their methods answer 401).
"""

from __future__ import annotations

import copy
import secrets
import string
from collections.abc import Callable
from typing import Any

LOCAL_AUTHORIZER_ID = "local-authorizer-not-emulated"


def _secret_value(props: dict[str, Any]) -> str:
    gen = props.get("GenerateSecretString") or {}
    length = int(gen.get("PasswordLength", 32))
    alphabet = string.ascii_letters + string.digits
    if not gen.get("ExcludePunctuation"):
        alphabet += "!#$%&()*+,-.:;<=>?@[]^_{|}~"
    return "".join(secrets.choice(alphabet) for _ in range(length))


def _substitute(node: Any, values: dict[str, dict[str, Any]]) -> Any:
    if isinstance(node, dict):
        if set(node) == {"Ref"} and node["Ref"] in values:
            return values[node["Ref"]]["Ref"]
        if set(node) == {"Fn::GetAtt"}:
            target = node["Fn::GetAtt"]
            lid, attr = (target.split(".", 1) if isinstance(target, str) else target)
            if lid in values:
                return values[lid].get(attr, values[lid]["Ref"])
        return {k: _substitute(v, values) for k, v in node.items()}
    if isinstance(node, list):
        return [_substitute(v, values) for v in node]
    return node


def materialise_unsupported(template: dict[str, Any], client: Callable[[str], Any], stack_name: str) -> dict[str, Any]:
    """A copy of the template in which moto-unsupported resources above are created and referenced by value."""
    tpl = copy.deepcopy(template)
    resources: dict[str, Any] = tpl.get("Resources", {})
    values: dict[str, dict[str, Any]] = {}

    def take(types: tuple[str, ...]) -> list[tuple[str, dict[str, Any]]]:
        found = [(lid, r) for lid, r in resources.items() if r.get("Type") in types]
        for lid, _ in found:
            del resources[lid]
        return found

    for lid, res in take(("AWS::SecretsManager::Secret",)):
        props = res.get("Properties", {})
        arn = client("secretsmanager").create_secret(
            Name=f"{stack_name}-{lid}", SecretString=_secret_value(props), Description=props.get("Description", "")
        )["ARN"]
        values[lid] = {"Ref": arn, "Arn": arn}
    for lid, _res in take(("AWS::Cognito::UserPool",)):
        pool = client("cognito-idp").create_user_pool(PoolName=f"{stack_name}-{lid}")["UserPool"]
        values[lid] = {"Ref": pool["Id"], "Arn": pool["Arn"], "ProviderName": pool["Id"], "UserPoolId": pool["Id"]}
    for lid, res in take(("AWS::Cognito::UserPoolClient",)):
        props = _substitute(res.get("Properties", {}), values)
        app = client("cognito-idp").create_user_pool_client(
            UserPoolId=props["UserPoolId"], ClientName=f"{stack_name}-{lid}", GenerateSecret=False
        )["UserPoolClient"]
        values[lid] = {"Ref": app["ClientId"], "ClientId": app["ClientId"]}
    for lid, res in take(("AWS::ApiGateway::Stage",)):
        values[lid] = {"Ref": res.get("Properties", {}).get("StageName", "prod")}
    for lid, _ in take(("AWS::ApiGateway::Authorizer",)):
        values[lid] = {"Ref": LOCAL_AUTHORIZER_ID}
    for lid, _ in take(("AWS::ApiGateway::Account", "AWS::ApiGateway::RequestValidator")):
        values[lid] = {"Ref": f"local-{lid}"}

    out: dict[str, Any] = _substitute(tpl, values)
    for res in out.get("Resources", {}).values():
        deps = res.get("DependsOn")
        if isinstance(deps, list):
            res["DependsOn"] = [d for d in deps if d not in values]
            if not res["DependsOn"]:
                del res["DependsOn"]
        elif isinstance(deps, str) and deps in values:
            del res["DependsOn"]
    return out


# -- CloudWatch alarms: moto's CloudFormation skips AWS::CloudWatch::Alarm, its CloudWatch API does not.

ALARM_TYPE = "AWS::CloudWatch::Alarm"
_ALARM_PROPS = (
    "AlarmName", "AlarmDescription", "MetricName", "Namespace", "Statistic", "Period", "EvaluationPeriods",
    "Threshold", "ComparisonOperator", "TreatMissingData", "AlarmActions", "OKActions", "Dimensions",
    "DatapointsToAlarm", "Unit",
)


def take_alarms(template: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Remove the alarms from `template` (before create_stack); returns them by logical id."""
    resources: dict[str, Any] = template.get("Resources", {})
    alarms = {lid: r for lid, r in resources.items() if r.get("Type") == ALARM_TYPE}
    for lid in alarms:
        del resources[lid]
    return alarms


def _resolve(node: Any, physical: dict[str, str]) -> Any:
    """Ref / Fn::GetAtt (QueueName, Arn) / Fn::Join against the created stack's physical ids."""
    if isinstance(node, dict):
        if set(node) == {"Ref"}:
            return physical[node["Ref"]]
        if set(node) == {"Fn::GetAtt"}:
            target = node["Fn::GetAtt"]
            lid, attr = target.split(".", 1) if isinstance(target, str) else target
            pid = physical[lid]
            if attr == "QueueName":  # an SQS queue's physical id is its URL
                return pid.rstrip("/").rsplit("/", 1)[-1]
            if attr == "Arn" and pid.startswith("arn:"):
                return pid
            raise ValueError(f"cannot resolve Fn::GetAtt {lid}.{attr} for a local alarm")
        if set(node) == {"Fn::Join"}:
            sep, parts = node["Fn::Join"]
            return sep.join(str(_resolve(p, physical)) for p in parts)
        return {k: _resolve(v, physical) for k, v in node.items()}
    if isinstance(node, list):
        return [_resolve(v, physical) for v in node]
    return node


def create_alarms(
    alarms: dict[str, dict[str, Any]], client: Callable[[str], Any], physical: dict[str, str], stack_name: str
) -> list[str]:
    """Create each alarm through CloudWatch's PutMetricAlarm, as CloudFormation would; returns the names.

    moto stores alarms and their states but does not evaluate them from metric data: locally an
    alarm stays INSUFFICIENT_DATA unless something sets its state (the metrics themselves are real).
    """
    cw = client("cloudwatch")
    names: list[str] = []
    for lid, res in sorted(alarms.items()):
        props = _resolve({k: v for k, v in res.get("Properties", {}).items() if k in _ALARM_PROPS}, physical)
        props.setdefault("AlarmName", f"{stack_name}-{lid}")
        props["Threshold"] = float(props["Threshold"])
        for k in ("Period", "EvaluationPeriods", "DatapointsToAlarm"):
            if k in props:
                props[k] = int(props[k])
        cw.put_metric_alarm(**props)
        names.append(props["AlarmName"])
    return names
