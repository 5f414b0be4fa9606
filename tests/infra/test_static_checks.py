"""cfn-lint and checkov on the synthesised template: zero findings, every skip inline with a reason.

cfn-lint comes with the dev dependencies (moto[cloudformation]); checkov lives in its own venv
(`make static-tools`, pinned in the Makefile) because its dependencies conflict with ours. The
findings that were real are fixed in the constructs (reserved concurrency, the SQS trigger's
concurrency cap, tables/secret/log groups on the customer-managed key) and asserted here as
passing, so nobody can turn one of them into a skip.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from aws_cdk import App

from infra.constants import DEFAULT_STACK_NAME
from infra.stack import LfrStack
from tests.infra.test_template import app_and_stack  # noqa: F401 - pytest fixture

pytestmark = pytest.mark.usefixtures("built_assets")

ROOT = Path(__file__).resolve().parents[2]
CHECKOV = Path(os.environ.get("LFR_CHECKOV", ROOT / "build" / "tools" / "checkov" / "bin" / "checkov"))
CFN_LINT = Path(sys.executable).with_name("cfn-lint")
# Findings that must be fixed, never skipped (each was a failure before; see infra/constants.py).
MUST_PASS = {
    "CKV_AWS_115": "AWS::Lambda::Function",  # reserved concurrency
    "CKV_AWS_119": "AWS::DynamoDB::Table",  # customer-managed key
    "CKV_AWS_149": "AWS::SecretsManager::Secret",  # customer-managed key
    "CKV_AWS_158": "AWS::Logs::LogGroup",  # customer-managed key
    "CKV_AWS_73": "AWS::ApiGateway::Stage",  # X-Ray tracing
}


@pytest.fixture(scope="module")
def template_file(app_and_stack: tuple[App, LfrStack]) -> Path:  # noqa: F811
    path = Path(app_and_stack[0].outdir) / f"{DEFAULT_STACK_NAME}.template.json"
    assert path.is_file()
    return path


def test_cfn_lint_finds_nothing(template_file: Path) -> None:
    assert CFN_LINT.is_file(), f"{CFN_LINT} missing: cfn-lint comes with moto[cloudformation] (make venv)"
    run = subprocess.run([str(CFN_LINT), "--format", "parseable", str(template_file)],
                         capture_output=True, text=True, timeout=300)
    assert run.returncode == 0 and run.stdout.strip() == "", run.stdout + run.stderr


def test_cfn_lint_skips_carry_reasons(template_file: Path) -> None:
    resources: dict[str, Any] = json.loads(template_file.read_text())["Resources"]
    for lid, res in resources.items():
        ignored = res.get("Metadata", {}).get("cfn-lint", {}).get("config", {}).get("ignore_checks", [])
        reasons = res.get("Metadata", {}).get("lfr", {}).get("cfn-lint-ignored", {})
        for check in ignored:
            assert len(reasons.get(check, "")) > 20, f"{lid}: cfn-lint {check} ignored without a reason"


def _checkov(template_file: Path) -> dict[str, Any]:
    if not CHECKOV.is_file():
        pytest.skip(f"checkov not installed at {CHECKOV}: run `make static-tools` (make test does)")
    # --skip-download: no network look-ups of guidelines; the checks ship with the pinned package.
    run = subprocess.run(
        [str(CHECKOV), "-f", str(template_file), "--framework", "cloudformation", "--skip-download",
         "--output", "json"],
        capture_output=True, text=True, timeout=600, env={**os.environ, "BC_SKIP_MAPPING": "TRUE"},
    )
    assert run.returncode in (0, 1), run.stderr[-2000:]
    report: dict[str, Any] = json.loads(run.stdout)
    return report


def test_checkov_finds_nothing_unexplained(template_file: Path) -> None:
    report = _checkov(template_file)
    pinned = re.search(r"^CHECKOV_VERSION\s*:=\s*(\S+)", (ROOT / "Makefile").read_text(), re.M)
    assert pinned and report["summary"]["checkov_version"] == pinned.group(1), "checkov venv is not the pinned one"
    failed = [(r["check_id"], r["resource"]) for r in report["results"]["failed_checks"]]
    assert failed == [], failed
    assert report["summary"]["parsing_errors"] == 0
    skipped = report["results"]["skipped_checks"]
    for r in skipped:
        reason = (r.get("check_result") or {}).get("suppress_comment") or ""
        assert len(reason) > 20, f"{r['check_id']} on {r['resource']} skipped without a reason"
        assert r["check_id"] not in MUST_PASS, f"{r['check_id']} must be fixed, not skipped ({r['resource']})"
    resources: dict[str, Any] = json.loads(template_file.read_text())["Resources"]
    for check, cfn_type in MUST_PASS.items():
        of_type = [lid for lid, res in resources.items() if res["Type"] == cfn_type]
        assert of_type, cfn_type
        got = {r["resource"].split(".", 1)[1] for r in report["results"]["passed_checks"]
               if r["check_id"] == check}
        assert set(of_type) <= got, f"{check} not passing on {set(of_type) - got}"
