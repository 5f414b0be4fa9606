"""A deployment whose watchlist index is missing or unreadable (a system fault, not the crops').

Real model and real faces over in-memory adapters, through the Lambda handler, so the batch item
failures are what SQS would see. The crops of an ACTIVE deployment without a usable index are
held for retry (never consumed as if matched), the fault is counted, marked on the deployment
record and audited once; a restored index clears it and the held crops then match.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import pytest

from functions.exceptions import AuditAppendError
from functions.handlers import match as match_handler
from functions.logic import watchlist
from functions.logic.audit_log import AuditLog, read_events
from functions.logic.match import MatchService
from functions.observability import METRIC_INDEX_MISSING
from lfr_core.contracts import AuditAction, DeploymentState
from lfr_core.layout import watchlist_index_key
from tests.fakes import (
    InMemoryAlertPublisher,
    InMemoryAlertRepository,
    InMemoryAuditStore,
    InMemoryDeploymentRepository,
    InMemoryObjectStore,
)
from tests.unit.functions_support import (
    NOW,
    Clock,
    LogCapture,
    RecordingMetrics,
    aligned_crop,
    capture_logs,
    crop_jpeg,
    crop_message,
    deployment,
    lambda_context,
    lfw_image,
    page_link,
    real_embedder,
    require_models,
    single_image_people,
    sqs_event,
)

DEP = "dep-index-fault"
WATCHLIST = ["Colin_Powell", "Ariel_Sharon", "Bill_Clinton"]
LISTED_PROBE = ("Colin_Powell", 2)


@pytest.fixture(scope="module")
def index_npz() -> bytes:
    require_models()
    emb = real_embedder().embed(np.stack([aligned_crop(lfw_image(n, 1)) for n in WATCHLIST]))
    return watchlist.index_bytes([f"{n}_0001" for n in WATCHLIST], WATCHLIST, emb)


@dataclass
class World:
    service: MatchService
    deployments: InMemoryDeploymentRepository
    alerts: InMemoryAlertRepository
    bucket: InMemoryObjectStore
    publisher: InMemoryAlertPublisher
    metrics: RecordingMetrics
    audit_store: InMemoryAuditStore
    clock: Clock

    def run(self, event: dict[str, Any]) -> list[str]:
        resp = match_handler.handler(event, lambda_context())
        return [f["itemIdentifier"] for f in resp["batchItemFailures"]]

    def audit_actions(self) -> list[tuple[str, dict[str, Any]]]:
        return [(e.event["action"], e.event["details"]) for e in read_events(self.audit_store)]


@pytest.fixture
def captured_logs() -> Iterator[LogCapture]:
    yield from capture_logs()


@pytest.fixture
def world(index_npz: bytes) -> Iterator[World]:
    from lfr_core.thresholds import DEFAULT_THRESHOLD

    deployments = InMemoryDeploymentRepository()
    bucket = InMemoryObjectStore("watchlist")
    etag = bucket.put_object(watchlist_index_key(DEP), index_npz)
    deployments.create(deployment(DEP, threshold=DEFAULT_THRESHOLD, index_etag=etag, watchlist_size=len(WATCHLIST)))
    clock = Clock(NOW)
    audit_store = InMemoryAuditStore()
    metrics = RecordingMetrics()
    service = MatchService(
        deployments=deployments,
        alerts=(alerts := InMemoryAlertRepository()),
        watchlists=bucket,
        crops=InMemoryObjectStore("alerts"),
        publisher=(publisher := InMemoryAlertPublisher()),
        embedder=real_embedder(),
        metrics=metrics,
        clock=clock,
        audit=AuditLog(audit_store, clock=clock),
        page_links=page_link,
        deployment_cache_ttl_s=0.0,  # every batch reads the record, as a cold container would
    )
    match_handler.set_service(service)
    yield World(service, deployments, alerts, bucket, publisher, metrics, audit_store, clock)
    match_handler.set_service(None)


def _batch() -> dict[str, Any]:
    listed = crop_message(DEP, crop_jpeg(lfw_image(*LISTED_PROBE)), track_id="trk-listed")
    strangers = [
        crop_message(DEP, crop_jpeg(lfw_image(p, 1)), track_id=f"trk-s{i}")
        for i, p in enumerate(single_image_people(2))
    ]
    return sqs_event([("listed", listed), ("s0", strangers[0]), ("s1", strangers[1])])


def _fault_events(w: World) -> list[dict[str, Any]]:
    return [d for a, d in w.audit_actions() if a == AuditAction.FAULT]


def test_missing_index_holds_every_crop_for_retry_and_is_visible(world: World, captured_logs: LogCapture) -> None:
    index = world.bucket.objects.pop(watchlist_index_key(DEP))  # deleted mid-session
    event = _batch()
    # Not consumed as if the system were healthy: every record is a batch item failure (retried).
    assert sorted(world.run(event)) == ["listed", "s0", "s1"]
    assert world.metrics.total(METRIC_INDEX_MISSING) == 3
    assert world.metrics.total("CropsRejected") == 0  # not blamed on the crops
    rec = world.deployments.get(DEP)
    assert rec is not None and rec.state == DeploymentState.ACTIVE
    assert rec.index_fault is not None and rec.index_fault.reason == "missing" and rec.index_fault.since == NOW
    assert rec.faces_seen == 0  # nothing was compared
    (raised,) = _fault_events(world)
    assert raised["fault"] == "index_missing" and raised["status"] == "raised"

    # Retried (and more batches arrive) while the fault lasts: counted every time, audited once.
    world.clock.advance(30)
    assert sorted(world.run(event)) == ["listed", "s0", "s1"]
    assert world.metrics.total(METRIC_INDEX_MISSING) == 6
    assert len(_fault_events(world)) == 1
    assert world.deployments.get(DEP).index_fault.since == NOW  # type: ignore[union-attr]
    assert world.alerts.items == {} and world.publisher.published == []
    # Logs carry the deployment and the reason, never a crop.
    assert "watchlist index unusable" in captured_logs.text
    for m in event["Records"]:
        body = json.loads(m["body"])
        assert body["image"]["jpeg_b64"][:40] not in captured_logs.text

    # Restored: the retried records are matched, the listed person alerts once, the fault clears once.
    world.bucket.put_object(watchlist_index_key(DEP), index)
    world.clock.advance(30)
    assert world.run(event) == []
    assert len(world.publisher.published) == 1
    rec = world.deployments.get(DEP)
    assert rec is not None and rec.index_fault is None and rec.faces_seen == 3
    statuses = [(d["fault"], d["status"]) for d in _fault_events(world)]
    assert statuses == [("index_missing", "raised"), ("index_missing", "cleared")]
    assert _fault_events(world)[-1]["seconds"] == 60.0


@pytest.mark.parametrize(
    "defect",
    ["not_npz", "truncated", "wrong_dimension", "non_finite", "unnormalised", "zero_entries", "empty"],
)
def test_unreadable_index_is_the_same_fault_never_a_silent_drop(world: World, index_npz: bytes, defect: str) -> None:
    key = watchlist_index_key(DEP)
    if defect == "not_npz":
        bad = b"this is not an npz archive"
    elif defect == "truncated":
        bad = index_npz[: len(index_npz) // 2]
    elif defect == "wrong_dimension":
        bad = _npz_with(index_npz, embeddings=np.ones((3, 64), np.float32))
    elif defect == "non_finite":
        emb = np.ones((3, 128), np.float32)
        emb[1, 5] = np.nan
        bad = _npz_with(index_npz, embeddings=emb)
    elif defect == "unnormalised":
        bad = _npz_with(index_npz, embeddings=np.full((3, 128), 0.5, np.float32))
    elif defect == "zero_entries":
        bad = _npz_with(index_npz, embeddings=np.zeros((0, 128), np.float32),
                        entry_ids=np.array([], dtype="<U1"), labels=np.array([], dtype="<U1"))
    else:
        bad = b""
    world.bucket.put_object(key, bad)
    assert sorted(world.run(_batch())) == ["listed", "s0", "s1"]
    assert world.metrics.total(METRIC_INDEX_MISSING) == 3
    rec = world.deployments.get(DEP)
    assert rec is not None and rec.index_fault is not None and rec.index_fault.reason == "unreadable"
    ((fault),) = _fault_events(world)
    assert fault["fault"] == "index_unreadable"


def _npz_with(index_npz: bytes, **replace: np.ndarray) -> bytes:
    import io

    with np.load(io.BytesIO(index_npz), allow_pickle=False) as npz:
        arrays = {k: npz[k] for k in npz.files}
    arrays.update(replace)
    out = io.BytesIO()
    np.savez(out, **arrays)
    return out.getvalue()


def test_inactive_deployment_without_index_is_refused_not_faulted(world: World) -> None:
    # After a stop the purge deletes the index: late crops are refused (consumed), which is no fault.
    world.bucket.objects.clear()
    world.deployments.update(DEP, {"state": str(DeploymentState.STOPPED)})
    assert world.run(_batch()) == []
    assert world.metrics.total("CropsRefused") == 3 and world.metrics.total(METRIC_INDEX_MISSING) == 0
    assert world.deployments.get(DEP).index_fault is None  # type: ignore[union-attr]
    assert _fault_events(world) == []


def test_a_fault_the_audit_log_cannot_record_is_marked_again_next_batch(world: World) -> None:
    world.bucket.objects.clear()
    world.audit_store.fail("put_new", AuditAppendError("audit store down"))
    assert sorted(world.run(_batch())) == ["listed", "s0", "s1"]
    assert _fault_events(world) == []
    assert world.deployments.get(DEP).index_fault is None  # type: ignore[union-attr]  # not marked unaudited
    assert sorted(world.run(_batch())) == ["listed", "s0", "s1"]
    assert len(_fault_events(world)) == 1
    assert world.deployments.get(DEP).index_fault is not None  # type: ignore[union-attr]


def test_a_transient_error_reading_entries_is_not_cached_for_the_container(world: World) -> None:
    from functions.exceptions import TransientStorageError
    from functions.models.records import ENCOUNTER_WINDOW_S
    from lfr_core.layout import watchlist_entries_key

    key = watchlist_entries_key(DEP)
    entries = {"Colin_Powell_0001": {"reference": "REF-1", "reason": "warrant"}}
    world.bucket.put_object(key, json.dumps(entries).encode())
    stranger = crop_message(DEP, crop_jpeg(lfw_image(single_image_people(1)[0], 1)), track_id="trk-s")
    assert world.run(sqs_event([("s", stranger)])) == []  # the index is now cached; entries not read yet
    calls = world.bucket.calls["get_object"]
    world.bucket.fail("get_object", TransientStorageError("s3: SlowDown"))  # the entries read
    one = crop_message(DEP, crop_jpeg(lfw_image(*LISTED_PROBE)), track_id="trk-a")
    assert world.run(sqs_event([("a", one)])) == []
    assert world.alerts.list_for_deployment(DEP)[0].watchlist_reference is None  # this alert: without them
    # After the encounter window, so the same person's next track is a new alert, not a sighting of the first.
    world.clock.advance(ENCOUNTER_WINDOW_S + 1)
    two = crop_message(DEP, crop_jpeg(lfw_image("Colin_Powell", 3)), track_id="trk-b")
    assert world.run(sqs_event([("b", two)])) == []
    refs = {a.track_id: a.watchlist_reference for a in world.alerts.list_for_deployment(DEP)}
    assert refs == {"trk-a": None, "trk-b": "REF-1"}  # read again, not the cached failure
    assert world.bucket.calls["get_object"] >= calls + 2
