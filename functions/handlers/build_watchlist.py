"""Build-watchlist function. Handler string `functions.handlers.build_watchlist.handler`."""

from __future__ import annotations

from functools import partial
from pathlib import Path
from typing import Any

from aws_lambda_powertools.utilities.parser import event_parser
from aws_lambda_powertools.utilities.typing import LambdaContext
from pydantic import BaseModel, ConfigDict

from functions.dal.dynamodb import DynamoDeploymentRepository
from functions.dal.s3 import S3WatchlistStore
from functions.handlers._service import Lazy
from functions.logic.build_watchlist import BuildService, Detector
from functions.logic.protocols import Embedder
from functions.models.env import BuildWatchlistEnv
from functions.observability import logger
from lfr_core.contracts import DeploymentId
from lfr_core.layout import MODEL_SFACE, MODEL_YUNET


class BuildRequest(BaseModel):
    model_config = ConfigDict(extra="ignore")

    deployment_id: DeploymentId


def _detector(model_dir: str) -> Detector:
    from lfr_core.face.detect import FaceDetector

    return FaceDetector(Path(model_dir) / MODEL_YUNET)


def _embedder(model_dir: str) -> Embedder:
    from lfr_core.face.embed import FaceEmbedder

    return FaceEmbedder(Path(model_dir) / MODEL_SFACE)


def _make() -> BuildService:
    env = BuildWatchlistEnv.from_environ()
    return BuildService(
        DynamoDeploymentRepository(env.deployments_table),
        S3WatchlistStore(env.watchlist_bucket),
        detector=partial(_detector, env.model_dir),
        embedder=partial(_embedder, env.model_dir),
    )


_service = Lazy(_make)
get_service = _service.get
set_service = _service.set  # tests install a service over fakes


@logger.inject_lambda_context(log_event=False, clear_state=True)
@event_parser(model=BuildRequest)
def handler(event: BuildRequest, context: LambdaContext) -> dict[str, Any]:
    logger.append_keys(deployment_id=event.deployment_id)
    return get_service().build(event.deployment_id).to_dict()
