"""In-memory adapters of the ports in functions/dal (the match path's and the officers'), with fault
injection to exercise retry paths. Test code: nothing under functions/ imports it."""

from __future__ import annotations

import copy
import hashlib
import threading
from collections import defaultdict
from collections.abc import Collection, Mapping, Sequence
from datetime import datetime, timedelta
from typing import Any
from urllib.parse import quote

from functions.dal.officers import EvidenceLinks, OfficerRepository
from functions.dal.ports import (
    AlertCropStore,
    AlertPublisher,
    AlertRepository,
    AuditStore,
    CropQueues,
    DeploymentRepository,
    QueuePurge,
    RecordAcks,
    WatchlistStore,
)
from functions.dal.queue_stats import QueueStats
from functions.exceptions import DeploymentNotFoundError, ObjectNotFoundError, StateConflictError
from functions.models.officers import OfficerRecord
from functions.models.records import (
    CAMERA_KEY_PREFIX,
    ENCOUNTER_KEY_PREFIX,
    MAX_ENCOUNTER_TRACKS,
    AlertRecord,
    CameraActivity,
    DeploymentRecord,
    EncounterState,
    IndexFault,
    LastCameraStatus,
)
from lfr_core.contracts import Alert, DeploymentState


class _Faults:
    """`fail(method, exc, times)` makes the next `times` calls of `method` raise `exc`."""

    def __init__(self) -> None:
        self._faults: dict[str, list[BaseException]] = defaultdict(list)
        self.calls: dict[str, int] = defaultdict(int)

    def fail(self, method: str, exc: BaseException, times: int = 1) -> None:
        self._faults[method].extend([exc] * times)

    def _enter(self, method: str) -> None:
        self.calls[method] += 1
        pending = self._faults.get(method)
        if pending:
            raise pending.pop(0)


class InMemoryDeploymentRepository(_Faults, DeploymentRepository):
    def __init__(self) -> None:
        super().__init__()
        self.items: dict[str, dict[str, Any]] = {}

    def get(self, deployment_id: str) -> DeploymentRecord | None:
        self._enter("get")
        item = self.items.get(deployment_id)
        return None if item is None else DeploymentRecord.model_validate(copy.deepcopy(item))

    def list_all(self) -> list[DeploymentRecord]:
        self._enter("list_all")
        return [DeploymentRecord.model_validate(copy.deepcopy(v)) for _, v in sorted(self.items.items())]

    def create(self, record: DeploymentRecord) -> None:
        self._enter("create")
        if record.deployment_id in self.items:
            raise StateConflictError(f"deployment {record.deployment_id} exists")
        self.items[record.deployment_id] = record.to_item()

    def update(
        self,
        deployment_id: str,
        fields: Mapping[str, Any],
        expect_states: Collection[DeploymentState] | None = None,
    ) -> DeploymentRecord:
        self._enter("update")
        item = self.items.get(deployment_id)
        if item is None:
            raise DeploymentNotFoundError(deployment_id)
        if expect_states is not None and item["state"] not in {str(s) for s in expect_states}:
            raise StateConflictError(f"deployment {deployment_id} is {item['state']}")
        new = copy.deepcopy(item)
        for k, v in fields.items():
            if v is None:
                new.pop(k, None)
            else:
                new[k] = copy.deepcopy(v)
        record = DeploymentRecord.model_validate(new)  # same validation the real table would need
        self.items[deployment_id] = new
        return record

    def add_refused_crops(self, deployment_id: str, count: int) -> None:
        self._enter("add_refused_crops")
        if deployment_id in self.items:
            self.items[deployment_id]["refused_crops"] = (
                self.items[deployment_id].get("refused_crops", 0) + count
            )

    def add_faces_seen(self, deployment_id: str, count: int) -> None:
        self._enter("add_faces_seen")
        if deployment_id in self.items:
            self.items[deployment_id]["faces_seen"] = self.items[deployment_id].get("faces_seen", 0) + count

    def set_index_fault(self, deployment_id: str, fault: IndexFault | None) -> bool:
        self._enter("set_index_fault")
        item = self.items.get(deployment_id)
        if item is None or (fault is None) == ("index_fault" not in item):
            return False
        if fault is None:
            del item["index_fault"]
        else:
            item["index_fault"] = fault.model_dump(mode="json")
        return True


class InMemoryAlertRepository(_Faults, AlertRepository):
    def __init__(self) -> None:
        super().__init__()
        self.items: dict[tuple[str, str], dict[str, Any]] = {}
        # Encounter state and camera activity: the same table in DynamoDB (other sort keys), kept
        # apart here so `items` holds exactly the alert records.
        self.encounters: dict[tuple[str, str], dict[str, Any]] = {}
        self.activity: dict[tuple[str, str], dict[str, Any]] = {}

    def get(self, deployment_id: str, alert_id: str) -> AlertRecord | None:
        self._enter("get")
        item = self.items.get((deployment_id, alert_id))
        return None if item is None else AlertRecord.model_validate(copy.deepcopy(item))

    def put_new(self, record: AlertRecord) -> bool:
        self._enter("put_new")
        key = (record.deployment_id, record.alert_id)
        if key in self.items:
            return False
        self.items[key] = record.to_item()
        return True

    def claim_publication(self, deployment_id: str, alert_id: str, revision: int, claimant: str,
                          now: datetime, lease_s: int) -> bool:
        self._enter("claim_publication")
        now_s = int(now.timestamp())
        with self._lock:
            item = self.items.get((deployment_id, alert_id))
            if item is None or item.get("revision", 1) != revision or item.get("published_at") is not None:
                return False
            held = item.get("publish_claim_revision")
            if not (held is None or held < revision or item.get("publish_claim_by") == claimant
                    or item.get("publish_claim_until", 0) < now_s):
                return False
            item.update(publish_claim_by=claimant, publish_claim_revision=revision,
                        publish_claim_until=now_s + lease_s)
            return True

    def mark_published(
        self, deployment_id: str, alert_id: str, revision: int, published_at: datetime,
        queue_to_publish_ms: float | None,
    ) -> None:
        self._enter("mark_published")
        with self._lock:
            item = self.items[(deployment_id, alert_id)]
            if item.get("revision", 1) != revision:
                return
            item["published_at"] = published_at.isoformat()
            if queue_to_publish_ms is not None:
                item["queue_to_publish_ms"] = queue_to_publish_ms

    def list_for_deployment(self, deployment_id: str) -> list[AlertRecord]:
        self._enter("list_for_deployment")
        return [
            AlertRecord.model_validate(v) for (d, a), v in sorted(self.items.items())
            if d == deployment_id and not a.startswith((ENCOUNTER_KEY_PREFIX, CAMERA_KEY_PREFIX))
        ]

    def replace_if_better(self, record: AlertRecord) -> bool:
        self._enter("replace_if_better")
        key = (record.deployment_id, record.alert_id)
        item = self.items.get(key)
        if item is None or item.get("decision") is not None or item["similarity"] >= record.similarity:
            return False
        self.items[key] = record.to_item()
        return True

    def set_decision(
        self, deployment_id: str, alert_id: str, decision: str, decided_by: str, decided_at: datetime
    ) -> bool:
        self._enter("set_decision")
        item = self.items.get((deployment_id, alert_id))
        if item is None:
            raise ObjectNotFoundError(f"alert {deployment_id}/{alert_id}")
        if item.get("decision") is not None:
            return False
        item.update(decision=str(decision), decided_by=decided_by, decided_at=decided_at.isoformat())
        return True

    # -- encounters: same semantics as the DynamoDB adapter's conditional updates, under a lock

    _lock = threading.Lock()

    def sight_encounter(
        self, deployment_id: str, entry_id: str, now: datetime, window_s: int, expires_at_epoch: int
    ) -> EncounterState:
        self._enter("sight_encounter")
        with self._lock:
            key = (deployment_id, ENCOUNTER_KEY_PREFIX + entry_id)
            item = self.encounters.get(key)
            opened = item is None or item["last_seen"] < now - timedelta(seconds=window_s)
            if opened:
                item = {"opened_at": now, "last_seen": now}
                self.encounters[key] = item
            else:
                assert item is not None
                item["last_seen"] = now
            item["expires_at_epoch"] = expires_at_epoch
            return EncounterState(deployment_id=deployment_id, watchlist_entry_id=entry_id,
                                  opened_at=item["opened_at"], last_seen=now, opened=opened)

    def add_sighting(self, deployment_id: str, alert_id: str, camera_id: str, track_key: str,
                     seen_at: datetime) -> AlertRecord | None:
        self._enter("add_sighting")
        with self._lock:
            item = self.items.get((deployment_id, alert_id))
            if item is None:
                return None
            before = AlertRecord.model_validate(copy.deepcopy(item))
            tracks = set(item.get("tracks") or [])
            if len(tracks) < MAX_ENCOUNTER_TRACKS:
                item["tracks"] = sorted(tracks | {track_key})
                item["cameras"] = sorted(set(item.get("cameras") or []) | {camera_id})
                item["last_seen_at"] = seen_at.isoformat()
            return before

    def bump_revision(self, deployment_id: str, alert_id: str, revision: int) -> bool:
        self._enter("bump_revision")
        with self._lock:
            item = self.items.get((deployment_id, alert_id))
            if item is None or item.get("revision", 1) != revision or item.get("decision") is not None:
                return False
            item["revision"] = revision + 1
            item.pop("published_at", None)
            item.pop("queue_to_publish_ms", None)
            return True

    def improve(self, deployment_id: str, alert_id: str, fields: Mapping[str, Any], similarity: float) -> bool:
        self._enter("improve")
        with self._lock:
            item = self.items.get((deployment_id, alert_id))
            if item is None or item.get("decision") is not None or item["similarity"] >= similarity:
                return False
            for k, v in {**fields, "similarity": similarity}.items():
                if v is None:
                    item.pop(k, None)
                else:
                    item[k] = copy.deepcopy(v)
            item["revision"] = item.get("revision", 1) + 1
            item.pop("published_at", None)
            item.pop("queue_to_publish_ms", None)
            return True

    def record_camera_activity(self, deployment_id: str, camera_id: str, messages: int, now: datetime,
                               queue_lag_ms: float | None, expires_at_epoch: int) -> None:
        self._enter("record_camera_activity")
        with self._lock:
            item = self.activity.setdefault((deployment_id, CAMERA_KEY_PREFIX + camera_id), {"per_minute": {}})
            minute = int(now.timestamp()) // 60
            item.update(camera_id=camera_id, last_seen=now, expires_at_epoch=expires_at_epoch)
            item["messages"] = item.get("messages", 0) + messages
            item["per_minute"][minute] = item["per_minute"].get(minute, 0) + messages
            if queue_lag_ms is not None:
                item["queue_lag_ms"] = queue_lag_ms

    def record_camera_status(self, deployment_id: str, camera_id: str, status: LastCameraStatus,
                             expires_at_epoch: int) -> bool:
        self._enter("record_camera_status")
        with self._lock:
            item = self.activity.setdefault((deployment_id, CAMERA_KEY_PREFIX + camera_id), {"per_minute": {}})
            stored = item.get("status")
            if stored is not None and stored.sent_at >= status.sent_at:
                return False
            item.update(camera_id=camera_id, status=status, expires_at_epoch=expires_at_epoch)
            return True

    def camera_activity(self, deployment_id: str) -> list[CameraActivity]:
        self._enter("camera_activity")
        return [
            CameraActivity(**{k: v for k, v in item.items() if k != "expires_at_epoch"})
            for (d, _), item in sorted(self.activity.items())
            if d == deployment_id
        ]

    def purge_state(self, deployment_id: str) -> int:
        self._enter("purge_state")
        with self._lock:
            doomed = [(k, m) for m in (self.encounters, self.activity) for k in m if k[0] == deployment_id]
            for k, m in doomed:
                del m[k]
            return len(doomed)


class InMemoryObjectStore(_Faults, WatchlistStore, AlertCropStore):
    """One bucket. Serves as the watchlist store and as the alert crop store."""

    def __init__(self, bucket: str = "memory-bucket") -> None:
        super().__init__()
        self._bucket = bucket
        self.objects: dict[str, bytes] = {}
        # Keys that survive deletion, to simulate an incomplete purge (e.g. a concurrent upload).
        self.undeletable: set[str] = set()
        self.tags: dict[str, dict[str, str]] = {}

    @property
    def bucket(self) -> str:
        return self._bucket

    def list_keys(self, prefix: str) -> list[str]:
        self._enter("list_keys")
        return sorted(k for k in self.objects if k.startswith(prefix))

    def get_object(self, key: str) -> bytes:
        self._enter("get_object")
        try:
            return self.objects[key]
        except KeyError:
            raise ObjectNotFoundError(key) from None

    def put_object(self, key: str, data: bytes) -> str:
        self._enter("put_object")
        self.objects[key] = bytes(data)
        return _etag(data)

    def get_with_etag(self, key: str) -> tuple[bytes, str]:
        self._enter("get_with_etag")
        data = self.get_object(key)
        return data, _etag(data)

    def delete_prefix(self, prefix: str) -> int:
        self._enter("delete_prefix")
        doomed = [k for k in self.objects if k.startswith(prefix) and k not in self.undeletable]
        for k in doomed:
            del self.objects[k]
        return len(doomed)

    def count_prefix(self, prefix: str) -> int:
        self._enter("count_prefix")
        return sum(1 for k in self.objects if k.startswith(prefix))

    def put_crop(self, key: str, jpeg: bytes, retention_days: int | None = None) -> None:
        self._enter("put_crop")
        self.objects[key] = bytes(jpeg)
        if retention_days is not None:
            self.tags[key] = {"retention-days": str(retention_days)}


class InMemoryAlertPublisher(_Faults, AlertPublisher):
    def __init__(self) -> None:
        super().__init__()
        self.published: list[tuple[str, dict[str, str]]] = []  # (message JSON, attributes)

    def publish(self, alert: Alert) -> str:
        self._enter("publish")
        self.published.append((alert.model_dump_json(), {"deployment_id": alert.deployment_id}))
        return f"msg-{len(self.published)}"


def _etag(data: bytes) -> str:
    return '"' + hashlib.md5(data, usedforsecurity=False).hexdigest() + '"'


class InMemoryAuditStore(_Faults, AuditStore):
    """Entries by sequence number; `put_new` is atomic (a lock), like S3's conditional put."""

    def __init__(self) -> None:
        super().__init__()
        self.objects: dict[int, bytes] = {}
        self.overwritten: set[int] = set()  # what a versioned bucket would show as a second version
        self._lock = threading.Lock()

    def last_seq(self, after: int = 0) -> int:
        self._enter("last_seq")
        with self._lock:  # concurrent writers (threads standing in for invocations) insert meanwhile
            return max(self.objects, default=0)

    def get_entry(self, seq: int) -> bytes:
        self._enter("get_entry")
        try:
            return self.objects[seq]
        except KeyError:
            raise ObjectNotFoundError(f"audit entry {seq}") from None

    def put_new(self, seq: int, body: bytes) -> bool:
        self._enter("put_new")
        with self._lock:
            if seq in self.objects:
                return False
            self.objects[seq] = bytes(body)
            return True

    def entries(self) -> list[tuple[int, bytes]]:
        self._enter("entries")
        with self._lock:
            return sorted(self.objects.items())

    def anomalies(self) -> list[str]:
        return [f"entry {s} has been overwritten" for s in sorted(self.overwritten)]


class InMemoryCropQueues(_Faults, CropQueues):
    """Two lists of (deployment_id, body), and messages in flight (held by a consumer: unseen)."""

    def __init__(self) -> None:
        super().__init__()
        self.queue: list[tuple[str, str]] = []
        self.dlq: list[tuple[str, str]] = []
        self.in_flight: list[tuple[str, str]] = []

    def purge_deployment(self, deployment_id: str) -> QueuePurge:
        self._enter("purge_deployment")
        counts = []
        for q in (self.queue, self.dlq):
            keep = [m for m in q if m[0] != deployment_id]
            counts.append(len(q) - len(keep))
            q[:] = keep
        # Like SQS: whose messages are in flight cannot be known until they are visible again.
        detail = f"{len(self.in_flight)} message(s) in flight" if self.in_flight else ""
        return QueuePurge(counts[0], counts[1], verified=not self.in_flight, detail=detail)


class InMemoryRecordAcks(_Faults, RecordAcks):
    """Records the message ids the function deleted or released, in call order."""

    def __init__(self) -> None:
        super().__init__()
        self.deleted: list[str] = []
        self.released: list[str] = []

    def delete(self, records: Sequence[Mapping[str, Any]]) -> None:
        self._enter("delete")
        self.deleted.extend(str(r["messageId"]) for r in records)

    def release(self, records: Sequence[Mapping[str, Any]]) -> None:
        self._enter("release")
        self.released.extend(str(r["messageId"]) for r in records)


# -- the officers' side (functions/dal/officers.py)


class InMemoryOfficerRepository(OfficerRepository):
    def __init__(self) -> None:
        self.items: dict[tuple[str, str], dict[str, Any]] = {}

    def get(self, deployment_id: str, officer_id: str) -> OfficerRecord | None:
        item = self.items.get((deployment_id, officer_id))
        return None if item is None else OfficerRecord.model_validate(copy.deepcopy(item))

    def put(self, record: OfficerRecord) -> None:
        self.items[(record.deployment_id, record.officer_id)] = record.to_item()

    def list_for_deployment(self, deployment_id: str) -> list[OfficerRecord]:
        return [OfficerRecord.model_validate(v) for (d, _), v in sorted(self.items.items()) if d == deployment_id]


class InMemoryEvidenceLinks(EvidenceLinks):
    def presign(self, bucket: str, key: str, expires_s: int) -> str:
        return f"https://{bucket}.example/{quote(key)}?expires={int(expires_s)}"


class InMemoryQueueStats(QueueStats):
    """A crop queue of a fixed depth (what the console reads from SQS's attributes)."""

    def __init__(self, waiting: int = 3, in_flight: int = 1) -> None:
        self.waiting, self.in_flight = waiting, in_flight

    def depth(self) -> dict[str, Any]:
        return {"waiting": self.waiting, "in_flight": self.in_flight}
