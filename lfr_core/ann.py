"""Candidates for very large watchlists: an int8 copy of the gallery, scanned whole, with a proven
error bound, so the exact best entry is always among the candidates.

Used only above `SCAN_MIN_ENTRIES` (below it one float32 matrix product per batch is as fast:
`lfr bench` measures both). The scan reads a quarter of the bytes of the float32 gallery, through
onnxruntime's 8-bit matrix product (`MatMulInteger`, the tiny model `layers.face_models` builds:
numpy has no int8 BLAS). Both operands are uint8 with zero point 128 (the signed codes plus 128):
onnxruntime's uint8 x int8 kernel on x86 CPUs without VNNI (AVX2 `vpmaddubsw`) saturates sums of
two products at 16 bits, and on such a host it returned wrong scores for extreme codes, dropping
the exact best entry; its uint8 x uint8 kernel widens first and is exact on every CPU, at about
the same speed (on that host, over 1M entries: one query 33 ms against 36, thirty 100 against
88). Every score the scan computes is within `margin` of the exact cosine (the quantisation error
bound below), so every entry whose int8 score is within two margins of the query's best int8 score is a candidate, and
the exact best entry is always one of them: the decision, re-scored exactly over the candidates'
persons (`WatchlistIndex.fused_top1_batch`), equals exact search's for every single crop and
under max fusion (production's), by construction rather than by a measured recall. Measured on
real SFace embeddings a query has 1 candidate at the median and 22 (100k entries) to 50-57 (1M,
two hosts) at the 99th percentile (README "Performance and cost").

Why not an approximate index (pynndescent as the design first named, usearch's HNSW, or an
inverted file): measured on real embeddings among Gaussian distractors, usearch found the exact
best entry for only 83% of mated queries at 100k and 58% at 1M, and k-means inverted lists
(`lfr bench` measures them) 96% at 1M when probing an eighth of the gallery; each would lose
listed people. pynndescent needs numba, llvmlite, scipy and scikit-learn, 323 MiB for Lambda's
Python, over the 250 MiB a function and its layers may hold, and its numba JIT is a cold-start
cost. The scan needs nothing beyond onnxruntime.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from lfr_core.errors import InvalidIndexError
from lfr_core.layout import MODEL_GALLERY_SCAN

if TYPE_CHECKING:
    import onnxruntime as ort

# From this many entries the builder adds the int8 scan to the index artifact (measured crossover,
# README "Performance and cost": at 100k it is already faster batched; a lone crop's scan was faster
# on one host and slower on another, both within 5 ms); below it the float32 product is as fast and
# needs no second copy.
SCAN_MIN_ENTRIES = 100_000
# Entries per MatMulInteger call: the (crops, block) int32 scores of a 10x3-crop batch stay within
# a core's cache while they are reduced, instead of a (30, 1M) matrix through memory.
SCAN_BLOCK = 16_384
# Queries and gallery codes are stored unsigned with this zero point (code + 128), the layout the
# scan model's exact uint8 x uint8 product takes (module docstring).
_ZERO_POINT = 128
# Float32 re-scoring rounds differently from the full product (summation order): a cut this much
# looser keeps the exact best a candidate whatever the order.
_ROUNDING_SLACK = 1e-5


def _signed_codes(values: np.ndarray, scale: np.ndarray | float) -> np.ndarray:
    """The one quantisation rule of gallery and queries alike: rint(value * scale) within +-127."""
    return np.clip(np.rint(values * scale), -127, 127)


def _stored(signed: np.ndarray) -> np.ndarray:
    """Signed codes as the scan model takes them: plus the zero point, uint8."""
    return (signed.astype(np.int16) + _ZERO_POINT).astype(np.uint8)


@dataclass(frozen=True)
class ScanBounds:
    """What the proof of the margin needs about the gallery, fixed when it is quantised."""

    scale: float  # int8 code = rint(value * scale)
    max_component_error: float  # max |value - code / scale| over the whole gallery
    max_code_l1: float  # max over entries of sum |code / scale|

    def as_array(self) -> np.ndarray:
        return np.array([self.scale, self.max_component_error, self.max_code_l1], dtype=np.float64)

    @classmethod
    def from_array(cls, values: np.ndarray) -> ScanBounds:
        if values.shape != (3,) or not np.all(np.isfinite(values)) or values[0] <= 0 or np.any(values < 0):
            raise InvalidIndexError("int8 scan bounds must be three finite non-negative numbers, scale > 0")
        return cls(float(values[0]), float(values[1]), float(values[2]))


class QuantisedScan:
    """The gallery's int8 codes plus `_ZERO_POINT`, as uint8 blocks `(blocks, dim, SCAN_BLOCK)`
    (transposed for MatMulInteger, the last block padded with zero codes that are never reported)."""

    def __init__(self, blocks: np.ndarray, entries: int, bounds: ScanBounds) -> None:
        if blocks.dtype == np.int8:
            # An artifact written before the codes were stored offset: the same codes, each plus
            # 128, which for two's complement bytes is the sign bit flipped (one pass, no arithmetic).
            blocks = blocks.view(np.uint8) ^ np.uint8(0x80)
        if blocks.dtype != np.uint8 or blocks.ndim != 3 or blocks.shape[2] != SCAN_BLOCK:
            raise InvalidIndexError(f"int8 scan blocks must be uint8 codes (blocks, dim, {SCAN_BLOCK})")
        if not (blocks.shape[0] - 1) * SCAN_BLOCK < entries <= blocks.shape[0] * SCAN_BLOCK:
            raise InvalidIndexError(f"int8 scan has {blocks.shape[0]} blocks for {entries} entries")
        self.blocks = blocks
        self.entries = entries
        self.bounds = bounds
        self._session: ort.InferenceSession | None = None

    @classmethod
    def build(cls, embeddings: np.ndarray) -> QuantisedScan:
        """Quantise L2-normalised float32 embeddings (N, D) with one symmetric scale."""
        n, dim = embeddings.shape
        scale = 127.0 / float(np.abs(embeddings).max())
        codes = _signed_codes(embeddings, scale).astype(np.int8)
        restored = codes.astype(np.float32) / np.float32(scale)
        bounds = ScanBounds(
            scale=scale,
            max_component_error=float(np.abs(embeddings - restored).max()),
            max_code_l1=float(np.abs(restored).sum(axis=1).max()),
        )
        n_blocks = -(-n // SCAN_BLOCK)
        padded = np.full((n_blocks * SCAN_BLOCK, dim), _ZERO_POINT, dtype=np.uint8)  # code 0
        padded[:n] = _stored(codes)
        blocks = np.ascontiguousarray(padded.reshape(n_blocks, SCAN_BLOCK, dim).transpose(0, 2, 1))
        return cls(blocks, n, bounds)

    def __len__(self) -> int:
        return self.entries

    def check_codes(self, embeddings: np.ndarray, every: int = 997) -> None:
        """Spot-check that the codes are this gallery's (a sample, so a 1M load stays fast): codes
        of another gallery would void the error bound, and with it the exact decision."""
        rows = np.arange(0, self.entries, every)
        expected = _stored(_signed_codes(embeddings[rows], self.bounds.scale))
        got = self.blocks[rows // SCAN_BLOCK, :, rows % SCAN_BLOCK]
        if not np.array_equal(got, expected):
            raise InvalidIndexError("int8 scan codes do not match the index's embeddings")

    def _run(self, query_codes: np.ndarray, block: np.ndarray) -> np.ndarray:
        if self._session is None:
            # Imported here: only a large watchlist's index needs the scan model.
            from lfr_core.face.onnx_models import cpu_session, model_path

            # One thread: the match function's CPU share at its memory (infra/constants.py), and
            # spinning threads beside the embedder's would only contend for that core.
            self._session = cpu_session(model_path(MODEL_GALLERY_SCAN), intra_op_threads=1)
        out = self._session.run(None, {"queries": query_codes, "gallery": block})
        return np.asarray(out[0])

    def _quantise_queries(self, queries: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """uint8 codes, each query's scale, and each score's error bound (in cosine units).

        |q.g - q'.g'| <= |q.(g - g')| + |(q - q').g'| <= |q|_1 e_g + |g'|_1 e_q, with g' and q' the
        dequantised codes and e_* their largest component error.
        """
        peak = np.abs(queries).max(axis=1)
        q_scale = 127.0 / np.where(peak > 0, peak, 1.0)
        signed = _signed_codes(queries, q_scale[:, None])
        q_error = np.abs(queries - signed / q_scale[:, None]).max(axis=1)
        margin = (
            np.abs(queries).sum(axis=1) * self.bounds.max_component_error + self.bounds.max_code_l1 * q_error
        )
        return _stored(signed), q_scale, margin + _ROUNDING_SLACK

    def _scan(self, queries: np.ndarray, floor: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
        """(query row, entry) pairs that may reach the query's exact best score (floor None) or
        may score at least `floor` (per query). One pass over the int8 blocks."""
        codes, q_scale, margin = self._quantise_queries(np.asarray(queries, dtype=np.float32))
        to_int = q_scale * self.bounds.scale  # cosine -> int32 score units, per query
        if floor is None:
            best = np.full(len(codes), np.iinfo(np.int64).min // 2, dtype=np.int64)
            slack = np.ceil(2 * margin * to_int).astype(np.int64)
        else:
            cut = np.floor((floor - margin) * to_int).astype(np.int64)
        rows: list[np.ndarray] = []
        cols: list[np.ndarray] = []
        values: list[np.ndarray] = []
        for b, block in enumerate(self.blocks):
            scores = self._run(codes, block)
            if b == len(self.blocks) - 1:
                scores = scores[:, : self.entries - b * SCAN_BLOCK]  # the padding is not an entry
            block_best = scores.max(axis=1)
            if floor is None:
                best = np.maximum(best, block_best)
                cut = best - slack  # the running best only rises: this cut is loose, then tightened
            hit = np.flatnonzero(block_best >= cut)  # most blocks hold no candidate for any query
            if hit.size == 0:
                continue
            r, c = np.nonzero(scores[hit] >= cut[hit, None])
            r = hit[r]
            rows.append(r)
            cols.append(c + b * SCAN_BLOCK)
            values.append(scores[r, c])
        if not rows:  # only with a floor no entry may reach
            return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64)
        r, c, v = np.concatenate(rows), np.concatenate(cols), np.concatenate(values)
        if floor is None:
            keep = v >= (best - slack)[r]
            r, c = r[keep], c[keep]
        return r, c

    def candidates(self, queries: np.ndarray) -> list[np.ndarray]:
        """Per query, the entries that may be its exact best (always including the exact best)."""
        r, c = self._scan(queries, None)
        order = np.argsort(r, kind="stable")
        return np.split(c[order], np.searchsorted(r[order], np.arange(1, len(queries))))

    def at_least(self, queries: np.ndarray, floor: float) -> tuple[np.ndarray, np.ndarray]:
        """(query row, entry) pairs that may score at least `floor` (every pair that does is here)."""
        return self._scan(queries, np.full(len(queries), floor, dtype=np.float64))
