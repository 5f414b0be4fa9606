"""Where the built ONNX models live: `MODEL_DIR` (Lambda: /opt/models), `LFR_MODEL_DIR`, else build/models."""

from __future__ import annotations

import os
from pathlib import Path

import onnxruntime as ort

from lfr_core.errors import ModelNotBuiltError

REPO_ROOT = Path(__file__).resolve().parents[2]
DEFAULT_MODEL_DIR = REPO_ROOT / "build" / "models"


def model_dir() -> Path:
    """The directory holding the built models; raises ModelNotBuiltError if it does not exist."""
    for var in ("MODEL_DIR", "LFR_MODEL_DIR"):
        value = os.environ.get(var)
        if value:
            path = Path(value)
            source = f"${var}"
            break
    else:
        path, source = DEFAULT_MODEL_DIR, "the default"
    if not path.is_dir():
        raise ModelNotBuiltError(
            f"model directory {path} ({source}) does not exist: run `make models` (python -m layers.face_models)"
        )
    return path


def model_path(name: str) -> Path:
    """Path of one built model file (a name from lfr_core.layout, e.g. MODEL_SFACE)."""
    path = model_dir() / name
    if not path.is_file():
        raise ModelNotBuiltError(f"model {path} is missing: run `make models` (python -m layers.face_models)")
    return path


def cpu_session(path: Path, intra_op_threads: int | None = None) -> ort.InferenceSession:
    """An onnxruntime CPU session as every model here is run: quiet logs, optional thread cap."""
    opts = ort.SessionOptions()
    opts.log_severity_level = 3  # warnings only clutter Lambda logs
    if intra_op_threads is not None:
        opts.intra_op_num_threads = intra_op_threads
    return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
