"""The van's configuration: a TOML file, overridable by command-line flags."""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from edge_uploader.pipeline import DEFAULT_MIN_QUALITY


class EdgeConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    camera_id: str = "camera-1"
    queue_url: str | None = None
    region: str = "eu-west-2"
    profile: str | None = None
    endpoint_url: str | None = Field(default=None, description="only for the local embedded stack")
    min_quality: float = Field(default=DEFAULT_MIN_QUALITY, ge=0.0, le=1.0)

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
