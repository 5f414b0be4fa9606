"""5-point similarity alignment to the 112x112 crop SFace was trained on."""

from __future__ import annotations

import numpy as np

CROP_SIZE = 112
# ArcFace/SFace reference landmarks in a 112x112 crop (as used by OpenCV's FaceRecognizerSF.alignCrop),
# in YuNet's order: right eye, left eye, nose, right mouth corner, left mouth corner.
REFERENCE_LANDMARKS = np.array(
    [
        [38.2946, 51.6963],
        [73.5318, 51.5014],
        [56.0252, 71.7366],
        [41.5493, 92.3655],
        [70.7299, 92.2041],
    ],
    dtype=np.float32,
)


def _as_landmarks(landmarks: np.ndarray) -> np.ndarray:
    lm = np.asarray(landmarks, dtype=np.float32)
    if lm.shape != (5, 2) or not np.all(np.isfinite(lm)):
        raise ValueError(f"expected (5, 2) finite landmarks, got shape {lm.shape}")
    return lm


def similarity_transform(landmarks: np.ndarray) -> np.ndarray:
    """2x3 similarity (rotation, uniform scale, translation) mapping landmarks onto the reference.

    Umeyama least squares in closed form: deterministic (unlike RANSAC/LMEDS sampling) and with
    exactly 5 well-detected points there are no outliers to reject.
    """
    src = _as_landmarks(landmarks).astype(np.float64)
    dst = REFERENCE_LANDMARKS.astype(np.float64)
    mu_s, mu_d = src.mean(0), dst.mean(0)
    s0, d0 = src - mu_s, dst - mu_d
    var_s = (s0**2).sum() / len(src)
    if var_s < 1e-9:
        raise ValueError("degenerate landmarks (all at one point)")
    cov = d0.T @ s0 / len(src)
    u, sig, vt = np.linalg.svd(cov)
    d = np.ones(2)
    if np.linalg.det(u) * np.linalg.det(vt) < 0:
        d[-1] = -1.0  # no reflections
    r = u @ np.diag(d) @ vt
    scale = float((sig * d).sum() / var_s)
    m = np.zeros((2, 3), dtype=np.float64)
    m[:, :2] = scale * r
    m[:, 2] = mu_d - scale * r @ mu_s
    return m


def warp_affine(image: np.ndarray, m: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Bilinear warp of an (H, W, C) uint8 image by the 2x3 forward map `m`; outside pixels are 0.

    Inverse mapping like cv2.warpAffine(INTER_LINEAR, BORDER_CONSTANT 0), including its quantisation of
    source coordinates to 1/32 px, so crops match the OpenCV ones to rounding. The output is small
    (112x112), so the per-pixel numpy gather costs well under a millisecond.
    """
    out_w, out_h = size
    fwd = np.vstack([np.asarray(m, dtype=np.float64), [0.0, 0.0, 1.0]])
    inv = np.linalg.inv(fwd)[:2]
    ys, xs = np.mgrid[0:out_h, 0:out_w].astype(np.float64)
    sx = inv[0, 0] * xs + inv[0, 1] * ys + inv[0, 2]
    sy = inv[1, 0] * xs + inv[1, 1] * ys + inv[1, 2]
    # OpenCV's INTER_TAB_SIZE = 32 sub-pixel positions.
    qx, qy = np.round(sx * 32.0), np.round(sy * 32.0)
    x0, y0 = np.floor(qx / 32.0).astype(np.int64), np.floor(qy / 32.0).astype(np.int64)
    fx = ((qx - x0 * 32.0) / 32.0)[..., None].astype(np.float32)
    fy = ((qy - y0 * 32.0) / 32.0)[..., None].astype(np.float32)
    h, w = image.shape[:2]
    img = image.reshape(h, w, -1)

    def tap(yy: np.ndarray, xx: np.ndarray) -> np.ndarray:
        # A tap outside the source reads the constant border (0), blended like any other pixel.
        inside = ((xx >= 0) & (xx < w) & (yy >= 0) & (yy < h))[..., None]
        vals = img[np.clip(yy, 0, h - 1), np.clip(xx, 0, w - 1)].astype(np.float32)
        return np.where(inside, vals, np.float32(0.0))

    top = tap(y0, x0) * (1 - fx) + tap(y0, x0 + 1) * fx
    bottom = tap(y0 + 1, x0) * (1 - fx) + tap(y0 + 1, x0 + 1) * fx
    res = top * (1 - fy) + bottom * fy
    return np.clip(np.rint(res), 0, 255).astype(np.uint8).reshape(out_h, out_w, *image.shape[2:])


def align_face(image_bgr: np.ndarray, landmarks: np.ndarray) -> np.ndarray:
    """Warp the face to a 112x112x3 uint8 crop aligned on the 5 reference points."""
    if image_bgr.ndim != 3 or image_bgr.shape[2] != 3:
        raise ValueError(f"expected (H, W, 3) image, got {image_bgr.shape}")
    m = similarity_transform(landmarks)
    crop = warp_affine(np.asarray(image_bgr, dtype=np.uint8), m, (CROP_SIZE, CROP_SIZE))
    return np.ascontiguousarray(crop, dtype=np.uint8)


# Below ~16 px between the eyes SFace embeddings stop separating identities: the edge sends no
# smaller face and the watchlist build enrols none.
MIN_INTEROCULAR_PX = 16.0


def interocular_px(landmarks: np.ndarray) -> float:
    """Distance between the eye centres in source pixels (a resolution measure for quality gates)."""
    lm = _as_landmarks(landmarks)
    return float(np.linalg.norm(lm[0] - lm[1]))
