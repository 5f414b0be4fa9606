"""The one place `functions/` touches `lfr_core.matching.WatchlistIndex`."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from functions.exceptions import WatchlistIndexError
from functions.logic.protocols import BestMatch
from lfr_core.errors import InvalidIndexError


def index_bytes(entry_ids: Sequence[str], labels: Sequence[str], embeddings: np.ndarray) -> bytes:
    from lfr_core.matching import WatchlistIndex

    return WatchlistIndex(
        entry_ids=list(entry_ids), labels=list(labels), embeddings=embeddings
    ).to_npz_bytes()


def load_index(data: bytes) -> Any:
    from lfr_core.matching import WatchlistIndex

    try:
        return WatchlistIndex.from_npz_bytes(data)
    except (InvalidIndexError, ValueError, KeyError, OSError) as exc:
        raise WatchlistIndexError(f"unreadable index: {type(exc).__name__}") from exc


def best_matches(index: Any, embeddings: np.ndarray) -> list[BestMatch | None]:
    """Top-1 per query row (None for an empty index)."""
    results = index.search(embeddings, k=1)
    out: list[BestMatch | None] = []
    for row in results:
        if not row:
            out.append(None)
            continue
        hit = row[0]
        out.append(BestMatch(entry_id=hit.entry_id, label=hit.label, score=float(hit.score)))
    return out
