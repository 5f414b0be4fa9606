"""Approximate candidates for very large watchlists: a usearch HNSW graph over the index's entries.

Used only above `ANN_MIN_ENTRIES` (below it one exact matrix product per batch is faster than any
graph walk: `lfr bench` measures the crossover). The graph proposes candidates; the decision is
always re-scored exactly over every template of every candidate person
(`WatchlistIndex.fused_top1_batch`), so it equals exact search's whenever the best entry is among
the candidates.

Why usearch and not pynndescent (which the design first named): pynndescent needs numba, llvmlite,
scipy and scikit-learn, 323 MiB unzipped for Lambda's Python 3.12, over the 250 MiB that a function
and its layers may hold together, before onnxruntime; and its numba JIT is a cold-start cost.
usearch (with its numkong kernels, 56 MiB in the layer) has no JIT, and its graph is serialised
with the watchlist at build time and restored in milliseconds. Measured recall and speed: README "Performance".
"""

from __future__ import annotations

from typing import Any

import numpy as np

# Above this many entries the builder adds a graph to the index artifact. Set above the largest
# watchlist a deployment may authorise (100,000), so production always searches exactly: measured
# on real embeddings the graph's recall of the exact best entry was 0.83 at 100k and 0.58 at 1M
# (README "Performance and cost"), which would lose listed people.
ANN_MIN_ENTRIES = 200_000
# Candidates per crop and the graph's search breadth (`lfr bench` measures the recall they give).
ANN_CANDIDATES = 32
ANN_EXPANSION_SEARCH = 128
ANN_CONNECTIVITY = 16
ANN_EXPANSION_ADD = 128


def _import_usearch() -> Any:
    # onnxruntime first: importing it after usearch kills the process with SIGSEGV (onnxruntime
    # 1.32, usearch 2.26; tests/unit/test_matching.py), and a match function may read a large
    # list's index before its first embedding.
    import onnxruntime  # noqa: F401
    from usearch.index import Index  # imported only where a large watchlist needs it

    return Index


class GraphCandidates:
    """HNSW over L2-normalised embeddings (inner product), stored as f16 in the graph."""

    def __init__(self, graph: object) -> None:
        self._graph = graph

    @classmethod
    def build(cls, embeddings: np.ndarray, threads: int = 0) -> GraphCandidates:
        graph = _import_usearch()(
            ndim=embeddings.shape[1],
            metric="ip",
            dtype="f16",
            connectivity=ANN_CONNECTIVITY,
            expansion_add=ANN_EXPANSION_ADD,
            expansion_search=ANN_EXPANSION_SEARCH,
        )
        graph.add(np.arange(embeddings.shape[0], dtype=np.uint64), embeddings, threads=threads)
        return cls(graph)

    @classmethod
    def from_bytes(cls, data: bytes) -> GraphCandidates:
        graph = _import_usearch().restore(data)
        if graph is None:
            raise ValueError("not a usearch graph")
        graph.expansion_search = ANN_EXPANSION_SEARCH
        return cls(graph)

    def to_bytes(self) -> bytes:
        return bytes(self._graph.save())  # type: ignore[attr-defined]

    def __len__(self) -> int:
        return len(self._graph)  # type: ignore[arg-type]

    def candidates(self, queries: np.ndarray, k: int = ANN_CANDIDATES) -> np.ndarray:
        """(M, D) -> (M, k) entry indices (fewer valid ones are padded with the first)."""
        found = self._graph.search(queries, k, threads=1)  # type: ignore[attr-defined]
        keys = np.asarray(found.keys, dtype=np.int64).reshape(queries.shape[0], -1)
        # One query gives usearch's Matches (its length is the count), several its BatchMatches.
        counts = np.asarray(found.counts).reshape(-1) if hasattr(found, "counts") else np.array([len(found)])
        for row, n in enumerate(counts):
            keys[row, n:] = keys[row, 0]
        return keys
