"""The one definition of every message that crosses a boundary.

The edge uploader builds `CropMessage`s, the match function parses them; the match
function builds `Alert`s, officers' devices and the CLI read them. Anything that
changes here changes for both sides at once.
"""

from __future__ import annotations

import base64
import uuid
from datetime import UTC, datetime
from enum import StrEnum
from typing import Annotated, Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, field_validator

SCHEMA_VERSION: Literal[1] = 1
CROP_SIZE = 112  # SFace input: aligned 112x112
# SQS caps a message at 256 KiB; an aligned 112x112 JPEG is a few KiB, so a
# crop this large is not an aligned crop and is refused before decoding.
MAX_INLINE_JPEG_BYTES = 64 * 1024
# One decision per track: a message carries up to this many crops of one track (the track
# sizes the calibration table has thresholds for). 3 x 64 KiB inline stays far below 256 KiB.
MAX_TRACK_CROPS = 3

DeploymentId = Annotated[str, Field(min_length=3, max_length=64, pattern=r"^[a-z0-9][a-z0-9-]*$")]


def new_id() -> str:
    return uuid.uuid4().hex


def utcnow() -> datetime:
    return datetime.now(UTC)


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


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
        return v

    @classmethod
    def from_bytes(cls, jpeg: bytes) -> InlineJpeg:
        return cls(jpeg_b64=base64.b64encode(jpeg).decode("ascii"))

    def to_bytes(self) -> bytes:
        return base64.b64decode(self.jpeg_b64, validate=True)


class S3Pointer(_Frozen):
    """For crops too large to inline; the object lives under the deployment's prefix."""

    kind: Literal["s3"] = "s3"
    bucket: str
    key: str


class Quality(_Frozen):
    """Edge-side quality measures of one crop; `score` in [0, 1] is what the gate uses."""

    score: float = Field(ge=0.0, le=1.0)
    detector_score: float = Field(ge=0.0, le=1.0)
    interocular_px: float = Field(ge=0.0)
    sharpness: float = Field(ge=0.0)
    frontal: float = Field(ge=0.0, le=1.0)


Point = tuple[float, float]


class TrackCrop(_Frozen):
    """Another crop of the message's track, decided together with the message's own crop."""

    captured_at: AwareDatetime
    image: InlineJpeg
    quality: Quality


class CropMessage(_Frozen):
    """The aligned face crops of one track from a camera, as sent to the deployment's queue.

    `image` is the track's best crop (by quality); `more` holds its other crops (if any), so the
    match function makes ONE decision per track from all of them without keeping anything about
    a face between invocations.
    """

    schema_version: Literal[1] = SCHEMA_VERSION
    message_id: str = Field(default_factory=new_id, min_length=8, max_length=64)
    deployment_id: DeploymentId
    camera_id: str = Field(min_length=1, max_length=64)
    track_id: str = Field(min_length=1, max_length=64)
    captured_at: AwareDatetime
    image: Annotated[InlineJpeg | S3Pointer, Field(discriminator="kind")]
    landmarks: tuple[Point, Point, Point, Point, Point] = Field(
        description="right eye, left eye, nose, right mouth corner, left mouth corner in the source frame"
    )
    quality: Quality
    more: tuple[TrackCrop, ...] = Field(default=(), max_length=MAX_TRACK_CROPS - 1)

    @property
    def n_crops(self) -> int:
        return 1 + len(self.more)


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
    FAULT = "fault"  # a session step failed transiently and was retried (details: step, retries, error)


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
