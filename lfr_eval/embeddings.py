"""Embeddings on the production path, cached in process memory only (nothing of a face is written).

Enrolment goes through the watchlist build's own rule (`build_watchlist.enrolment_crop`: decode,
detect, central face, size check, align); probes go through the edge (`FaceCropper`: detect,
central face, align, quality gate) and the wire (JPEG q95 encode in `Crop.to_message`, decode with
the match function's size check); both are embedded by `FaceEmbedder`.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from edge_uploader.pipeline import FaceCropper
from functions.logic.build_watchlist import enrolment_crop
from lfr_core.contracts import CROP_SIZE, InlineJpeg, utcnow
from lfr_core.errors import InvalidImageError
from lfr_core.face.align import MIN_INTEROCULAR_PX
from lfr_core.face.embed import EMBEDDING_DIM, FaceEmbedder
from lfr_core.face.image import decode_jpeg
from lfr_eval.degrade import degrade_cctv

BATCH = 32


@dataclass
class Probe:
    """One probe image after the edge and the wire; embeddings are None when no face was acquired."""

    plain: np.ndarray | None = None
    flip: np.ndarray | None = None
    quality: float = 0.0
    iod: float = 0.0
    reason: str | None = None  # unreadable | no_face | undecodable

    def acquired(self, gate: float | None) -> bool:
        if self.plain is None:
            return False
        return gate is None or (self.quality >= gate and self.iod >= MIN_INTEROCULAR_PX)

    def emb(self, flip: bool) -> np.ndarray:
        e = self.flip if flip else self.plain
        assert e is not None
        return e


class Embeddings:
    """Process-local cache of enrolment and probe embeddings (plain and flip-TTA from one pass)."""

    def __init__(
        self, degrade: str | None = None, seed: int = 0, threads: int | None = None,
        log: Callable[[str], None] | None = None, with_flip: bool = True,
    ) -> None:
        self.cropper = FaceCropper()
        self.embedder = FaceEmbedder(intra_op_threads=threads)
        self.degrade, self.seed = degrade, seed
        self.probes: dict[Path, Probe] = {}
        self.enrolled: dict[Path, tuple[np.ndarray, np.ndarray] | str] = {}
        self.log = log or (lambda _m: None)
        # Flip-TTA embeddings double the embedding cost: made only when some variant needs them.
        self.with_flip = with_flip

    def _embed(self, crops: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        if self.with_flip:
            return self.embedder.embed_both(crops)
        plain = self.embedder.embed(crops)
        return plain, np.full_like(plain, np.nan)  # never used: `need_flip` refuses first

    def need_flip(self, flip: bool) -> None:
        if flip and not self.with_flip:
            raise ValueError("flip-TTA scores asked of embeddings made without them")

    def enrol(self, paths: Iterable[Path]) -> None:
        """Build-path crops of watchlist images (clean: enrolment photos are not CCTV)."""
        todo = [p for p in dict.fromkeys(paths) if p not in self.enrolled]
        pending: list[tuple[Path, np.ndarray]] = []
        started = time.monotonic()
        for i, path in enumerate(todo):
            if i and i % 500 == 0:
                self.log(f"  {i}/{len(todo)} enrolment images ({i / (time.monotonic() - started):.1f}/s)")
            crop = enrolment_crop(path.read_bytes(), self.cropper.detector)  # the production rule, not a copy
            if isinstance(crop, str):
                self.enrolled[path] = crop
            else:
                pending.append((path, crop))
            if len(pending) >= BATCH:
                self._embed_enrol(pending)
                pending = []
        self._embed_enrol(pending)

    def enrolled_vectors(self, paths: Iterable[Path], flip: bool) -> np.ndarray:
        """(k, 128): the embeddings (plain or flip-TTA) of those of `paths` that enrolled, in order;
        k is 0 when none did (each failure's reason stays in `enrolled`)."""
        self.need_flip(flip)
        got = [e[1] if flip else e[0] for p in paths if not isinstance(e := self.enrolled[p], str)]
        return np.stack(got) if got else np.zeros((0, EMBEDDING_DIM), np.float32)

    def _embed_enrol(self, pending: list[tuple[Path, np.ndarray]]) -> None:
        if not pending:
            return
        plain, flip = self._embed(np.stack([c for _, c in pending]))
        for (path, _), a, b in zip(pending, plain, flip, strict=True):
            self.enrolled[path] = (a, b)

    def probe(self, paths: Sequence[Path]) -> None:
        todo = [p for p in dict.fromkeys(paths) if p not in self.probes]
        started = time.monotonic()
        pending: list[tuple[Path, np.ndarray]] = []
        for i, path in enumerate(todo):
            pr = self.probes[path] = Probe()
            frame = cv2.imread(str(path), cv2.IMREAD_COLOR)
            if frame is None or frame.size == 0:
                pr.reason = "unreadable"
                continue
            if self.degrade == "cctv":
                clean = self.cropper.crops(frame, faces="central")
                if not clean:
                    pr.reason = "no_face"
                    continue
                frame = degrade_cctv(frame, clean[0].quality.interocular_px, self.seed, path.name)
            crops = self.cropper.crops(frame, faces="central")
            if not crops:
                pr.reason = "no_face"
                continue
            crop = crops[0]
            pr.quality, pr.iod = crop.quality.score, crop.quality.interocular_px
            msg = crop.to_message(deployment_id="eval", camera_id="eval", track_id="eval", captured_at=utcnow())
            assert isinstance(msg.image, InlineJpeg)  # the edge always sends crops inline
            try:
                pending.append((path, decode_jpeg(msg.image.to_bytes(), expect_size=(CROP_SIZE, CROP_SIZE))))
            except InvalidImageError:
                pr.reason = "undecodable"
            if len(pending) >= BATCH:
                self._embed_probes(pending)
                pending = []
            if (i + 1) % 500 == 0:
                rate = (i + 1) / (time.monotonic() - started)
                self.log(f"  {i + 1}/{len(todo)} probe images ({rate:.1f}/s)")
        self._embed_probes(pending)

    def _embed_probes(self, pending: list[tuple[Path, np.ndarray]]) -> None:
        if not pending:
            return
        plain, flip = self._embed(np.stack([c for _, c in pending]))
        for (path, _), a, b in zip(pending, plain, flip, strict=True):
            self.probes[path].plain, self.probes[path].flip = a, b

