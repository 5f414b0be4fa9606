"""From a frame to crop messages: detect, align, assess, gate, encode.

This is the one production path from pixels to a `CropMessage`; the evaluation
and the demo call it too, so what is measured is what runs in the van.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Literal

import numpy as np

from edge_uploader.exceptions import SourceError
from edge_uploader.quality import assess
from edge_uploader.sources import IMAGE_SUFFIXES, list_images, read_still
from lfr_core.contracts import CropMessage, InlineJpeg, Quality, new_id, utcnow, validation_context
from lfr_core.face.align import MIN_INTEROCULAR_PX, align_face
from lfr_core.face.detect import Detection, FaceDetector, pick_central
from lfr_core.face.image import encode_jpeg
from lfr_core.matching import PRODUCTION_MIN_QUALITY

FaceChoice = Literal["all", "central"]
__all__ = ["IMAGE_SUFFIXES", "Crop", "FaceCropper", "GateCounts", "SourceError", "image_folder_messages", "list_images"]


@dataclass(frozen=True)
class Crop:
    aligned_bgr: np.ndarray
    detection: Detection
    quality: Quality

    def to_message(
        self, *, deployment_id: str, camera_id: str, track_id: str, captured_at: datetime, jpeg_quality: int = 95,
        more: Sequence[tuple[Crop, datetime]] = (),
    ) -> CropMessage:
        """This crop as a message; `more`: the track's other crops (and when each was captured)."""
        lm = self.detection.landmarks
        # Validated against this clock, like the match function does against its own: the edge
        # cannot build (so never sends) what the cloud would refuse.
        return CropMessage.model_validate(
            {
                "deployment_id": deployment_id,
                "camera_id": camera_id,
                "track_id": track_id,
                "captured_at": captured_at,
                "image": InlineJpeg.from_bytes(encode_jpeg(self.aligned_bgr, quality=jpeg_quality)),
                "landmarks": tuple((float(x), float(y)) for x, y in lm),
                "quality": self.quality,
                "more": tuple(
                    {
                        "captured_at": at,
                        "quality": c.quality,
                        "image": InlineJpeg.from_bytes(encode_jpeg(c.aligned_bgr, quality=jpeg_quality)),
                    }
                    for c, at in more
                ),
            },
            context=validation_context(utcnow()),
        )


@dataclass
class GateCounts:
    frames: int = 0
    faces: int = 0
    passed: int = 0
    below_gate: int = 0
    unreadable: list[str] = field(default_factory=list)


class FaceCropper:
    """Detects faces in a BGR frame and returns aligned, quality-assessed crops."""

    def __init__(self, detector: FaceDetector | None = None, min_quality: float = PRODUCTION_MIN_QUALITY) -> None:
        self.detector = detector or FaceDetector()
        self.min_quality = min_quality

    def crops(self, frame_bgr: np.ndarray, faces: FaceChoice = "all") -> list[Crop]:
        dets = self.detector.detect(frame_bgr)
        if faces == "central":
            central = pick_central(dets, frame_bgr.shape)
            dets = [central] if central is not None else []
        return [self.crop(frame_bgr, det) for det in dets]

    def crop(self, frame_bgr: np.ndarray, det: Detection) -> Crop:
        """Align one detected face and assess its quality."""
        aligned = align_face(frame_bgr, det.landmarks)
        return Crop(aligned, det, assess(det.landmarks, aligned, det.score))

    def passes(self, crop: Crop) -> bool:
        return self.passes_quality(crop.quality)

    def passes_quality(self, q: Quality) -> bool:
        return q.score >= self.min_quality and q.interocular_px >= MIN_INTEROCULAR_PX


def image_folder_messages(
    files: list[Path],
    cropper: FaceCropper,
    *,
    deployment_id: str,
    camera_id: str,
    counts: GateCounts,
    faces: FaceChoice = "all",
) -> Iterator[tuple[Path, CropMessage]]:
    """Each still image is its own one-frame track. Unreadable files are counted, not fatal."""
    for path in files:
        frame = read_still(path)
        if frame is None or frame.size == 0:
            counts.unreadable.append(str(path))
            continue
        counts.frames += 1
        for crop in cropper.crops(frame, faces=faces):
            counts.faces += 1
            if not cropper.passes(crop):
                counts.below_gate += 1
                continue
            counts.passed += 1
            yield path, crop.to_message(
                deployment_id=deployment_id, camera_id=camera_id, track_id=new_id(), captured_at=utcnow()
            )


def photo_message(
    path: Path, *, deployment_id: str, camera_id: str, cropper: FaceCropper | None = None
) -> CropMessage | None:
    """The gated crop message of the central face of one still photo, or None if it yields none."""
    msgs = image_folder_messages(
        [path], cropper or FaceCropper(), deployment_id=deployment_id, camera_id=camera_id,
        counts=GateCounts(), faces="central",
    )
    return next((m for _, m in msgs), None)
