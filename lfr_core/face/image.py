"""JPEG encode/decode for face crops, with typed errors instead of cv2's silent `None`."""

from __future__ import annotations

import cv2
import numpy as np

from lfr_core.errors import InvalidImageError


def encode_jpeg(bgr: np.ndarray, quality: int = 95) -> bytes:
    """Encode a BGR uint8 image (H, W, 3) as JPEG."""
    if not isinstance(bgr, np.ndarray) or bgr.dtype != np.uint8 or bgr.ndim != 3 or bgr.shape[2] != 3:
        raise InvalidImageError(
            "not_bgr_uint8", f"expected (H, W, 3) uint8, got {getattr(bgr, 'shape', None)}"
        )
    if not 1 <= quality <= 100:
        raise ValueError(f"JPEG quality must be 1..100, got {quality}")
    ok, buf = cv2.imencode(".jpg", bgr, [cv2.IMWRITE_JPEG_QUALITY, int(quality)])
    if not ok:
        raise InvalidImageError("encode_failed")
    return buf.tobytes()


def decode_jpeg(data: bytes, expect_size: tuple[int, int] | None = None) -> np.ndarray:
    """Decode JPEG (or any format cv2 reads) bytes to BGR uint8 (H, W, 3).

    `expect_size` is (width, height); a decoded image of another size is refused, because a crop
    that is not an aligned 112x112 would embed to garbage rather than fail.
    """
    if not data:
        raise InvalidImageError("empty")
    # libjpeg decodes a truncated JPEG into a half-grey image with only a warning: refuse it here.
    if data[:2] == b"\xff\xd8" and b"\xff\xd9" not in data[-16:]:
        raise InvalidImageError("truncated", f"{len(data)} bytes, no JPEG end marker")
    buf = np.frombuffer(data, dtype=np.uint8)
    img = cv2.imdecode(buf, cv2.IMREAD_COLOR)
    if img is None or img.size == 0:
        raise InvalidImageError("corrupt", f"{len(data)} bytes not decodable")
    if expect_size is not None:
        w, h = expect_size
        if img.shape[:2] != (h, w):
            raise InvalidImageError("wrong_size", f"got {img.shape[1]}x{img.shape[0]}, expected {w}x{h}")
    return np.ascontiguousarray(img, dtype=np.uint8)
