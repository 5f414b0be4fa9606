"""The face path on real LFW images with the real models: detect, align, embed, JPEG errors.

Nothing derived from a dataset face (crop, embedding) is written anywhere: all stays in memory.
"""

from __future__ import annotations

from functools import cache
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from lfr_core.errors import InvalidImageError
from lfr_core.face.align import align_face, interocular_px
from lfr_core.face.detect import Detection, FaceDetector, pick_central
from lfr_core.face.embed import MAX_CROPS_PER_RUN, FaceEmbedder
from lfr_core.face.image import decode_jpeg, encode_jpeg
from lfr_eval.datasets import read_lfw_pairs

N_PAIRS = 12  # of each kind, from pairsDevTrain.txt


@pytest.fixture(scope="module")
def detector(built_models: Path) -> FaceDetector:
    return FaceDetector()


@pytest.fixture(scope="module")
def embedder(built_models: Path) -> FaceEmbedder:
    return FaceEmbedder()


@cache
def _read_bgr(path: Path) -> np.ndarray:
    with Image.open(path) as im:
        return np.ascontiguousarray(np.asarray(im.convert("RGB"))[..., ::-1])


def _central(detector: FaceDetector, path: Path) -> tuple[np.ndarray, Detection]:
    img = _read_bgr(path)
    face = pick_central(detector.detect(img), img.shape)
    assert face is not None, f"no face in {path.name}"
    return img, face


def _pairs(lfw_dir: Path) -> tuple[list[tuple[Path, Path]], list[tuple[Path, Path]]]:
    same, diff = read_lfw_pairs()
    return same[:N_PAIRS], diff[:N_PAIRS]


def test_detector_finds_the_central_face(detector: FaceDetector, lfw_dir: Path) -> None:
    same, diff = _pairs(lfw_dir)
    paths = sorted({p for pair in same + diff for p in pair})
    for path in paths:
        _, face = _central(detector, path)
        assert face.landmarks.shape == (5, 2) and face.landmarks.dtype == np.float32
        assert 0.6 <= face.score <= 1.0
        # LFW is centred on the labelled person: the chosen face sits near the middle of 150x150.
        cx, cy = face.centre
        assert abs(cx - 75) < 25 and abs(cy - 75) < 30, path.name
        # YuNet order: right eye (image left) before left eye; eyes above the mouth corners.
        lm = face.landmarks
        assert lm[0, 0] < lm[1, 0] and lm[3, 0] < lm[4, 0]
        assert max(lm[0, 1], lm[1, 1]) < min(lm[3, 1], lm[4, 1])
        assert 10 < interocular_px(lm) < 80


def test_pick_central_prefers_the_middle() -> None:
    lm = np.zeros((5, 2), np.float32)
    off = Detection(box=(0, 0, 40, 40), landmarks=lm, score=0.99)
    mid = Detection(box=(55, 55, 40, 40), landmarks=lm, score=0.7)
    assert pick_central([off, mid], (150, 150, 3)) is mid
    assert pick_central([], (150, 150, 3)) is None


def test_align_gives_a_112_crop(detector: FaceDetector, lfw_dir: Path) -> None:
    same, _ = _pairs(lfw_dir)
    img, face = _central(detector, same[0][0])
    crop = align_face(img, face.landmarks)
    assert crop.shape == (112, 112, 3) and crop.dtype == np.uint8
    assert crop.std() > 10  # a face, not a blank border


def test_align_maps_landmarks_to_the_reference() -> None:
    from lfr_core.face.align import REFERENCE_LANDMARKS, similarity_transform

    # A face at half size, shifted: the transform must be exact for a true similarity.
    src = REFERENCE_LANDMARKS * 0.5 + np.array([20.0, 30.0], np.float32)
    m = similarity_transform(src)
    mapped = src @ m[:, :2].T + m[:, 2]
    np.testing.assert_allclose(mapped, REFERENCE_LANDMARKS, atol=1e-3)


def test_same_person_scores_above_different_people(
    detector: FaceDetector, embedder: FaceEmbedder, lfw_dir: Path
) -> None:
    same, diff = _pairs(lfw_dir)

    def scores(pairs: list[tuple[Path, Path]]) -> np.ndarray:
        crops = [align_face(*_unpack(detector, p)) for pair in pairs for p in pair]
        emb = embedder.embed(crops)  # one batch
        return np.sum(emb[0::2] * emb[1::2], axis=1)

    s_same, s_diff = scores(same), scores(diff)
    assert np.median(s_same) > np.median(s_diff) + 0.3
    assert s_same.mean() > s_diff.mean() + 0.3
    # Separable on this handful (SFace is ~99.5% on LFW pairs).
    assert np.mean(s_same > s_diff.max()) >= 0.9


def _unpack(detector: FaceDetector, path: Path) -> tuple[np.ndarray, np.ndarray]:
    img, face = _central(detector, path)
    return img, face.landmarks


def test_embed_batches_and_normalises(detector: FaceDetector, embedder: FaceEmbedder, lfw_dir: Path) -> None:
    same, _ = _pairs(lfw_dir)
    crops = np.stack([align_face(*_unpack(detector, p)) for p in (same[0][0], same[1][0], same[2][0])])
    emb = embedder.embed(crops)
    assert emb.shape == (3, 128) and emb.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(emb, axis=1), 1.0, atol=1e-5)
    # A row does not depend on its batch mates.
    np.testing.assert_allclose(embedder.embed(crops[1:2])[0], emb[1], atol=1e-4)
    assert embedder.embed(np.zeros((0, 112, 112, 3), np.uint8)).shape == (0, 128)
    with pytest.raises(ValueError):
        embedder.embed(np.zeros((1, 100, 100, 3), np.uint8))


class _RecordingSession:
    """The real onnxruntime session, with the batch size of every run written down."""

    def __init__(self, inner: object) -> None:
        self.inner = inner
        self.batches: list[int] = []

    def run(self, outputs: object, feeds: dict[str, np.ndarray]) -> object:
        self.batches.extend(len(blob) for blob in feeds.values())
        return self.inner.run(outputs, feeds)  # type: ignore[attr-defined]


def test_a_long_batch_runs_the_model_a_track_at_a_time(
    detector: FaceDetector, built_models: Path, lfw_dir: Path
) -> None:
    # A match batch (5 track messages of 3 crops) is embedded in runs of a track's crops: per crop
    # that is faster than one run of 15 (README "Performance and cost"), and it changes no row.
    same, _ = _pairs(lfw_dir)
    crops = np.stack([align_face(*_unpack(detector, pair[0])) for pair in same[:7]])
    embedder = FaceEmbedder()
    alone = np.concatenate([embedder.embed(crops[i : i + 1]) for i in range(len(crops))])
    spy = _RecordingSession(embedder._session)
    embedder._session = spy
    np.testing.assert_allclose(embedder.embed(crops), alone, atol=1e-6)
    plain, tta = embedder.embed_both(crops)
    np.testing.assert_allclose(tta, alone, atol=1e-6)
    assert max(spy.batches) == MAX_CROPS_PER_RUN == 3
    # 7 crops: runs of 3, 3, 1, each with its mirror images (flip TTA), for embed and for embed_both.
    assert sorted(spy.batches) == sorted([3, 3, 1] * 4)
    np.testing.assert_allclose(np.linalg.norm(plain, axis=1), 1.0, atol=1e-5)


def test_jpeg_round_trip_and_errors() -> None:
    # A smooth gradient: JPEG keeps it closely (noise would be smeared by chroma subsampling).
    ramp = np.linspace(0.2, 1.0, 112)[None, :, None] * np.linspace(0.5, 1.0, 112)[:, None, None]
    img = (ramp * np.array([[[40, 120, 200]]])).astype(np.uint8)
    data = encode_jpeg(img)
    back = decode_jpeg(data, expect_size=(112, 112))
    assert back.shape == (112, 112, 3) and back.dtype == np.uint8
    assert np.abs(back.astype(int) - img.astype(int)).mean() < 3
    # Channel order survives (BGR in, BGR out).
    assert back[..., 2].mean() > back[..., 0].mean()

    cases = {
        "empty": b"",
        "garbage": b"\x00\x01not an image at all" * 10,
        "truncated": data[: len(data) // 2],
        "flipped-header": b"\xff\xd8\x00\x00" + data[4:],
    }
    for name, bad in cases.items():
        with pytest.raises(InvalidImageError) as ei:
            decode_jpeg(bad, expect_size=(112, 112))
        assert ei.value.reason in {"empty", "not_jpeg", "corrupt", "truncated"}, name
    with pytest.raises(InvalidImageError) as ei:
        decode_jpeg(encode_jpeg(np.zeros((100, 112, 3), np.uint8)), expect_size=(112, 112))
    assert ei.value.reason == "wrong_size"


@pytest.mark.parametrize(
    ("memory_mb", "threads"), [(None, None), ("1024", 1), ("2048", 1), ("3538", 2), ("10240", 5)]
)
def test_sessions_take_lambda_cpu_share(
    built_models: Path, monkeypatch: pytest.MonkeyPatch, memory_mb: str | None, threads: int | None
) -> None:
    """Inside Lambda (its memory variable set) the model gets one thread per whole vCPU its memory
    buys, capped by the cores the host shows, and idle threads do not spin; outside, onnxruntime's
    defaults stand."""
    monkeypatch.setattr("os.cpu_count", lambda: 6)
    if memory_mb is None:
        monkeypatch.delenv("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", raising=False)
    else:
        monkeypatch.setenv("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", memory_mb)
    for session in (FaceEmbedder()._session, FaceDetector()._session):
        opts = session.get_session_options()
        if threads is None:
            assert opts.intra_op_num_threads == 0  # onnxruntime's "one per core"
            with pytest.raises(RuntimeError, match="does not have configuration"):
                opts.get_session_config_entry("session.intra_op.allow_spinning")  # default: spins
        else:
            assert opts.intra_op_num_threads == threads
            assert opts.get_session_config_entry("session.intra_op.allow_spinning") == "0"


def test_explicit_thread_count_wins_inside_lambda(built_models: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "2048")
    assert FaceEmbedder(intra_op_threads=2)._session.get_session_options().intra_op_num_threads == 2
