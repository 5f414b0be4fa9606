"""The match path (docs/ARCHITECTURE.md "Match path") for one SQS batch.

Two phases, because the whole batch is embedded in ONE embedding call:
`prepare` parses, refuses, decodes, embeds and searches every record and returns a
per-record `Prepared`; the batch processor's record handler then calls `complete` for
each record, which performs the (idempotent) alert side effects of a match or
re-raises that record's transient error so only that record is retried.

Privacy rules enforced here: a crop of a face that does not match is never stored,
logged or counted by score; refused crops are consumed, not retried (a DLQ copy would
keep a face); logs carry SQS message ids and reason tags, never message content.
"""

from __future__ import annotations

import json
import time
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Any

import numpy as np
from pydantic import ValidationError

from functions.dal.ports import (
    AlertCropStore,
    AlertPublisher,
    AlertRepository,
    DeploymentRepository,
    WatchlistStore,
)
from functions.exceptions import (
    InvalidCropError,
    ObjectNotFoundError,
    TransientStorageError,
    WatchlistIndexError,
)
from functions.logic import watchlist
from functions.logic.audit_log import AuditLog
from functions.logic.camera_status import camera_item_expiry_epoch, is_camera_status, record_camera_status
from functions.logic.encounters import Encounters, record_camera_activity
from functions.logic.protocols import Embedder
from functions.models.records import ALERT_RETENTION_DAYS, ENCOUNTER_WINDOW_S, DeploymentRecord, IndexFault
from functions.observability import (
    METRIC_CROPS_REFUSED,
    METRIC_CROPS_REJECTED,
    METRIC_INDEX_MISSING,
    MetricsSink,
    logger,
)
from lfr_core.contracts import (
    CROP_SIZE,
    MAX_CLOCK_SKEW,
    AuditAction,
    CameraStatus,
    CropMessage,
    InlineJpeg,
    S3Pointer,
    rejection_reason,
    utcnow,
    validation_context,
)
from lfr_core.errors import InvalidImageError
from lfr_core.face.image import decode_jpeg
from lfr_core.layout import (
    deployment_prefix,
    watchlist_entries_key,
    watchlist_images_prefix,
    watchlist_index_key,
)
from lfr_core.matching import Hit, WatchlistIndex, decide

# Alerts: one per person per encounter (functions/logic/encounters.py), not per track. The
# state lives and expires with the alert records (one TTL, one place to purge), non-matched
# crops cost no write, and the logic stays testable without DynamoDB. At-least-once for SNS:
# a crash between publish and `mark_published` republishes the same alert id and revision,
# which devices collapse (APNs thread-id/collapse id, FCM collapse key = alert id).

DEPLOYMENT_CACHE_TTL_S = 2.0  # a STOP takes effect within this long on a warm container
MAX_CACHED_INDEXES = 8


class Outcome(StrEnum):
    REFUSED = "refused"
    REJECTED = "rejected"
    NO_MATCH = "no_match"
    ALERTED = "alerted"
    DUPLICATE = "duplicate"
    STATUS = "status"  # a camera status stored
    STATUS_STALE = "status_stale"  # a camera status older than the one stored: nothing written


@dataclass(frozen=True)
class PendingAlert:
    """A matched crop: the only case where the crop bytes outlive `prepare`."""

    message: CropMessage
    jpeg: bytes
    entry_id: str
    label: str
    similarity: float
    threshold: float
    sent_timestamp_ms: int | None
    retention_days: int = ALERT_RETENTION_DAYS
    # From the watchlist's entries.json (manifest reference/reason; the enrolment image's key).
    reference: str | None = None
    reason: str | None = None
    image_key: str | None = None
    crops_fused: int = 1


@dataclass(frozen=True)
class Prepared:
    outcome: Outcome | None = None
    reason: str | None = None
    error: Exception | None = None
    alert: PendingAlert | None = None
    # A camera status to store (functions/logic/camera_status.py), and when its record may expire.
    status: CameraStatus | None = None
    status_expires_epoch: int = 0


@dataclass
class _Valid:
    sqs_id: str
    message: CropMessage
    deployment: DeploymentRecord
    jpeg: bytes  # the message's own (best) crop: the one an alert keeps
    images: list[np.ndarray]  # every crop of the track, decoded; only while the batch is decided
    sent_ms: int | None


@dataclass
class _Caches:
    deployments: dict[str, tuple[float, DeploymentRecord | None]] = field(default_factory=dict)
    indexes: dict[str, tuple[str, WatchlistIndex]] = field(default_factory=dict)  # deployment -> (etag, index)
    entries: dict[str, tuple[str, dict[str, dict[str, Any]]]] = field(default_factory=dict)  # same key


def _captured_in_window(dep: DeploymentRecord, *times: datetime) -> bool:
    """A crop captured before its deployment started (or after it ended) was taken without authority."""
    if dep.started_at is None or dep.expires_at is None:
        return False
    return all(dep.started_at - MAX_CLOCK_SKEW <= t <= dep.expires_at + MAX_CLOCK_SKEW for t in times)


def sent_timestamp_ms(record: Mapping[str, Any]) -> int | None:
    raw = (record.get("attributes") or {}).get("SentTimestamp")
    try:
        return int(raw) if raw is not None else None
    except (TypeError, ValueError):
        return None


class MatchService:
    def __init__(
        self,
        *,
        deployments: DeploymentRepository,
        alerts: AlertRepository,
        watchlists: WatchlistStore,
        crops: AlertCropStore,
        publisher: AlertPublisher,
        embedder: Embedder | Callable[[], Embedder],
        metrics: MetricsSink,
        audit: AuditLog,
        page_links: Callable[[str, str], str],
        clock: Callable[[], datetime] = utcnow,
        monotonic: Callable[[], float] = time.monotonic,
        deployment_cache_ttl_s: float = DEPLOYMENT_CACHE_TTL_S,
    ) -> None:
        # Every alert and index fault is audited: not optional, so no wiring can leave it out.
        self.audit = audit
        # (deployment_id, alert_id) -> short-lived alert page link for the notification.
        self.page_links = page_links
        self.deployments = deployments
        self.alerts = alerts
        self.watchlists = watchlists
        self.crops = crops
        self.publisher = publisher
        self._embedder = embedder
        self.metrics = metrics
        self.clock = clock
        self.monotonic = monotonic
        self.deployment_cache_ttl_s = deployment_cache_ttl_s
        self._caches = _Caches()

    # -- phase 1: the whole batch ------------------------------------------------------------

    def prepare(self, records: Sequence[Mapping[str, Any]]) -> dict[str, Prepared]:
        """Per SQS messageId, what the record handler should do. Raises nothing per record.

        The steps, each of which settles some records and passes the rest on: parse; refuse what
        belongs to no live deployment (before any face is decoded); decode; find each deployment's
        index; embed every remaining crop in one embedding call; decide each track against its threshold.
        """
        results: dict[str, Prepared] = {}
        now = self.clock()
        statuses = self._parse_statuses([r for r in records if is_camera_status(r)], now, results)
        parsed = self._parse_crops([r for r in records if not is_camera_status(r)], now, results)
        deployments = self._lookup_deployments(
            {m.deployment_id for _, m, _ in parsed} | {s.deployment_id for _, s in statuses})
        self._route_statuses(statuses, deployments, now, results)
        live = self._refuse_inactive(parsed, deployments, now, results)
        valid = self._decode(live, results)
        ready, indexes = self._with_indexes(valid, results)
        if not ready:
            return results
        embeddings = self._embed(ready, results)
        if embeddings is None:
            return results
        self._count_seen(Counter(v.deployment.deployment_id for v in ready))
        hits = self._search(ready, embeddings, indexes)
        for v in ready:
            results[v.sqs_id] = self._decide(v, hits[v.sqs_id])
        return results

    def _parse_crops(
        self, records: Sequence[Mapping[str, Any]], now: datetime, results: dict[str, Prepared]
    ) -> list[tuple[str, CropMessage, int | None]]:
        """(SQS id, message, sent time) of each record that is a valid `CropMessage`; the rest rejected."""
        self.metrics.count("CropsReceived", len(records))
        parsed: list[tuple[str, CropMessage, int | None]] = []
        for rec in records:
            sqs_id = str(rec.get("messageId", ""))
            try:
                # The contract's plausibility bounds, against this function's clock.
                msg = CropMessage.model_validate_json(rec.get("body") or "", context=validation_context(now))
            except ValidationError as exc:
                # The pydantic error text echoes the input, which may be a face: a field tag only.
                results[sqs_id] = self._reject(sqs_id, rejection_reason(exc))
                continue
            parsed.append((sqs_id, msg, sent_timestamp_ms(rec)))
        return parsed

    def _refuse_inactive(
        self,
        parsed: Sequence[tuple[str, CropMessage, int | None]],
        deployments: Mapping[str, DeploymentRecord | Exception | None],
        now: datetime,
        results: dict[str, Prepared],
    ) -> list[tuple[str, CropMessage, DeploymentRecord, int | None]]:
        """Refuse BEFORE decoding or embedding: an inactive deployment must not process faces.
        Counts each live camera's messages for the console."""
        refused: Counter[str] = Counter()
        live: list[tuple[str, CropMessage, DeploymentRecord, int | None]] = []
        for sqs_id, msg, sent in parsed:
            dep = deployments[msg.deployment_id]
            if isinstance(dep, Exception):
                results[sqs_id] = Prepared(error=dep)
            elif dep is None or not dep.is_live(now):
                refused[msg.deployment_id] += 1
                results[sqs_id] = Prepared(outcome=Outcome.REFUSED, reason="deployment_not_active")
            else:
                live.append((sqs_id, msg, dep, sent))
        self._count_refused(refused, deployments)
        live_deps = {m.deployment_id: dep for _, m, dep, _ in live}
        record_camera_activity(
            self.alerts, [(m.deployment_id, m.camera_id, sent) for _, m, _, sent in live], now,
            lambda dep_id: camera_item_expiry_epoch(live_deps[dep_id], now),
        )
        return live

    def _decode(
        self, live: Sequence[tuple[str, CropMessage, DeploymentRecord, int | None]], results: dict[str, Prepared]
    ) -> list[_Valid]:
        """Each live message's crops decoded; a message with any bad crop is rejected whole."""
        valid: list[_Valid] = []
        for sqs_id, msg, dep, sent in live:
            try:
                if not _captured_in_window(dep, msg.captured_at, *(c.captured_at for c in msg.more)):
                    raise InvalidCropError("captured_outside_deployment")
                jpeg = self._crop_bytes(msg)
                # A track's crops are decided together: one bad crop refuses the whole message.
                images = [
                    decode_jpeg(raw, expect_size=(CROP_SIZE, CROP_SIZE))
                    for raw in (jpeg, *(self._inline_bytes(c.image) for c in msg.more))
                ]
            except InvalidImageError as exc:
                results[sqs_id] = self._reject(sqs_id, exc.reason)
            except InvalidCropError as exc:
                results[sqs_id] = self._reject(sqs_id, exc.reason)
            except TransientStorageError as exc:
                results[sqs_id] = Prepared(error=exc)
            except Exception as exc:  # decode_jpeg types every image-library error; this is the backstop
                logger.warning("crop decode failed", extra={"sqs_message_id": sqs_id, "error_type": type(exc).__name__})
                results[sqs_id] = self._reject(sqs_id, "undecodable")
            else:
                valid.append(_Valid(sqs_id, msg, dep, jpeg, images, sent))
        return valid

    def _with_indexes(
        self, valid: Sequence[_Valid], results: dict[str, Prepared]
    ) -> tuple[list[_Valid], dict[str, WatchlistIndex]]:
        """The messages whose deployment's index loaded, and those indexes; the others held."""
        indexes: dict[str, WatchlistIndex] = {}
        index_errors: dict[str, WatchlistIndexError | TransientStorageError] = {}
        fresh: set[str] = set()  # deployments whose index was just read from S3 (not the cache)
        live_deps = {v.deployment.deployment_id: v.deployment for v in valid}
        for dep in live_deps.values():
            try:
                indexes[dep.deployment_id], loaded = self._index_for(dep)
            except (WatchlistIndexError, TransientStorageError) as exc:
                index_errors[dep.deployment_id] = exc
            else:
                if loaded:
                    fresh.add(dep.deployment_id)
        ready: list[_Valid] = []
        held: Counter[str] = Counter()
        for v in valid:
            idx = index_errors.get(v.deployment.deployment_id)
            if isinstance(idx, WatchlistIndexError):
                # An ACTIVE deployment without a usable index is a system fault, not the crop's:
                # the record is a batch item failure (retried), never consumed as if matched.
                # See _index_health for why retrying is safe for privacy.
                held[v.deployment.deployment_id] += 1
                results[v.sqs_id] = Prepared(error=idx)
            elif idx is not None:
                results[v.sqs_id] = Prepared(error=idx)
            else:
                ready.append(v)
        self._index_health(live_deps, index_errors, fresh, held)
        return ready, indexes

    def _embed(self, ready: Sequence[_Valid], results: dict[str, Prepared]) -> np.ndarray | None:
        """One embedding call for every crop of every ready message; None (all held) if the model fails."""
        try:
            started = self.monotonic()
            embeddings = self.embedder.embed(np.stack([img for v in ready for img in v.images]))
            self.metrics.milliseconds("EmbedBatchMs", (self.monotonic() - started) * 1000.0)
        except Exception as exc:  # the model failing is not the crops' fault: retry them all
            logger.exception("embedding failed", extra={"error_type": type(exc).__name__})
            for v in ready:
                results[v.sqs_id] = Prepared(error=exc)
            return None
        self.metrics.count("CropsEmbedded", len(embeddings))
        return embeddings

    def _decide(self, v: _Valid, hit: Hit) -> Prepared:
        """One decision per track: its crops' scores fused per person, against the threshold
        calibrated for that many crops (lfr_core.matching.decide)."""
        dep = v.deployment
        decision = decide(hit.score, len(v.images), dep.thresholds)
        if not decision.alert:
            # Below threshold: nothing about this face leaves this function.
            return Prepared(outcome=Outcome.NO_MATCH)
        entry = self._entries_for(dep).get(hit.entry_id) or {}
        return Prepared(
            alert=PendingAlert(
                message=v.message,
                jpeg=v.jpeg,
                entry_id=hit.entry_id,
                label=hit.label,
                similarity=float(hit.score),
                threshold=decision.threshold,
                sent_timestamp_ms=v.sent_ms,
                retention_days=dep.alert_retention_days,
                reference=entry.get("reference"),
                reason=entry.get("reason"),
                image_key=(
                    watchlist_images_prefix(dep.deployment_id) + str(entry["file"]) if entry.get("file") else None
                ),
                crops_fused=len(v.images),
            )
        )

    def _parse_statuses(
        self, records: Sequence[Mapping[str, Any]], now: datetime, results: dict[str, Prepared]
    ) -> list[tuple[str, CameraStatus]]:
        out: list[tuple[str, CameraStatus]] = []
        for rec in records:
            sqs_id = str(rec.get("messageId", ""))
            try:
                out.append((sqs_id, CameraStatus.model_validate_json(
                    rec.get("body") or "", context=validation_context(now))))
            except ValidationError as exc:
                # Counted with the crops' rejections (a broken or hostile uploader), tagged as a status.
                results[sqs_id] = self._reject(sqs_id, "status_" + rejection_reason(exc, CameraStatus))
        return out

    def _route_statuses(
        self, statuses: Sequence[tuple[str, CameraStatus]],
        deployments: Mapping[str, DeploymentRecord | Exception | None], now: datetime,
        results: dict[str, Prepared],
    ) -> None:
        """A status of a live deployment is stored in phase 2; otherwise refused like a late crop
        (consumed, never retried), but not counted as a refused crop: it holds no face."""
        for sqs_id, st in statuses:
            dep = deployments[st.deployment_id]
            if isinstance(dep, Exception):
                results[sqs_id] = Prepared(error=dep)
            elif dep is None or not dep.is_live(now):
                self.metrics.count("CameraStatusRefused", 1)
                logger.warning("camera status refused: deployment not active",
                               extra={"deployment_id": st.deployment_id, "sqs_message_id": sqs_id})
                results[sqs_id] = Prepared(outcome=Outcome.REFUSED, reason="deployment_not_active")
            else:
                results[sqs_id] = Prepared(status=st, status_expires_epoch=camera_item_expiry_epoch(dep, now))

    @staticmethod
    def _search(
        ready: Sequence[_Valid], embeddings: np.ndarray, indexes: Mapping[str, WatchlistIndex]
    ) -> dict[str, Hit]:
        """Each track's fused best person: ONE gallery product per deployment for the whole batch."""
        rows: dict[str, np.ndarray] = {}
        start = 0
        for v in ready:
            rows[v.sqs_id] = embeddings[start : start + len(v.images)]
            start += len(v.images)
        by_deployment: dict[str, list[_Valid]] = {}
        for v in ready:
            by_deployment.setdefault(v.deployment.deployment_id, []).append(v)
        hits: dict[str, Hit] = {}
        for dep_id, group in by_deployment.items():
            found = indexes[dep_id].fused_top1_batch([rows[v.sqs_id] for v in group], group[0].deployment.fusion_mode)
            hits.update(zip((v.sqs_id for v in group), found, strict=True))
        return hits

    @property
    def embedder(self) -> Embedder:
        # A class or a factory is called once, on first use: the model load is the cold start.
        if isinstance(self._embedder, type) or not hasattr(self._embedder, "embed"):
            self._embedder = self._embedder()
        return self._embedder

    def _reject(self, sqs_id: str, reason: str) -> Prepared:
        self.metrics.count(METRIC_CROPS_REJECTED, 1, {"reason": reason})
        logger.warning("crop rejected", extra={"sqs_message_id": sqs_id, "reason": reason})
        return Prepared(outcome=Outcome.REJECTED, reason=reason)

    def _lookup_deployments(self, ids: set[str]) -> dict[str, DeploymentRecord | Exception | None]:
        out: dict[str, DeploymentRecord | Exception | None] = {}
        t = self.monotonic()
        for dep_id in ids:
            cached = self._caches.deployments.get(dep_id)
            if cached is not None and t - cached[0] < self.deployment_cache_ttl_s:
                out[dep_id] = cached[1]
                continue
            try:
                rec = self.deployments.get(dep_id)
            except TransientStorageError as exc:
                out[dep_id] = exc
                continue
            self._caches.deployments[dep_id] = (t, rec)
            out[dep_id] = rec
        return out

    def _count_refused(
        self, refused: Counter[str], deployments: Mapping[str, DeploymentRecord | Exception | None]
    ) -> None:
        for dep_id, n in refused.items():
            self.metrics.count(METRIC_CROPS_REFUSED, n)
            logger.warning(
                "crops refused: deployment not active", extra={"deployment_id": dep_id, "count": n}
            )
            if not isinstance(deployments.get(dep_id), DeploymentRecord):
                continue  # unknown id: never create a record for it
            try:
                self.deployments.add_refused_crops(dep_id, n)
            except TransientStorageError:
                # Still consumed: retrying a refused crop cannot make it valid, only keep a face
                # around longer; the metric above already counted it.
                logger.warning("refused_crops counter not updated", extra={"deployment_id": dep_id})

    def _count_seen(self, seen: Mapping[str, int]) -> None:
        # "Faces seen" for the transparency report: a count per deployment, nothing about the faces.
        for dep_id, n in seen.items():
            try:
                self.deployments.add_faces_seen(dep_id, n)
            except TransientStorageError:
                logger.warning("faces_seen counter not updated", extra={"deployment_id": dep_id})

    @staticmethod
    def _inline_bytes(image: InlineJpeg) -> bytes:
        try:
            return image.to_bytes()
        except ValueError:
            raise InvalidCropError("bad_base64") from None

    def _crop_bytes(self, msg: CropMessage) -> bytes:
        image = msg.image
        if isinstance(image, InlineJpeg):
            return self._inline_bytes(image)
        assert isinstance(image, S3Pointer)
        # Only the deployment's own prefix in our bucket: a message must not make us read elsewhere.
        if image.bucket != self.watchlists.bucket or not image.key.startswith(
            deployment_prefix(msg.deployment_id)
        ):
            raise InvalidCropError("pointer_outside_deployment")
        try:
            return self.watchlists.get_object(image.key)
        except ObjectNotFoundError:
            raise InvalidCropError("pointer_missing") from None

    def _index_for(self, dep: DeploymentRecord) -> tuple[WatchlistIndex, bool]:
        """The deployment's index and whether it was read from S3 just now (False: the cache).

        A failed read is not cached: every batch while the fault lasts reads S3 again, so a
        restored index is picked up by the next batch.
        """
        cached = self._caches.indexes.get(dep.deployment_id)
        if cached is not None and dep.index_etag is not None and cached[0] == dep.index_etag:
            return cached[1], False
        try:
            data, etag = self.watchlists.get_with_etag(watchlist_index_key(dep.deployment_id))
        except ObjectNotFoundError as exc:
            raise WatchlistIndexError(f"no index for {dep.deployment_id}", reason="missing") from exc
        index = watchlist.load_index(data)
        if len(self._caches.indexes) >= MAX_CACHED_INDEXES and dep.deployment_id not in self._caches.indexes:
            self._caches.indexes.pop(next(iter(self._caches.indexes)))
        self._caches.indexes[dep.deployment_id] = (etag, index)
        return index, True

    def _index_health(
        self,
        deployments: Mapping[str, DeploymentRecord],
        errors: Mapping[str, WatchlistIndexError | TransientStorageError],
        fresh: set[str],
        held: Mapping[str, int],
    ) -> None:
        """Make an unusable index of an ACTIVE deployment loud, and its repair visible.

        Why hold (retry) the crops rather than consume them: the fault is the system's, and
        consuming would silently lose every listed person for the rest of the session. A held
        crop lives no longer than any crop in flight: it is retried until the index is back
        (then matched), the deployment ends (then refused, or deleted from queue and DLQ by the
        session's purge) or the queue's retention expires it (CROP_QUEUE_RETENTION_S); after
        maxReceiveCount it waits in the DLQ, which the purge empties at the session's end.
        Every batch counts its held crops (metric IndexMissing, alarmed); the deployment record
        gets `index_fault` (shown by `lfr deployment status`) and the audit log one "fault"
        event when it is raised and one when it is cleared, by conditional writes, not per crop.
        """
        for dep_id, dep in deployments.items():
            err = errors.get(dep_id)
            if isinstance(err, WatchlistIndexError):
                n = held.get(dep_id, 0)
                self.metrics.count(METRIC_INDEX_MISSING, n, {"reason": err.reason})
                logger.error(
                    "watchlist index unusable: crops held for retry",
                    extra={"deployment_id": dep_id, "reason": err.reason, "count": n},
                )
                if dep.index_fault is None:  # the conditional write below decides; this saves a write
                    self._set_index_fault(dep, IndexFault(reason=err.reason, since=self.clock()), n)
            elif err is None and dep_id in fresh and dep.index_fault is not None:
                # Only an index just read from S3 proves the repair (a warm cache does not).
                self._set_index_fault(dep, None, 0)

    def _set_index_fault(self, dep: DeploymentRecord, fault: IndexFault | None, held: int) -> None:
        dep_id = dep.deployment_id
        try:
            changed = self.deployments.set_index_fault(dep_id, fault)
        except TransientStorageError:
            logger.warning("index fault not recorded", extra={"deployment_id": dep_id})
            return  # the metric counted it; the next batch tries again
        if not changed:
            return
        before = dep.index_fault
        try:
            if fault is not None:
                self.audit.record(
                    "match-function", AuditAction.FAULT, dep_id,
                    fault=f"index_{fault.reason}", status="raised", crops_held=held,
                )
            elif before is not None:
                self.audit.record(
                    "match-function", AuditAction.FAULT, dep_id, fault=f"index_{before.reason}",
                    status="cleared", seconds=round((self.clock() - before.since).total_seconds(), 1),
                )
        except Exception as exc:  # any audit failure: undo the mark so the next batch records both
            logger.error("index fault not audited", extra={"deployment_id": dep_id, "error_type": type(exc).__name__})
            try:
                self.deployments.set_index_fault(dep_id, before if fault is None else None)
            except TransientStorageError:
                logger.warning("index fault mark not undone", extra={"deployment_id": dep_id})

    def _entries_for(self, dep: DeploymentRecord) -> dict[str, dict[str, Any]]:
        """entries.json of the deployment's watchlist, cached like the index; {} if absent or unreadable
        (alerts then carry the entry id and the default reason, and the page shows no enrolment image)."""
        cached = self._caches.entries.get(dep.deployment_id)
        if cached is not None and dep.index_etag is not None and cached[0] == dep.index_etag:
            return cached[1]
        try:
            raw = json.loads(self.watchlists.get_object(watchlist_entries_key(dep.deployment_id)))
            entries = {str(k): dict(v) for k, v in raw.items()} if isinstance(raw, dict) else {}
        except TransientStorageError as exc:
            # This alert goes out without them; not cached, so the next alert reads them again.
            logger.warning(
                "watchlist entries unavailable (transient): this alert carries the entry id only",
                extra={"deployment_id": dep.deployment_id, "error_type": type(exc).__name__},
            )
            return {}
        except (ObjectNotFoundError, ValueError, TypeError) as exc:
            # Alerts still go out (entry id, default reason); said once per index version, not per crop.
            logger.warning(
                "watchlist entries unavailable: alerts carry the entry id only",
                extra={"deployment_id": dep.deployment_id, "error_type": type(exc).__name__},
            )
            entries = {}
        if len(self._caches.entries) >= MAX_CACHED_INDEXES and dep.deployment_id not in self._caches.entries:
            self._caches.entries.pop(next(iter(self._caches.entries)))
        self._caches.entries[dep.deployment_id] = (dep.index_etag or "", entries)
        return entries

    # -- phase 2: one record -----------------------------------------------------------------

    def complete(self, prepared: Prepared) -> Outcome:
        """Finish one record: raise its transient error, or perform its alert (idempotently)."""
        if prepared.error is not None:
            raise prepared.error
        if prepared.alert is not None:
            return self._raise_alert(prepared.alert)
        if prepared.status is not None:
            stored = record_camera_status(self.alerts, prepared.status, self.clock(), prepared.status_expires_epoch)
            return Outcome.STATUS if stored else Outcome.STATUS_STALE
        assert prepared.outcome is not None
        return prepared.outcome

    def _page_link(self, deployment_id: str, alert_id: str) -> str | None:
        try:
            return self.page_links(deployment_id, alert_id)
        except Exception as exc:  # a missing link must not hold the alert back
            logger.warning("alert page link unavailable", extra={"error_type": type(exc).__name__})
            return None

    def _raise_alert(self, p: PendingAlert) -> Outcome:
        # One alert per person per encounter, not per track: functions/logic/encounters.py.
        dep = self._lookup_deployments({p.message.deployment_id})[p.message.deployment_id]
        if isinstance(dep, Exception):
            raise dep
        window_s = dep.encounter_window_s if dep is not None else ENCOUNTER_WINDOW_S
        encounters = Encounters(
            alerts=self.alerts, crops=self.crops, publisher=self.publisher, metrics=self.metrics,
            clock=self.clock, audit=self.audit, page_link=self._page_link,
        )
        return Outcome(encounters.raise_alert(p, window_s))
