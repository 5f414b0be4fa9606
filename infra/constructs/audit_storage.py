"""The audit log bucket: append-only, Object Lock (COMPLIANCE), outside everything a purge touches.

Each audit entry is one object `chain/<seq>.json` (functions/dal/audit_store.py). Object Lock keeps
every version for `AUDIT_RETENTION_DAYS` whatever an administrator does; the bucket policy
also refuses deletes and any PutObject that is not a conditional create (`If-None-Match`),
so even a writer cannot overwrite an entry.
"""

from __future__ import annotations

from aws_cdk import Duration, RemovalPolicy
from aws_cdk import aws_iam as iam
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_s3 as s3
from cdk_nag import RegexAppliesTo
from constructs import Construct

from infra.constants import AUDIT_LOCK_MODE, AUDIT_RETENTION_DAYS
from infra.constructs.nag import acknowledge

AUDIT_OBJECTS = "chain/*"


class AuditStorage(Construct):
    """Where the audit chain is stored (the chain itself: functions/logic/audit_log.py `AuditLog`)."""

    def __init__(self, scope: Construct, construct_id: str, *, access_logs: s3.IBucket) -> None:
        super().__init__(scope, construct_id)
        retention = Duration.days(AUDIT_RETENTION_DAYS)
        self.bucket = s3.Bucket(
            self,
            "Bucket",
            # S3-managed keys: auditors need no access to the biometric data key to read the log.
            encryption=s3.BucketEncryption.S3_MANAGED,
            block_public_access=s3.BlockPublicAccess.BLOCK_ALL,
            enforce_ssl=True,
            versioned=True,  # Object Lock requires it; an overwrite shows up as a second version
            object_lock_enabled=True,
            object_lock_default_retention=(
                s3.ObjectLockRetention.compliance(retention)
                if AUDIT_LOCK_MODE == "COMPLIANCE"
                else s3.ObjectLockRetention.governance(retention)
            ),
            server_access_logs_bucket=access_logs,
            server_access_logs_prefix="audit/",
            removal_policy=RemovalPolicy.RETAIN,
        )
        self.bucket.add_to_resource_policy(
            iam.PolicyStatement(
                sid="DenyAuditDeletes",
                effect=iam.Effect.DENY,
                principals=[iam.AnyPrincipal()],
                actions=["s3:DeleteObject", "s3:DeleteObjectVersion", "s3:PutLifecycleConfiguration"],
                resources=[self.bucket.bucket_arn, self.bucket.arn_for_objects("*")],
            )
        )
        self.bucket.add_to_resource_policy(
            iam.PolicyStatement(
                sid="DenyOverwrites",
                effect=iam.Effect.DENY,
                principals=[iam.AnyPrincipal()],
                actions=["s3:PutObject"],
                resources=[self.bucket.arn_for_objects("*")],
                conditions={"Null": {"s3:if-none-match": "true"}},
            )
        )

    def grant_append(self, fn: lambda_.Function) -> None:
        """Read the chain head and create new entries; never delete or overwrite (policy above)."""
        fn.add_to_role_policy(
            iam.PolicyStatement(
                actions=["s3:GetObject", "s3:PutObject"], resources=[self.bucket.arn_for_objects(AUDIT_OBJECTS)]
            )
        )
        fn.add_to_role_policy(
            iam.PolicyStatement(
                actions=["s3:ListBucket"],
                resources=[self.bucket.bucket_arn],
                conditions={"StringLike": {"s3:prefix": ["chain/", AUDIT_OBJECTS]}},
            )
        )
        acknowledge(
            fn,
            "AwsSolutions-IAM5",
            "Audit entries are chain/<sequence number>.json, created at run time; create-only by bucket policy.",
            applies_to=[RegexAppliesTo(regex=r"/^Resource::<AuditBucket[0-9A-F]+\.Arn>\/chain\/\*$/g")],
        )
