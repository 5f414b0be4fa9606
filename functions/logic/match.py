"""The match path (docs/ARCHITECTURE.md "Match path") for one SQS batch.

Two phases, because the whole batch is embedded in ONE onnxruntime call:
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
import uuid
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
from functions.logic.audit import AuditLog
from functions.logic.protocols import Embedder
from functions.models.records import ALERT_RETENTION_DAYS, AlertRecord, DeploymentRecord
from functions.observability import MetricsSink, logger
from lfr_core.contracts import (
    CROP_SIZE,
    MAX_CLOCK_SKEW,
    AuditAction,
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
    alert_crop_key,
    deployment_prefix,
    watchlist_entries_key,
    watchlist_images_prefix,
    watchlist_index_key,
)
from lfr_core.matching import WatchlistIndex

# One alert per track (issue 6): the alert id is uuid5(deployment/camera/track). The edge
# sends a track once (its crops together, issue 5), so normally one message makes the alert;
# should another message carry the same track id (an edge restart re-sending, a replay), it
# lands on the SAME alert record and crop key: it replaces it (record, crop, revision + 1)
# and republishes only if its similarity is higher and no officer has decided the alert yet;
# anything else publishes and keeps nothing. A replay
# of the crop the alert currently holds publishes nothing (`published_at` is set). This,
# rather than the Powertools idempotency table: the state lives and expires with the
# alert itself (one TTL, one place to purge), non-matched crops cost no write, and the
# logic stays testable without DynamoDB. At-least-once for SNS: a crash between publish
# and `mark_published` republishes the same alert id and revision, which devices collapse
# (APNs thread-id/collapse id, FCM collapse key = alert id).
# Known race: two concurrent invocations holding crops of the same track both write the
# one crop key; the record is always the higher score, the stored crop may be the other
# crop of the same track.
ALERT_ID_NAMESPACE = uuid.UUID("0b5e8f3e-6a57-4c6e-9d0c-1f2a7c1e4b9d")

DEPLOYMENT_CACHE_TTL_S = 2.0  # a STOP takes effect within this long on a warm container
MAX_CACHED_INDEXES = 8


def alert_id_for(deployment_id: str, camera_id: str, track_id: str) -> str:
    return str(uuid.uuid5(ALERT_ID_NAMESPACE, f"{deployment_id}/{camera_id}/{track_id}"))


class Outcome(StrEnum):
    REFUSED = "refused"
    REJECTED = "rejected"
    NO_MATCH = "no_match"
    ALERTED = "alerted"
    DUPLICATE = "duplicate"


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
        clock: Callable[[], datetime] = utcnow,
        monotonic: Callable[[], float] = time.monotonic,
        deployment_cache_ttl_s: float = DEPLOYMENT_CACHE_TTL_S,
        audit: AuditLog | None = None,
        page_links: Callable[[str, str], str] | None = None,
    ) -> None:
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
        """Per SQS messageId, what the record handler should do. Raises nothing per record."""
        results: dict[str, Prepared] = {}
        now = self.clock()
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

        deployments = self._lookup_deployments({m.deployment_id for _, m, _ in parsed})

        # Refuse BEFORE decoding or embedding: an inactive deployment must not process faces.
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

        indexes: dict[str, WatchlistIndex] = {}
        index_errors: dict[str, WatchlistIndexError | TransientStorageError] = {}
        for dep in {v.deployment.deployment_id: v.deployment for v in valid}.values():
            try:
                indexes[dep.deployment_id] = self._index_for(dep)
            except (WatchlistIndexError, TransientStorageError) as exc:
                index_errors[dep.deployment_id] = exc
        ready: list[_Valid] = []
        for v in valid:
            idx = index_errors.get(v.deployment.deployment_id)
            if isinstance(idx, WatchlistIndexError):
                # An ACTIVE deployment without a readable index is a build fault; a retry
                # cannot fix it and a DLQ copy would keep the face.
                results[v.sqs_id] = self._reject(v.sqs_id, "no_index")
            elif idx is not None:
                results[v.sqs_id] = Prepared(error=idx)
            else:
                ready.append(v)
        if not ready:
            return results

        try:
            started = self.monotonic()
            embeddings = self.embedder.embed(np.stack([img for v in ready for img in v.images]))
            self.metrics.milliseconds("EmbedBatchMs", (self.monotonic() - started) * 1000.0)
        except Exception as exc:  # the model failing is not the crops' fault: retry them all
            logger.exception("embedding failed", extra={"error_type": type(exc).__name__})
            for v in ready:
                results[v.sqs_id] = Prepared(error=exc)
            return results
        self.metrics.count("CropsEmbedded", len(embeddings))

        seen: Counter[str] = Counter(v.deployment.deployment_id for v in ready)
        self._count_seen(seen)
        start = 0
        for v in ready:
            rows = embeddings[start : start + len(v.images)]
            start += len(v.images)
            dep = v.deployment
            # One decision per track: its crops' scores fused per person, against the threshold
            # calibrated for that many crops.
            hit = indexes[dep.deployment_id].fused_top1(rows, dep.fusion_mode)
            threshold = dep.threshold_for_crops(len(rows))
            if hit.score >= threshold:
                entry = self._entries_for(dep).get(hit.entry_id) or {}
                results[v.sqs_id] = Prepared(
                    alert=PendingAlert(
                        message=v.message,
                        jpeg=v.jpeg,
                        entry_id=hit.entry_id,
                        label=hit.label,
                        similarity=float(hit.score),
                        threshold=threshold,
                        sent_timestamp_ms=v.sent_ms,
                        retention_days=dep.alert_retention_days,
                        reference=entry.get("reference"),
                        reason=entry.get("reason"),
                        image_key=(
                            watchlist_images_prefix(dep.deployment_id) + str(entry["file"])
                            if entry.get("file") else None
                        ),
                        crops_fused=len(rows),
                    )
                )
            else:
                # Below threshold: nothing about this face leaves this function.
                results[v.sqs_id] = Prepared(outcome=Outcome.NO_MATCH)
        return results

    @property
    def embedder(self) -> Embedder:
        # A class or a factory is called once, on first use: the model load is the cold start.
        if isinstance(self._embedder, type) or not hasattr(self._embedder, "embed"):
            self._embedder = self._embedder()
        return self._embedder

    def _reject(self, sqs_id: str, reason: str) -> Prepared:
        self.metrics.count("CropsRejected", 1, {"reason": reason})
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
            self.metrics.count("CropsRefused", n)
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

    def _index_for(self, dep: DeploymentRecord) -> WatchlistIndex:
        cached = self._caches.indexes.get(dep.deployment_id)
        if cached is not None and dep.index_etag is not None and cached[0] == dep.index_etag:
            return cached[1]
        try:
            data, etag = self.watchlists.get_with_etag(watchlist_index_key(dep.deployment_id))
        except ObjectNotFoundError as exc:
            logger.error("watchlist index missing", extra={"deployment_id": dep.deployment_id})
            raise WatchlistIndexError(f"no index for {dep.deployment_id}") from exc
        index = watchlist.load_index(data)
        if len(self._caches.indexes) >= MAX_CACHED_INDEXES and dep.deployment_id not in self._caches.indexes:
            self._caches.indexes.pop(next(iter(self._caches.indexes)))
        self._caches.indexes[dep.deployment_id] = (etag, index)
        return index

    def _entries_for(self, dep: DeploymentRecord) -> dict[str, dict[str, Any]]:
        """entries.json of the deployment's watchlist, cached like the index; {} if absent or unreadable
        (alerts then carry the entry id and the default reason, and the page shows no enrolment image)."""
        cached = self._caches.entries.get(dep.deployment_id)
        if cached is not None and dep.index_etag is not None and cached[0] == dep.index_etag:
            return cached[1]
        try:
            raw = json.loads(self.watchlists.get_object(watchlist_entries_key(dep.deployment_id)))
            entries = {str(k): dict(v) for k, v in raw.items()} if isinstance(raw, dict) else {}
        except (ObjectNotFoundError, TransientStorageError, ValueError, TypeError):
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
        assert prepared.outcome is not None
        return prepared.outcome

    def _page_link(self, deployment_id: str, alert_id: str) -> str | None:
        if self.page_links is None:
            return None
        try:
            return self.page_links(deployment_id, alert_id)
        except Exception as exc:  # a missing link must not hold the alert back
            logger.warning("alert page link unavailable", extra={"error_type": type(exc).__name__})
            return None

    def _raise_alert(self, p: PendingAlert) -> Outcome:
        msg = p.message
        alert_id = alert_id_for(msg.deployment_id, msg.camera_id, msg.track_id)
        key = alert_crop_key(msg.deployment_id, alert_id)
        shortened = p.retention_days if p.retention_days < ALERT_RETENTION_DAYS else None
        record = self.alerts.get(msg.deployment_id, alert_id)
        created = False
        if record is None:
            # Crop before record, so a record never points at a missing crop; a retry
            # overwrites the same key rather than leaving a second copy.
            self.crops.put_crop(key, p.jpeg, shortened)
            alerted_at = self.clock()
            candidate = AlertRecord(
                alert_id=alert_id,
                deployment_id=msg.deployment_id,
                camera_id=msg.camera_id,
                track_id=msg.track_id,
                crop_message_id=msg.message_id,
                captured_at=msg.captured_at,
                alerted_at=alerted_at,
                watchlist_entry_id=p.entry_id,
                watchlist_label=p.label,
                similarity=p.similarity,
                threshold=p.threshold,
                crop_key=key,
                expires_at_epoch=AlertRecord.expiry_epoch(alerted_at, p.retention_days),
                watchlist_reference=p.reference,
                watchlist_reason=p.reason,
                watchlist_image_key=p.image_key,
                crops_fused=p.crops_fused,
            )
            created = self.alerts.put_new(candidate)
            # Lost the race to a concurrent crop of this track (or delivery of this crop): compare.
            record = candidate if created else self.alerts.get(msg.deployment_id, alert_id)
            if record is None:
                raise TransientStorageError("alerts.get: alert missing after a failed conditional put")
        if not created:
            if record.crop_message_id == msg.message_id:
                if record.published_at is not None:  # a replay of the crop the alert holds
                    self.metrics.count("AlertsDuplicate", 1)
                    return Outcome.DUPLICATE
                # Recorded, not yet published (an interrupted earlier attempt): finish it.
                self.crops.put_crop(key, p.jpeg, shortened)
            elif p.similarity > record.similarity and record.decision is None:
                better = record.model_copy(update={
                    "crop_message_id": msg.message_id,
                    "captured_at": msg.captured_at,
                    "watchlist_entry_id": p.entry_id,
                    "watchlist_label": p.label,
                    "similarity": p.similarity,
                    "watchlist_reference": p.reference,
                    "watchlist_reason": p.reason,
                    "watchlist_image_key": p.image_key,
                    "crops_fused": p.crops_fused,
                    "revision": record.revision + 1,
                    "published_at": None,
                    "queue_to_publish_ms": None,
                })
                # Record first: if the crop write then fails, the retry sees the record unpublished
                # and writes the crop before publishing.
                if not self.alerts.replace_if_better(better):
                    self.metrics.count("AlertsNotImproved", 1)
                    return Outcome.DUPLICATE
                self.crops.put_crop(key, p.jpeg, shortened)
                record = better
            else:
                # Same track, no better (or already decided): nothing of this crop is kept.
                self.metrics.count("AlertsNotImproved", 1)
                return Outcome.DUPLICATE

        published_at = self.clock()
        q_ms = None
        if p.sent_timestamp_ms is not None:
            q_ms = max(0.0, published_at.timestamp() * 1000.0 - p.sent_timestamp_ms)
        alert = record.to_alert().model_copy(
            update={"queue_to_publish_ms": q_ms, "page_url": self._page_link(msg.deployment_id, alert_id)}
        )
        self.publisher.publish(alert)
        if self.audit is not None:
            # Before mark_published: a failed audit write retries the record (at-least-once,
            # like the SNS publish), so no published alert goes unaudited. Ids only.
            self.audit.record(
                "match-function", AuditAction.ALERT, msg.deployment_id,
                alert_id=alert_id, camera_id=msg.camera_id, watchlist_entry_id=p.entry_id,
            )
        self.alerts.mark_published(msg.deployment_id, alert_id, published_at, q_ms)
        self.metrics.count("AlertsPublished", 1)
        if q_ms is not None:
            self.metrics.milliseconds("QueueToPublishMs", q_ms)
        logger.info("alert published", extra={"deployment_id": msg.deployment_id, "alert_id": alert_id})
        return Outcome.ALERTED
