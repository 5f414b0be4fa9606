"""Plausibility bounds of the one crop contract, on both sides.

The finding reproduced: captured_at in 1970 or 2999, NaN or 1e308 landmarks, an infinite
interocular distance all passed the schema and produced alerts carrying those values. The same
`CropMessage` now refuses them where the edge builds a message and where the match function
parses one; the match function consumes such a record with a reason (no retry, no DLQ copy).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from datetime import timedelta
from typing import Any

import numpy as np
import pytest
from pydantic import ValidationError

from edge_uploader.pipeline import Crop
from edge_uploader.runner import RunStats, Uploader
from edge_uploader.sampler import Bundle
from edge_uploader.sources import Frame
from lfr_core.contracts import (
    MAX_INLINE_JPEG_BYTES,
    CropMessage,
    InlineJpeg,
    Quality,
    rejection_reason,
    utcnow,
    validation_context,
)
from lfr_core.face.detect import Detection
from lfr_eval.video import CollectingSink
from tests.unit import test_match_logic as match_world
from tests.unit.functions_support import NOW, LogCapture, capture_logs, crop_jpeg, crop_message, lfw_image, sqs_record
from tests.unit.test_match_logic import DEP, MATED_PROBE, World

index_npz = match_world.index_npz
world = match_world.world

Mutation = Callable[[dict[str, Any]], None]


def _set(path: str, value: object) -> Mutation:
    def mutate(doc: dict[str, Any]) -> None:
        *parents, last = path.split(".")
        node: Any = doc
        for p in parents:
            node = node[int(p)] if p.isdigit() else node[p]
        if last.isdigit():
            node[int(last)] = value
        else:
            node[last] = value
    return mutate


NAN, INF = "__NaN__", "__Infinity__"  # JSON has no literal for these; substituted into the text below
BAD: dict[str, tuple[Mutation, str]] = {
    "captured_1970": (_set("captured_at", "1970-01-01T00:00:00Z"), "invalid_captured_at"),
    "captured_2999": (_set("captured_at", "2999-01-01T00:00:00Z"), "invalid_captured_at"),
    "captured_6min_ahead": (_set("captured_at", (NOW + timedelta(minutes=6)).isoformat()), "invalid_captured_at"),
    "captured_2h_ago": (_set("captured_at", (NOW - timedelta(hours=2)).isoformat()), "invalid_captured_at"),
    "landmark_nan": (_set("landmarks.0.0", NAN), "invalid_landmarks"),
    "landmark_inf": (_set("landmarks.2.1", INF), "invalid_landmarks"),
    "landmark_1e308": (_set("landmarks.1.0", 1e308), "invalid_landmarks"),
    "landmark_negative_far": (_set("landmarks.3.1", -5000.0), "invalid_landmarks"),
    "eyes_on_one_point": (_set("landmarks.1", [38.0, 51.0]), "invalid_landmarks"),
    "iod_inf": (_set("quality.interocular_px", INF), "invalid_quality"),
    "iod_1e308": (_set("quality.interocular_px", 1e308), "invalid_quality"),
    "iod_zero": (_set("quality.interocular_px", 0.0), "invalid_quality"),
    "sharpness_nan": (_set("quality.sharpness", NAN), "invalid_quality"),
    "sharpness_impossible": (_set("quality.sharpness", 2e6), "invalid_quality"),
    "score_above_1": (_set("quality.score", 1.5), "invalid_quality"),
    "track_id_path": (_set("track_id", "../../alerts/x"), "invalid_track_id"),
    "track_id_long": (_set("track_id", "t" * 65), "invalid_track_id"),
    "camera_id_newline": (_set("camera_id", "cam\nFAKE LOG LINE"), "invalid_camera_id"),
    "camera_id_unicode": (_set("camera_id", "cam-é"), "invalid_camera_id"),
    "message_id_short": (_set("message_id", "abc"), "invalid_message_id"),
    "message_id_charset": (_set("message_id", "abcdefgh ijkl"), "invalid_message_id"),
    "b64_not_base64": (_set("image.jpeg_b64", "!!!!"), "invalid_image"),
    "b64_empty": (_set("image.jpeg_b64", ""), "invalid_image"),
    "b64_too_large": (_set("image.jpeg_b64", "A" * (MAX_INLINE_JPEG_BYTES * 4 // 3 + 8)), "invalid_image"),
    "s3_pointer_bucket": (_set("image", {"kind": "s3", "bucket": "../x", "key": "k"}), "invalid_image"),
    "too_many_crops": (lambda d: d.__setitem__("more", [d["more"][0]] * 3), "invalid_more"),
    "more_captured_2999": (_set("more.0.captured_at", "2999-01-01T00:00:00Z"), "invalid_more"),
    "more_sharpness_inf": (_set("more.0.quality.sharpness", INF), "invalid_more"),
    "unknown_field": (_set("note", "hello"), "invalid_message"),
}


@pytest.fixture(scope="module")
def listed_jpeg() -> bytes:
    return crop_jpeg(lfw_image(*MATED_PROBE))


def _body(jpeg: bytes, case: str, track_id: str = "trk-1") -> str:
    mutate, _ = BAD[case]
    doc = json.loads(crop_message(DEP, jpeg, track_id=track_id, more=[jpeg]).model_dump_json())
    mutate(doc)
    return json.dumps(doc).replace(f'"{NAN}"', "NaN").replace(f'"{INF}"', "Infinity")


@pytest.mark.parametrize("case", sorted(BAD))
def test_cloud_side_contract_refuses_each_implausible_field(listed_jpeg: bytes, case: str) -> None:
    good = crop_message(DEP, listed_jpeg, more=[listed_jpeg]).model_dump_json()
    assert CropMessage.model_validate_json(good, context=validation_context(NOW))  # the unmutated one passes
    with pytest.raises(ValidationError) as ei:
        CropMessage.model_validate_json(_body(listed_jpeg, case), context=validation_context(NOW))
    assert rejection_reason(ei.value) == BAD[case][1]


@pytest.fixture
def captured_logs() -> Iterator[LogCapture]:
    yield from capture_logs()


def test_match_consumes_implausible_records_with_a_reason_and_still_alerts_the_valid_one(
    world: World, listed_jpeg: bytes, captured_logs: LogCapture
) -> None:
    # Every bad record carries a LISTED person's real crop: accepted, each would have alerted.
    cases = sorted(BAD)
    records = [sqs_record(f"bad-{i}", _body(listed_jpeg, case, track_id=f"bad-{i}")) for i, case in enumerate(cases)]
    records.append(sqs_record("good", crop_message(DEP, listed_jpeg, track_id="good").model_dump_json()))
    early = crop_message(DEP, listed_jpeg, track_id="early").model_copy(
        update={"captured_at": NOW - timedelta(minutes=30)})  # deployment started at NOW - 60 s
    records.append(sqs_record("early", early.model_dump_json()))
    failures = [world.run({"Records": records[i : i + 10]}) for i in range(0, len(records), 10)]

    assert failures == [[] for _ in failures]  # consumed: no retry, no DLQ copy of a face
    (alert,) = world.alerts.list_for_deployment(DEP)
    assert alert.track_id == "good" and alert.captured_at == NOW
    assert len(world.publisher.published) == 1 and len(world.alerts_bucket.objects) == 1
    rejected: dict[str, float] = {}
    for (name, dims), v in world.metrics.counts.items():
        if name == "CropsRejected":
            rejected[dict(dims)["reason"]] = v
    expected: dict[str, float] = {"captured_outside_deployment": 1}
    for _, reason in BAD.values():
        expected[reason] = expected.get(reason, 0) + 1
    assert rejected == expected
    for i in range(len(cases)):
        assert any(f"'bad-{i}'" in line and "crop rejected" in line for line in captured_logs.lines)
    text = captured_logs.text
    # No content logged. The injected values as they were sent ("2999" alone also matches the digits
    # of a log record's own timing floats, e.g. relativeCreated 1475939.6815299988).
    for injected in ("FAKE LOG LINE", "1e+308", "2999-01-01"):
        assert injected not in text, injected


# -- the edge builds through the same model -----------------------------------------------------


@pytest.fixture(scope="module")
def edge_crop() -> Crop:
    import cv2

    from edge_uploader.pipeline import FaceCropper

    frame = cv2.imread(str(lfw_image(*MATED_PROBE)))
    assert frame is not None
    return FaceCropper().crops(frame, faces="central")[0]


def test_edge_cannot_build_what_the_cloud_would_refuse(edge_crop: Crop) -> None:
    ok = edge_crop.to_message(deployment_id=DEP, camera_id="cam-1", track_id="t1", captured_at=utcnow())
    assert CropMessage.model_validate_json(ok.model_dump_json(), context=validation_context(utcnow())) == ok
    nan_lm = edge_crop.detection.landmarks.copy()
    nan_lm[0, 0] = np.nan
    bad_det = Detection(box=edge_crop.detection.box, landmarks=nan_lm, score=edge_crop.detection.score)
    cases: list[tuple[Crop, dict[str, Any], str]] = [
        (edge_crop, {"captured_at": utcnow() + timedelta(days=365 * 900)}, "invalid_captured_at"),
        (edge_crop, {"captured_at": utcnow().replace(year=1970)}, "invalid_captured_at"),
        (edge_crop, {"captured_at": utcnow() - timedelta(hours=2)}, "invalid_captured_at"),  # as the cloud
        (edge_crop, {"more": [(edge_crop, utcnow() + timedelta(hours=1))]}, "invalid_more"),
        (Crop(edge_crop.aligned_bgr, bad_det, edge_crop.quality), {}, "invalid_landmarks"),
        (edge_crop, {"track_id": "t/1"}, "invalid_track_id"),
    ]
    for crop, override, reason in cases:
        kw: dict[str, Any] = {"deployment_id": DEP, "camera_id": "cam-1", "track_id": "t1", "captured_at": utcnow()}
        with pytest.raises(ValidationError) as ei:
            crop.to_message(**{**kw, **override})
        assert rejection_reason(ei.value) == reason
    with pytest.raises(ValidationError):
        Quality(score=0.5, detector_score=0.9, interocular_px=float("inf"), sharpness=10.0, frontal=1.0)
    with pytest.raises(ValidationError):
        InlineJpeg.from_bytes(b"")


def test_uploader_counts_an_invalid_track_and_keeps_running(edge_crop: Crop) -> None:
    sink = CollectingSink()
    up = Uploader(cropper=None, delivery=sink, deployment_id=DEP, camera_id="cam-1")  # type: ignore[arg-type]
    now = utcnow()
    good = Frame(0, 0.0, edge_crop.aligned_bgr, now)
    broken_clock = Frame(1, 0.04, edge_crop.aligned_bgr, now.replace(year=2999))
    stats = RunStats()
    up._send(Bundle("t-broken", ((edge_crop, broken_clock),), "ended"), stats, {})
    up._send(Bundle("t-good", ((edge_crop, good),), "ended"), stats, {})
    assert stats.messages_invalid == {"invalid_captured_at": 1}
    assert stats.messages_sent == 1 and [m.track_id for m in sink.messages] == ["t-good"]
    assert "invalid=1" in stats.line()
