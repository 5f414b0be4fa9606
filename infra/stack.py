"""The lfr stack: one construct per capability, wired together, plus the outputs the CLI reads."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aws_cdk import Aws, CfnOutput, Duration, Stack
from aws_cdk import aws_iam as iam
from aws_cdk import aws_kms as kms
from aws_cdk import aws_wafv2 as wafv2
from constructs import Construct

from infra.constants import (
    ALERT_RETENTION_DAYS,
    OUTPUT_ALARM_TOPIC_ARN,
    OUTPUT_ALERT_TOPIC_ARN,
    OUTPUT_ALERTS_BUCKET,
    OUTPUT_ALERTS_TABLE,
    OUTPUT_AUDIT_BUCKET,
    OUTPUT_CROP_DLQ_URL,
    OUTPUT_CROP_QUEUE_URL,
    OUTPUT_DEPLOYMENTS_TABLE,
    OUTPUT_OFFICER_API_URL,
    OUTPUT_OFFICER_USER_POOL_CLIENT_ID,
    OUTPUT_OFFICER_USER_POOL_ID,
    OUTPUT_OFFICERS_TABLE,
    OUTPUT_SESSION_STATE_MACHINE_ARN,
    OUTPUT_SIGNING_SECRET_ARN,
    OUTPUT_WATCHLIST_BUCKET,
)
from infra.constructs.alarms import Alarms, AlarmSources
from infra.constructs.alerts import AlertTopic
from infra.constructs.audit_storage import AuditStorage
from infra.constructs.functions import FunctionDeps, Functions
from infra.constructs.lambda_function import CDK_ROLE_DEPENDS_ON
from infra.constructs.nag import skip_static_checks
from infra.constructs.officers import OfficerDeps, Officers
from infra.constructs.queues import Queues
from infra.constructs.session import SessionStateMachine, grant_queue_purge
from infra.constructs.storage import Storage
from infra.constructs.tables import Tables
from lambda_target import CODE_ASSET_DIR, CORE_LAYER_DIR


@dataclass(frozen=True)
class ForceConfig:
    """What differs per police force (validated from the CDK context in infra/app.py)."""

    alert_retention_days: int = ALERT_RETENTION_DAYS  # the alerts bucket's longest retention
    waf_web_acl_arn: str | None = None  # the force's regional WAFv2 web ACL, attached to the officers' API
    alarm_email: str | None = None  # who is e-mailed when an alarm fires (a failed session: data may remain)


class LfrStack(Stack):
    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        layer_dir: Path = CORE_LAYER_DIR,
        code_dir: Path = CODE_ASSET_DIR,
        force: ForceConfig | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(scope, construct_id, **kwargs)
        force = force or ForceConfig()

        # One customer-managed key for data at rest that holds or points at faces
        # (buckets, crop queues, tables), for alerts, the signing secret and the logs: revocable,
        # audited in CloudTrail.
        self.data_key = kms.Key(
            self,
            "DataKey",
            description="lfr: watchlist, alert evidence, crop queues, alert topic, tables, signing key, logs",
            enable_key_rotation=True,
            pending_window=Duration.days(7),
        )
        # CloudWatch Logs encrypts the stack's log groups with it: only for log groups of this account and region.
        self.data_key.add_to_resource_policy(
            iam.PolicyStatement(
                sid="AllowCloudWatchLogsOfThisAccount",
                principals=[iam.ServicePrincipal(f"logs.{Aws.REGION}.amazonaws.com")],
                actions=["kms:Encrypt*", "kms:Decrypt*", "kms:ReEncrypt*", "kms:GenerateDataKey*", "kms:Describe*"],
                resources=["*"],
                conditions={
                    "ArnLike": {
                        "kms:EncryptionContext:aws:logs:arn": (
                            f"arn:{Aws.PARTITION}:logs:{Aws.REGION}:{Aws.ACCOUNT_ID}:log-group:*"
                        )
                    }
                },
            )
        )
        self.storage = Storage(self, "Storage", key=self.data_key, alert_retention_days=force.alert_retention_days)
        self.tables = Tables(self, "Tables", key=self.data_key)
        self.queues = Queues(self, "Queues", key=self.data_key)
        self.alerts = AlertTopic(self, "Alerts", key=self.data_key)
        # Audit: session transitions (session fn), alerts (match fn), officers' decisions and refused
        # access (officers' API) are appended to the chain. Created before the functions: its bucket is
        # in their environment, which each function is given whole when it is declared.
        self.audit = AuditStorage(self, "Audit", access_logs=self.storage.access_logs)
        self.functions = Functions(
            self,
            "Functions",
            deps=FunctionDeps(
                deployments=self.tables.deployments,
                alerts_table=self.tables.alerts,
                watchlist=self.storage.watchlist,
                alerts_bucket=self.storage.alerts,
                audit_bucket=self.audit.bucket,
                topic=self.alerts.topic,
                crop_queue=self.queues.crops,
                crop_dlq=self.queues.dlq,
                key=self.data_key,
            ),
            layer_dir=layer_dir,
            code_dir=code_dir,
        )
        # Officers: alert page API, identities, signing key; on the functions' layer and code.
        self.officers = Officers(
            self,
            "Officers",
            deps=OfficerDeps(
                code=self.functions.code,
                deployments=self.tables.deployments,
                alerts_table=self.tables.alerts,
                watchlist=self.storage.watchlist,
                alerts_bucket=self.storage.alerts,
                audit_bucket=self.audit.bucket,
                crop_queue=self.queues.crops,
                key=self.data_key,
            ),
        )
        # The match function last: every notification links to the officers' page.
        self.functions.add_match(self.officers.page_link)
        for fn in (self.functions.session, self.functions.match, self.officers.function):
            self.audit.grant_append(fn)
        grant_queue_purge(self.functions.session, self.data_key, self.queues.crops, self.queues.dlq)
        self.session = SessionStateMachine(
            self, "Session", build_fn=self.functions.build_watchlist, session_fn=self.functions.session,
            log_key=self.data_key,
        )
        skip_static_checks(self.session.state_machine, {"W3005": CDK_ROLE_DEPENDS_ON})
        # Every quiet failure (DLQ, queue age, match errors, rejected/refused crops, purge, index)
        # alarms to one ops topic; the session machine's own failed-execution alarm notifies it too.
        self.alarms = Alarms(
            self,
            "Alarms",
            sources=AlarmSources(
                crop_queue=self.queues.crops,
                dlq=self.queues.dlq,
                match_fn=self.functions.match,
                existing=(
                self.session.failed_alarm, self.session.check_failing_alarm, self.session.function_errors_alarm,
                self.officers.failed_access_alarm,
            ),
            ),
            alarm_email=force.alarm_email,
        )

        outputs = {
            OUTPUT_CROP_QUEUE_URL: self.queues.crops.queue_url,
            OUTPUT_CROP_DLQ_URL: self.queues.dlq.queue_url,
            OUTPUT_WATCHLIST_BUCKET: self.storage.watchlist.bucket_name,
            OUTPUT_ALERTS_BUCKET: self.storage.alerts.bucket_name,
            OUTPUT_DEPLOYMENTS_TABLE: self.tables.deployments.table_name,
            OUTPUT_ALERTS_TABLE: self.tables.alerts.table_name,
            OUTPUT_ALERT_TOPIC_ARN: self.alerts.topic.topic_arn,
            OUTPUT_SESSION_STATE_MACHINE_ARN: self.session.state_machine.state_machine_arn,
            OUTPUT_AUDIT_BUCKET: self.audit.bucket.bucket_name,
            OUTPUT_OFFICERS_TABLE: self.officers.table.table_name,
            OUTPUT_OFFICER_API_URL: self.officers.api.url,
            OUTPUT_SIGNING_SECRET_ARN: self.officers.signing_secret.secret_arn,
            OUTPUT_OFFICER_USER_POOL_ID: self.officers.user_pool.user_pool_id,
            OUTPUT_OFFICER_USER_POOL_CLIENT_ID: self.officers.app_client.user_pool_client_id,
            OUTPUT_ALARM_TOPIC_ARN: self.alarms.topic.topic_arn,
        }
        for name, value in outputs.items():
            CfnOutput(self, name, value=value)
        self._apply_force_config(force)

    def _apply_force_config(self, force: ForceConfig) -> None:
        if force.waf_web_acl_arn:
            wafv2.CfnWebACLAssociation(
                self, "OfficerApiWaf",
                resource_arn=self.officers.api.deployment_stage.stage_arn,
                web_acl_arn=force.waf_web_acl_arn,
            )
