"""Quality of one detected face, from what the edge already has: landmarks, pixels, detector score.

The score ranks a track's crops (the best ones are sent) and can gate what leaves the van.
Production's gate (`lfr_core.matching.PRODUCTION_MIN_QUALITY`) keeps every face big enough to
identify: measured, a blurred or profile face found listed people more often than it alerted
falsely, so dropping it only cost true alerts.
"""

from __future__ import annotations

import cv2
import numpy as np

from lfr_core.contracts import Quality
from lfr_core.face.align import MIN_INTEROCULAR_PX

# By ~48 px between the eyes more resolution no longer helps.
FULL_INTEROCULAR_PX = 48.0
# Variance of the Laplacian of the aligned crop: ~20 is visibly smeared, >=120 is crisp.
BLURRED_LAPVAR = 20.0
SHARP_LAPVAR = 120.0


def _ramp(x: float, lo: float, hi: float) -> float:
    return float(np.clip((x - lo) / (hi - lo), 0.0, 1.0))


def frontalness(landmarks: np.ndarray) -> float:
    """1.0 for a frontal face, falling to 0 as the nose moves off the eyes' midline (yaw)."""
    right_eye, left_eye, nose = landmarks[0], landmarks[1], landmarks[2]
    iod = float(np.linalg.norm(left_eye - right_eye))
    if iod <= 1e-6:
        return 0.0
    # Project the nose onto the eye axis: its offset from the midpoint grows with yaw.
    axis = (left_eye - right_eye) / iod
    offset = float(np.dot(nose - (left_eye + right_eye) / 2.0, axis)) / iod
    return float(np.clip(1.0 - 2.0 * abs(offset), 0.0, 1.0))


def sharpness(aligned_bgr: np.ndarray) -> float:
    grey = cv2.cvtColor(aligned_bgr, cv2.COLOR_BGR2GRAY)
    return float(cv2.Laplacian(grey, cv2.CV_64F).var())


def assess(landmarks: np.ndarray, aligned_bgr: np.ndarray, detector_score: float) -> Quality:
    lm = np.asarray(landmarks, dtype=np.float32).reshape(5, 2)
    iod = float(np.linalg.norm(lm[1] - lm[0]))
    sharp = sharpness(aligned_bgr)
    front = frontalness(lm)
    size_f = _ramp(iod, MIN_INTEROCULAR_PX, FULL_INTEROCULAR_PX)
    sharp_f = _ramp(sharp, BLURRED_LAPVAR, SHARP_LAPVAR)
    det = float(np.clip(detector_score, 0.0, 1.0))
    # Geometric mean: one very bad factor should sink the score, not be averaged away.
    score = float((max(size_f, 1e-3) * max(sharp_f, 1e-3) * max(front, 1e-3) * max(det, 1e-3)) ** 0.25)
    return Quality(
        score=float(np.clip(score, 0.0, 1.0)),
        detector_score=det,
        interocular_px=iod,
        sharpness=sharp,
        frontal=front,
    )
