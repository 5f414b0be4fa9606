"""Where the built ONNX models live: `MODEL_DIR` (Lambda: /opt/models), `LFR_MODEL_DIR`, else build/models."""

from __future__ import annotations

import os
from pathlib import Path

import onnxruntime as ort

from lfr_core.errors import ModelNotBuiltError

REPO_ROOT = Path(__file__).resolve().parents[2]
# Lambda gives a function one vCPU's worth of time per 1,769 MB of memory (AWS Lambda docs,
# "Memory and computing power"), while the process sees every core of the host (2 at 2,048 MB).
LAMBDA_MB_PER_VCPU = 1769
# Where `make models` writes them in a checkout: lambda_target.MODELS_SRC_DIR, restated because
# lfr_core ships in the layer and must not import the build's package (tests/unit/test_build_imports.py).
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


def lambda_cpu_share() -> int | None:
    """Whole vCPUs this Lambda function's memory buys (at least 1), or None outside Lambda."""
    memory = os.environ.get("AWS_LAMBDA_FUNCTION_MEMORY_SIZE")
    if not memory:
        return None
    return max(1, min(os.cpu_count() or 1, int(memory) // LAMBDA_MB_PER_VCPU))


def cpu_session(path: Path, intra_op_threads: int | None = None) -> ort.InferenceSession:
    """An onnxruntime CPU session as every model here is run: quiet logs, threads for the CPU share.

    onnxruntime's default is one spinning thread per visible core. Under Lambda's CPU share that
    oversubscribes the function (at 2,048 MB two spinning threads on ~1.2 vCPUs made SFace 1.9x
    slower per crop, README "Performance and cost"), so inside Lambda the thread count is the
    share and idle threads sleep instead of spinning on billed time.
    """
    opts = ort.SessionOptions()
    opts.log_severity_level = 3  # warnings only clutter Lambda logs
    share = lambda_cpu_share()
    threads = intra_op_threads if intra_op_threads is not None else share
    if threads is not None:
        opts.intra_op_num_threads = threads
    if share is not None:
        opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
