"""DynamoDB: deployments and alerts (TTL-expired), on the customer-managed data key.

No idempotency table: a crop's alert is idempotent through its deterministic alert id and a
conditional write on the alert record (functions/logic/match.py), state that expires with the alert.

Point-in-time recovery: on for deployments (records of authorisations and purges, no biometric),
OFF for alerts. An alert record names a watchlisted person, links to their probe crop and is
promised to be gone after at most ALERT_RETENTION_DAYS (31), never longer. PITR keeps every
version of the table restorable for its recovery period (1-35 days) after the item is deleted, so
with any PITR at all an expired alert record stays restorable past its promised end (31 + the
period). The record that must survive a mistake is the audit log (Object Lock, one event per
alert and decision), not the table.
"""

from __future__ import annotations

from aws_cdk import RemovalPolicy
from aws_cdk import aws_dynamodb as ddb
from aws_cdk import aws_kms as kms
from constructs import Construct

from infra.constructs.nag import acknowledge, skip_static_checks

ALERTS_PITR_REASON = (
    "Alert records name a watchlisted person and must be gone after at most 31 days (TTL); point-in-time"
    " recovery would keep them restorable for up to 35 days more. The audit log (Object Lock) is their"
    " durable record."
)


def customer_managed_table(
    scope: Construct, construct_id: str, key: kms.IKey, *, point_in_time_recovery: bool, **kwargs: object
) -> ddb.Table:
    """A table of lfr: on-demand, on the data key (revocable, in CloudTrail), retained on stack delete."""
    return ddb.Table(
        scope,
        construct_id,
        billing_mode=ddb.BillingMode.PAY_PER_REQUEST,
        encryption=ddb.TableEncryption.CUSTOMER_MANAGED,
        encryption_key=key,
        point_in_time_recovery_specification=ddb.PointInTimeRecoverySpecification(
            point_in_time_recovery_enabled=point_in_time_recovery
        ),
        removal_policy=RemovalPolicy.RETAIN,
        **kwargs,  # type: ignore[arg-type]
    )


class Tables(Construct):
    def __init__(self, scope: Construct, construct_id: str, *, key: kms.IKey) -> None:
        super().__init__(scope, construct_id)
        self.deployments = customer_managed_table(
            self,
            "Deployments",
            key,
            point_in_time_recovery=True,
            partition_key=ddb.Attribute(name="deployment_id", type=ddb.AttributeType.STRING),
        )
        self.alerts = customer_managed_table(
            self,
            "Alerts",
            key,
            point_in_time_recovery=False,
            partition_key=ddb.Attribute(name="deployment_id", type=ddb.AttributeType.STRING),
            sort_key=ddb.Attribute(name="alert_id", type=ddb.AttributeType.STRING),
            time_to_live_attribute="expires_at_epoch",
        )
        acknowledge(self.alerts, "AwsSolutions-DDB3", ALERTS_PITR_REASON)
        skip_static_checks(self.alerts, {"CKV_AWS_28": ALERTS_PITR_REASON})
