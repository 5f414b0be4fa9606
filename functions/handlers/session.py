"""Session function: state machine tasks. Handler string `functions.handlers.session.handler`."""

from __future__ import annotations

from typing import Any

from aws_lambda_powertools.utilities.parser import event_parser
from aws_lambda_powertools.utilities.typing import LambdaContext

from functions.dal.audit import S3AuditStore
from functions.dal.dynamodb import DynamoAlertRepository, DynamoDeploymentRepository
from functions.dal.s3 import S3WatchlistStore
from functions.dal.sqs import SqsCropQueues
from functions.handlers._service import Lazy
from functions.logic.audit import AuditLog
from functions.logic.session import SessionRequest, SessionService
from functions.models.env import SessionEnv
from functions.observability import METRIC_PURGE_INCOMPLETE, PowertoolsMetricsSink, logger, metrics


def _make() -> SessionService:
    env = SessionEnv.from_environ()
    return SessionService(
        DynamoDeploymentRepository(env.deployments_table),
        S3WatchlistStore(env.watchlist_bucket),
        audit=AuditLog(S3AuditStore(env.audit_bucket)),
        queues=SqsCropQueues(env.crop_queue_url, env.crop_dlq_url),
        alerts=DynamoAlertRepository(env.alerts_table) if env.alerts_table else None,
    )


_service = Lazy(_make)
get_service = _service.get
set_service = _service.set  # tests install a service over fakes


@logger.inject_lambda_context(log_event=False, clear_state=True)
@metrics.log_metrics
@event_parser(model=SessionRequest)
def handler(event: SessionRequest, context: LambdaContext) -> dict[str, Any]:
    logger.append_keys(deployment_id=event.deployment_id, action=event.action)
    try:
        return get_service().handle(event)
    except Exception as exc:
        if event.action == "purge":
            # Any purge attempt that did not finish (data remains, storage or audit failed) is
            # counted for the PurgeIncomplete alarm; the state machine retries it.
            PowertoolsMetricsSink(metrics).count(METRIC_PURGE_INCOMPLETE, 1, {"error": type(exc).__name__})
        raise
