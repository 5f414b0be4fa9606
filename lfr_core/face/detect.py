"""Face detection with YuNet (cv2.FaceDetectorYN): boxes, 5 landmarks and a score per face."""

from __future__ import annotations

import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

from lfr_core.face.models import model_path as _model_path
from lfr_core.layout import MODEL_YUNET

# Images whose shorter side is below this are upscaled before detection. YuNet's smallest anchors
# are 10 px at stride 8, but on small news-photo faces (LFW: 150x150 images, faces ~50-60 px)
# landmark quality and recall are better on a 2x upscaled image; see DEFAULT_UPSCALE_MIN_SIDE use.
DEFAULT_UPSCALE_MIN_SIDE = 320
MAX_UPSCALE = 4.0


@dataclass(frozen=True)
class Detection:
    """One face: box (x, y, w, h) and landmarks (5, 2) in the coordinates of the image given to detect().

    Landmark order is YuNet's: right eye, left eye, nose tip, right mouth corner, left mouth corner
    (the subject's right, i.e. the left side of the image for a frontal face).
    """

    box: tuple[float, float, float, float]
    landmarks: np.ndarray = field(repr=False)
    score: float

    @property
    def centre(self) -> tuple[float, float]:
        x, y, w, h = self.box
        return (x + w / 2.0, y + h / 2.0)


class FaceDetector:
    """YuNet face detector. Calls are serialised: the cv2 object keeps per-call state (input size)."""

    def __init__(
        self,
        model_path: str | Path | None = None,
        score_threshold: float = 0.6,
        nms_threshold: float = 0.3,
        top_k: int = 50,
        upscale_min_side: int = DEFAULT_UPSCALE_MIN_SIDE,
    ) -> None:
        path = Path(model_path) if model_path is not None else _model_path(MODEL_YUNET)
        self.score_threshold = score_threshold
        self.upscale_min_side = upscale_min_side
        self._lock = threading.Lock()
        self._net = cv2.FaceDetectorYN.create(
            str(path), "", (320, 320), score_threshold, nms_threshold, top_k
        )

    def detect(self, image_bgr: np.ndarray) -> list[Detection]:
        """All faces in a BGR uint8 image, best score first; coordinates in the input image."""
        if image_bgr.ndim != 3 or image_bgr.shape[2] != 3 or image_bgr.dtype != np.uint8:
            raise ValueError(f"expected (H, W, 3) uint8 BGR, got {image_bgr.shape} {image_bgr.dtype}")
        h, w = image_bgr.shape[:2]
        scale = 1.0
        if self.upscale_min_side and min(h, w) < self.upscale_min_side:
            scale = min(self.upscale_min_side / min(h, w), MAX_UPSCALE)
        img = image_bgr
        if scale != 1.0:
            img = cv2.resize(image_bgr, (round(w * scale), round(h * scale)), interpolation=cv2.INTER_CUBIC)
        ih, iw = img.shape[:2]
        with self._lock:
            self._net.setInputSize((iw, ih))
            _, faces = self._net.detect(img)
        if faces is None:
            return []
        # Map back from the resized image; the actual factor per axis after rounding.
        sx, sy = w / iw, h / ih
        out: list[Detection] = []
        for row in np.asarray(faces, dtype=np.float32):
            x, y, bw, bh = (float(v) for v in row[:4])
            lm = row[4:14].reshape(5, 2).copy()
            lm[:, 0] *= sx
            lm[:, 1] *= sy
            out.append(
                Detection(
                    box=(x * sx, y * sy, bw * sx, bh * sy),
                    landmarks=lm.astype(np.float32),
                    score=float(row[14]),
                )
            )
        out.sort(key=lambda d: d.score, reverse=True)
        return out


def pick_central(detections: Sequence[Detection], image_shape: tuple[int, ...]) -> Detection | None:
    """The detection whose box centre is nearest the image centre (LFW labels the central face)."""
    if not detections:
        return None
    h, w = image_shape[:2]
    cx, cy = w / 2.0, h / 2.0
    return min(detections, key=lambda d: (d.centre[0] - cx) ** 2 + (d.centre[1] - cy) ** 2)
