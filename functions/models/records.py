"""What the functions persist: the deployment record and the alert record.

Times are timezone-aware datetimes in Python and ISO-8601 UTC strings in DynamoDB.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any, Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, field_validator, model_validator

from lfr_core.contracts import MAX_TRACK_CROPS, Alert, CameraState, DeploymentId, DeploymentState
from lfr_core.matching import FusionMode, Thresholds

# Mirrors of infra.constants (the Lambda asset does not ship infra/; tests assert equality).
ALERT_RETENTION_DAYS = 31
ALERT_RETENTION_CHOICES_DAYS = (1, 2, 3, 7, 14, ALERT_RETENTION_DAYS)
ALERT_RETENTION_TAG = "retention-days"
MAX_SESSION_DURATION_S = 12 * 60 * 60
# Encounters (functions/logic/encounters.py): sightings of one watchlist entry closer than this
# to the previous one are one encounter (one push). Bounds: below 30 s one walk-by past two
# cameras would push twice; above 30 min an officer would not learn of a return visit.
ENCOUNTER_WINDOW_S = 120
ENCOUNTER_WINDOW_BOUNDS_S = (30, 30 * 60)
# Cap on the track keys one encounter records (DynamoDB items stop at 400 KB).
MAX_ENCOUNTER_TRACKS = 500


class EnrolReject(BaseModel):
    """One watchlist image that did not yield a usable face, and why (no biometric)."""

    model_config = ConfigDict(frozen=True)

    file: str
    reason: str


# At most this many confusable pairs are kept on the record (the count is always kept).
MAX_CONFUSABLE_LISTED = 50


class ConfusableEntries(BaseModel):
    """Two watchlist entries of different people that score as one person at the deployment's
    threshold: one person under two names, or look-alikes an officer will be asked to tell apart.
    Ids, labels and a score only; shown to the admin before the session starts."""

    model_config = ConfigDict(frozen=True)

    entry_id: str
    label: str
    other_entry_id: str
    other_label: str
    similarity: float = Field(ge=-1.0, le=1.0)


class PurgeResult(BaseModel):
    model_config = ConfigDict(frozen=True)

    deleted: int = Field(ge=0)
    remaining: int = Field(ge=0)
    verified_at: AwareDatetime | None = None
    # Crop messages of this deployment removed from the crop queue and its DLQ.
    queue_deleted: int = Field(default=0, ge=0)
    dlq_deleted: int = Field(default=0, ge=0)


class IndexFault(BaseModel):
    """The deployment's watchlist index could not be used by the match function: a system fault.

    Set once (conditionally) by the first match invocation that finds it, cleared by the first
    that reads a usable index again; `lfr deployment status` shows it. No biometric: a tag and a time.
    """

    model_config = ConfigDict(frozen=True)

    reason: Literal["missing", "unreadable"]
    since: AwareDatetime


class Authorisation(BaseModel):
    """Who decided this deployment and on what grounds (the record Bridges v SWP found missing).

    Statements are free text written by officers; they never hold images or biometric data.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    authorising_officer: str = Field(min_length=2, max_length=200)
    legitimate_aim: str = Field(min_length=3, max_length=2000)
    necessity: str = Field(min_length=3, max_length=2000)
    proportionality: str = Field(min_length=3, max_length=2000)
    location: str = Field(min_length=2, max_length=500)
    start: AwareDatetime
    end: AwareDatetime
    watchlist_criteria: str = Field(min_length=3, max_length=2000)
    max_watchlist_size: int = Field(gt=0, le=100_000)
    authorised_at: AwareDatetime

    @model_validator(mode="after")
    def _ordered(self) -> Authorisation:
        if self.end <= self.start:
            raise ValueError("authorisation end must be after its start")
        return self


class DeploymentRecord(BaseModel):
    # Unknown attributes are ignored so the CLI can add its own (e.g. who authorised)
    # without breaking older function code reading the same item.
    model_config = ConfigDict(extra="ignore")

    deployment_id: DeploymentId
    name: str
    state: DeploymentState
    created_at: AwareDatetime
    duration_s: int = Field(gt=0)
    threshold: float = Field(ge=-1.0, le=1.0)
    # The false-positive identification rate the deployment was calibrated for, if it stated one.
    target_fpir: float | None = Field(default=None, gt=0.0, lt=1.0)
    # One decision per track (docs/ARCHITECTURE.md, matching): a message of n crops is decided on their fused score
    # against track_thresholds[n - 2] (n >= 2; `threshold` for one crop), calibrated for fusion
    # at creation. Empty (records from before fusion): every n uses `threshold` with "max",
    # i.e. the old per-crop rule.
    fusion_mode: FusionMode = "max"
    track_thresholds: list[float] = Field(default_factory=list)
    started_at: AwareDatetime | None = None
    expires_at: AwareDatetime | None = None
    watchlist_size: int = Field(default=0, ge=0)
    enrol_rejects: list[EnrolReject] = Field(default_factory=list)
    confusable: list[ConfusableEntries] = Field(default_factory=list)  # the highest MAX_CONFUSABLE_LISTED
    confusable_count: int = Field(default=0, ge=0)
    refused_crops: int = Field(default=0, ge=0)
    purge: PurgeResult | None = None
    closed_at: AwareDatetime | None = None
    # S3 ETag of the index written by build_watchlist: the match function's cache key.
    index_etag: str | None = None
    failure_reason: str | None = None
    authorisation: Authorisation | None = None
    stopped_at: AwareDatetime | None = None  # an early stop (lfr deployment stop)
    # Faces compared with the watchlist (one per track message): the transparency report's
    # "faces seen", a count only.
    faces_seen: int = Field(default=0, ge=0)
    # Alert records and crops of this deployment expire after this many days (<= the default).
    alert_retention_days: int = Field(default=ALERT_RETENTION_DAYS, ge=1, le=ALERT_RETENTION_DAYS)
    # Health: set while the watchlist index is missing or unreadable (docs/ARCHITECTURE.md "Match path").
    index_fault: IndexFault | None = None
    encounter_window_s: int = Field(
        default=ENCOUNTER_WINDOW_S, ge=ENCOUNTER_WINDOW_BOUNDS_S[0], le=ENCOUNTER_WINDOW_BOUNDS_S[1]
    )

    @field_validator("track_thresholds")
    @classmethod
    def _one_per_track_size(cls, v: list[float]) -> list[float]:
        if v and len(v) != MAX_TRACK_CROPS - 1:
            raise ValueError(f"track thresholds: one for each track size 2..{MAX_TRACK_CROPS}, or none")
        if any(not -1.0 <= t <= 1.0 for t in v):
            raise ValueError("track thresholds are cosines in [-1, 1]")
        return v

    @field_validator("alert_retention_days")
    @classmethod
    def _retention_choice(cls, v: int) -> int:
        if v not in ALERT_RETENTION_CHOICES_DAYS:
            raise ValueError(f"alert retention must be one of {ALERT_RETENTION_CHOICES_DAYS} days")
        return v

    @property
    def thresholds(self) -> Thresholds:
        """This deployment's thresholds per track size, for `lfr_core.matching.decide`."""
        return Thresholds(self.threshold, tuple(self.track_thresholds))

    def threshold_for_crops(self, n: int) -> float:
        """The threshold a decision fused from `n` crops of one track must reach."""
        return self.thresholds.for_crops(n)

    def is_live(self, now: datetime) -> bool:
        """True only while crops may be matched: ACTIVE and before its expiry."""
        return self.state == DeploymentState.ACTIVE and self.expires_at is not None and now < self.expires_at

    def to_item(self) -> dict[str, Any]:
        return self.model_dump(mode="json", exclude_none=True)


class Decision(StrEnum):
    """An officer's outcome for one alert (the three buttons of the alert page)."""

    CONFIRMED = "confirmed_engaged"  # a true alert
    NOT_A_MATCH = "not_a_match"  # a false alert
    NOT_LOCATED = "could_not_locate"  # unresolved: never counted as true


class AlertRecord(Alert):
    """The published `Alert`, plus storage-only attributes."""

    crop_key: str
    expires_at_epoch: int  # DynamoDB TTL attribute
    # Set once the SNS publish of the current `revision` succeeded; a replay of the same crop with
    # it set publishes nothing.
    published_at: AwareDatetime | None = None
    # Who may publish `publish_claim_revision` (a crop message id), until `publish_claim_until`
    # (epoch s): one push per revision among concurrent sightings (functions/logic/encounters.py).
    publish_claim_by: str | None = None
    publish_claim_revision: int | None = None
    publish_claim_until: int | None = None
    # The officer's decision (README "Officers"); one per alert, first one wins.
    decision: Decision | None = None
    decided_by: str | None = None
    decided_at: AwareDatetime | None = None
    # Watchlist image of the matched entry (watchlist bucket), for the alert page; gone after purge.
    watchlist_image_key: str | None = None
    # "camera/track" of every track of the encounter (a DynamoDB string set: adding one is
    # idempotent, so a redelivered message never counts twice); `sightings` is its size.
    tracks: list[str] = Field(default_factory=list)

    @model_validator(mode="after")
    def _sightings_from_tracks(self) -> AlertRecord:
        if self.tracks and self.sightings != len(self.tracks):
            object.__setattr__(self, "sightings", len(self.tracks))
        if self.cameras != tuple(sorted(set(self.cameras))):
            object.__setattr__(self, "cameras", tuple(sorted(set(self.cameras))))
        return self

    @staticmethod
    def expiry_epoch(alerted_at: datetime, days: int = ALERT_RETENTION_DAYS) -> int:
        return int((alerted_at + timedelta(days=days)).timestamp())

    def to_alert(self) -> Alert:
        return Alert.model_validate(self.model_dump(include=set(Alert.model_fields)))

    def to_item(self) -> dict[str, Any]:
        return self.model_dump(mode="json", exclude_none=True)


ENCOUNTER_KEY_PREFIX = "enc#"  # alerts-table sort keys of encounter state (not alerts)
CAMERA_KEY_PREFIX = "cam#"  # alerts-table sort keys of camera activity (not alerts)


class EncounterState(BaseModel):
    """Where one watchlist entry's current encounter stands: an item of the alerts table keyed by
    (deployment, `enc#<entry>`). Ids and times only; it exists only for entries that matched."""

    model_config = ConfigDict(frozen=True)

    deployment_id: str
    watchlist_entry_id: str
    opened_at: AwareDatetime
    last_seen: AwareDatetime
    # True when this call opened the encounter (its first sighting, or the first after the window).
    opened: bool = False


class LastCameraStatus(BaseModel):
    """The newest `CameraStatus` the cloud received from a camera's edge (by its `sent_at`), and when
    it arrived (the cloud's clock, which decides whether the edge has gone silent). Counts only."""

    model_config = ConfigDict(frozen=True)

    state: CameraState
    since: AwareDatetime
    sent_at: AwareDatetime
    received_at: AwareDatetime
    interval_s: float
    frames: int = 0
    gap_s: float = 0.0
    reconnects: int = 0
    spool_depth: int = 0


class CameraActivity(BaseModel):
    """Per camera: when its last crop message arrived, and messages per minute (counts only), and the
    edge's last status. Either may be missing: a camera that streams but sees no face sends statuses
    only; an edge older than statuses, crops only."""

    model_config = ConfigDict(frozen=True)

    camera_id: str
    last_seen: AwareDatetime | None = None
    status: LastCameraStatus | None = None
    messages: int = 0
    per_minute: dict[int, int] = Field(default_factory=dict)  # epoch minute -> messages
    # How long the latest processed message had waited in the crop queue.
    queue_lag_ms: float | None = None
