"""Surveillance-like degradation of probe images (`lfr eval --degrade cctv`), seeded per image."""

from __future__ import annotations

import zlib

import cv2
import numpy as np

from lfr_core.errors import InvalidImageError


def degrade_cctv(frame: np.ndarray, iod_px: float, seed: int, key: str) -> np.ndarray:
    """Surveillance conditions, seeded per image: 24-40 px between the eyes, motion blur, noise, JPEG 30-50."""
    rng = np.random.default_rng([seed, zlib.crc32(key.encode())])
    target_iod = rng.uniform(24.0, 40.0)
    out = frame
    if iod_px > target_iod:
        scale = target_iod / iod_px
        h, w = frame.shape[:2]
        out = cv2.resize(frame, (max(1, round(w * scale)), max(1, round(h * scale))), interpolation=cv2.INTER_AREA)
    length = int(rng.integers(3, 8))  # px of motion during the exposure, at the reduced size
    kernel = np.zeros((length, length), np.float32)
    kernel[length // 2, :] = 1.0 / length
    rot = cv2.getRotationMatrix2D(((length - 1) / 2, (length - 1) / 2), float(rng.uniform(0, 180)), 1.0)
    kernel = np.asarray(cv2.warpAffine(kernel, rot, (length, length)), dtype=np.float32)
    kernel /= max(float(kernel.sum()), 1e-6)
    out = cv2.filter2D(out, -1, kernel)
    noisy = out.astype(np.float32) + rng.normal(0.0, rng.uniform(2.0, 6.0), out.shape).astype(np.float32)
    out = np.clip(np.rint(noisy), 0, 255).astype(np.uint8)
    ok, buf = cv2.imencode(".jpg", out, [cv2.IMWRITE_JPEG_QUALITY, int(rng.integers(30, 51))])
    if not ok:
        raise InvalidImageError("encode_failed", "degradation JPEG")
    return np.asarray(cv2.imdecode(buf, cv2.IMREAD_COLOR))

