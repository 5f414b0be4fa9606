"""Officer API function (API Gateway REST proxy): the alert page, its data and decisions.

Handler string `functions.handlers.officer_api.handler`.
"""

from __future__ import annotations

from typing import Any

from aws_lambda_powertools.utilities.typing import LambdaContext

from functions.dal.audit import S3AuditStore
from functions.dal.dynamodb import DynamoAlertRepository, DynamoDeploymentRepository
from functions.dal.officers import DynamoOfficerRepository, S3EvidenceLinks, SecretSigningKey
from functions.logic.audit import AuditLog
from functions.logic.officer import OfficerApi
from functions.models.env import OfficerApiEnv
from functions.observability import logger, metrics

_service: OfficerApi | None = None


def get_service() -> OfficerApi:
    global _service
    if _service is None:
        env = OfficerApiEnv.from_environ()
        _service = OfficerApi(
            deployments=DynamoDeploymentRepository(env.deployments_table),
            alerts=DynamoAlertRepository(env.alerts_table),
            officers=DynamoOfficerRepository(env.officers_table),
            links=S3EvidenceLinks(),
            key=SecretSigningKey(env.signing_secret_arn),
            alerts_bucket=env.alerts_bucket,
            watchlist_bucket=env.watchlist_bucket,
            audit=AuditLog(S3AuditStore(env.audit_bucket)) if env.audit_bucket else None,
        )
    return _service


def set_service(service: OfficerApi | None) -> None:
    global _service
    _service = service


# log_event=False: the event carries the officer's bearer token.
@logger.inject_lambda_context(log_event=False, clear_state=True)
@metrics.log_metrics
def handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    return get_service().handle(event)
