"""Track fusion rules measured beside the production ones (`lfr eval --ablation`), not deployed.

The production rules ("max", "mean" of per-crop scores) live in `lfr_core.matching.fuse_scores`;
these two are candidates for surveillance tracks, kept here until one is adopted (adopting one
needs its own per-track-size thresholds in the calibration table):

"feature": the crops' embeddings are averaged and re-normalised, and the mean is searched as one
    crop (feature-level fusion: noise that differs between frames averages out before scoring).
"quality": per person, the crops' scores are averaged with the edge's quality scores as weights
    (a sharp, large crop counts more than a blurred one; equal qualities give "mean").
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from lfr_core.matching import FUSION_MODES, Hit, WatchlistIndex

EVAL_FUSIONS = ("feature", "quality")
ALL_FUSIONS: tuple[str, ...] = (*FUSION_MODES, *EVAL_FUSIONS)


def mean_embedding(crops: np.ndarray) -> np.ndarray:
    """The L2-normalised mean of (n, d) unit embeddings, as (1, d)."""
    m = np.asarray(crops, dtype=np.float64).mean(axis=0)
    norm = float(np.linalg.norm(m))
    if norm < 1e-9:
        raise ValueError("crop embeddings cancel out: no mean direction")
    return (m / norm)[None].astype(np.float32)


def quality_weights(qualities: Sequence[float]) -> np.ndarray:
    """Non-negative weights summing to 1; all-zero qualities weigh the crops equally."""
    q = np.clip(np.asarray(qualities, dtype=np.float64), 0.0, None)
    if q.ndim != 1 or q.size == 0:
        raise ValueError("one quality per crop is needed")
    total = float(q.sum())
    return np.full(q.size, 1.0 / q.size) if total <= 0 else q / total


def track_top1(index: WatchlistIndex, crops: np.ndarray, qualities: Sequence[float], mode: str) -> Hit:
    """One decision for a track's crops under `mode` (a production mode or an `EVAL_FUSIONS` one)."""
    if mode in FUSION_MODES:
        return index.fused_top1(crops, mode)
    if mode == "feature":
        return index.top1(mean_embedding(crops))[0]
    if mode == "quality":
        w = quality_weights(qualities)
        if w.size != len(crops):
            raise ValueError(f"{len(crops)} crops but {w.size} qualities")
        scores = np.asarray(crops, dtype=np.float32) @ index.embeddings.T  # (crops, entries)
        fused = w @ index.per_person(scores)  # each person's best template per crop, weighted
        best = int(np.argmax(fused))
        mine = np.flatnonzero(index.person_codes() == best)
        entry = int(mine[np.argmax(w @ scores[:, mine])])
        return Hit(index=entry, entry_id=index.entry_ids[entry], label=index.labels[entry], score=float(fused[best]))
    raise ValueError(f"unknown fusion mode {mode!r} ({', '.join(ALL_FUSIONS)})")
