"""The CDK app: `build_app()` for tests and the local deploy, `python -m infra.app` for `cdk synth`."""

from __future__ import annotations

import os

# jsii warns on every start about the node version; the warning is noise in tests and CLI output.
os.environ.setdefault("JSII_SILENCE_WARNING_DEPRECATED_NODE_VERSION", "1")
os.environ.setdefault("JSII_SILENCE_WARNING_END_OF_LIFE_NODE_VERSION", "20")

import re
from dataclasses import dataclass, field
from typing import Any

import aws_cdk as cdk
from aws_cdk import cx_api
from cdk_nag import AwsSolutionsChecks
from constructs import Node

from infra.constants import ALERT_RETENTION_CHOICES_DAYS, ALERT_RETENTION_DAYS, DEFAULT_STACK_NAME, SERVICE_NAME
from infra.stack import ForceConfig, LfrStack
from lambda_target import build_code_asset

STACK_TAGS = {"project": SERVICE_NAME, "data-classification": "biometric"}
# S3 server access log delivery through the log bucket's policy, not the legacy LogDeliveryWrite ACL
# (so that bucket can disable ACLs: ObjectOwnership BucketOwnerEnforced, infra/constructs/storage.py).
FEATURE_FLAGS = {"@aws-cdk/aws-s3:serverAccessLogsUseBucketPolicy": True}

# Context keys (cdk.json "context" or `cdk -c key=value`): what differs from one force to another.
CTX_REGION = "lfr:region"
CTX_ALERT_RETENTION_DAYS = "lfr:alertRetentionDays"
CTX_WAF_ACL_ARN = "lfr:wafWebAclArn"
CTX_ALARM_EMAIL = "lfr:alarmEmail"
CONTEXT_KEYS = (CTX_REGION, CTX_ALERT_RETENTION_DAYS, CTX_WAF_ACL_ARN, CTX_ALARM_EMAIL)

_REGION = re.compile(r"^[a-z]{2}(-gov)?-[a-z]+-\d$")
_WAF_ACL_ARN = re.compile(r"^arn:aws[a-z-]*:wafv2:([a-z0-9-]+):\d{12}:regional/webacl/[\w-]+/[\w-]+$")
_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")


class ConfigError(ValueError):
    """A context value is missing its form or bound; the message names the key and what is allowed."""


@dataclass(frozen=True)
class DeployConfig:
    """The per-force settings, read from the CDK context and validated before anything is synthesised."""

    region: str | None = None  # None: the admin's AWS profile/environment decides
    force: ForceConfig = field(default_factory=ForceConfig)

    @classmethod
    def from_context(cls, node: Node) -> DeployConfig:
        def text(key: str) -> str | None:
            value = node.try_get_context(key)
            if value is None or value == "":
                return None
            if not isinstance(value, str | int):
                raise ConfigError(f"context {key}: expected a string, got {value!r}")
            return str(value).strip()

        region = text(CTX_REGION)
        if region is not None and not _REGION.match(region):
            raise ConfigError(f"context {CTX_REGION}: {region!r} is not an AWS region name (e.g. eu-west-2)")
        days_text = text(CTX_ALERT_RETENTION_DAYS)
        days = ALERT_RETENTION_DAYS
        if days_text is not None:
            if not days_text.isdigit() or int(days_text) not in ALERT_RETENTION_CHOICES_DAYS:
                raise ConfigError(
                    f"context {CTX_ALERT_RETENTION_DAYS}: {days_text!r} must be one of {ALERT_RETENTION_CHOICES_DAYS}"
                    f" (days; never more than {ALERT_RETENTION_DAYS})"
                )
            days = int(days_text)
        waf = text(CTX_WAF_ACL_ARN)
        if waf is not None:
            m = _WAF_ACL_ARN.match(waf)
            if m is None:
                raise ConfigError(
                    f"context {CTX_WAF_ACL_ARN}: {waf!r} is not a regional WAFv2 web ACL ARN"
                    " (arn:aws:wafv2:<region>:<account>:regional/webacl/<name>/<id>)"
                )
            if region is not None and m.group(1) != region:
                raise ConfigError(f"context {CTX_WAF_ACL_ARN}: the web ACL is in {m.group(1)}, the stack in {region}")
        email = text(CTX_ALARM_EMAIL)
        if email is not None and not _EMAIL.match(email):
            raise ConfigError(f"context {CTX_ALARM_EMAIL}: {email!r} is not an e-mail address")
        return cls(region=region, force=ForceConfig(alert_retention_days=days, waf_web_acl_arn=waf, alarm_email=email))


def build_app(outdir: str | None = None, context: dict[str, Any] | None = None) -> cdk.App:
    """The app with the lfr stack and cdk-nag AwsSolutions checks (findings are error annotations)."""
    # Stage the function code from the working tree on every synth (a cheap copy, like CDK bundling),
    # so a deploy never ships a stale `functions/`; the heavy layer stays a `make layer` step.
    app = cdk.App(outdir=outdir, context={**FEATURE_FLAGS, **(context or {})})
    config = DeployConfig.from_context(app.node)  # a bad value fails here, before any work
    build_code_asset()
    # With a region, the account is the CLI's (`cdk deploy` resolves it from the admin's credentials).
    env = None
    if config.region:
        env = cdk.Environment(account=os.environ.get("CDK_DEFAULT_ACCOUNT"), region=config.region)
    LfrStack(
        app,
        DEFAULT_STACK_NAME,
        stack_name=DEFAULT_STACK_NAME,
        description="lfr: serverless live facial recognition (alerts prompt an officer)",
        # Assets go to the bootstrap bucket `cdk bootstrap` creates (locally too: `lfr local up`).
        synthesizer=cdk.DefaultStackSynthesizer(),
        tags=STACK_TAGS,
        env=env,
        force=config.force,
    )
    cdk.Aspects.of(app).add(AwsSolutionsChecks(verbose=True))
    return app


def synth(outdir: str | None = None) -> cx_api.CloudAssembly:
    return build_app(outdir=outdir).synth()


if __name__ == "__main__":
    try:
        synth()
    except ConfigError as exc:  # a clear line for the admin instead of a jsii traceback
        raise SystemExit(f"lfr: {exc}") from None
