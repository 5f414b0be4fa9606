"""The layer + code asset fits Lambda's unzipped limit and carries Lambda-native binaries."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from lambda_target import LAMBDA_LAYER_LIMIT_BYTES
from layers import build as layer_build
from lfr_core.layout import MODEL_GALLERY_SCAN, MODEL_SFACE, MODEL_YUNET

pytestmark = pytest.mark.usefixtures("built_assets")


def test_unzipped_size_under_lambda_limit() -> None:
    size = layer_build.layer_unzipped_bytes()
    assert size < LAMBDA_LAYER_LIMIT_BYTES, "\n" + layer_build.report()


def test_native_modules_are_cp312_manylinux_x86_64() -> None:
    site = layer_build.CORE_PYTHON_DIR
    assert (site / "onnxruntime/capi/onnxruntime_pybind11_state.cpython-312-x86_64-linux-gnu.so").is_file()
    assert list((site / "numpy/_core").glob("_multiarray_umath.cpython-312-x86_64-linux-gnu.so"))
    assert list((site / "pydantic_core").glob("_pydantic_core.cpython-312-x86_64-linux-gnu.so"))
    # OpenCV is deliberately not in the layer (size); lfr_core's face path runs without it.
    assert not (site / "cv2").exists()
    assert list(site.glob("PIL/_imaging.cpython-312-x86_64-linux-gnu.so"))
    foreign = [p.name for p in site.rglob("*.cpython-3*.so") if "cpython-312-x86_64-linux-gnu" not in p.name]
    assert foreign == []
    # boto3 comes from the Lambda runtime; bundling it would pin a stale copy.
    assert not (site / "boto3").exists()
    assert (site / "lfr_core" / "contracts.py").is_file()
    assert (layer_build.CODE_ASSET_DIR / "functions" / "__init__.py").is_file()
    # Every model the functions load, the gallery scan of large watchlists included.
    models = layer_build.CORE_PYTHON_DIR.parent / "models"
    assert {MODEL_SFACE, MODEL_YUNET, MODEL_GALLERY_SCAN} <= {p.name for p in models.iterdir()}


def test_evaluation_code_is_not_shipped() -> None:
    """The layer and the code asset carry the runtime only: no lfr_eval, no CLI, no table building."""
    shipped = [layer_build.CORE_PYTHON_DIR, layer_build.CODE_ASSET_DIR]
    for top in shipped:
        assert not (top / "lfr_eval").exists() and not (top / "lfr_cli").exists()
    core = layer_build.CORE_PYTHON_DIR / "lfr_core"
    assert (core / "calibration.py").is_file() and not (core / "evaluation.py").exists()
    assert "def build_curve" not in (core / "calibration.py").read_text()


def _python312() -> str | None:
    for cand in (shutil.which("python3.12"), str(Path.home() / ".pyenv/versions/3.12.1/bin/python")):
        if cand is None or not (Path(cand).is_file() and os.access(cand, os.X_OK)):
            continue
        if subprocess.run([cand, "-c", "import sys"], capture_output=True).returncode == 0:
            return cand
    return None


def test_trimmed_layer_still_imports_under_python312() -> None:
    """Trimming must not break imports: load the layer in a bare 3.12 interpreter."""
    py = _python312()
    if py is None:
        pytest.skip("no python3.12 interpreter on this machine")
    code = (
        "import sys, numpy, PIL.Image, onnxruntime, pydantic, aws_lambda_powertools, lfr_core.contracts\n"
        "import lfr_core.face.detect, lfr_core.face.align, lfr_core.face.image, lfr_core.face.embed\n"
        "assert 'cv2' not in sys.modules\n"
        "print(PIL.__version__)"
    )
    env = {"PATH": "/usr/bin:/bin", "PYTHONPATH": str(layer_build.CORE_PYTHON_DIR)}
    proc = subprocess.run([py, "-S", "-B", "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
