"""DynamoDB: deployments and alerts (TTL-expired).

No idempotency table: a crop's alert is idempotent through its deterministic alert id and a
conditional write on the alert record (functions/logic/match.py), state that expires with the alert.
"""

from __future__ import annotations

from aws_cdk import RemovalPolicy
from aws_cdk import aws_dynamodb as ddb
from constructs import Construct


def _table(scope: Construct, construct_id: str, **kwargs: object) -> ddb.Table:
    return ddb.Table(
        scope,
        construct_id,
        billing_mode=ddb.BillingMode.PAY_PER_REQUEST,
        encryption=ddb.TableEncryption.AWS_MANAGED,
        point_in_time_recovery_specification=ddb.PointInTimeRecoverySpecification(point_in_time_recovery_enabled=True),
        removal_policy=RemovalPolicy.RETAIN,
        **kwargs,  # type: ignore[arg-type]
    )


class Tables(Construct):
    def __init__(self, scope: Construct, construct_id: str) -> None:
        super().__init__(scope, construct_id)
        self.deployments = _table(
            self,
            "Deployments",
            partition_key=ddb.Attribute(name="deployment_id", type=ddb.AttributeType.STRING),
        )
        self.alerts = _table(
            self,
            "Alerts",
            partition_key=ddb.Attribute(name="deployment_id", type=ddb.AttributeType.STRING),
            sort_key=ddb.Attribute(name="alert_id", type=ddb.AttributeType.STRING),
            time_to_live_attribute="expires_at_epoch",
        )
