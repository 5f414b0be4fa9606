"""`infra/` (the CDK app) and `layers/` (the layer build) share the Lambda target and asset paths through
`lambda_target` and never import each other: either could then not be loaded, tested or changed alone, and
an import cycle between them would surface only when both are imported in a particular order."""

from __future__ import annotations

from pathlib import Path

from tests.unit.test_lambda_imports import ROOT, _imports


def _imported_top_levels(package: str) -> dict[str, set[str]]:
    files = sorted(p for p in (ROOT / package).rglob("*.py") if "build" not in p.relative_to(ROOT / package).parts)
    return {str(f.relative_to(ROOT)): {m.split(".")[0] for m in _imports(f)} for f in files}


def _offenders(package: str, forbidden: str) -> dict[str, set[str]]:
    return {f: {forbidden} for f, tops in _imported_top_levels(package).items() if forbidden in tops}


def test_infra_does_not_import_layers() -> None:
    assert len(_imported_top_levels("infra")) > 10
    assert _offenders("infra", "layers") == {}


def test_layers_does_not_import_infra() -> None:
    assert {"layers/build.py", "layers/face_models.py"} <= set(_imported_top_levels("layers"))
    assert _offenders("layers", "infra") == {}


def test_lambda_target_imports_neither() -> None:
    tops = {m.split(".")[0] for m in _imports(ROOT / "lambda_target" / "__init__.py")}
    assert not tops & {"infra", "layers", "functions", "lfr_core", "lfr_cli"}


def test_the_scan_sees_an_import_of_either(tmp_path: Path) -> None:
    """The scan itself: a module importing the other package is found, in both spellings."""
    probe = tmp_path / "probe.py"
    probe.write_text("import layers.build\nfrom infra.constants import SERVICE_NAME\n", encoding="utf-8")
    assert {"layers", "infra"} <= {m.split(".")[0] for m in _imports(probe)}


def test_the_layers_default_model_folder_is_the_builds() -> None:
    """lfr_core restates where `make models` writes (it ships in the layer and cannot import the
    build's package); the two must name the same folder."""
    from lambda_target import MODELS_SRC_DIR
    from lfr_core.face.onnx_models import DEFAULT_MODEL_DIR

    assert DEFAULT_MODEL_DIR == MODELS_SRC_DIR
