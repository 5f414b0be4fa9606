"""Build a deployment's watchlist index from the images uploaded under its prefix.

Per image: decode (any size) -> detect -> central face -> size check -> align; then one
embedding call per chunk; then one template per person (`lfr_core.matching.PRODUCTION_TEMPLATE`:
the mean of the person's photos, under their first photo's entry id). Images that do not yield a
usable face are recorded as `enrol_rejects` (file + reason, no biometric) instead of failing the build; no usable
face at all raises `NoUsableFacesError`, which the state machine routes to purge + Fail.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import PurePosixPath
from typing import Protocol

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from functions.dal.ports import DeploymentRepository, WatchlistStore
from functions.exceptions import (
    DeploymentNotActiveError,
    DeploymentNotFoundError,
    NoUsableFacesError,
    WatchlistIndexError,
)
from functions.logic import watchlist
from functions.logic.protocols import Embedder
from functions.models.records import MAX_CONFUSABLE_LISTED, ConfusableEntries, EnrolReject
from functions.observability import logger
from lfr_core.contracts import DeploymentState
from lfr_core.errors import InvalidImageError
from lfr_core.face.align import MIN_INTEROCULAR_PX, align_face, interocular_px
from lfr_core.face.detect import Detection, pick_central
from lfr_core.face.image import decode_image
from lfr_core.layout import watchlist_entries_key, watchlist_images_prefix, watchlist_index_key
from lfr_core.lifecycle import can_move, sources_of
from lfr_core.matching import PRODUCTION_TEMPLATE, person_templates

S = DeploymentState
MANIFEST_NAME = "manifest.json"
MAX_IMAGE_BYTES = 20 * 1024 * 1024
EMBED_CHUNK = 32  # bounds memory on a large watchlist; one model call per chunk
_SEQ_SUFFIX = re.compile(r"^(?P<label>.+)_\d+$")


class Detector(Protocol):
    def detect(self, image_bgr: np.ndarray) -> list[Detection]: ...


class ManifestEntry(BaseModel):
    model_config = ConfigDict(extra="ignore")

    entry_id: str = Field(min_length=1, max_length=128)
    label: str = Field(min_length=1, max_length=256)
    # What officers' alerts show (README "Officers"): a case/watchlist reference and why the person is listed.
    reference: str | None = Field(default=None, max_length=128)
    reason: str | None = Field(default=None, max_length=300)


@dataclass(frozen=True)
class BuildResult:
    watchlist_size: int  # people listed (index entries)
    rejected: int
    images: int  # enrolment photos that yielded a face

    def to_dict(self) -> dict[str, int]:
        return {"watchlist_size": self.watchlist_size, "rejected": self.rejected, "images": self.images}


def label_for(file_name: str) -> tuple[str, str]:
    """(entry_id, label): entry id is the stem; label drops an LFW-style `_NNNN` suffix."""
    stem = PurePosixPath(file_name).stem
    m = _SEQ_SUFFIX.match(stem)
    return stem, (m.group("label") if m else stem)


class BuildService:
    def __init__(
        self,
        deployments: DeploymentRepository,
        watchlists: WatchlistStore,
        detector: Detector | Callable[[], Detector],
        embedder: Embedder | Callable[[], Embedder],
    ) -> None:
        self.deployments = deployments
        self.watchlists = watchlists
        self._detector = detector
        self._embedder = embedder

    @property
    def detector(self) -> Detector:
        # A class or a factory is called once, on first use (the model load is the cold start).
        if isinstance(self._detector, type) or not hasattr(self._detector, "detect"):
            self._detector = self._detector()
        return self._detector

    @property
    def embedder(self) -> Embedder:
        if isinstance(self._embedder, type) or not hasattr(self._embedder, "embed"):
            self._embedder = self._embedder()
        return self._embedder

    def build(self, deployment_id: str) -> BuildResult:
        rec = self.deployments.get(deployment_id)
        if rec is None:
            raise DeploymentNotFoundError(deployment_id)
        if not can_move(rec.state, S.BUILDING):
            raise DeploymentNotActiveError(f"deployment {deployment_id} is {rec.state}; cannot build")
        self.deployments.update(deployment_id, {"state": str(S.BUILDING)}, expect_states=sources_of(S.BUILDING))

        prefix = watchlist_images_prefix(deployment_id)
        keys = self.watchlists.list_keys(prefix)
        manifest = self._manifest(prefix + MANIFEST_NAME) if prefix + MANIFEST_NAME in keys else {}
        files = [k[len(prefix) :] for k in keys if k != prefix + MANIFEST_NAME and not k.endswith("/")]

        rejects: list[EnrolReject] = []
        entries: dict[str, dict[str, str | None]] = {}
        entry_ids: list[str] = []
        labels: list[str] = []
        chunks: list[np.ndarray] = []
        pending: list[np.ndarray] = []
        for file in files:
            entry = manifest.get(file) or manifest.get(PurePosixPath(file).name)
            entry_id, label = (entry.entry_id, entry.label) if entry else label_for(file)
            if entry_id in entry_ids:
                rejects.append(EnrolReject(file=file, reason="duplicate_entry_id"))
                continue
            crop_or_reason = self._crop(prefix + file)
            if isinstance(crop_or_reason, str):
                rejects.append(EnrolReject(file=file, reason=crop_or_reason))
                continue
            entry_ids.append(entry_id)
            labels.append(label)
            entries[entry_id] = {
                "file": file,
                "reference": entry.reference if entry else None,
                "reason": entry.reason if entry else None,
            }
            pending.append(crop_or_reason)
            if len(pending) >= EMBED_CHUNK:
                chunks.append(self.embedder.embed(np.stack(pending)))
                pending = []
        if pending:
            chunks.append(self.embedder.embed(np.stack(pending)))

        for r in rejects:
            logger.info("watchlist image rejected", extra={"deployment_id": deployment_id, **r.model_dump()})
        reject_docs = [r.model_dump() for r in rejects]
        if not entry_ids:
            self.deployments.update(
                deployment_id, {"watchlist_size": 0, "enrol_rejects": reject_docs, "index_etag": None}
            )
            raise NoUsableFacesError(f"none of {len(files)} watchlist image(s) yielded a usable face")

        index = watchlist.build_index(*person_templates(entry_ids, labels, np.concatenate(chunks), PRODUCTION_TEMPLATE))
        # Hygiene before the session starts: pairs of people the matcher will confuse at this
        # deployment's threshold (admin sees them in `lfr deployment start --wait` / status).
        confusable = index.confusable_pairs(rec.threshold)
        confusable_docs = [
            ConfusableEntries.model_validate(asdict(p)).model_dump() for p in confusable[:MAX_CONFUSABLE_LISTED]
        ]
        # Before the index: the match function reads entries when it (re)loads the index.
        self.watchlists.put_object(watchlist_entries_key(deployment_id), json.dumps(entries).encode())
        etag = self.watchlists.put_object(watchlist_index_key(deployment_id), index.to_npz_bytes())
        self.deployments.update(
            deployment_id,
            {
                "watchlist_size": len(index), "enrol_rejects": reject_docs, "index_etag": etag,
                "confusable": confusable_docs, "confusable_count": len(confusable),
            },
            expect_states=(S.BUILDING,),  # not a transition: only while still BUILDING (a stop wins)
        )
        logger.info(
            "watchlist built",
            extra={
                "deployment_id": deployment_id,
                "watchlist_size": len(index),
                "images": len(entry_ids),
                "rejected": len(rejects),
                "confusable_pairs": len(confusable),
            },
        )
        return BuildResult(watchlist_size=len(index), rejected=len(rejects), images=len(entry_ids))

    def _manifest(self, key: str) -> dict[str, ManifestEntry]:
        try:
            raw = json.loads(self.watchlists.get_object(key))
            if not isinstance(raw, dict):
                raise ValueError("manifest must be an object keyed by file name")
            return {str(k): ManifestEntry.model_validate(v) for k, v in raw.items()}
        except (ValueError, ValidationError) as exc:
            # An operator error: building with guessed labels would put wrong names on alerts.
            raise WatchlistIndexError(f"{MANIFEST_NAME} is invalid: {type(exc).__name__}") from exc

    def _crop(self, key: str) -> np.ndarray | str:
        """The aligned 112x112 crop of the stored image's central face, or a reject reason."""
        return enrolment_crop(self.watchlists.get_object(key), self.detector)


def enrolment_crop(data: bytes, detector: Detector) -> np.ndarray | str:
    """The aligned 112x112 crop of a watchlist photo's central face, or the reason it has none.

    The one enrolment rule: the build uses it for every uploaded image, and `lfr eval` for every
    enrolment photo, so accuracy is measured on exactly what production enrols.
    """
    if len(data) > MAX_IMAGE_BYTES:
        return "too_large"
    try:
        # The same strict decoder as crops (JPEG or PNG here): any image-library error is this file's reject.
        image = decode_image(data)
    except InvalidImageError:
        return "undecodable"
    faces = detector.detect(image)
    face = pick_central(faces, image.shape)
    if face is None:
        return "no_face"
    if interocular_px(face.landmarks) < MIN_INTEROCULAR_PX:
        return "face_too_small"
    try:
        return align_face(image, face.landmarks)
    except ValueError:
        return "alignment_failed"
