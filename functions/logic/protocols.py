"""The seam logic is written against, so unit tests can swap the model."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

import numpy as np


class Embedder(Protocol):
    """`lfr_core.face.embed.FaceEmbedder`: aligned 112x112 BGR crops -> (N, D) L2-normalised rows."""

    def embed(self, crops: Sequence[np.ndarray] | np.ndarray) -> np.ndarray: ...
