"""The one definition of every message that crosses a boundary.

The edge uploader builds `CropMessage`s, the match function parses them; the match
function builds `Alert`s, officers' devices and the CLI read them. Anything that
changes here changes for both sides at once.
"""

from __future__ import annotations

import base64
import binascii
import math
import uuid
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import Annotated, Literal

from pydantic import (
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
)

SCHEMA_VERSION: Literal[1] = 1
CROP_SIZE = 112  # SFace input: aligned 112x112
# SQS caps a message at 256 KiB; an aligned 112x112 JPEG is a few KiB, so a
# crop this large is not an aligned crop and is refused before decoding.
MAX_INLINE_JPEG_BYTES = 64 * 1024
# One decision per track: a message carries up to this many crops of one track (the track
# sizes the calibration table has thresholds for). 3 x 64 KiB inline stays far below 256 KiB.
MAX_TRACK_CROPS = 3

DeploymentId = Annotated[str, Field(min_length=3, max_length=64, pattern=r"^[a-z0-9][a-z0-9-]*$")]
# Ids that reach logs, metrics and S3 keys: short, printable, no separators an attacker could use.
MessageId = Annotated[str, Field(min_length=8, max_length=64, pattern=r"^[A-Za-z0-9_-]+$")]
SourceId = Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9][A-Za-z0-9._:-]*$")]

# Plausibility bounds of a crop message: one place, applied where the edge builds a message and
# where the match function parses one, so both reject the same things.
# No lfr deployment existed before this: a capture time earlier is a broken clock or a forgery.
EARLIEST_CAPTURE = datetime(2025, 1, 1, tzinfo=UTC)
# A camera clock this far ahead of the receiver's is wrong (the edge checks against its own clock).
MAX_CLOCK_SKEW = timedelta(minutes=5)
# Older than this, a crop cannot be live: the edge spool keeps one 5 min, the queue 15 min, the
# DLQ 20 min. Checked by a receiver that passes its clock (`validation_context`).
MAX_CAPTURE_AGE = timedelta(hours=1)
# Landmarks are in source-frame pixels: a frame is at most this wide or high (8K is 7680), and a
# detection may reach a little past its edge.
MAX_FRAME_SIDE_PX = 16_384.0
LANDMARK_MARGIN_PX = 1_024.0
# Eyes further apart than this would need a face wider than any frame above.
MAX_INTEROCULAR_PX = 4_096.0
# Sharpness is the variance of the 3x3 Laplacian of an 8-bit image; the Laplacian is within
# +-4*255, so its variance cannot exceed 1020**2.
MAX_SHARPNESS = 1020.0**2


def validation_context(now: datetime) -> dict[str, datetime]:
    """Context for `CropMessage.model_validate_json(..., context=...)`: the receiver's clock."""
    return {"now": now}


def _check_live_time(v: datetime, info: ValidationInfo, max_age: timedelta) -> datetime:
    """A time an edge stamped: after any deployment could exist, not ahead of the receiver's clock
    (beyond skew), and, when the receiver gives its clock, not older than `max_age`."""
    ctx = info.context if isinstance(info.context, dict) else {}
    now = ctx.get("now")
    if not isinstance(now, datetime):
        now = datetime.now(UTC)
    if v < EARLIEST_CAPTURE:
        raise ValueError("before any deployment could exist")
    if v > now + MAX_CLOCK_SKEW:
        raise ValueError("in the future")
    if "now" in ctx and v < now - max_age:
        raise ValueError(f"older than {max_age}: not live")
    return v


def _check_capture_time(v: datetime, info: ValidationInfo) -> datetime:
    return _check_live_time(v, info, MAX_CAPTURE_AGE)


def rejection_reason(exc: ValidationError, model: type[BaseModel] | None = None) -> str:
    """A bounded, content-free reason tag for a message that failed validation (for metrics and logs).

    A malformed message (not JSON, missing or unknown fields) is `invalid_message`; a well-formed
    one with an implausible value is `invalid_<top-level field>` (of `model`, `CropMessage` unless
    given). Never the value, never a key the sender chose (an unknown key is attacker-controlled text).
    """
    errors = exc.errors(include_url=False, include_input=False, include_context=False)
    fields = (model or CropMessage).model_fields
    for err in errors:
        loc = err.get("loc") or ()
        if err.get("type") in ("missing", "extra_forbidden", "json_invalid", "json_type", "model_type") or not loc:
            return "invalid_message"
    first = (errors[0].get("loc") or ("",))[0] if errors else ""
    return f"invalid_{first}" if isinstance(first, str) and first in fields else "invalid_message"


def new_id() -> str:
    return uuid.uuid4().hex


def utcnow() -> datetime:
    return datetime.now(UTC)


class _Frozen(BaseModel):
    # NaN and infinities parse from JSON (`NaN`, `Infinity`) unless refused: no field may hold one.
    model_config = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False)


class DeploymentState(StrEnum):
    PENDING = "PENDING"
    AUTHORISED = "AUTHORISED"
    BUILDING = "BUILDING"
    ACTIVE = "ACTIVE"
    EXPIRED = "EXPIRED"  # ended by its clock
    STOPPED = "STOPPED"  # ended early by an admin
    PURGING = "PURGING"
    CLOSED = "CLOSED"  # purged and verified empty
    FAILED = "FAILED"


class InlineJpeg(_Frozen):
    kind: Literal["jpeg"] = "jpeg"
    jpeg_b64: str = Field(description="base64 of the aligned 112x112 JPEG")

    @field_validator("jpeg_b64")
    @classmethod
    def _bounded(cls, v: str) -> str:
        if len(v) > MAX_INLINE_JPEG_BYTES * 4 // 3 + 4:
            raise ValueError(f"inline crop larger than {MAX_INLINE_JPEG_BYTES} bytes")
        try:
            raw = base64.b64decode(v, validate=True)
        except (binascii.Error, ValueError):
            raise ValueError("not base64") from None
        if not raw:
            raise ValueError("empty crop")
        return v

    @classmethod
    def from_bytes(cls, jpeg: bytes) -> InlineJpeg:
        return cls(jpeg_b64=base64.b64encode(jpeg).decode("ascii"))

    def to_bytes(self) -> bytes:
        return base64.b64decode(self.jpeg_b64, validate=True)


class S3Pointer(_Frozen):
    """For crops too large to inline; the object lives under the deployment's prefix."""

    kind: Literal["s3"] = "s3"
    bucket: str = Field(min_length=3, max_length=63, pattern=r"^[a-z0-9][a-z0-9.-]*[a-z0-9]$")
    key: str = Field(min_length=1, max_length=1024, pattern=r"^[A-Za-z0-9!_.*'()/-]+$")


class Quality(_Frozen):
    """Edge-side quality measures of one crop; `score` in [0, 1] is what the gate uses."""

    score: float = Field(ge=0.0, le=1.0)
    detector_score: float = Field(ge=0.0, le=1.0)
    interocular_px: float = Field(gt=0.0, le=MAX_INTEROCULAR_PX)
    sharpness: float = Field(ge=0.0, le=MAX_SHARPNESS)
    frontal: float = Field(ge=0.0, le=1.0)


Coordinate = Annotated[float, Field(ge=-LANDMARK_MARGIN_PX, le=MAX_FRAME_SIDE_PX + LANDMARK_MARGIN_PX)]
Point = tuple[Coordinate, Coordinate]


class TrackCrop(_Frozen):
    """Another crop of the message's track, decided together with the message's own crop."""

    captured_at: AwareDatetime
    image: InlineJpeg
    quality: Quality

    _captured = field_validator("captured_at")(_check_capture_time)


class CropMessage(_Frozen):
    """The aligned face crops of one track from a camera, as sent to the deployment's queue.

    `image` is the track's best crop (by quality); `more` holds its other crops (if any), so the
    match function makes ONE decision per track from all of them without keeping anything about
    a face between invocations.
    """

    schema_version: Literal[1] = SCHEMA_VERSION
    message_id: MessageId = Field(default_factory=new_id)
    deployment_id: DeploymentId
    camera_id: SourceId
    track_id: SourceId
    captured_at: AwareDatetime
    image: Annotated[InlineJpeg | S3Pointer, Field(discriminator="kind")]
    landmarks: tuple[Point, Point, Point, Point, Point] = Field(
        description="right eye, left eye, nose, right mouth corner, left mouth corner in the source frame"
    )
    quality: Quality
    more: tuple[TrackCrop, ...] = Field(default=(), max_length=MAX_TRACK_CROPS - 1)

    _captured = field_validator("captured_at")(_check_capture_time)

    @field_validator("landmarks")
    @classmethod
    def _plausible_face(cls, v: tuple[Point, Point, Point, Point, Point]) -> tuple[Point, Point, Point, Point, Point]:
        (rx, ry), (lx, ly) = v[0], v[1]
        if not 1.0 <= math.hypot(lx - rx, ly - ry) <= MAX_INTEROCULAR_PX:
            raise ValueError("eyes not a face's width apart")
        return v

    @property
    def n_crops(self) -> int:
        return 1 + len(self.more)


# -- camera status: the edge's heartbeat, on the crop queue --------------------------------------

# SQS message attribute naming what a queue message is. Absent: a `CropMessage` (every edge sent
# only crops before statuses existed). The body of a status says so too (`kind`), so a body is
# never parsed as the other contract: a crop sent as a status, or the reverse, is rejected.
MESSAGE_KIND_ATTRIBUTE = "kind"
CAMERA_STATUS_KIND: Literal["camera_status"] = "camera_status"
# How often the edge reports while running, and the bounds a receiver accepts: statuses faster than
# MIN would only cost queue traffic; slower than MAX a dead edge goes unnoticed for too long.
CAMERA_STATUS_INTERVAL_S = 15.0
MIN_STATUS_INTERVAL_S = 0.5
MAX_STATUS_INTERVAL_S = 300.0
# A status older than this is not live (the cloud marks an edge silent after 3 intervals anyway).
MAX_STATUS_AGE = timedelta(minutes=15)
# One counter bound for every count a status carries: far above any real session (12 h at 60 fps
# is 2.6 M frames), so an absurd value is a broken or hostile sender.
MAX_STATUS_COUNT = 100_000_000
MAX_GAP_S = 48 * 3600.0


class CameraState(StrEnum):
    STREAMING = "streaming"  # the source delivers frames
    RECONNECTING = "reconnecting"  # the source was lost; the edge is reopening it with back-off


def _check_status_time(v: datetime, info: ValidationInfo) -> datetime:
    return _check_live_time(v, info, MAX_STATUS_AGE)


class CameraStatus(_Frozen):
    """One camera's health as its edge uploader sees it, sent on a source state change and every
    `interval_s` while running. Counts and times only: no image, no embedding, no face."""

    schema_version: Literal[1] = SCHEMA_VERSION
    kind: Literal["camera_status"] = CAMERA_STATUS_KIND
    message_id: MessageId = Field(default_factory=new_id)
    deployment_id: DeploymentId
    camera_id: SourceId
    sent_at: AwareDatetime
    state: CameraState
    since: AwareDatetime = Field(description="when the current state began")
    interval_s: float = Field(ge=MIN_STATUS_INTERVAL_S, le=MAX_STATUS_INTERVAL_S,
                              description="the edge's reporting interval: silent after 3 of them")
    frames: int = Field(ge=0, le=MAX_STATUS_COUNT, description="frames read since the previous status")
    gap_s: float = Field(ge=0.0, le=MAX_GAP_S, description="seconds without frames: the current gap if "
                         "reconnecting, else the last one")
    reconnects: int = Field(ge=0, le=MAX_STATUS_COUNT)
    spool_depth: int = Field(ge=0, le=MAX_STATUS_COUNT, description="crops waiting in the edge's spool")

    _sent = field_validator("sent_at")(_check_status_time)

    @field_validator("since")
    @classmethod
    def _since(cls, v: datetime, info: ValidationInfo) -> datetime:
        # A state may have begun long ago (streaming since the session started), never after the
        # status was sent.
        if v < EARLIEST_CAPTURE:
            raise ValueError("before any deployment could exist")
        sent = info.data.get("sent_at")
        if isinstance(sent, datetime) and v > sent:
            raise ValueError("state begins after the status was sent")
        return v


class Alert(_Frozen):
    """A prompt to an officer. Carries no biometric: the crop stays in the alerts bucket."""

    schema_version: Literal[1] = SCHEMA_VERSION
    alert_id: str
    deployment_id: DeploymentId
    camera_id: str
    track_id: str
    crop_message_id: str
    captured_at: AwareDatetime
    alerted_at: AwareDatetime
    watchlist_entry_id: str
    watchlist_label: str
    similarity: float
    threshold: float
    queue_to_publish_ms: float | None = None
    # Officers' side (optional, so alerts published before they existed still parse): the
    # watchlist entry's reference and reason for inclusion (never the person's full record),
    # how many times a better crop of the same track updated it, and a short-lived page link.
    watchlist_reference: str | None = None
    watchlist_reason: str | None = None
    revision: int = Field(default=1, ge=1)
    page_url: str | None = None
    # How many crops of the track the decision fused (`similarity` is then the fused score).
    crops_fused: int = Field(default=1, ge=1, le=MAX_TRACK_CROPS)
    # Encounter (functions/logic/encounters.py): the alert stands for every sighting of this
    # watchlist entry in the deployment until `encounter_window_s` pass without one. `alert_id`
    # is the encounter's id (devices collapse on it); `sightings` counts its tracks, `cameras`
    # the cameras that saw them, `last_seen_at` the latest. `camera_id`/`track_id`/`similarity`
    # are those of the best crop so far.
    sightings: int = Field(default=1, ge=1)
    cameras: tuple[str, ...] = ()
    last_seen_at: AwareDatetime | None = None
    encounter_window_s: int | None = Field(default=None, ge=1)


class AuditAction(StrEnum):
    CREATE = "create"
    AUTHORISE = "authorise"
    BUILD = "build"
    START = "start"
    STOP = "stop"
    EXPIRE = "expire"
    PURGE = "purge"
    WATCHLIST_CHANGE = "watchlist_change"
    ALERT = "alert"
    ADJUDICATION = "adjudication"
    EXPORT = "export"
    FAILED_ACCESS = "failed_access"
    REFUSED = "refused"
    FAIL = "fail"
    CLOSE = "close"
    FAULT = "fault"  # a system fault raised or cleared (index unusable), or a session step retried (transient)


AuditValue = str | int | float | bool | None


class AuditEvent(_Frozen):
    """An append-only record of one action. Never holds biometric data."""

    schema_version: Literal[1] = SCHEMA_VERSION
    event_id: str = Field(default_factory=new_id)
    at: AwareDatetime = Field(default_factory=utcnow)
    actor: str
    action: AuditAction
    deployment_id: str | None = None
    details: dict[str, AuditValue] = Field(default_factory=dict)
