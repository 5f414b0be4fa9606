"""Lambda code imports nothing that is not shipped with it: not the CLI (`OfficerAdmin`, reports), not
the in-memory fakes (tests/fakes.py), not the CDK app. A violation would pass every unit test (all of
those are importable here) and fail only in Lambda, with ImportError on a cold start."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
NOT_IN_LAMBDA = ("lfr_cli", "lfr_eval", "tests", "infra", "layers", "lambda_target", "edge_uploader")


def _imports(path: Path) -> set[str]:
    out: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            out.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            out.add(node.module)
    return out


def test_functions_import_nothing_outside_the_lambda_code() -> None:
    files = sorted((ROOT / "functions").rglob("*.py"))
    assert len(files) > 20
    bad = {
        str(f.relative_to(ROOT)): sorted(m for m in _imports(f) if m.split(".")[0] in NOT_IN_LAMBDA)
        for f in files
    }
    assert {f: m for f, m in bad.items() if m} == {}


def test_the_fakes_and_the_cli_only_officer_code_are_not_under_functions() -> None:
    assert not (ROOT / "functions" / "dal" / "memory.py").exists()
    defined = {
        n.name
        for f in (ROOT / "functions").rglob("*.py")
        for n in ast.walk(ast.parse(f.read_text(encoding="utf-8")))
        if isinstance(n, ast.ClassDef | ast.FunctionDef)
    }
    cli_or_test_only = {"InMemoryObjectStore", "InMemoryOfficerRepository", "OfficerAdmin", "outcome_counts"}
    assert not cli_or_test_only & defined


def test_the_layer_code_imports_no_evaluation_code() -> None:
    """lfr_core is copied whole into the Lambda layer: evaluation (lfr_eval) and the CLI stay out of it."""
    files = sorted((ROOT / "lfr_core").rglob("*.py"))
    assert len(files) > 10
    bad = {
        str(f.relative_to(ROOT)): sorted(m for m in _imports(f) if m.split(".")[0] in NOT_IN_LAMBDA)
        for f in files
    }
    assert {f: m for f, m in bad.items() if m} == {}
    # What moved out stays out: the metrics, the table building, the datasets.
    assert not (ROOT / "lfr_core" / "evaluation.py").exists() and not (ROOT / "lfr_core" / "datasets.py").exists()
    defined = {n.name for f in files for n in ast.walk(ast.parse(f.read_text(encoding="utf-8")))
               if isinstance(n, ast.ClassDef | ast.FunctionDef)}
    assert not {"build_curve", "pooled_searches", "Gallery", "OpenSetResult", "clopper_pearson"} & defined
