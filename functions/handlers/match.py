"""Match function: SQS crop batch -> alerts. Handler string `functions.handlers.match.handler`."""

from __future__ import annotations

import os
from functools import partial
from pathlib import Path
from typing import Any

from aws_lambda_powertools.utilities.batch import BatchProcessor, EventType, process_partial_response
from aws_lambda_powertools.utilities.batch.types import PartialItemFailureResponse
from aws_lambda_powertools.utilities.data_classes.sqs_event import SQSRecord
from aws_lambda_powertools.utilities.typing import LambdaContext

from functions.dal.audit_store import S3AuditStore
from functions.dal.dynamodb import DynamoAlertRepository, DynamoDeploymentRepository
from functions.dal.officers import SecretSigningKey
from functions.dal.ports import RecordAcks
from functions.dal.s3 import S3AlertCropStore, S3WatchlistStore
from functions.dal.sns import SnsAlertPublisher
from functions.dal.sqs_records import SqsRecordAcks
from functions.handlers._service import Lazy
from functions.logic.audit_log import AuditLog
from functions.logic.match import MatchService, Prepared
from functions.logic.protocols import Embedder
from functions.logic.sqs_batch import Record, run_batch
from functions.logic.tokens import PageLinks
from functions.models.env import MatchEnv
from functions.observability import PowertoolsMetricsSink, logger, metrics
from lfr_core.layout import MODEL_SFACE

# A batch where every record failed is reported as all-failed items rather than raised: SQS
# retries exactly the same records either way, and the response stays one shape.
processor = BatchProcessor(event_type=EventType.SQS, raise_on_entire_batch_failure=False)


def _embedder_factory(model_dir: str) -> Embedder:
    from lfr_core.face.embed import FaceEmbedder  # onnxruntime import: only when a crop needs it

    return FaceEmbedder(Path(model_dir) / MODEL_SFACE)


def _make() -> MatchService:
    """Built once per container; env is validated here, on the first (cold) invocation."""
    env = MatchEnv.from_environ()
    crops = S3AlertCropStore(env.alerts_bucket)
    return MatchService(
        deployments=DynamoDeploymentRepository(env.deployments_table),
        alerts=DynamoAlertRepository(env.alerts_table),
        watchlists=S3WatchlistStore(env.watchlist_bucket),
        crops=crops,
        publisher=SnsAlertPublisher(env.alert_topic_arn),
        embedder=partial(_embedder_factory, env.model_dir),
        metrics=PowertoolsMetricsSink(metrics),
        audit=AuditLog(S3AuditStore(env.audit_bucket)),
        page_links=PageLinks(env.officer_page_url, SecretSigningKey(env.signing_secret_arn)),
    )


_service = Lazy(_make)
get_service = _service.get
set_service = _service.set  # tests install a service over fakes


_acks: Lazy[RecordAcks] = Lazy(SqsRecordAcks)
set_acks = _acks.set  # tests install an in-memory one


def _complete(service: MatchService, prepared: dict[str, Prepared], record: SQSRecord) -> str:
    return service.complete(prepared.pop(record.message_id)).value


def _complete_group(service: MatchService, context: LambdaContext, records: list[Record]) -> set[str]:
    """One group: phase 1 embeds all its records in one model call; phase 2 (per record, under the
    batch processor) performs alerts or raises, so failures are reported per record."""
    prepared = service.prepare(records)
    response = process_partial_response(
        event={"Records": records},
        record_handler=partial(_complete, service, prepared),
        processor=processor,
        context=context,
    )
    return {str(item["itemIdentifier"]) for item in response["batchItemFailures"]}


# log_event=False explicitly: the event holds face crops, and the env var must not turn it on.
@logger.inject_lambda_context(log_event=False, clear_state=True)
@metrics.log_metrics
def handler(event: dict[str, Any], context: LambdaContext) -> PartialItemFailureResponse:
    # Redelivered records are isolated so one that crashes the runtime cannot take its batch
    # with it (functions/logic/sqs_batch.py).
    failed = run_batch(
        event.get("Records") or [],
        partial(_complete_group, get_service(), context),
        _acks.get(),
        context.get_remaining_time_in_millis,
    )
    return {"batchItemFailures": [{"itemIdentifier": i} for i in failed]}


if os.environ.get("AWS_LAMBDA_FUNCTION_NAME"):
    # In a Lambda container: build the service and load the model during init, which Lambda
    # runs before (and outside) the first invocation's timeout, so MATCH_TIMEOUT_S only has to
    # cover a batch (infra/constants.py) and a retried record returns within seconds.
    _ = get_service().embedder
