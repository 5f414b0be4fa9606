"""The one place `functions/` touches `lfr_core.matching.WatchlistIndex`."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from functions.exceptions import WatchlistIndexError
from lfr_core.ann import SCAN_MIN_ENTRIES
from lfr_core.errors import InvalidIndexError
from lfr_core.matching import WatchlistIndex


def build_index(entry_ids: Sequence[str], labels: Sequence[str], embeddings: np.ndarray) -> WatchlistIndex:
    index = WatchlistIndex(entry_ids=list(entry_ids), labels=list(labels), embeddings=embeddings)
    if len(index) >= SCAN_MIN_ENTRIES:
        index.with_scan()  # built here, once, so no match cold start ever quantises
    return index


def index_bytes(entry_ids: Sequence[str], labels: Sequence[str], embeddings: np.ndarray) -> bytes:
    return build_index(entry_ids, labels, embeddings).to_npz_bytes()


def load_index(data: bytes) -> WatchlistIndex:
    try:
        return WatchlistIndex.from_npz_bytes(data)
    except (InvalidIndexError, ValueError, KeyError, OSError) as exc:
        # Any defect of the artifact (not npz, truncated, wrong dimension, non-finite, wrong dtype or
        # version: InvalidIndexError from WatchlistIndex's own validation) is the one typed error
        # the match path turns into an index fault; the message names the defect, never the data.
        raise WatchlistIndexError(f"unreadable index: {type(exc).__name__}", reason="unreadable") from exc
