"""Storage and messaging ports. Logic depends on these; boto3 and in-memory adapters implement them.

Contract for every adapter: a missing object raises `ObjectNotFoundError`, a failed
condition `StateConflictError`, and any other AWS failure `TransientStorageError`
(the match path turns that into a batch item failure, i.e. an SQS retry).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from functions.models.records import (
    AlertRecord,
    CameraActivity,
    DeploymentRecord,
    EncounterState,
    IndexFault,
    LastCameraStatus,
)
from lfr_core.contracts import Alert, DeploymentState


class DeploymentRepository(ABC):
    @abstractmethod
    def get(self, deployment_id: str) -> DeploymentRecord | None: ...

    @abstractmethod
    def list_all(self) -> list[DeploymentRecord]:
        """Every deployment (admin listing; a handful of records, so a scan)."""

    @abstractmethod
    def create(self, record: DeploymentRecord) -> None:
        """Insert a new record; `StateConflictError` if the id exists."""

    @abstractmethod
    def update(
        self,
        deployment_id: str,
        fields: Mapping[str, Any],
        expect_states: Collection[DeploymentState] | None = None,
    ) -> DeploymentRecord:
        """SET the given attributes (JSON-able values; None removes) and return the new record.

        Never rewrites the whole item, so the match function's atomic `refused_crops`
        counter is not lost to a concurrent session update. `DeploymentNotFoundError` if
        missing; `StateConflictError` if the state is not one of `expect_states`.
        """

    @abstractmethod
    def add_refused_crops(self, deployment_id: str, count: int) -> None:
        """Atomic ADD to `refused_crops`; does nothing for an unknown deployment."""

    @abstractmethod
    def add_faces_seen(self, deployment_id: str, count: int) -> None:
        """Atomic ADD to `faces_seen` (track messages compared with the watchlist: one per face, whatever
        its crops); nothing for an unknown id."""

    @abstractmethod
    def set_index_fault(self, deployment_id: str, fault: IndexFault | None) -> bool:
        """Mark (`fault`) or clear (None) the record's `index_fault`, only if it is not already so.

        True if this call changed it (so exactly one of several concurrent callers reports the
        change), False if it already was; nothing for an unknown id.
        """


class AlertRepository(ABC):
    @abstractmethod
    def get(self, deployment_id: str, alert_id: str) -> AlertRecord | None: ...

    @abstractmethod
    def put_new(self, record: AlertRecord) -> bool:
        """Conditional insert; False (and no write) if the alert id already exists."""

    @abstractmethod
    def claim_publication(self, deployment_id: str, alert_id: str, revision: int, claimant: str,
                          now: datetime, lease_s: int) -> bool:
        """Let `claimant` publish `revision`: True if the alert is at that revision, unpublished, and
        nobody else holds an unexpired claim on it (the claimant's own claim renews). One winner
        among concurrent callers."""

    @abstractmethod
    def mark_published(
        self, deployment_id: str, alert_id: str, revision: int, published_at: datetime,
        queue_to_publish_ms: float | None,
    ) -> None:
        """Record that `revision` was published; nothing if the alert has moved on to a newer one
        (whose own publisher marks it)."""

    @abstractmethod
    def list_for_deployment(self, deployment_id: str) -> list[AlertRecord]: ...

    @abstractmethod
    def replace_if_better(self, record: AlertRecord) -> bool:
        """Overwrite the alert with `record` only if the stored similarity is lower and no officer
        has decided it yet; False (and no write) otherwise. One decision per alert."""

    @abstractmethod
    def set_decision(
        self, deployment_id: str, alert_id: str, decision: str, decided_by: str, decided_at: datetime
    ) -> bool:
        """Record the officer's decision if there is none yet; False (no write) if already decided.
        `ObjectNotFoundError` if the alert does not exist."""

    # -- encounters (functions/logic/encounters.py); state items share the alerts table and its
    # TTL, under sort keys that `list_for_deployment` never returns as alerts.

    @abstractmethod
    def sight_encounter(
        self, deployment_id: str, entry_id: str, now: datetime, window_s: int, expires_at_epoch: int
    ) -> EncounterState:
        """Extend the entry's encounter if its last sighting is within `window_s` of `now`, else open
        a new one (opened_at = now). Atomic: concurrent callers agree on one encounter."""

    @abstractmethod
    def add_sighting(self, deployment_id: str, alert_id: str, camera_id: str, track_key: str,
                     seen_at: datetime) -> AlertRecord | None:
        """Add the track and camera to the alert (idempotent set adds), return it as it was before,
        None if it does not exist."""

    @abstractmethod
    def bump_revision(self, deployment_id: str, alert_id: str, revision: int) -> bool:
        """revision + 1 and unpublished, if it is still at `revision` and undecided."""

    @abstractmethod
    def improve(self, deployment_id: str, alert_id: str, fields: Mapping[str, Any], similarity: float) -> bool:
        """SET `fields` (the better crop's), revision + 1, unpublished, only if the stored similarity
        is lower and no decision has been made; False (no write) otherwise."""

    @abstractmethod
    def record_camera_activity(self, deployment_id: str, camera_id: str, messages: int, now: datetime,
                               queue_lag_ms: float | None, expires_at_epoch: int) -> None:
        """One atomic update: last-seen time and the per-minute message count of one camera."""

    @abstractmethod
    def record_camera_status(self, deployment_id: str, camera_id: str, status: LastCameraStatus,
                             expires_at_epoch: int) -> bool:
        """Store the camera's last status (same item as its activity) unless the stored one was sent
        later (a reordered or replayed status never hides a newer one); True if stored."""

    @abstractmethod
    def camera_activity(self, deployment_id: str) -> list[CameraActivity]: ...

    @abstractmethod
    def purge_state(self, deployment_id: str) -> int:
        """Delete the deployment's encounter state and camera activity/status items (its alerts stay, under
        their own retention); returns how many were deleted."""


class WatchlistStore(ABC):
    """The watchlist bucket: a deployment's images, its index, and everything purge removes."""

    @abstractmethod
    def list_keys(self, prefix: str) -> list[str]: ...

    @abstractmethod
    def get_object(self, key: str) -> bytes: ...

    @abstractmethod
    def put_object(self, key: str, data: bytes) -> str:
        """Returns the ETag."""

    @abstractmethod
    def get_with_etag(self, key: str) -> tuple[bytes, str]: ...

    @abstractmethod
    def delete_prefix(self, prefix: str) -> int:
        """Delete every object (and version) under the prefix; returns how many were deleted."""

    @abstractmethod
    def count_prefix(self, prefix: str) -> int: ...

    @property
    @abstractmethod
    def bucket(self) -> str: ...


class AlertCropStore(ABC):
    @abstractmethod
    def put_crop(self, key: str, jpeg: bytes, retention_days: int | None = None) -> None:
        """`retention_days` (a shortened retention) tags the object for its lifecycle rule."""


class AlertPublisher(ABC):
    @abstractmethod
    def publish(self, alert: Alert) -> str:
        """Publish the alert JSON with message attribute `deployment_id`; returns the message id."""


class AuditStore(ABC):
    """The append-only audit chain: entry `seq` (1, 2, ...) is one immutable object.

    `put_new` is the only write and it is conditional, so two writers can never both own a
    sequence number (the chain cannot fork); storage-level evidence of tampering (overwritten
    versions, delete markers) is reported by `anomalies`.
    """

    @abstractmethod
    def last_seq(self, after: int = 0) -> int:
        """The highest stored sequence number (0 if none), scanning forward from `after`."""

    @abstractmethod
    def get_entry(self, seq: int) -> bytes:
        """`ObjectNotFoundError` if missing."""

    @abstractmethod
    def put_new(self, seq: int, body: bytes) -> bool:
        """Create entry `seq`; False (and no write) if it already exists."""

    @abstractmethod
    def entries(self) -> list[tuple[int, bytes]]:
        """Every stored entry as (sequence number from its key, body), in key order."""

    @abstractmethod
    def anomalies(self) -> list[str]:
        """Storage evidence of tampering: keys with more than one version, delete markers, stray keys."""


@dataclass(frozen=True)
class QueuePurge:
    """What a purge of the crop queue and DLQ achieved for one deployment."""

    queue_deleted: int
    dlq_deleted: int
    # True only if both queues' own counts showed nothing left that could be this deployment's:
    # none visible unscanned, none in flight but the other deployments' messages purge held.
    verified: bool
    detail: str = ""  # why not verified: counts only


class CropQueues(ABC):
    """The crop queue and its DLQ, as purge sees them: remove one deployment's messages."""

    @abstractmethod
    def purge_deployment(self, deployment_id: str) -> QueuePurge:
        """Delete every message of this deployment from the crop queue and the DLQ, and verify."""


class RecordAcks(ABC):
    """The SQS records of the current invocation, acknowledged by the function itself.

    Lambda's event-source mapping deletes a batch only when the invocation returns; a record
    the function has finished is deleted here at once when a crash later in the same
    invocation would otherwise send it back (functions/logic/sqs_batch.py). Records are the
    Lambda event's dicts (`eventSourceARN` names the queue, `receiptHandle` the delivery).
    """

    @abstractmethod
    def delete(self, records: Sequence[Mapping[str, Any]]) -> None:
        """Delete these deliveries (done: never to be redelivered). `TransientStorageError` on failure."""

    @abstractmethod
    def release(self, records: Sequence[Mapping[str, Any]]) -> None:
        """Make these deliveries visible again now (not tried in this invocation: retry at once)."""
