"""Lambda: the shared core layer (native deps, lfr_core, models) and the three core functions
(match, build_watchlist, session); each is declared by `lfr_function()` with its env model."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aws_cdk import Duration
from aws_cdk import aws_dynamodb as ddb
from aws_cdk import aws_iam as iam
from aws_cdk import aws_kms as kms
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_lambda_event_sources as sources
from aws_cdk import aws_s3 as s3
from aws_cdk import aws_sns as sns
from aws_cdk import aws_sqs as sqs
from cdk_nag import RegexAppliesTo
from constructs import Construct

from functions.models.env import BuildWatchlistEnv, MatchEnv, SessionEnv
from infra.constants import (
    BUILD_MEMORY_MB,
    BUILD_RESERVED_CONCURRENCY,
    BUILD_TIMEOUT_S,
    MATCH_BATCH_SIZE,
    MATCH_BATCHING_WINDOW_S,
    MATCH_MAX_CONCURRENCY,
    MATCH_MEMORY_MB,
    MATCH_RESERVED_CONCURRENCY,
    MATCH_TIMEOUT_S,
    SESSION_RESERVED_CONCURRENCY,
    SESSION_TIMEOUT_S,
)
from infra.constructs.lambda_function import FunctionSpec, LambdaCode, lambda_code, lfr_function
from infra.constructs.nag import acknowledge
from infra.constructs.officers import PageLink
from lambda_target import CODE_ASSET_DIR, CORE_LAYER_DIR, LAYER_MODEL_DIR

SESSION_MEMORY_MB = 512  # record updates and S3 listing only: no model
MATCH = FunctionSpec(
    "functions.handlers.match.handler", MATCH_MEMORY_MB, MATCH_TIMEOUT_S, MATCH_RESERVED_CONCURRENCY,
    "Match face crops from SQS",
)
BUILD_WATCHLIST = FunctionSpec(
    "functions.handlers.build_watchlist.handler", BUILD_MEMORY_MB, BUILD_TIMEOUT_S, BUILD_RESERVED_CONCURRENCY,
    "Embed a watchlist",
)
SESSION = FunctionSpec(
    "functions.handlers.session.handler", SESSION_MEMORY_MB, SESSION_TIMEOUT_S, SESSION_RESERVED_CONCURRENCY,
    "Session lifecycle steps",
)
# Deployment ids (lfr_core.contracts.DeploymentId) are the only path segment under these.
DEPLOYMENT_OBJECTS = "deployments/*"
ALERT_OBJECTS = "alerts/*"
LIST_DEPLOYMENTS = {"StringLike": {"s3:prefix": [DEPLOYMENT_OBJECTS]}}


@dataclass(frozen=True)
class FunctionDeps:
    deployments: ddb.ITable
    alerts_table: ddb.ITable
    watchlist: s3.IBucket
    alerts_bucket: s3.IBucket
    audit_bucket: s3.IBucket
    topic: sns.ITopic
    crop_queue: sqs.IQueue
    crop_dlq: sqs.IQueue
    key: kms.IKey  # encrypts both buckets, the queues, the topic, the tables and the log groups


def _allow(fn: lambda_.Function, actions: list[str], resources: list[str], **kw: Any) -> None:
    fn.add_to_role_policy(iam.PolicyStatement(actions=actions, resources=resources, **kw))


class Functions(Construct):
    """The layer, build_watchlist and session at construction; the match function by `add_match()`,
    once the officers' page it links to exists (Officers runs on this construct's layer)."""

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
        self._deps = deps
        # FunctionEnv's fields (every function reads the deployment and its watchlist).
        self._shared_env = {
            "deployments_table": deps.deployments.table_name,
            "watchlist_bucket": deps.watchlist.bucket_name,
        }
        self.code: LambdaCode = lambda_code(self, layer_dir, code_dir)
        self.layer = self.code.layer
        self.build_watchlist = self._build_watchlist()
        self.session = self._session()
        self._acknowledge_object_prefixes(self.build_watchlist)
        self._acknowledge_table_grants(self.build_watchlist)

    def _build_watchlist(self) -> lambda_.Function:
        d = self._deps
        fn = lfr_function(
            self, "BuildWatchlist", spec=BUILD_WATCHLIST, env_model=BuildWatchlistEnv, code=self.code, key=d.key,
            env={
                **self._shared_env,
                "model_dir": LAYER_MODEL_DIR,
            },
        )
        # List and read the images, write the index, record size and rejects.
        d.deployments.grant_read_write_data(fn)
        _allow(fn, ["s3:GetObject", "s3:PutObject"], [d.watchlist.arn_for_objects(DEPLOYMENT_OBJECTS)])
        _allow(fn, ["s3:ListBucket"], [d.watchlist.bucket_arn], conditions=LIST_DEPLOYMENTS)
        _allow(fn, ["kms:Decrypt", "kms:GenerateDataKey"], [d.key.key_arn])
        return fn

    def _session(self) -> lambda_.Function:
        d = self._deps
        fn = lfr_function(
            self, "Session", spec=SESSION, env_model=SessionEnv, code=self.code, key=d.key,
            env={
                **self._shared_env,
                "alerts_table": d.alerts_table.table_name,
                "audit_bucket": d.audit_bucket.bucket_name,
                "crop_queue_url": d.crop_queue.queue_url,
                "crop_dlq_url": d.crop_dlq.queue_url,
            },
        )
        # State transitions; purge = delete everything under the prefix, list it empty.
        d.deployments.grant_read_write_data(fn)
        _allow(fn, ["s3:DeleteObject"], [d.watchlist.arn_for_objects(DEPLOYMENT_OBJECTS)])
        # ... and the deployment's encounter state / camera activity items (functions/logic/encounters.py).
        _allow(fn, ["dynamodb:Query", "dynamodb:DeleteItem"], [d.alerts_table.table_arn])
        _allow(fn, ["s3:ListBucket"], [d.watchlist.bucket_arn], conditions=LIST_DEPLOYMENTS)
        self._acknowledge_table_grants(fn)
        acknowledge(
            fn,
            "AwsSolutions-IAM5",
            "Purge deletes every object under deployments/<id>/; ids are created at run time.",
            applies_to=[RegexAppliesTo(regex=r"/^Resource::<StorageWatchlist[0-9A-F]+\.Arn>\/deployments\/\*$/g")],
        )
        return fn

    def add_match(self, page: PageLink) -> lambda_.Function:
        """The match function: its notifications link to the officers' page, signed with their key."""
        d = self._deps
        fn = lfr_function(
            self, "Match", spec=MATCH, env_model=MatchEnv, code=self.code, key=d.key,
            env={
                **self._shared_env,
                "alerts_table": d.alerts_table.table_name,
                "alerts_bucket": d.alerts_bucket.bucket_name,
                "alert_topic_arn": d.topic.topic_arn,
                "model_dir": LAYER_MODEL_DIR,
                "audit_bucket": d.audit_bucket.bucket_name,
                "officer_page_url": page.url,
                "signing_secret_arn": page.signing_secret.secret_arn,
            },
        )
        # Read the deployment (and bump refused_crops), read the index (and S3-pointer crops) under
        # deployments/, write alert records and crops, publish alerts, sign page links.
        # Explicit, action-exact statements instead of grant_read()/grant_put(), whose
        # s3:GetObject*/s3:List*/kms:GenerateDataKey* wildcards exceed what the code does.
        d.deployments.grant_read_write_data(fn)
        d.alerts_table.grant_write_data(fn)
        _allow(fn, ["s3:GetObject"], [d.watchlist.arn_for_objects(DEPLOYMENT_OBJECTS)])
        _allow(fn, ["s3:PutObject"], [d.alerts_bucket.arn_for_objects(ALERT_OBJECTS)])
        _allow(fn, ["sns:Publish"], [d.topic.topic_arn])
        _allow(fn, ["kms:Decrypt", "kms:GenerateDataKey"], [d.key.key_arn])
        page.signing_secret.grant_read(fn)
        fn.add_event_source(
            sources.SqsEventSource(
                d.crop_queue,
                batch_size=MATCH_BATCH_SIZE,
                max_batching_window=Duration.seconds(MATCH_BATCHING_WINDOW_S),
                report_batch_item_failures=True,
                max_concurrency=MATCH_MAX_CONCURRENCY,
            )
        )
        self._acknowledge_object_prefixes(fn)
        self._acknowledge_table_grants(fn)
        self.match = fn
        return fn

    @staticmethod
    def _acknowledge_object_prefixes(fn: lambda_.Function) -> None:
        acknowledge(
            fn,
            "AwsSolutions-IAM5",
            "Object access is scoped to the deployments/ (watchlist) or alerts/ (evidence) prefix;"
            " object keys carry per-deployment ids unknown at deploy time.",
            applies_to=[
                RegexAppliesTo(regex=r"/^Resource::<StorageWatchlist[0-9A-F]+\.Arn>\/deployments\/\*$/g"),
                RegexAppliesTo(regex=r"/^Resource::<StorageAlerts[0-9A-F]+\.Arn>\/alerts\/\*$/g"),
            ],
        )

    @staticmethod
    def _acknowledge_table_grants(fn: lambda_.Function) -> None:
        acknowledge(
            fn,
            "AwsSolutions-IAM5",
            "CDK's DynamoDB data grants for tables on the customer-managed data key add the key actions"
            " DynamoDB needs for reads and writes (kms:ReEncrypt*, kms:GenerateDataKey*), on that one key only.",
            applies_to=["Action::kms:ReEncrypt*", "Action::kms:GenerateDataKey*"],
        )
