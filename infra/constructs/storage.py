"""S3: the watchlist bucket (biometric data, purged per deployment) and the alerts bucket."""

from __future__ import annotations

from typing import Any

from aws_cdk import Duration, RemovalPolicy
from aws_cdk import aws_kms as kms
from aws_cdk import aws_s3 as s3
from constructs import Construct

from infra.constants import ALERT_RETENTION_CHOICES_DAYS, ALERT_RETENTION_DAYS, ALERT_RETENTION_TAG
from infra.constructs.nag import acknowledge, skip_static_checks

ACCESS_LOG_RETENTION_DAYS = 365


class Storage(Construct):
    def __init__(
        self, scope: Construct, construct_id: str, *, key: kms.IKey, alert_retention_days: int = ALERT_RETENTION_DAYS
    ) -> None:
        super().__init__(scope, construct_id)

        # Server access logs record who read or deleted biometric objects. S3 log
        # delivery cannot write to SSE-KMS buckets, hence S3-managed encryption here.
        self.access_logs = s3.Bucket(
            self,
            "AccessLogs",
            encryption=s3.BucketEncryption.S3_MANAGED,
            block_public_access=s3.BlockPublicAccess.BLOCK_ALL,
            enforce_ssl=True,
            # ACLs off: log delivery is granted by the bucket policy (FEATURE_FLAGS in infra/app.py).
            object_ownership=s3.ObjectOwnership.BUCKET_OWNER_ENFORCED,
            lifecycle_rules=[s3.LifecycleRule(expiration=Duration.days(ACCESS_LOG_RETENTION_DAYS))],
            removal_policy=RemovalPolicy.RETAIN,
        )
        acknowledge(
            self.access_logs,
            "AwsSolutions-S1",
            "This is the access-log bucket; logging it to itself would loop.",
        )
        skip_static_checks(self.access_logs, {
            "CKV_AWS_18": "This is the access-log bucket; logging it to itself would loop.",
            "CKV_AWS_21": "Log objects are written once by S3 log delivery and expire after a year; versions"
            " would only keep deleted logs longer than that.",
        })

        def biometric_bucket(bucket_id: str, log_prefix: str, **extra: Any) -> s3.Bucket:
            # No versioning: a delete must really delete (no noncurrent version keeps a face).
            return s3.Bucket(
                self,
                bucket_id,
                encryption=s3.BucketEncryption.KMS,
                encryption_key=key,
                bucket_key_enabled=True,
                block_public_access=s3.BlockPublicAccess.BLOCK_ALL,
                enforce_ssl=True,
                versioned=False,
                server_access_logs_bucket=self.access_logs,
                server_access_logs_prefix=log_prefix,
                removal_policy=RemovalPolicy.RETAIN,
                **extra,
            )

        no_versions = {
            "CKV_AWS_21": "Biometric bucket: versioning would keep a noncurrent copy of every deleted face, so a"
            " purge or an expiry would not really delete (verified by listing the prefix empty)."
        }
        self.watchlist = biometric_bucket("Watchlist", "watchlist/")
        skip_static_checks(self.watchlist, no_versions)
        self.alerts = biometric_bucket(
            "Alerts",
            "alerts/",
            # Alert evidence is kept only for the review period, then deleted by S3.
            # A deployment may shorten its retention: its crops carry a tag with the day count and
            # each allowed count has its own rule (S3 lifecycle is per bucket, not per object).
            # A force may shorten the bucket-wide retention (infra/app.py, lfr:alertRetentionDays).
            lifecycle_rules=[s3.LifecycleRule(id="ExpireAlertCrops", expiration=Duration.days(alert_retention_days))]
            + [
                s3.LifecycleRule(
                    id=f"ExpireAlertCrops{days}d",
                    expiration=Duration.days(days),
                    tag_filters={ALERT_RETENTION_TAG: str(days)},
                )
                for days in ALERT_RETENTION_CHOICES_DAYS
                if days < alert_retention_days
            ],
        )
        skip_static_checks(self.alerts, no_versions)
