"""JPEG encode/decode for face crops with Pillow, with typed errors for every way bytes can be unusable.

Pillow rather than OpenCV so that `lfr_core` (and the Lambda layer) carries no OpenCV: images are
BGR uint8 arrays on both sides, like the rest of lfr_core.
"""

from __future__ import annotations

import io
import warnings

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from lfr_core.errors import InvalidImageError


def encode_jpeg(bgr: np.ndarray, quality: int = 95) -> bytes:
    """Encode a BGR uint8 image (H, W, 3) as JPEG (baseline, 4:2:0, like cv2.imencode)."""
    if not isinstance(bgr, np.ndarray) or bgr.dtype != np.uint8 or bgr.ndim != 3 or bgr.shape[2] != 3:
        raise InvalidImageError(
            "not_bgr_uint8", f"expected (H, W, 3) uint8, got {getattr(bgr, 'shape', None)}"
        )
    if not 1 <= quality <= 100:
        raise ValueError(f"JPEG quality must be 1..100, got {quality}")
    if bgr.shape[0] == 0 or bgr.shape[1] == 0:
        raise InvalidImageError("encode_failed", "empty image")
    buf = io.BytesIO()
    try:
        Image.fromarray(np.ascontiguousarray(bgr[..., ::-1]), mode="RGB").save(
            buf, format="JPEG", quality=int(quality), subsampling="4:2:0"
        )
    except (OSError, ValueError) as exc:
        raise InvalidImageError("encode_failed", type(exc).__name__) from exc
    return buf.getvalue()


def decode_jpeg(data: bytes, expect_size: tuple[int, int] | None = None) -> np.ndarray:
    """Decode JPEG (or PNG, or any format Pillow reads) bytes to BGR uint8 (H, W, 3).

    `expect_size` is (width, height); a decoded image of another size is refused, because a crop
    that is not an aligned 112x112 would embed to garbage rather than fail. EXIF orientation is
    applied (as cv2.imdecode does), so a phone photo enrols upright.
    """
    if not data:
        raise InvalidImageError("empty")
    # libjpeg decodes a truncated JPEG into a half-grey image with only a warning: refuse it here.
    if data[:2] == b"\xff\xd8" and b"\xff\xd9" not in data[-16:]:
        raise InvalidImageError("truncated", f"{len(data)} bytes, no JPEG end marker")
    try:
        with warnings.catch_warnings():
            # Pillow only warns between 89M and 178M pixels; treat that like the error above it.
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data)) as im:
                if expect_size is not None and im.size != tuple(expect_size):
                    # Refused from the header alone: never spend a decode on a crop we will not use.
                    w, h = expect_size
                    raise InvalidImageError(
                        "wrong_size", f"got {im.size[0]}x{im.size[1]}, expected {w}x{h}"
                    )
                im.load()
                rgb = ImageOps.exif_transpose(im).convert("RGB")
    except InvalidImageError:
        raise
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError, EOFError, Image.DecompressionBombError,
            Image.DecompressionBombWarning) as exc:
        # Pillow signals corrupt streams with several exception types; the reason tag is what callers log.
        raise InvalidImageError("corrupt", f"{len(data)} bytes not decodable ({type(exc).__name__})") from exc
    img = np.asarray(rgb, dtype=np.uint8)
    if img.ndim != 3 or img.shape[2] != 3 or img.size == 0:
        raise InvalidImageError("corrupt", f"{len(data)} bytes decoded to shape {img.shape}")
    if expect_size is not None:
        # EXIF rotation can swap the axes after the header check.
        w, h = expect_size
        if img.shape[:2] != (h, w):
            raise InvalidImageError("wrong_size", f"got {img.shape[1]}x{img.shape[0]}, expected {w}x{h}")
    return np.ascontiguousarray(img[..., ::-1], dtype=np.uint8)
