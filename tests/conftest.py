"""Session-wide fixtures shared by unit and integration tests."""

from __future__ import annotations

import os
from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def built_models() -> Path:
    """Build the ONNX models once (idempotent: a no-op when build/models is current) and return their dir.

    Honours MODEL_DIR / LFR_MODEL_DIR like lfr_core.face.onnx_models.model_dir(), so a test run can point
    at a prebuilt directory.
    """
    from layers.face_models import DEFAULT_OUT, build

    out = Path(os.environ.get("MODEL_DIR") or os.environ.get("LFR_MODEL_DIR") or DEFAULT_OUT)
    build(out)
    return out


@pytest.fixture(scope="session")
def lfw_dir() -> Path:
    """lfw-dev under the shared datasets; skips (does not fail) on machines without it."""
    from lfr_core.errors import DatasetNotFoundError
    from lfr_eval.datasets import lfw_root

    try:
        return lfw_root()
    except DatasetNotFoundError as exc:
        pytest.skip(str(exc))
