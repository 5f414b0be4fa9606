"""Lambda: the shared core layer (native deps, lfr_core, models) and the three functions."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aws_cdk import Duration, RemovalPolicy
from aws_cdk import aws_dynamodb as ddb
from aws_cdk import aws_iam as iam
from aws_cdk import aws_kms as kms
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_lambda_event_sources as sources
from aws_cdk import aws_logs as logs
from aws_cdk import aws_s3 as s3
from aws_cdk import aws_sns as sns
from aws_cdk import aws_sqs as sqs
from cdk_nag import RegexAppliesTo
from constructs import Construct

from infra.constants import (
    BUILD_MEMORY_MB,
    BUILD_RESERVED_CONCURRENCY,
    BUILD_TIMEOUT_S,
    ENV_ALERT_TOPIC_ARN,
    ENV_ALERTS_BUCKET,
    ENV_ALERTS_TABLE,
    ENV_DEPLOYMENTS_TABLE,
    ENV_MODEL_DIR,
    ENV_WATCHLIST_BUCKET,
    MATCH_BATCH_SIZE,
    MATCH_BATCHING_WINDOW_S,
    MATCH_MAX_CONCURRENCY,
    MATCH_MEMORY_MB,
    MATCH_RESERVED_CONCURRENCY,
    MATCH_TIMEOUT_S,
    METRICS_NAMESPACE,
    SERVICE_NAME,
    SESSION_RESERVED_CONCURRENCY,
    SESSION_TIMEOUT_S,
)
from infra.constructs.nag import acknowledge, skip_static_checks

ROOT = Path(__file__).resolve().parents[2]
CORE_LAYER_DIR = ROOT / "layers" / "build" / "core"
CODE_ASSET_DIR = ROOT / "build" / "lambda"

HANDLER_MATCH = "functions.handlers.match.handler"
HANDLER_BUILD_WATCHLIST = "functions.handlers.build_watchlist.handler"
HANDLER_SESSION = "functions.handlers.session.handler"

LAYER_MODEL_DIR = "/opt/models"  # the layer's models/ directory, as Lambda mounts it
SESSION_MEMORY_MB = 512  # record updates and S3 listing only: no model
LOG_RETENTION = logs.RetentionDays.ONE_YEAR
# Deployment ids (lfr_core.contracts.DeploymentId) are the only path segment under these.
DEPLOYMENT_OBJECTS = "deployments/*"
ALERT_OBJECTS = "alerts/*"

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
class FunctionDeps:
    deployments: ddb.ITable
    alerts_table: ddb.ITable
    watchlist: s3.IBucket
    alerts_bucket: s3.IBucket
    topic: sns.ITopic
    crop_queue: sqs.IQueue
    key: kms.IKey  # encrypts both buckets, the queues, the topic, the tables and the log groups


class Functions(Construct):
    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        deps: FunctionDeps,
        layer_dir: Path = CORE_LAYER_DIR,
        code_dir: Path = CODE_ASSET_DIR,
    ) -> None:
        super().__init__(scope, construct_id)
        for d in (layer_dir, code_dir):
            if not d.is_dir():
                raise FileNotFoundError(f"{d} missing: run `python -m layers.build` before synth")

        self.layer = lambda_.LayerVersion(
            self,
            "CoreLayer",
            code=lambda_.Code.from_asset(str(layer_dir)),
            compatible_runtimes=[lambda_.Runtime.PYTHON_3_12],
            compatible_architectures=[lambda_.Architecture.X86_64],
            description="numpy, onnxruntime, pillow, pydantic, powertools, lfr_core; models in /opt/models",
            removal_policy=RemovalPolicy.DESTROY,
        )
        code = lambda_.Code.from_asset(str(code_dir))
        environment = {
            ENV_DEPLOYMENTS_TABLE: deps.deployments.table_name,
            ENV_ALERTS_TABLE: deps.alerts_table.table_name,
            ENV_WATCHLIST_BUCKET: deps.watchlist.bucket_name,
            ENV_ALERTS_BUCKET: deps.alerts_bucket.bucket_name,
            ENV_ALERT_TOPIC_ARN: deps.topic.topic_arn,
            ENV_MODEL_DIR: LAYER_MODEL_DIR,
            "POWERTOOLS_SERVICE_NAME": SERVICE_NAME,
            "POWERTOOLS_METRICS_NAMESPACE": METRICS_NAMESPACE,
            "LOG_LEVEL": "INFO",
        }

        def fn(
            name: str, handler: str, memory_mb: int, timeout_s: int, reserved: int, description: str
        ) -> lambda_.Function:
            log_group = logs.LogGroup(
                self, f"{name}Logs", retention=LOG_RETENTION, removal_policy=RemovalPolicy.DESTROY,
                encryption_key=deps.key,
            )
            f = lambda_.Function(
                self,
                name,
                runtime=lambda_.Runtime.PYTHON_3_12,
                architecture=lambda_.Architecture.X86_64,
                handler=handler,
                code=code,
                layers=[self.layer],
                memory_size=memory_mb,
                timeout=Duration.seconds(timeout_s),
                environment=environment,
                log_group=log_group,
                reserved_concurrent_executions=reserved,
                description=description,
            )
            skip_static_checks(f, LAMBDA_CHECK_SKIPS)
            acknowledge(
                f,
                "AwsSolutions-L1",
                "Pinned to python3.12: the layer's native wheels (cp312 manylinux x86_64) are built for it.",
            )
            acknowledge(
                f,
                "AwsSolutions-IAM4",
                "AWSLambdaBasicExecutionRole only allows writing the function's own CloudWatch logs.",
                applies_to=["Policy::arn:<AWS::Partition>:iam::aws:policy/service-role/AWSLambdaBasicExecutionRole"],
            )
            return f

        self.match = fn(
            "Match", HANDLER_MATCH, MATCH_MEMORY_MB, MATCH_TIMEOUT_S, MATCH_RESERVED_CONCURRENCY,
            "Match face crops from SQS",
        )
        self.build_watchlist = fn(
            "BuildWatchlist", HANDLER_BUILD_WATCHLIST, BUILD_MEMORY_MB, BUILD_TIMEOUT_S, BUILD_RESERVED_CONCURRENCY,
            "Embed a watchlist",
        )
        self.session = fn(
            "Session", HANDLER_SESSION, SESSION_MEMORY_MB, SESSION_TIMEOUT_S, SESSION_RESERVED_CONCURRENCY,
            "Session lifecycle steps",
        )

        # Explicit, action-exact statements instead of grant_read()/grant_put(), whose
        # s3:GetObject*/s3:List*/kms:GenerateDataKey* wildcards exceed what the code does.
        watchlist_objects = deps.watchlist.arn_for_objects(DEPLOYMENT_OBJECTS)
        alert_objects = deps.alerts_bucket.arn_for_objects(ALERT_OBJECTS)

        def allow(fn: lambda_.Function, actions: list[str], resources: list[str], **kw: Any) -> None:
            fn.add_to_role_policy(iam.PolicyStatement(actions=actions, resources=resources, **kw))

        list_deployments = {"StringLike": {"s3:prefix": [DEPLOYMENT_OBJECTS]}}

        # match: read the deployment (and bump refused_crops), read the index (and S3-pointer
        # crops) under deployments/, write alert records and crops, publish alerts.
        deps.deployments.grant_read_write_data(self.match)
        deps.alerts_table.grant_write_data(self.match)
        allow(self.match, ["s3:GetObject"], [watchlist_objects])
        allow(self.match, ["s3:PutObject"], [alert_objects])
        allow(self.match, ["sns:Publish"], [deps.topic.topic_arn])
        allow(self.match, ["kms:Decrypt", "kms:GenerateDataKey"], [deps.key.key_arn])
        self.match.add_event_source(
            sources.SqsEventSource(
                deps.crop_queue,
                batch_size=MATCH_BATCH_SIZE,
                max_batching_window=Duration.seconds(MATCH_BATCHING_WINDOW_S),
                report_batch_item_failures=True,
                max_concurrency=MATCH_MAX_CONCURRENCY,
            )
        )

        # build_watchlist: list and read the images, write the index, record size and rejects.
        deps.deployments.grant_read_write_data(self.build_watchlist)
        allow(self.build_watchlist, ["s3:GetObject", "s3:PutObject"], [watchlist_objects])
        allow(self.build_watchlist, ["s3:ListBucket"], [deps.watchlist.bucket_arn], conditions=list_deployments)
        allow(self.build_watchlist, ["kms:Decrypt", "kms:GenerateDataKey"], [deps.key.key_arn])

        # session: state transitions; purge = delete everything under the prefix, list it empty.
        deps.deployments.grant_read_write_data(self.session)
        allow(self.session, ["s3:DeleteObject"], [watchlist_objects])
        # ... and the deployment's encounter state / camera activity items (functions/logic/encounters.py).
        allow(self.session, ["dynamodb:Query", "dynamodb:DeleteItem"], [deps.alerts_table.table_arn])
        allow(self.session, ["s3:ListBucket"], [deps.watchlist.bucket_arn], conditions=list_deployments)

        for f in (self.match, self.build_watchlist):
            acknowledge(
                f,
                "AwsSolutions-IAM5",
                "Object access is scoped to the deployments/ (watchlist) or alerts/ (evidence) prefix;"
                " object keys carry per-deployment ids unknown at deploy time.",
                applies_to=[
                    RegexAppliesTo(regex=r"/^Resource::<StorageWatchlist[0-9A-F]+\.Arn>\/deployments\/\*$/g"),
                    RegexAppliesTo(regex=r"/^Resource::<StorageAlerts[0-9A-F]+\.Arn>\/alerts\/\*$/g"),
                ],
            )
        for f in (self.match, self.build_watchlist, self.session):
            acknowledge(
                f,
                "AwsSolutions-IAM5",
                "CDK's DynamoDB data grants for tables on the customer-managed data key add the key actions"
                " DynamoDB needs for reads and writes (kms:ReEncrypt*, kms:GenerateDataKey*), on that one key only.",
                applies_to=["Action::kms:ReEncrypt*", "Action::kms:GenerateDataKey*"],
            )
        acknowledge(
            self.session,
            "AwsSolutions-IAM5",
            "Purge deletes every object under deployments/<id>/; ids are created at run time.",
            applies_to=[RegexAppliesTo(regex=r"/^Resource::<StorageWatchlist[0-9A-F]+\.Arn>\/deployments\/\*$/g")],
        )

        self.all = (self.match, self.build_watchlist, self.session)
