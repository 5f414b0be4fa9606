"""Admin operations on deployments, over the functions' own data-access layer."""

from __future__ import annotations

import json
import re
import secrets
import time
from collections.abc import Collection
from pathlib import Path

from edge_uploader.pipeline import SourceError, list_images
from functions.dal.dynamodb import DynamoAlertRepository, DynamoDeploymentRepository
from functions.dal.s3 import S3WatchlistStore
from functions.models.records import AlertRecord, DeploymentRecord
from infra import constants as C
from lfr_cli.aws import AwsContext
from lfr_core.contracts import DeploymentState, utcnow
from lfr_core.layout import deployment_prefix, watchlist_images_prefix
from lfr_core.thresholds import DEFAULT_THRESHOLD

ENDED = {DeploymentState.CLOSED, DeploymentState.FAILED}


class AdminError(Exception):
    """A refused admin request, with a message fit for the terminal."""


def new_deployment_id(name: str) -> str:
    slug = re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")[:40] or "deployment"
    return f"{slug}-{secrets.token_hex(3)}"


class Admin:
    def __init__(self, ctx: AwsContext) -> None:
        self.ctx = ctx
        out = ctx.outputs
        self.deployments = DynamoDeploymentRepository(out[C.OUTPUT_DEPLOYMENTS_TABLE], ctx.client("dynamodb"))
        self.alerts = DynamoAlertRepository(out[C.OUTPUT_ALERTS_TABLE], ctx.client("dynamodb"))
        self.watchlist = S3WatchlistStore(out[C.OUTPUT_WATCHLIST_BUCKET], ctx.client("s3"))
        self._sfn = ctx.client("stepfunctions")

    def create_deployment(
        self, name: str, watchlist_dir: Path, duration_s: int, threshold: float | None = None
    ) -> DeploymentRecord:
        """Record the deployment, upload its watchlist under its own prefix, start its session."""
        try:
            files = list_images(watchlist_dir)
        except SourceError as exc:
            raise AdminError(f"watchlist: {exc}") from exc
        names = [f.name for f in files]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise AdminError(f"watchlist: file names must be unique (they are the entry ids): {dupes[:5]}")
        record = DeploymentRecord(
            deployment_id=new_deployment_id(name),
            name=name,
            state=DeploymentState.PENDING,
            created_at=utcnow(),
            duration_s=duration_s,
            threshold=DEFAULT_THRESHOLD if threshold is None else threshold,
        )
        self.deployments.create(record)
        prefix = watchlist_images_prefix(record.deployment_id)
        for f in files:
            self.watchlist.put_object(prefix + f.name, f.read_bytes())
        self._sfn.start_execution(
            stateMachineArn=self.ctx.outputs[C.OUTPUT_SESSION_STATE_MACHINE_ARN],
            name=record.deployment_id,
            input=json.dumps({"deployment_id": record.deployment_id}),
        )
        return record

    def get(self, deployment_id: str) -> DeploymentRecord:
        rec = self.deployments.get(deployment_id)
        if rec is None:
            raise AdminError(f"no deployment {deployment_id!r}")
        return rec

    def list_deployments(self) -> list[DeploymentRecord]:
        return self.deployments.list_all()

    def alerts_of(self, deployment_id: str) -> list[AlertRecord]:
        return self.alerts.list_for_deployment(deployment_id)

    def objects_remaining(self, deployment_id: str) -> int:
        return self.watchlist.count_prefix(deployment_prefix(deployment_id))

    def wait_for(
        self, deployment_id: str, states: Collection[DeploymentState], timeout_s: float, poll_s: float = 0.5
    ) -> DeploymentRecord:
        deadline = time.monotonic() + timeout_s
        while True:
            rec = self.get(deployment_id)
            if rec.state in states:
                return rec
            if rec.state in ENDED - set(states):
                raise AdminError(
                    f"deployment {deployment_id} ended in {rec.state}: {rec.failure_reason or 'no reason'}"
                )
            if time.monotonic() > deadline:
                raise AdminError(
                    f"deployment {deployment_id} still {rec.state} after {timeout_s:.0f}s "
                    f"(waiting for {', '.join(sorted(states))})"
                )
            time.sleep(poll_s)
