"""The one way to declare an lfr Lambda function: `lfr_function()`.

Every function runs the same code asset on the same layer, runtime and architecture (`lambda_target`),
logs to its own encrypted log group, carries the same static-check reasons, and takes its environment
from its env model (functions/models/env.py): the caller gives a value for each field by field name,
Powertools' settings are added here, and a field left out or a name the model does not have fails the
synth, so a function never starts without a variable its handler requires.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from aws_cdk import Duration, RemovalPolicy
from aws_cdk import aws_kms as kms
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_logs as logs
from constructs import Construct

from functions.models.env import FunctionEnv
from infra.constants import METRICS_NAMESPACE, SERVICE_NAME
from infra.constructs.nag import acknowledge, skip_static_checks
from lambda_target import ABI_TAG, LAMBDA_ARCHITECTURE, LAMBDA_RUNTIME_NAME

LAMBDA_RUNTIME = lambda_.Runtime(LAMBDA_RUNTIME_NAME, lambda_.RuntimeFamily.PYTHON)
LAMBDA_ARCH = {"x86_64": lambda_.Architecture.X86_64, "arm64": lambda_.Architecture.ARM_64}[LAMBDA_ARCHITECTURE]
LOG_RETENTION = logs.RetentionDays.ONE_YEAR
LOG_LEVEL = "INFO"

# CDK's DependsOn from a resource to its role beside the GetAtt of that role (cfn-lint W3005).
CDK_ROLE_DEPENDS_ON = (
    "CDK adds an explicit DependsOn on the execution role (and its default policy) so the policy exists"
    " before the first invocation; the duplicate of the GetAtt dependency is harmless."
)
# checkov/cfn-lint findings on every lfr function that do not apply, with why (infra/constructs/nag.py).
LAMBDA_CHECK_SKIPS = {
    "W3005": CDK_ROLE_DEPENDS_ON,
    "CKV_AWS_116": "No function is invoked asynchronously: match is an SQS event source (its queue has the"
    " DLQ), build_watchlist and session are synchronous Step Functions tasks, the officers' API is"
    " synchronous behind API Gateway; a function DLQ would never receive anything.",
    "CKV_AWS_117": "The functions call only AWS APIs (S3, DynamoDB, SQS, SNS, Secrets Manager, KMS) over TLS"
    " with IAM; there is no private resource to reach, and a VPC would add NAT or endpoints and cold-start"
    " latency to the live alert path for no isolation gain.",
    "CKV_AWS_173": "Environment variables hold only resource names, ARNs and settings (no secret: the"
    " signing key is read from Secrets Manager at run time); Lambda encrypts them at rest with its own key.",
}


@dataclass(frozen=True)
class LambdaCode:
    """What every function runs: the core layer (native deps, lfr_core, models) and the code asset."""

    layer: lambda_.ILayerVersion
    code: lambda_.Code


def lambda_code(scope: Construct, layer_dir: Path, code_dir: Path) -> LambdaCode:
    for d in (layer_dir, code_dir):
        if not d.is_dir():
            raise FileNotFoundError(f"{d} missing: run `python -m layers.build` before synth")
    layer = lambda_.LayerVersion(
        scope,
        "CoreLayer",
        code=lambda_.Code.from_asset(str(layer_dir)),
        compatible_runtimes=[LAMBDA_RUNTIME],
        compatible_architectures=[LAMBDA_ARCH],
        description="numpy, onnxruntime, pillow, pydantic, powertools, lfr_core; models in /opt/models",
        removal_policy=RemovalPolicy.DESTROY,
    )
    return LambdaCode(layer=layer, code=lambda_.Code.from_asset(str(code_dir)))


@dataclass(frozen=True)
class FunctionSpec:
    """A function's handler and sizing (the figures and their reasons: infra/constants.py)."""

    handler: str
    memory_mb: int
    timeout_s: int
    reserved_concurrency: int
    description: str


def function_environment(env_model: type[FunctionEnv], values: Mapping[str, str]) -> dict[str, str]:
    """The environment variables of a function whose handler reads `env_model`, from a value per field
    name (Powertools' fields are filled here). Raises ValueError naming any field missing or unknown."""
    given = {
        "service_name": SERVICE_NAME,
        "metrics_namespace": METRICS_NAMESPACE,
        "log_level": LOG_LEVEL,
        **values,
    }
    fields = env_model.model_fields
    unknown = sorted(set(given) - set(fields))
    missing = sorted(name for name, f in fields.items() if f.is_required() and name not in given)
    if unknown or missing:
        raise ValueError(f"{env_model.__name__}: missing {missing}, not in the model {unknown}")
    env_model.model_validate(given)  # each value's own constraints (non-empty)
    return {str(f.alias): given[name] for name, f in fields.items() if name in given}


def lfr_function(
    scope: Construct,
    construct_id: str,
    *,
    spec: FunctionSpec,
    env_model: type[FunctionEnv],
    env: Mapping[str, str],
    code: LambdaCode,
    key: kms.IKey,
    log_group_id: str | None = None,
) -> lambda_.Function:
    """A function under `scope` with its log group (`<id>Logs` unless given) encrypted with `key`."""
    environment = function_environment(env_model, env)
    log_group = logs.LogGroup(
        scope, log_group_id or f"{construct_id}Logs", retention=LOG_RETENTION,
        removal_policy=RemovalPolicy.DESTROY, encryption_key=key,
    )
    fn = lambda_.Function(
        scope,
        construct_id,
        runtime=LAMBDA_RUNTIME,
        architecture=LAMBDA_ARCH,
        handler=spec.handler,
        code=code.code,
        layers=[code.layer],
        memory_size=spec.memory_mb,
        timeout=Duration.seconds(spec.timeout_s),
        environment=environment,
        log_group=log_group,
        reserved_concurrent_executions=spec.reserved_concurrency,
        description=spec.description,
    )
    skip_static_checks(fn, LAMBDA_CHECK_SKIPS)
    acknowledge(
        fn,
        "AwsSolutions-L1",
        f"Pinned to {LAMBDA_RUNTIME_NAME}: the layer's native wheels ({ABI_TAG} manylinux {LAMBDA_ARCHITECTURE})"
        " are built for it.",
    )
    acknowledge(
        fn,
        "AwsSolutions-IAM4",
        "AWSLambdaBasicExecutionRole only allows writing the function's own CloudWatch logs.",
        applies_to=["Policy::arn:<AWS::Partition>:iam::aws:policy/service-role/AWSLambdaBasicExecutionRole"],
    )
    return fn
