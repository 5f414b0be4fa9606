"""The match path on the REAL model and REAL faces (lfw-dev), over in-memory adapters.

Runs the Lambda handler itself (Powertools BatchProcessor + process_partial_response) so
batch item failures are asserted as SQS would see them.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import pytest

from functions.exceptions import TransientStorageError
from functions.handlers import match as match_handler
from functions.logic import watchlist
from functions.logic.encounters import encounter_alert_id
from functions.logic.match import MatchService
from lfr_core.contracts import DeploymentState
from lfr_core.layout import alert_crop_key, watchlist_index_key
from tests.fakes import (
    InMemoryAlertPublisher,
    InMemoryAlertRepository,
    InMemoryDeploymentRepository,
    InMemoryObjectStore,
)
from tests.unit.functions_support import (
    NOW,
    Clock,
    LogCapture,
    RecordingMetrics,
    audit_log,
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

DEP = "dep-match"
# Watchlist: first image of each; probes: another image of the same person.
WATCHLIST = ["Colin_Powell", "Ariel_Sharon", "Bill_Clinton", "Angelina_Jolie", "Andre_Agassi"]
MATED_PROBE = ("Colin_Powell", 2)


@pytest.fixture
def captured_logs() -> Iterator[LogCapture]:
    yield from capture_logs()


class SpyEmbedder:
    """The real embedder, counting calls and crops."""

    def __init__(self) -> None:
        self.inner = real_embedder()
        self.calls: list[int] = []

    def embed(self, crops: Any) -> np.ndarray:
        self.calls.append(len(crops))
        return np.asarray(self.inner.embed(crops))


@dataclass
class World:
    service: MatchService
    deployments: InMemoryDeploymentRepository
    alerts: InMemoryAlertRepository
    watchlist_bucket: InMemoryObjectStore
    alerts_bucket: InMemoryObjectStore
    publisher: InMemoryAlertPublisher
    embedder: SpyEmbedder
    metrics: RecordingMetrics
    clock: Clock

    def run(self, event: dict[str, Any]) -> list[str]:
        """Invoke the handler; returns the SQS message ids reported as batch item failures."""
        resp = match_handler.handler(event, lambda_context())
        return [f["itemIdentifier"] for f in resp["batchItemFailures"]]


@pytest.fixture(scope="module")
def index_npz() -> bytes:
    require_models()
    pytest.importorskip("lfr_core.matching")
    crops = np.stack([_aligned(lfw_image(name, 1)) for name in WATCHLIST])
    emb = real_embedder().embed(crops)
    return watchlist.index_bytes([f"{n}_0001" for n in WATCHLIST], WATCHLIST, emb)


def _aligned(path: Any) -> np.ndarray:
    from tests.unit.functions_support import aligned_crop

    return aligned_crop(path)


@pytest.fixture
def world(index_npz: bytes) -> Iterator[World]:
    from lfr_core.thresholds import DEFAULT_THRESHOLD

    deployments = InMemoryDeploymentRepository()
    wl = InMemoryObjectStore("watchlist")
    etag = wl.put_object(watchlist_index_key(DEP), index_npz)
    deployments.create(deployment(DEP, threshold=DEFAULT_THRESHOLD, index_etag=etag, watchlist_size=len(WATCHLIST)))
    clock = Clock(NOW)
    w = World(
        service=None,  # type: ignore[arg-type]
        deployments=deployments,
        alerts=InMemoryAlertRepository(),
        watchlist_bucket=wl,
        alerts_bucket=InMemoryObjectStore("alerts"),
        publisher=InMemoryAlertPublisher(),
        embedder=SpyEmbedder(),
        metrics=RecordingMetrics(),
        clock=clock,
    )
    w.service = MatchService(
        deployments=w.deployments,
        alerts=w.alerts,
        watchlists=w.watchlist_bucket,
        crops=w.alerts_bucket,
        publisher=w.publisher,
        embedder=w.embedder,
        metrics=w.metrics,
        clock=clock,
        audit=audit_log(clock),
        page_links=page_link,
    )
    match_handler.set_service(w.service)
    yield w
    match_handler.set_service(None)


def _published(w: World) -> list[dict[str, Any]]:
    return [json.loads(body) for body, _ in w.publisher.published]


def test_watchlisted_face_alerts_once_with_right_entry(world: World) -> None:
    name, n = MATED_PROBE
    jpeg = crop_jpeg(lfw_image(name, n))
    msg = crop_message(DEP, jpeg)
    world.clock.advance(0.25)  # publish 250 ms after SQS accepted the message
    assert world.run(sqs_event([("sqs-1", msg)])) == []

    alerts = world.alerts.list_for_deployment(DEP)
    assert len(alerts) == 1
    a = alerts[0]
    assert a.watchlist_entry_id == f"{name}_0001" and a.watchlist_label == name
    assert a.alert_id == encounter_alert_id(DEP, a.watchlist_entry_id, world.clock())
    assert a.similarity >= a.threshold and a.published_at is not None
    assert a.expires_at_epoch == int(NOW.timestamp()) + 250 // 1000 + 31 * 86400
    assert world.alerts_bucket.objects == {alert_crop_key(DEP, a.alert_id): jpeg}
    ((body, attrs),) = world.publisher.published
    assert attrs == {"deployment_id": DEP}
    assert a.revision == 1 and a.decision is None
    sent = json.loads(body)
    assert sent["alert_id"] == a.alert_id and sent["crop_message_id"] == msg.message_id
    assert sent["queue_to_publish_ms"] == pytest.approx(250.0)
    assert "jpeg" not in body and "crop_key" not in body  # the alert carries no biometric
    assert world.metrics.timings["QueueToPublishMs"] == [pytest.approx(250.0)]
    assert world.metrics.total("AlertsPublished") == 1


def test_non_watchlisted_face_leaves_no_trace(world: World, captured_logs: LogCapture) -> None:
    strangers = single_image_people(3)
    jpegs = [crop_jpeg(lfw_image(p, 1)) for p in strangers]
    msgs = [crop_message(DEP, j) for j in jpegs]
    assert world.run(sqs_event([(f"sqs-{i}", m) for i, m in enumerate(msgs)])) == []

    assert world.alerts.items == {}
    assert world.alerts_bucket.objects == {}
    assert world.publisher.published == []
    assert set(world.watchlist_bucket.objects) == {watchlist_index_key(DEP)}  # nothing new
    assert world.deployments.get(DEP).refused_crops == 0  # type: ignore[union-attr]
    assert world.embedder.calls == [3]
    text = captured_logs.text
    for j, m in zip(jpegs, msgs, strict=True):
        b64 = base64.b64encode(j).decode()
        assert b64 not in text and b64[:40] not in text
        assert m.message_id not in text  # not even which crop it was
    assert "similarity" not in text and "score" not in text


def test_corrupt_and_unknown_consumed_rest_succeeds(world: World, captured_logs: LogCapture) -> None:
    good = crop_message(DEP, crop_jpeg(lfw_image(*MATED_PROBE)))
    real = crop_jpeg(lfw_image(*MATED_PROBE))
    truncated = crop_message(DEP, real[: len(real) // 2])
    garbage = crop_message(DEP, b"\xff\xd8not a jpeg at all\xff\xd9")
    import cv2

    big = cv2.imencode(".jpg", np.zeros((150, 150, 3), np.uint8))[1].tobytes()
    wrong_size = crop_message(DEP, big)
    unknown = crop_message("no-such-dep", real)
    event = sqs_event(
        [
            ("ok", good),
            ("trunc", truncated),
            ("garb", garbage),
            ("size", wrong_size),
            ("unk", unknown),
            ("junk", '{"not": "a crop"}'),
        ]
    )
    assert world.run(event) == []

    assert len(world.alerts.items) == 1 and len(world.publisher.published) == 1
    assert world.metrics.total("CropsRejected") == 4
    reasons = {dict(d).get("reason") for (n, d) in world.metrics.counts if n == "CropsRejected"}
    assert reasons == {"truncated", "corrupt", "wrong_size", "invalid_message"}
    assert world.metrics.total("CropsRefused") == 1
    assert world.deployments.get("no-such-dep") is None  # counting never creates a record
    assert world.embedder.calls == [1]  # only the valid crop reached the model
    for sqs_id in ("trunc", "garb", "size", "junk"):
        assert any(sqs_id in line and "crop rejected" in line for line in captured_logs.lines)
    for m in (truncated, garbage, wrong_size):
        assert m.image.jpeg_b64[:40] not in captured_logs.text  # type: ignore[union-attr]


@pytest.mark.parametrize("case", ["stopped", "expired", "pending"])
def test_inactive_deployment_refused_before_embedding(world: World, case: str) -> None:
    if case == "stopped":
        world.deployments.update(DEP, {"state": str(DeploymentState.STOPPED)})
    elif case == "pending":
        world.deployments.update(DEP, {"state": str(DeploymentState.PENDING)})
    else:
        world.clock.advance(3600)  # exactly at expires_at: no longer live
    msgs = [crop_message(DEP, crop_jpeg(lfw_image(*MATED_PROBE))) for _ in range(2)]
    assert world.run(sqs_event([("a", msgs[0]), ("b", msgs[1])])) == []
    assert world.embedder.calls == []
    assert world.deployments.get(DEP).refused_crops == 2  # type: ignore[union-attr]
    assert world.metrics.total("CropsRefused") == 2
    assert world.alerts.items == {} and world.publisher.published == []


def test_transient_error_fails_only_that_record(world: World) -> None:
    # Two people (tracks) seen in one batch: one alert each.
    a = crop_message(DEP, crop_jpeg(lfw_image("Colin_Powell", 2)), track_id="trk-a")
    b = crop_message(DEP, crop_jpeg(lfw_image("Ariel_Sharon", 2)), track_id="trk-b")
    world.publisher.fail("publish", TransientStorageError("sns.publish: Throttling"))
    event = sqs_event([("a", a), ("b", b)])
    assert world.run(event) == ["a"]
    assert len(world.publisher.published) == 1
    assert world.embedder.calls == [2]  # one model call for the whole batch

    # SQS redelivers only "a": it completes, and its alert is the one already recorded.
    assert world.run(sqs_event([("a", a)])) == []
    assert len(world.alerts.items) == 2 and len(world.publisher.published) == 2
    assert {json.loads(p)["crop_message_id"] for p, _ in world.publisher.published} == {a.message_id, b.message_id}


def test_transient_deployment_lookup_fails_its_records(world: World) -> None:
    world.deployments.fail("get", TransientStorageError("deployments.get: ProvisionedThroughputExceeded"))
    m = crop_message(DEP, crop_jpeg(lfw_image(*MATED_PROBE)))
    assert world.run(sqs_event([("x", m)])) == ["x"]
    assert world.embedder.calls == []


def test_replay_of_same_message_alerts_once(world: World) -> None:
    msg = crop_message(DEP, crop_jpeg(lfw_image(*MATED_PROBE)))
    event = sqs_event([("sqs-1", msg)])
    assert world.run(event) == []
    world.service._caches.deployments.clear()  # a different warm container
    assert world.run(sqs_event([("sqs-2", msg)])) == []  # SQS at-least-once: a new delivery id
    assert len(world.alerts.items) == 1
    assert len(world.publisher.published) == 1
    assert len(world.alerts_bucket.objects) == 1
    assert world.metrics.total("AlertsDuplicate") == 1


def test_crash_after_record_before_publish_publishes_on_retry(world: World) -> None:
    msg = crop_message(DEP, crop_jpeg(lfw_image(*MATED_PROBE)))
    world.publisher.fail("publish", TransientStorageError("sns.publish: 500"))
    assert world.run(sqs_event([("m", msg)])) == ["m"]
    assert len(world.alerts.items) == 1 and world.publisher.published == []
    assert world.run(sqs_event([("m", msg)])) == []
    assert len(world.publisher.published) == 1 and len(world.alerts_bucket.objects) == 1
    assert world.alerts.list_for_deployment(DEP)[0].published_at is not None


# -- one decision per track ---------------------------------------------------------------------

TRACK = [("Colin_Powell", n) for n in (2, 3, 4)]


def _track_scores() -> np.ndarray:
    """Each crop's score (as sent: through JPEG) for Colin_Powell's watchlist entry, from the real model."""
    from lfr_core.face.image import decode_jpeg

    emb = real_embedder().embed(np.stack([decode_jpeg(crop_jpeg(lfw_image(*p))) for p in TRACK]))
    entry = real_embedder().embed(_aligned(lfw_image("Colin_Powell", 1))[None])[0]
    return np.asarray(emb @ entry)


def _track_deployment(world: World, one: float, three: float) -> None:
    etag = world.deployments.get(DEP).index_etag  # type: ignore[union-attr]
    world.deployments.items.clear()
    world.deployments.create(deployment(DEP, threshold=one, index_etag=etag, watchlist_size=len(WATCHLIST),
                                        track_thresholds=[one, three], fusion_mode="max"))


def test_a_track_is_decided_once_from_all_its_crops_at_its_size_threshold(world: World) -> None:
    scores = _track_scores()
    fused = float(scores.max())
    _track_deployment(world, one=0.3, three=fused - 0.01)
    jpegs = [crop_jpeg(lfw_image(*p)) for p in TRACK]
    msg = crop_message(DEP, jpegs[0], more=jpegs[1:])
    assert world.run(sqs_event([("sqs-track", msg)])) == []

    assert world.embedder.calls == [3]  # the track's crops in one model call
    (a,) = world.alerts.list_for_deployment(DEP)
    assert a.crops_fused == 3 and a.watchlist_label == "Colin_Powell"
    assert a.similarity == pytest.approx(fused, abs=1e-5) and a.threshold == pytest.approx(fused - 0.01)
    # The alert keeps the message's own (best-quality) crop only: the others are not stored.
    assert world.alerts_bucket.objects == {alert_crop_key(DEP, a.alert_id): jpegs[0]}
    assert json.loads(world.publisher.published[0][0])["crops_fused"] == 3


def test_a_track_below_its_size_threshold_leaves_nothing_even_if_one_crop_would_pass_alone(
    world: World, captured_logs: LogCapture
) -> None:
    scores = _track_scores()
    # Each crop alone clears the one-crop threshold; fused, the track misses the three-crop one.
    _track_deployment(world, one=float(scores.min()) - 0.05, three=float(scores.max()) + 0.01)
    jpegs = [crop_jpeg(lfw_image(*p)) for p in TRACK]
    assert world.run(sqs_event([("sqs-track", crop_message(DEP, jpegs[0], more=jpegs[1:]))])) == []

    assert world.alerts.items == {} and world.alerts_bucket.objects == {} and world.publisher.published == []
    for j in jpegs:
        assert base64.b64encode(j).decode()[:40] not in captured_logs.text
    # Alone, its best crop would have alerted: the track threshold is what held it back.
    assert world.run(sqs_event([("sqs-one", crop_message(DEP, jpegs[int(np.argmax(scores))], track_id="t2"))])) == []
    assert len(world.publisher.published) == 1


def test_one_bad_crop_refuses_its_whole_track(world: World) -> None:
    real = crop_jpeg(lfw_image(*MATED_PROBE))
    msg = crop_message(DEP, real, more=[real[: len(real) // 2]])
    assert world.run(sqs_event([("sqs-bad", msg)])) == []
    assert world.embedder.calls == [] and world.alerts.items == {}
    assert world.metrics.total("CropsRejected") == 1


def test_track_thresholds_cover_every_track_size_or_none() -> None:
    rec = deployment(DEP, threshold=0.5, track_thresholds=[0.55, 0.6])
    assert [rec.threshold_for_crops(n) for n in (1, 2, 3)] == [0.5, 0.55, 0.6]
    # A record from before fusion: every track size falls back to the one-crop threshold.
    assert deployment(DEP, threshold=0.5).threshold_for_crops(3) == 0.5
    for bad in ([0.55], [0.55, 0.6, 0.65], [0.55, 1.5]):
        with pytest.raises(ValueError):
            deployment(DEP, track_thresholds=bad)
