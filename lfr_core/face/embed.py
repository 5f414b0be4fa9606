"""SFace embeddings on onnxruntime: aligned 112x112 BGR crops -> L2-normalised 128-d vectors."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from lfr_core.face.align import CROP_SIZE
from lfr_core.face.onnx_models import cpu_session
from lfr_core.face.onnx_models import model_path as _model_path
from lfr_core.layout import MODEL_SFACE
from lfr_core.matching import PRODUCTION_FLIP_TTA

EMBEDDING_DIM = 128
# The most crops one model run takes (a track message's). Per crop, small runs are faster on a CPU:
# with both cores busy, one run of 15 crops (a match batch) took 3.5-4% longer per crop than runs of
# 3, with the same embeddings to the bit; on an earlier host `lfr bench` measured a run of 10 at 12%
# over one crop alone (README "Performance and cost"). A large run's activations leave the core's cache.
MAX_CROPS_PER_RUN = 3


def preprocess(crops: Sequence[np.ndarray] | np.ndarray) -> np.ndarray:
    """(N, 112, 112, 3) BGR uint8 -> (N, 3, 112, 112) float32 RGB, unscaled.

    Matches cv2.FaceRecognizerSF (blobFromImage(img, 1.0, (112, 112), 0, swapRB=True)); the graph
    itself subtracts 127.5 and multiplies by 1/128.
    """
    batch = np.asarray(crops) if not isinstance(crops, np.ndarray) else crops
    if batch.ndim == 3:
        raise ValueError("expected a batch of crops (N, 112, 112, 3); wrap a single crop in a list")
    if batch.ndim != 4 or batch.shape[1:] != (CROP_SIZE, CROP_SIZE, 3) or batch.dtype != np.uint8:
        raise ValueError(f"expected (N, {CROP_SIZE}, {CROP_SIZE}, 3) uint8, got {batch.shape} {batch.dtype}")
    return np.ascontiguousarray(batch[..., ::-1].transpose(0, 3, 1, 2), dtype=np.float32)


class FaceEmbedder:
    """Holds one onnxruntime session; `embed` runs it on at most `MAX_CROPS_PER_RUN` crops at a time."""

    def __init__(
        self, model_path: str | Path | None = None, intra_op_threads: int | None = None,
        flip_tta: bool = PRODUCTION_FLIP_TTA,
    ) -> None:
        # flip_tta: embed each crop and its mirror image in the same run and add the two raw
        # features before normalising (test-time augmentation). As production by default, so the
        # match function, the watchlist build and `lfr bench` score and cost what the calibration
        # table was made with (`lfr_core.calibration.shipped_table` checks the table's side).
        self.flip_tta = flip_tta
        path = Path(model_path) if model_path is not None else _model_path(MODEL_SFACE)
        self._session = cpu_session(path, intra_op_threads)
        self._input = self._session.get_inputs()[0].name
        self.model_name = path.name

    def embed(self, crops: Sequence[np.ndarray] | np.ndarray) -> np.ndarray:
        """(N, 128) float32, each row L2-normalised, so cosine similarity is a dot product."""
        blob = preprocess(crops)
        if blob.shape[0] == 0:
            return np.zeros((0, EMBEDDING_DIM), dtype=np.float32)
        return _normalise(np.concatenate([self._features(run) for run in _runs(blob)]))

    def embed_both(self, crops: Sequence[np.ndarray] | np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(plain, flip-TTA) embeddings from the same model runs, so an evaluation can compare both."""
        blob = preprocess(crops)
        if blob.shape[0] == 0:
            empty = np.zeros((0, EMBEDDING_DIM), dtype=np.float32)
            return empty, empty
        plain = np.concatenate([self._raw(run) for run in _runs(blob)])
        flipped = np.concatenate([self._raw(_mirrored(run)) for run in _runs(blob)])
        return _normalise(plain), _normalise(plain + flipped)

    def _features(self, blob: np.ndarray) -> np.ndarray:
        """Raw (unnormalised) features of one run, with its mirror images' added under flip TTA."""
        feats = self._raw(blob)
        return feats + self._raw(_mirrored(blob)) if self.flip_tta else feats

    def _raw(self, blob: np.ndarray) -> np.ndarray:
        (feats,) = self._session.run(None, {self._input: blob})
        return np.asarray(feats, dtype=np.float32).reshape(blob.shape[0], EMBEDDING_DIM)


def _runs(blob: np.ndarray) -> list[np.ndarray]:
    return [blob[i : i + MAX_CROPS_PER_RUN] for i in range(0, blob.shape[0], MAX_CROPS_PER_RUN)]


def _mirrored(blob: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(blob[..., ::-1])


def _normalise(feats: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(feats, axis=1, keepdims=True)
    return (feats / np.maximum(norms, 1e-12)).astype(np.float32)
