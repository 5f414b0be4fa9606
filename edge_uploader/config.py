"""The van's configuration: a TOML file, overridable by command-line flags."""

from __future__ import annotations

import tempfile
import tomllib
from pathlib import Path
from typing import Any

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field

from edge_uploader.delivery import DEFAULT_PROBE_INTERVAL_S
from edge_uploader.sampler import DEFAULT_BEST_K, DEFAULT_MAX_WAIT_S, DEFAULT_MIN_HITS, DEFAULT_MIN_INTERVAL_S
from edge_uploader.sources import DEFAULT_QUEUE_SIZE
from edge_uploader.spool import DEFAULT_TTL_S
from edge_uploader.status import STATUS_INTERVAL_S
from edge_uploader.tracker import DEFAULT_MAX_GAP_S
from lfr_core.contracts import MAX_STATUS_INTERVAL_S, MAX_TRACK_CROPS, MIN_STATUS_INTERVAL_S
from lfr_core.matching import PRODUCTION_MIN_QUALITY


def default_spool_dir() -> Path:
    return Path(tempfile.gettempdir()) / "lfr-edge-spool"


class EdgeConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    camera_id: str = "camera-1"
    queue_url: str | None = None
    region: str = "eu-west-2"
    profile: str | None = None
    endpoint_url: str | None = Field(default=None, description="only for the local embedded stack")
    min_quality: float = Field(default=PRODUCTION_MIN_QUALITY, ge=0.0, le=1.0)
    # Sampling: up to K crops per track, at most one per `min_interval_s`, sent together in one
    # message once K are taken, `max_wait_s` after the first, or when the track ends.
    best_k: int = Field(default=DEFAULT_BEST_K, ge=1, le=MAX_TRACK_CROPS)
    min_interval_s: float = Field(default=DEFAULT_MIN_INTERVAL_S, ge=0.0)
    max_wait_s: float = Field(default=DEFAULT_MAX_WAIT_S, ge=0.0)
    min_track_hits: int = Field(default=DEFAULT_MIN_HITS, ge=1)
    max_track_gap_s: float = Field(default=DEFAULT_MAX_GAP_S, gt=0.0)
    # Capture: frames buffered between the reader and the processing loop (older ones are dropped).
    frame_queue: int = Field(default=DEFAULT_QUEUE_SIZE, ge=1, le=8)
    detector_threads: int | None = Field(default=None, ge=1, description="onnxruntime intra-op threads")
    # Delivery.
    spool_dir: Path = Field(default_factory=default_spool_dir)
    spool_ttl_s: float = Field(default=DEFAULT_TTL_S, gt=0.0)
    probe_interval_s: float = Field(default=DEFAULT_PROBE_INTERVAL_S, gt=0.0)
    drain_timeout_s: float = Field(default=10.0, ge=0.0)
    expires_at: AwareDatetime | None = Field(default=None, description="the deployment's end: nothing sent after")
    # The camera's status to the van's console (edge_uploader/status.py): seconds between two.
    status_interval_s: float = Field(default=STATUS_INTERVAL_S, ge=MIN_STATUS_INTERVAL_S, le=MAX_STATUS_INTERVAL_S)

    @classmethod
    def load(cls, path: Path | None, overrides: dict[str, Any]) -> EdgeConfig:
        data: dict[str, Any] = {}
        if path is not None:
            try:
                data = tomllib.loads(path.read_text())
            except FileNotFoundError as exc:
                raise ValueError(f"config file not found: {path}") from exc
            except tomllib.TOMLDecodeError as exc:
                raise ValueError(f"config file {path} is not valid TOML: {exc}") from exc
        data.update({k: v for k, v in overrides.items() if v is not None})
        return cls.model_validate(data)
