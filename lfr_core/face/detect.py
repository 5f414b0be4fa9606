"""Face detection with YuNet on onnxruntime: boxes, 5 landmarks and a score per face.

The network runs in onnxruntime (the model built by layers.face_models with dynamic H/W) and the
post-processing is OpenCV's FaceDetectorYN (modules/objdetect/src/face_detect.cpp) redone in numpy,
so detections match cv2.FaceDetectorYN without shipping OpenCV in the Lambda layer.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from lfr_core.face.onnx_models import cpu_session
from lfr_core.face.onnx_models import model_path as _model_path
from lfr_core.layout import MODEL_YUNET

# Images whose shorter side is below this are upscaled before detection (0 = never). Measured on
# lfw-dev (150x150 images, faces ~50-60 px) with the cv2 path: native size already found a face in
# 1000/1000 sampled images, and upscaling to 300 did not improve verification (pairsDevTrain best
# accuracy 0.9936 upscaled vs 0.9950 native) at ~4x the detection time. Kept at 320 because
# DEFAULT_THRESHOLD was measured with it (0/9,525 detection failures); 0 is a valid speed-up.
DEFAULT_UPSCALE_MIN_SIDE = 320
MAX_UPSCALE = 4.0

STRIDES: tuple[int, ...] = (8, 16, 32)
# FaceDetectorYN pads the input (bottom/right, zeros) to a multiple of the largest stride.
PAD_DIVISOR = 32
_CUBIC_A = -0.75  # OpenCV's INTER_CUBIC kernel (Pillow uses -0.5); keeps the upscale like the cv2 one


def _cubic_taps(n_in: int, n_out: int) -> tuple[np.ndarray, np.ndarray]:
    """Source indices (n_out, 4) and weights (n_out, 4) of cv2.resize INTER_CUBIC along one axis."""
    src = (np.arange(n_out, dtype=np.float64) + 0.5) * (n_in / n_out) - 0.5
    x0 = np.floor(src)
    t = src - x0
    a = _CUBIC_A
    w0 = ((a * (t + 1) - 5 * a) * (t + 1) + 8 * a) * (t + 1) - 4 * a
    w1 = ((a + 2) * t - (a + 3)) * t * t + 1
    w2 = ((a + 2) * (1 - t) - (a + 3)) * (1 - t) * (1 - t) + 1
    w3 = 1.0 - w0 - w1 - w2
    idx = x0.astype(np.int64)[:, None] + np.arange(-1, 3)[None, :]
    # OpenCV clamps taps at the edges (replicated border).
    return np.clip(idx, 0, n_in - 1), np.stack([w0, w1, w2, w3], axis=1).astype(np.float32)


def resize_cubic(image: np.ndarray, width: int, height: int) -> np.ndarray:
    """Bicubic resize of an (H, W, C) uint8 image, separable 4-tap like cv2.resize(INTER_CUBIC)."""
    h, w = image.shape[:2]
    yi, yw = _cubic_taps(h, height)
    xi, xw = _cubic_taps(w, width)
    img = image.astype(np.float32)
    rows = np.einsum("hxkc,xk->hxc", img[:, xi], xw)
    out = np.einsum("ykxc,yk->yxc", rows[yi], yw)
    return np.clip(np.rint(out), 0, 255).astype(np.uint8)


def _iou_rect2i(box: np.ndarray, others: np.ndarray) -> np.ndarray:
    """IoU of one integer (x, y, w, h) box with many, as cv::Rect's jaccardDistance computes it."""
    x1 = np.maximum(box[0], others[:, 0])
    y1 = np.maximum(box[1], others[:, 1])
    x2 = np.minimum(box[0] + box[2], others[:, 0] + others[:, 2])
    y2 = np.minimum(box[1] + box[3], others[:, 1] + others[:, 3])
    inter = np.where((x2 > x1) & (y2 > y1), (x2 - x1) * (y2 - y1), 0).astype(np.float64)
    union_sum = (box[2] * box[3] + others[:, 2] * others[:, 3]).astype(np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        iou = inter / (union_sum - inter)
    # Two empty boxes count as identical (jaccard distance 0), as in OpenCV.
    return np.where(union_sum <= 0, 1.0, iou)


def nms(boxes: np.ndarray, scores: np.ndarray, score_threshold: float, nms_threshold: float, top_k: int) -> list[int]:
    """cv2.dnn.NMSBoxes on integer boxes (eta 1): strict score threshold, top_k BEFORE suppression."""
    cand = np.flatnonzero(scores > score_threshold)
    # Stable descending sort: equal scores keep decode order, as std::stable_sort does.
    cand = cand[np.argsort(-scores[cand], kind="stable")]
    if top_k > 0:
        cand = cand[:top_k]
    keep: list[int] = []
    for i in cand:
        if keep and np.any(_iou_rect2i(boxes[i], boxes[keep]) > nms_threshold):
            continue
        keep.append(int(i))
    return keep


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
    """YuNet face detector on one onnxruntime session (thread-safe: no per-call state is kept)."""

    def __init__(
        self,
        model_path: str | Path | None = None,
        score_threshold: float = 0.6,
        nms_threshold: float = 0.3,
        top_k: int = 50,
        upscale_min_side: int = DEFAULT_UPSCALE_MIN_SIDE,
        intra_op_threads: int | None = None,
    ) -> None:
        path = Path(model_path) if model_path is not None else _model_path(MODEL_YUNET)
        self.score_threshold = score_threshold
        self.nms_threshold = nms_threshold
        self.top_k = top_k
        self.upscale_min_side = upscale_min_side
        self._session = cpu_session(path, intra_op_threads)
        self._input = self._session.get_inputs()[0].name
        self._outputs = [f"{kind}_{s}" for kind in ("cls", "obj", "bbox", "kps") for s in STRIDES]
        missing = set(self._outputs) - {o.name for o in self._session.get_outputs()}
        if missing:
            raise ValueError(f"{path.name} is not a YuNet model: missing outputs {sorted(missing)}")
        self.model_name = path.name

    def detect(self, image_bgr: np.ndarray) -> list[Detection]:
        """All faces in a BGR uint8 image, best score first; coordinates in the input image."""
        if image_bgr.ndim != 3 or image_bgr.shape[2] != 3 or image_bgr.dtype != np.uint8:
            raise ValueError(f"expected (H, W, 3) uint8 BGR, got {image_bgr.shape} {image_bgr.dtype}")
        h, w = image_bgr.shape[:2]
        if h == 0 or w == 0:
            return []
        scale = 1.0
        if self.upscale_min_side and min(h, w) < self.upscale_min_side:
            scale = min(self.upscale_min_side / min(h, w), MAX_UPSCALE)
        img = image_bgr
        if scale != 1.0:
            img = resize_cubic(image_bgr, round(w * scale), round(h * scale))
        ih, iw = img.shape[:2]
        faces = self._run(img)
        # Map back from the resized image; the actual factor per axis after rounding.
        sx, sy = w / iw, h / ih
        out: list[Detection] = []
        for row in faces:
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

    def _run(self, img: np.ndarray) -> np.ndarray:
        """(N, 15) float32 rows as FaceDetectorYN returns them: x, y, w, h, 5 landmarks, score."""
        ih, iw = img.shape[:2]
        pad_h = ((ih - 1) // PAD_DIVISOR + 1) * PAD_DIVISOR
        pad_w = ((iw - 1) // PAD_DIVISOR + 1) * PAD_DIVISOR
        blob = np.zeros((1, 3, pad_h, pad_w), dtype=np.float32)
        # BGR, 0..255, unnormalised: blobFromImage's defaults; YuNet normalises inside the graph.
        blob[0, :, :ih, :iw] = img.transpose(2, 0, 1)
        res = dict(zip(self._outputs, self._session.run(self._outputs, {self._input: blob}), strict=True))
        rows: list[np.ndarray] = []
        for s in STRIDES:
            cols = pad_w // s
            cls = np.clip(res[f"cls_{s}"].reshape(-1), 0.0, 1.0)
            obj = np.clip(res[f"obj_{s}"].reshape(-1), 0.0, 1.0)
            score = np.sqrt(cls * obj).astype(np.float32)
            idx = np.flatnonzero(score >= np.float32(self.score_threshold))
            if idx.size == 0:
                continue
            r = (idx // cols).astype(np.float32)
            c = (idx % cols).astype(np.float32)
            bbox = res[f"bbox_{s}"].reshape(-1, 4)[idx]
            kps = res[f"kps_{s}"].reshape(-1, 10)[idx]
            fs = np.float32(s)
            cx = (c + bbox[:, 0]) * fs
            cy = (r + bbox[:, 1]) * fs
            bw = np.exp(bbox[:, 2]) * fs
            bh = np.exp(bbox[:, 3]) * fs
            lm = np.empty((idx.size, 10), dtype=np.float32)
            lm[:, 0::2] = (kps[:, 0::2] + c[:, None]) * fs
            lm[:, 1::2] = (kps[:, 1::2] + r[:, None]) * fs
            rows.append(
                np.column_stack([cx - bw / 2, cy - bh / 2, bw, bh, lm, score[idx]]).astype(np.float32)
            )
        if not rows:
            return np.zeros((0, 15), dtype=np.float32)
        faces = np.concatenate(rows)
        if len(faces) == 1:
            return faces  # OpenCV skips NMS (and top_k) for a single candidate
        # NMS on boxes truncated to int, as FaceDetectorYN builds Rect2i from the float boxes.
        boxes = faces[:, :4].astype(np.int64)
        keep = nms(boxes, faces[:, 14], self.score_threshold, self.nms_threshold, self.top_k)
        return faces[keep]


def pick_central(detections: Sequence[Detection], image_shape: tuple[int, ...]) -> Detection | None:
    """The detection whose box centre is nearest the image centre (LFW labels the central face)."""
    if not detections:
        return None
    h, w = image_shape[:2]
    cx, cy = w / 2.0, h / 2.0
    return min(detections, key=lambda d: (d.centre[0] - cx) ** 2 + (d.centre[1] - cy) ** 2)
