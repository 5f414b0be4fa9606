"""What the Lambda functions are built for, where the build puts them, and the code asset's staging.

The one definition shared by `layers/` (which builds the layer and the code asset) and `infra/`
(which deploys them and restages the code on every synth), so that neither imports the other. It is
not in `lfr_core`: that package ships inside the layer, where a build target and repository paths
mean nothing.
"""

from __future__ import annotations

import shutil
from pathlib import Path

# Lambda runtime: the layer's native wheels are built for exactly this.
LAMBDA_PYTHON_VERSION = "3.12"
LAMBDA_ARCHITECTURE = "x86_64"
LAMBDA_RUNTIME_NAME = f"python{LAMBDA_PYTHON_VERSION}"  # CloudFormation's Runtime value
ABI_TAG = "cp" + LAMBDA_PYTHON_VERSION.replace(".", "")  # cp312: pip's --abi, the .so suffix
# Lambda's python3.12 runtime is Amazon Linux 2023 (glibc 2.34): manylinux2014 wheels and the
# manylinux_2_28 wheels recent onnxruntime releases ship only as both load there (pip --platform).
PIP_PLATFORMS: tuple[str, ...] = (f"manylinux2014_{LAMBDA_ARCHITECTURE}", f"manylinux_2_28_{LAMBDA_ARCHITECTURE}")
LAMBDA_LAYER_LIMIT_BYTES = 250 * 1024 * 1024  # unzipped function + layers

ROOT = Path(__file__).resolve().parents[1]
MODELS_SRC_DIR = ROOT / "build" / "models"  # the ONNX models (python -m layers.face_models)
LAYER_BUILD_DIR = ROOT / "layers" / "build"
CORE_LAYER_DIR = LAYER_BUILD_DIR / "core"  # the layer's asset: python/ and models/
CORE_PYTHON_DIR = CORE_LAYER_DIR / "python"
CORE_MODELS_DIR = CORE_LAYER_DIR / "models"
LAYER_MODEL_DIR = "/opt/models"  # CORE_MODELS_DIR as Lambda mounts the layer
CODE_ASSET_DIR = ROOT / "build" / "lambda"  # the functions' code asset: the `functions` package


def copy_package(src: Path, dst: Path) -> None:
    """A Python package's sources, without caches or tests (the layer's `lfr_core`, the code asset)."""
    shutil.copytree(
        src,
        dst,
        ignore=shutil.ignore_patterns("__pycache__", "*.pyc", "tests", ".mypy_cache", ".pytest_cache"),
    )


def build_code_asset() -> Path:
    """Stage the `functions` package as the code asset (a cheap copy, redone on every synth)."""
    if CODE_ASSET_DIR.is_dir() and not CODE_ASSET_DIR.is_symlink():
        shutil.rmtree(CODE_ASSET_DIR)
    CODE_ASSET_DIR.mkdir(parents=True)
    copy_package(ROOT / "functions", CODE_ASSET_DIR / "functions")
    return CODE_ASSET_DIR
