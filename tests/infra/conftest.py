"""Template tests need the asset directories; build them once per session if missing."""

from __future__ import annotations

import importlib.util
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

os.environ.setdefault("JSII_SILENCE_WARNING_DEPRECATED_NODE_VERSION", "1")
os.environ.setdefault("JSII_SILENCE_WARNING_END_OF_LIFE_NODE_VERSION", "20")

from layers import build as layer_build
from lfr_core.layout import MODEL_GALLERY_SCAN, MODEL_SFACE, MODEL_YUNET


def _ensure_models(tmp: Path) -> Path:
    """The real models when they can be built; otherwise placeholders (template tests only)."""
    if layer_build.MODELS_SRC_DIR.is_dir():
        return layer_build.MODELS_SRC_DIR
    if importlib.util.find_spec("layers.face_models") is not None:
        from layers import face_models

        main = getattr(face_models, "main", None)
        if callable(main):
            main([])
            if layer_build.MODELS_SRC_DIR.is_dir():
                return layer_build.MODELS_SRC_DIR
    for name in (MODEL_SFACE, MODEL_YUNET, MODEL_GALLERY_SCAN):
        (tmp / name).write_bytes(b"placeholder")
    return tmp


@pytest.fixture(scope="session")
def built_assets(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    if not layer_build.is_built():
        models = _ensure_models(tmp_path_factory.mktemp("models"))
        layer_build.build(models_src=models)
    yield
