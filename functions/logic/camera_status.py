"""Camera status: the edge's heartbeat for the van's console (docs/ARCHITECTURE.md "Camera status").

A `CameraStatus` (lfr_core/contracts.py) travels on the crop queue beside the crops, marked by the
SQS message attribute `kind`, so the edge's credentials and delivery path serve both. The match
function routes it here instead of to the model: it is validated like a crop (a malformed one is
rejected with a reason tag), refused for a deployment that is not live, and otherwise stored as the
camera's last status on its `cam#<camera>` item (functions/dal/dynamodb.py), which the session's
purge deletes with the rest of the deployment's state. Counts and times only: the contract has no
field that could hold an image or an embedding.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

from functions.dal.ports import AlertRepository
from functions.models.records import AlertRecord, DeploymentRecord, LastCameraStatus
from functions.observability import logger
from lfr_core.contracts import CAMERA_STATUS_KIND, MESSAGE_KIND_ATTRIBUTE, CameraStatus

# A camera's item (its last status and its message counts) is worth nothing after its session;
# should one be written after the purge (an invocation that read the deployment as live just before
# it ended), it expires this soon after the session's end instead of with the alert retention.
CAMERA_ITEM_TTL_AFTER_SESSION_S = 3600


def camera_item_expiry_epoch(dep: DeploymentRecord, now: datetime) -> int:
    """TTL of a camera's item: the session's end plus a margin, never beyond the alert retention."""
    retention = AlertRecord.expiry_epoch(now, dep.alert_retention_days)
    if dep.expires_at is None:
        return retention
    return min(retention, int(dep.expires_at.timestamp()) + CAMERA_ITEM_TTL_AFTER_SESSION_S)


def is_camera_status(record: Mapping[str, Any]) -> bool:
    """Whether an SQS record (Lambda event shape) says it carries a `CameraStatus`."""
    attrs = record.get("messageAttributes") or {}
    kind = attrs.get(MESSAGE_KIND_ATTRIBUTE) if isinstance(attrs, Mapping) else None
    return isinstance(kind, Mapping) and kind.get("stringValue") == CAMERA_STATUS_KIND


def record_camera_status(alerts: AlertRepository, status: CameraStatus, now: datetime, expires_epoch: int) -> bool:
    """Store the status as the camera's last one (unless a later-sent one is stored); True if stored."""
    last = LastCameraStatus(
        state=status.state, since=status.since, sent_at=status.sent_at, received_at=now,
        interval_s=status.interval_s, frames=status.frames, gap_s=status.gap_s,
        reconnects=status.reconnects, spool_depth=status.spool_depth,
    )
    stored = alerts.record_camera_status(status.deployment_id, status.camera_id, last, expires_epoch)
    logger.info("camera status", extra={
        "deployment_id": status.deployment_id, "camera_id": status.camera_id, "state": str(status.state),
        "reconnects": status.reconnects, "stored": stored,
    })
    return stored
