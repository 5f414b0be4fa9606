"""Session function: state machine tasks. Handler string `functions.handlers.session.handler`."""

from __future__ import annotations

from typing import Any

from aws_lambda_powertools.utilities.parser import event_parser
from aws_lambda_powertools.utilities.typing import LambdaContext

from functions.dal.audit_store import S3AuditStore
from functions.dal.dynamodb import DynamoAlertRepository, DynamoDeploymentRepository
from functions.dal.s3 import S3WatchlistStore
from functions.dal.sqs import SqsCropQueues
from functions.handlers._service import Lazy
from functions.logic.audit_log import AuditLog
from functions.logic.session import SessionRequest, SessionService, handle_with_metric
from functions.models.env import SessionEnv
from functions.observability import PowertoolsMetricsSink, logger, metrics


def _make() -> SessionService:
    env = SessionEnv.from_environ()
    return SessionService(
        DynamoDeploymentRepository(env.deployments_table),
        S3WatchlistStore(env.watchlist_bucket),
        audit=AuditLog(S3AuditStore(env.audit_bucket)),
        queues=SqsCropQueues(env.crop_queue_url, env.crop_dlq_url),
        alerts=DynamoAlertRepository(env.alerts_table),
    )


_service = Lazy(_make)
get_service = _service.get
set_service = _service.set  # tests install a service over fakes


@logger.inject_lambda_context(log_event=False, clear_state=True)
@metrics.log_metrics
@event_parser(model=SessionRequest)
def handler(event: SessionRequest, context: LambdaContext) -> dict[str, Any]:
    logger.append_keys(deployment_id=event.deployment_id, action=str(event.action))
    return handle_with_metric(get_service(), event, PowertoolsMetricsSink())
