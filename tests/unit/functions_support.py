"""Shared helpers for the functions' unit tests: real faces, SQS events, recorders."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from functools import cache
from pathlib import Path
from typing import Any, cast

import cv2
import numpy as np
import pytest
from aws_lambda_powertools.utilities.typing import LambdaContext

from functions.logic.audit_log import AuditLog
from functions.logic.console import Console
from functions.models.records import DeploymentRecord
from functions.observability import logger as fn_logger
from lfr_core.contracts import CropMessage, DeploymentState, InlineJpeg, Quality, TrackCrop
from lfr_core.matching import FusionMode

NOW = datetime(2026, 11, 22, 12, 0, 0, tzinfo=UTC)


class Clock:
    def __init__(self, now: datetime = NOW) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)


@dataclass
class RecordingMetrics:
    counts: dict[tuple[str, tuple[tuple[str, str], ...]], float] = field(default_factory=dict)
    timings: dict[str, list[float]] = field(default_factory=dict)

    def count(self, name: str, value: float = 1.0, dimensions: Mapping[str, str] | None = None) -> None:
        key = (name, tuple(sorted((dimensions or {}).items())))
        self.counts[key] = self.counts.get(key, 0.0) + value

    def milliseconds(self, name: str, value: float) -> None:
        self.timings.setdefault(name, []).append(value)

    def total(self, name: str) -> float:
        return sum(v for (n, _), v in self.counts.items() if n == name)


class LogCapture(logging.Handler):
    """Everything the functions' Powertools logger emits, message plus structured extras."""

    def __init__(self) -> None:
        super().__init__(level=logging.DEBUG)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(record.getMessage() + " " + repr(record.__dict__))

    @property
    def text(self) -> str:
        return "\n".join(self.lines)


def capture_logs() -> Iterator[LogCapture]:
    """Generator for a fixture: `yield from capture_logs()`."""
    cap = LogCapture()
    target = logging.getLogger(fn_logger.name)
    old_level = target.level
    target.addHandler(cap)
    target.setLevel(logging.DEBUG)
    try:
        yield cap
    finally:
        target.removeHandler(cap)
        target.setLevel(old_level)


@dataclass
class FakeLambdaContext:
    function_name: str = "match"
    memory_limit_in_mb: int = 2048
    invoked_function_arn: str = "arn:aws:lambda:eu-west-2:123456789012:function:match"
    aws_request_id: str = "req-1"

    def get_remaining_time_in_millis(self) -> int:
        return 30_000


def lambda_context() -> LambdaContext:
    return cast(LambdaContext, FakeLambdaContext())


def deployment(
    deployment_id: str = "dep-test",
    state: DeploymentState = DeploymentState.ACTIVE,
    *,
    threshold: float = 0.5,
    now: datetime = NOW,
    duration_s: int = 3600,
    index_etag: str | None = None,
    watchlist_size: int = 0,
    track_thresholds: Sequence[float] = (),
    fusion_mode: FusionMode = "max",
) -> DeploymentRecord:
    started = now - timedelta(seconds=60) if state == DeploymentState.ACTIVE else None
    return DeploymentRecord(
        deployment_id=deployment_id,
        name="test deployment",
        state=state,
        created_at=now - timedelta(hours=1),
        duration_s=duration_s,
        threshold=threshold,
        started_at=started,
        expires_at=started + timedelta(seconds=duration_s) if started else None,
        index_etag=index_etag,
        watchlist_size=watchlist_size,
        track_thresholds=list(track_thresholds),
        fusion_mode=fusion_mode,
    )


def crop_message(
    deployment_id: str, jpeg: bytes, message_id: str | None = None, track_id: str = "trk-1",
    more: Sequence[bytes] = (),
) -> CropMessage:
    """A track's message: `jpeg` its best crop, `more` its other crops (lower quality)."""
    kwargs = {"message_id": message_id} if message_id else {}
    return CropMessage(
        deployment_id=deployment_id,
        camera_id="cam-1",
        track_id=track_id,
        captured_at=NOW,
        image=InlineJpeg.from_bytes(jpeg),
        landmarks=((38.0, 51.0), (73.0, 51.0), (56.0, 71.0), (41.0, 92.0), (70.0, 92.0)),
        quality=Quality(score=0.9, detector_score=0.9, interocular_px=40.0, sharpness=100.0, frontal=0.9),
        more=tuple(
            TrackCrop(captured_at=NOW, image=InlineJpeg.from_bytes(m),
                      quality=Quality(score=0.8, detector_score=0.9, interocular_px=40.0, sharpness=90.0, frontal=0.9))
            for m in more
        ),
        **kwargs,  # type: ignore[arg-type]
    )


def sqs_record(sqs_id: str, body: str, sent_at: datetime = NOW) -> dict[str, object]:
    return {
        "messageId": sqs_id,
        "receiptHandle": f"rh-{sqs_id}",
        "body": body,
        "attributes": {
            "ApproximateReceiveCount": "1",
            "SentTimestamp": str(int(sent_at.timestamp() * 1000)),
            "SenderId": "AIDAEXAMPLE",
            "ApproximateFirstReceiveTimestamp": str(int(sent_at.timestamp() * 1000)),
        },
        "messageAttributes": {},
        "md5OfBody": "",
        "eventSource": "aws:sqs",
        "eventSourceARN": "arn:aws:sqs:eu-west-2:123456789012:lfr-crops",
        "awsRegion": "eu-west-2",
    }


def sqs_event(records: Sequence[tuple[str, CropMessage | str]], sent_at: datetime = NOW) -> dict[str, object]:
    return {
        "Records": [
            sqs_record(sqs_id, m if isinstance(m, str) else m.model_dump_json(), sent_at) for sqs_id, m in records
        ]
    }


# -- real faces (never copied into the repo: read from ../shared/datasets) -------------------


def lfw_image(identity: str, n: int) -> Path:
    from lfr_eval.datasets import lfw_root

    return lfw_root() / "images" / identity / f"{identity}_{n:04d}.jpg"


@cache
def single_image_people(count: int) -> tuple[str, ...]:
    from lfr_eval.datasets import read_lfw_manifest

    return tuple(r.identity for r in read_lfw_manifest() if r.n_images == 1)[:count]


@cache
def _detector():
    from lfr_core.face.detect import FaceDetector

    return FaceDetector()


@cache
def real_embedder():
    from lfr_core.face.embed import FaceEmbedder

    return FaceEmbedder()


def aligned_crop(path: Path) -> np.ndarray:
    from lfr_core.face.align import align_face
    from lfr_core.face.detect import pick_central

    img = cv2.imread(str(path), cv2.IMREAD_COLOR)
    assert img is not None, path
    face = pick_central(_detector().detect(img), img.shape)
    assert face is not None, path
    return align_face(img, face.landmarks)


def crop_jpeg(path: Path) -> bytes:
    """The aligned 112x112 JPEG the edge would send for the central face of `path`."""
    from lfr_core.face.image import encode_jpeg

    return encode_jpeg(aligned_crop(path), quality=95)


def require_models() -> None:
    from lfr_core.errors import DatasetNotFoundError, ModelNotBuiltError
    from lfr_core.face.onnx_models import model_dir

    try:
        model_dir()
        from lfr_eval.datasets import lfw_root

        lfw_root()
    except (ModelNotBuiltError, DatasetNotFoundError) as exc:
        pytest.skip(f"real model/faces unavailable: {exc}")


def dumps(obj: object) -> str:
    return json.dumps(obj, default=str)


def page_link(deployment_id: str, alert_id: str) -> str:
    """What the officers' page link signer gives a notification (tests need no signing key)."""
    return f"https://officers.example.test/a/{deployment_id}/{alert_id}"


def audit_log(clock: Clock | None = None) -> AuditLog:
    """An audit chain on an in-memory store: every alert is audited, as in production."""
    from tests.fakes import InMemoryAuditStore

    return AuditLog(InMemoryAuditStore(), clock=clock) if clock is not None else AuditLog(InMemoryAuditStore())


def console_over(deployments: Any, alerts: Any, links: Any, clock: Clock) -> Console:
    """The van's console over the test's own stores and a queue of fixed depth."""
    from tests.fakes import InMemoryQueueStats

    return Console(deployments=deployments, alerts=alerts, links=links, alerts_bucket="alerts",
                   queue=InMemoryQueueStats(), clock=clock)


def create_alerts_table(client: Any, name: str) -> None:
    """The alerts table's key schema as the template declares it (infra/constructs/tables.py)."""
    client.create_table(
        TableName=name, BillingMode="PAY_PER_REQUEST",
        AttributeDefinitions=[{"AttributeName": "deployment_id", "AttributeType": "S"},
                              {"AttributeName": "alert_id", "AttributeType": "S"}],
        KeySchema=[{"AttributeName": "deployment_id", "KeyType": "HASH"},
                   {"AttributeName": "alert_id", "KeyType": "RANGE"}],
    )
