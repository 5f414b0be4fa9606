"""Officer API function (API Gateway REST proxy): the alert page, its data and decisions, and the
van's console. Routes and error mapping: functions/logic/officer_api.py (Powertools' resolver).

Handler string `functions.handlers.officer_api.handler`.
"""

from __future__ import annotations

from typing import Any

from aws_lambda_powertools.utilities.typing import LambdaContext

from functions.dal.audit_store import S3AuditStore
from functions.dal.dynamodb import DynamoAlertRepository, DynamoDeploymentRepository
from functions.dal.officers import DynamoOfficerRepository, S3EvidenceLinks, SecretSigningKey
from functions.dal.queue_stats import SqsQueueStats
from functions.handlers._service import Lazy
from functions.logic.audit_log import AuditLog
from functions.logic.console import Console
from functions.logic.officer_api import OfficerApi
from functions.models.env import OfficerApiEnv
from functions.observability import logger, metrics
from lfr_core.contracts import utcnow


def _make() -> OfficerApi:
    env = OfficerApiEnv.from_environ()
    deployments = DynamoDeploymentRepository(env.deployments_table)
    alerts = DynamoAlertRepository(env.alerts_table)
    links = S3EvidenceLinks()
    return OfficerApi(
        deployments=deployments,
        alerts=alerts,
        officers=DynamoOfficerRepository(env.officers_table),
        links=links,
        key=SecretSigningKey(env.signing_secret_arn),
        alerts_bucket=env.alerts_bucket,
        watchlist_bucket=env.watchlist_bucket,
        audit=AuditLog(S3AuditStore(env.audit_bucket)),
        console=Console(
            deployments=deployments, alerts=alerts, links=links, alerts_bucket=env.alerts_bucket,
            queue=SqsQueueStats(env.crop_queue_url), clock=utcnow,
        ),
    )


_service = Lazy(_make)
get_service = _service.get
set_service = _service.set  # tests install a service over fakes


# log_event=False: the event carries the officer's bearer token.
@logger.inject_lambda_context(log_event=False, clear_state=True)
@metrics.log_metrics
def handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    return get_service().handle(event, context)
