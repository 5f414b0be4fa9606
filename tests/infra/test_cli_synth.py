"""`cdk synth` with the pinned CLI (what `make synth`/`make deploy` run) and the per-force context values.

The CLI runs cdk.json's app in a subprocess; its template must be the one the other template tests
assert on (built in-process by `build_app`), and each context value must land where it should.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path
from typing import Any

import aws_cdk as cdk
import pytest
from aws_cdk.assertions import Annotations, Match, Template

from infra.app import (
    CTX_ALARM_EMAIL,
    CTX_ALERT_RETENTION_DAYS,
    CTX_REGION,
    CTX_WAF_ACL_ARN,
    ConfigError,
    DeployConfig,
    build_app,
)
from infra.constants import ALERT_RETENTION_DAYS, DEFAULT_STACK_NAME
from lfr_cli.local.deploy import CDK_CLI, REPO_ROOT

WAF_ARN = "arn:aws:wafv2:eu-west-2:111122223333:regional/webacl/force-acl/0123abcd-0000-1111-2222-333344445555"
FORCE_CONTEXT = {
    CTX_REGION: "eu-west-2",
    CTX_ALERT_RETENTION_DAYS: "14",
    CTX_WAF_ACL_ARN: WAF_ARN,
    CTX_ALARM_EMAIL: "lfr-alarms@force.example",
}


def _config(context: dict[str, Any]) -> DeployConfig:
    return DeployConfig.from_context(cdk.App(context=context).node)


def test_context_defaults_and_values() -> None:
    default = _config({})
    assert default.region is None and default.force.alert_retention_days == ALERT_RETENTION_DAYS
    assert default.force.waf_web_acl_arn is None and default.force.alarm_email is None
    cfg = _config(FORCE_CONTEXT)
    assert cfg.region == "eu-west-2"
    assert (cfg.force.alert_retention_days, cfg.force.waf_web_acl_arn, cfg.force.alarm_email) == (
        14, WAF_ARN, "lfr-alarms@force.example")


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        (CTX_ALERT_RETENTION_DAYS, "60", "must be one of"),  # longer than the bound
        (CTX_ALERT_RETENTION_DAYS, "5", "must be one of"),  # no lifecycle rule for it
        (CTX_REGION, "London", "not an AWS region"),
        (CTX_WAF_ACL_ARN, "arn:aws:wafv2:eu-west-2:111122223333:global/webacl/x/1", "regional WAFv2 web ACL"),
        (CTX_WAF_ACL_ARN, WAF_ARN.replace("eu-west-2", "eu-west-1"), "the web ACL is in eu-west-1"),
        (CTX_ALARM_EMAIL, "not-an-address", "not an e-mail address"),
    ],
)
def test_bad_context_value_is_refused_naming_the_key(key: str, value: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message) as err:
        _config({**FORCE_CONTEXT, key: value})
    assert key in str(err.value)


def _cli_synth(outdir: Path, *context: str) -> subprocess.CompletedProcess[str]:
    if not CDK_CLI.exists():
        pytest.fail(f"{CDK_CLI} missing: run `make node_modules` (the Makefile's test target does)")
    args = [str(CDK_CLI), "synth", "--quiet", "--no-notices", "-o", str(outdir)]
    for kv in context:
        args += ["-c", kv]
    env = {**os.environ, "CDK_DISABLE_VERSION_CHECK": "1", "CDK_DISABLE_CLI_TELEMETRY": "true"}
    return subprocess.run(args, cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=600)


def _without_metadata(template: dict[str, Any]) -> dict[str, Any]:
    resources = {lid: {k: v for k, v in r.items() if k != "Metadata"} for lid, r in template["Resources"].items()}
    return {**template, "Resources": resources}


def test_cli_synth_is_the_template_the_tests_assert_on(built_assets: None, tmp_path: Path) -> None:
    proc = _cli_synth(tmp_path / "cli")
    assert proc.returncode == 0, proc.stderr[-3000:]
    from_cli = json.loads((tmp_path / "cli" / f"{DEFAULT_STACK_NAME}.template.json").read_text())
    # The context the CLI gives every app (metadata switches; cdk.json turns version reporting off).
    # The metadata also feeds the hash in the REST API deployment's logical id, nothing else.
    cli_context = {"aws:cdk:enable-path-metadata": True, "aws:cdk:enable-asset-metadata": True,
                   "aws:cdk:version-reporting": False}
    assembly = build_app(outdir=str(tmp_path / "py"), context=cli_context).synth().directory
    in_process = json.loads((Path(assembly) / f"{DEFAULT_STACK_NAME}.template.json").read_text())
    # The CLI adds only resource Metadata (aws:cdk:path, aws:asset:*) and no AWS::CDK::Metadata.
    assert "CDKMetadata" not in from_cli["Resources"] and "Conditions" not in from_cli
    assert _without_metadata(from_cli) == _without_metadata(in_process)


def test_cli_synth_applies_the_force_context(built_assets: None, tmp_path: Path) -> None:
    proc = _cli_synth(tmp_path / "cli", *(f"{k}={v}" for k, v in FORCE_CONTEXT.items()))
    assert proc.returncode == 0, proc.stderr[-3000:]
    manifest = json.loads((tmp_path / "cli" / "manifest.json").read_text())
    assert manifest["artifacts"][DEFAULT_STACK_NAME]["environment"].endswith("/eu-west-2")
    template = Template.from_json(json.loads((tmp_path / "cli" / f"{DEFAULT_STACK_NAME}.template.json").read_text()))
    template.has_resource_properties("AWS::WAFv2::WebACLAssociation", {"WebACLArn": WAF_ARN})
    template.has_resource_properties("AWS::SNS::Subscription", {"Protocol": "email",
                                                                "Endpoint": "lfr-alarms@force.example"})
    alarms = template.find_resources("AWS::CloudWatch::Alarm").values()
    assert alarms and all(a["Properties"]["AlarmActions"] for a in alarms)  # every alarm reaches the ops topic
    template.has_resource_properties("AWS::S3::Bucket", {"LifecycleConfiguration": {"Rules": Match.array_with(
        [Match.object_like({"Id": "ExpireAlertCrops", "ExpirationInDays": 14})])}})


def test_cli_synth_refuses_a_bad_value_with_a_clear_line(tmp_path: Path) -> None:
    proc = _cli_synth(tmp_path / "cli", f"{CTX_ALERT_RETENTION_DAYS}=90")
    assert proc.returncode != 0
    assert f"lfr: context {CTX_ALERT_RETENTION_DAYS}: '90' must be one of" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_force_context_passes_cdk_nag(built_assets: None, tmp_path: Path) -> None:
    app = build_app(outdir=str(tmp_path), context=FORCE_CONTEXT)
    stack = app.node.find_child(DEFAULT_STACK_NAME)
    app.synth()
    errors = Annotations.from_stack(stack).find_error("*", Match.string_like_regexp("AwsSolutions-.*"))  # type: ignore[arg-type]
    assert errors == [], [e.entry.data for e in errors]
