"""Encounters: one alert, and one push, per listed person per walk-by (docs/ARCHITECTURE.md
"Encounters").

A matched track's alert belongs to the *encounter* of its watchlist entry in the deployment:
every sighting (track) of that entry, from any camera, less than the deployment's
`encounter_window_s` after the previous one. The encounter is opened by the first sighting
and its alert id is `uuid5(deployment/entry/opened_at)`, so whoever opened it, every
concurrent match invocation derives the same id. The first sighting publishes (revision 1,
the push that sounds); later sightings add their track and camera to the same alert record
and republish only when they change what the officer sees (a better crop, another camera),
as revision n+1 under the same alert id, which devices collapse (APNs collapse id and
thread id, FCM collapse key and tag: functions/dal/push.py) and deliver silently. A sighting
after the window has passed opens a new encounter: a new push.

The encounter state is one item per (deployment, watchlist entry) in the alerts table
(`enc#<entry id>`: opened and last-seen times), written only for a face that matched, with
the alert records' TTL; it is moved on by conditional updates only (extend if last seen
within the window, else open), so two workers holding tracks of one person cannot open two
encounters. An officer's decision is recorded on the encounter's alert, so it covers all of
its sightings; a decided encounter is not republished.

Each revision is pushed once although several workers may see it unpublished at the same time
(a sighting arriving while the first push is in flight): a worker publishes only after winning
the revision's claim (`claim_publication`). The claim names the crop message, so that message's
redelivery after a crash can finish the push; any other worker may take it over once
PUBLISH_CLAIM_LEASE_S has passed (the claimant's invocation is over by then). The record is marked
published for that revision only, so a late mark never hides a newer revision.

Camera activity for the van's console is here too: per invocation and camera, one atomic
update of the camera's last-seen time and per-minute message count. Counts and times only.
"""

from __future__ import annotations

import uuid
from collections import defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING

from functions.dal.ports import AlertCropStore, AlertPublisher, AlertRepository
from functions.exceptions import TransientStorageError
from functions.logic.audit_log import AuditLog
from functions.models.records import ALERT_RETENTION_DAYS, AlertRecord
from functions.observability import MetricsSink, logger
from lfr_core.contracts import AuditAction
from lfr_core.layout import alert_crop_key

if TYPE_CHECKING:
    from functions.logic.match import PendingAlert

ENCOUNTER_ID_NAMESPACE = uuid.UUID("5d1b3a8e-2f4c-4b7a-9a61-3c0e8f2d7b15")
ALERTED = "alerted"
DUPLICATE = "duplicate"
# A sighting's crop replaces the alert's only when it scores better by more than this: the same
# crop embedded in another batch differs in the last float digits (onnxruntime's kernels depend
# on the batch, and flip TTA adds two runs), and a replay must not republish as "a better crop".
BETTER_CROP_MARGIN = 1e-4
# Longer than any match invocation (infra MATCH_TIMEOUT_S, 5 s), so a live claimant keeps its
# claim; no longer than the queue's visibility timeout, so a stalled push is taken over by the
# next sighting about as soon as the claimant's own redelivery would retry it.
PUBLISH_CLAIM_LEASE_S = 30


def encounter_alert_id(deployment_id: str, entry_id: str, opened_at: datetime) -> str:
    return str(uuid.uuid5(ENCOUNTER_ID_NAMESPACE, f"{deployment_id}/{entry_id}/{int(opened_at.timestamp() * 1000)}"))


def track_key(camera_id: str, track_id: str) -> str:
    return f"{camera_id}/{track_id}"


@dataclass
class Encounters:
    alerts: AlertRepository
    crops: AlertCropStore
    publisher: AlertPublisher
    metrics: MetricsSink
    clock: Callable[[], datetime]
    audit: AuditLog
    page_link: Callable[[str, str], str | None]

    def raise_alert(self, p: PendingAlert, window_s: int) -> str:
        """Record one matched track in its person's encounter; publish if that is new or changed.
        Returns ALERTED (published) or DUPLICATE (nothing to publish). Idempotent per message."""
        msg = p.message
        dep_id = msg.deployment_id
        now = self.clock()
        expires = AlertRecord.expiry_epoch(now, p.retention_days)
        enc = self.alerts.sight_encounter(dep_id, p.entry_id, now, window_s, expires)
        alert_id = encounter_alert_id(dep_id, p.entry_id, enc.opened_at)
        key = alert_crop_key(dep_id, alert_id)
        shortened = p.retention_days if p.retention_days < ALERT_RETENTION_DAYS else None
        tkey = track_key(msg.camera_id, msg.track_id)
        # A just-opened encounter has no alert yet (its id is new): skip the read.
        record = None if enc.opened else self.alerts.get(dep_id, alert_id)
        created = False
        if record is None:
            # Crop before record, so a record never points at a missing crop; a retry
            # overwrites the same key rather than leaving a second copy.
            self.crops.put_crop(key, p.jpeg, shortened)
            candidate = AlertRecord(
                alert_id=alert_id,
                deployment_id=dep_id,
                camera_id=msg.camera_id,
                track_id=msg.track_id,
                crop_message_id=msg.message_id,
                captured_at=msg.captured_at,
                alerted_at=now,
                watchlist_entry_id=p.entry_id,
                watchlist_label=p.label,
                similarity=p.similarity,
                threshold=p.threshold,
                crop_key=key,
                expires_at_epoch=expires,
                watchlist_reference=p.reference,
                watchlist_reason=p.reason,
                watchlist_image_key=p.image_key,
                crops_fused=p.crops_fused,
                tracks=[tkey],
                cameras=(msg.camera_id,),
                last_seen_at=msg.captured_at,
                encounter_window_s=window_s,
                # Created holding the claim on its first push: no second write before it.
                publish_claim_by=msg.message_id,
                publish_claim_revision=1,
                publish_claim_until=int(now.timestamp()) + PUBLISH_CLAIM_LEASE_S,
            )
            created = self.alerts.put_new(candidate)
            # Lost the race to a concurrent sighting of this encounter: join it as a sighting.
            record = candidate if created else self.alerts.get(dep_id, alert_id)
            if record is None:
                raise TransientStorageError("alerts.get: alert missing after a failed conditional put")
        if not created:
            if record.crop_message_id == msg.message_id:
                if record.published_at is not None:  # a replay of the crop the alert holds
                    self.metrics.count("AlertsDuplicate", 1)
                    return DUPLICATE
                # Recorded, not yet published (an interrupted earlier attempt): finish it.
                self.crops.put_crop(key, p.jpeg, shortened)
            else:
                record = self._sighting(p, record, alert_id, key, shortened, tkey)
                if record.published_at is not None:
                    # Another sighting of an encounter the officer already has: recorded, no push.
                    self.metrics.count("EncounterSightings", 1)
                    return DUPLICATE
        if not created and not self.alerts.claim_publication(dep_id, alert_id, record.revision, msg.message_id, now,
                                                             PUBLISH_CLAIM_LEASE_S):
            # A concurrent sighting is pushing this revision (or a newer one exists, pushed by its maker).
            self.metrics.count("EncounterSightings", 1)
            return DUPLICATE
        return self._publish(p, record)

    def _sighting(self, p: PendingAlert, record: AlertRecord, alert_id: str, key: str,
                  shortened: int | None, tkey: str) -> AlertRecord:
        msg = p.message
        dep_id = msg.deployment_id
        before = self.alerts.add_sighting(dep_id, alert_id, msg.camera_id, tkey, msg.captured_at)
        if before is None:
            raise TransientStorageError("alerts.add_sighting: encounter alert vanished")
        if before.decision is None:
            if p.similarity > before.similarity + BETTER_CROP_MARGIN:
                better = {
                    "camera_id": msg.camera_id,
                    "track_id": msg.track_id,
                    "crop_message_id": msg.message_id,
                    "captured_at": msg.captured_at.isoformat(),
                    "watchlist_label": p.label,
                    "threshold": p.threshold,
                    "watchlist_reference": p.reference,
                    "watchlist_reason": p.reason,
                    "watchlist_image_key": p.image_key,
                    "crops_fused": p.crops_fused,
                }
                # Record first: if the crop write then fails, the retry finds the record holding
                # this message unpublished and writes the crop before publishing.
                if self.alerts.improve(dep_id, alert_id, better, p.similarity):
                    self.crops.put_crop(key, p.jpeg, shortened)
            elif msg.camera_id not in before.cameras:
                self.alerts.bump_revision(dep_id, alert_id, before.revision)  # another camera: an update
        current = self.alerts.get(dep_id, alert_id)
        if current is None:
            raise TransientStorageError("alerts.get: encounter alert vanished")
        return current

    def _publish(self, p: PendingAlert, record: AlertRecord) -> str:
        msg = p.message
        published_at = self.clock()
        q_ms = None
        if p.sent_timestamp_ms is not None:
            q_ms = max(0.0, published_at.timestamp() * 1000.0 - p.sent_timestamp_ms)
        link = self.page_link(msg.deployment_id, record.alert_id)
        alert = record.to_alert().model_copy(update={"queue_to_publish_ms": q_ms, "page_url": link})
        self.publisher.publish(alert)
        # Before mark_published: a failed audit write retries the record (at-least-once,
        # like the SNS publish), so no published alert goes unaudited. Ids only.
        self.audit.record(
            "match-function", AuditAction.ALERT, msg.deployment_id,
            alert_id=record.alert_id, camera_id=msg.camera_id, watchlist_entry_id=p.entry_id,
            revision=record.revision, sightings=record.sightings,
        )
        self.alerts.mark_published(msg.deployment_id, record.alert_id, record.revision, published_at, q_ms)
        self.metrics.count("AlertsPublished" if record.revision == 1 else "AlertUpdatesPublished", 1)
        if q_ms is not None:
            self.metrics.milliseconds("QueueToPublishMs", q_ms)
        logger.info("alert published", extra={
            "deployment_id": msg.deployment_id, "alert_id": record.alert_id, "revision": record.revision,
        })
        return ALERTED


def record_camera_activity(
    alerts: AlertRepository,
    seen: Iterable[tuple[str, str, int | None]],
    now: datetime,
    expires_epoch: Callable[[str], int],
) -> None:
    """`seen`: (deployment id, camera id, SQS sent timestamp ms) of each live message of one
    invocation. One atomic update per (deployment, camera); a failure costs only the console's
    figures, never the batch."""
    counts: dict[tuple[str, str], int] = defaultdict(int)
    lag: dict[tuple[str, str], float] = {}
    for dep_id, camera_id, sent_ms in seen:
        counts[(dep_id, camera_id)] += 1
        if sent_ms is not None:
            waited = max(0.0, now.timestamp() * 1000.0 - sent_ms)
            lag[(dep_id, camera_id)] = max(waited, lag.get((dep_id, camera_id), 0.0))
    for (dep_id, camera_id), n in counts.items():
        try:
            alerts.record_camera_activity(
                dep_id, camera_id, n, now, lag.get((dep_id, camera_id)),
                expires_epoch(dep_id),
            )
        except TransientStorageError:
            logger.warning("camera activity not updated", extra={"deployment_id": dep_id})
