"""The CDK app: `build_app()` for tests and the local deploy, `python -m infra.app` for `cdk synth`."""

from __future__ import annotations

import os

# jsii warns on every start about the node version; the warning is noise in tests and CLI output.
os.environ.setdefault("JSII_SILENCE_WARNING_DEPRECATED_NODE_VERSION", "1")
os.environ.setdefault("JSII_SILENCE_WARNING_END_OF_LIFE_NODE_VERSION", "20")

from typing import Any

import aws_cdk as cdk
from aws_cdk import cx_api
from cdk_nag import AwsSolutionsChecks

from infra.constants import DEFAULT_STACK_NAME, SERVICE_NAME
from infra.stack import LfrStack
from layers.build import build_code_asset

STACK_TAGS = {"project": SERVICE_NAME, "data-classification": "biometric"}
# S3 server access log delivery through the log bucket's policy, not the legacy LogDeliveryWrite ACL
# (so that bucket can disable ACLs: ObjectOwnership BucketOwnerEnforced, infra/constructs/storage.py).
FEATURE_FLAGS = {"@aws-cdk/aws-s3:serverAccessLogsUseBucketPolicy": True}


def build_app(outdir: str | None = None, context: dict[str, Any] | None = None) -> cdk.App:
    """The app with the lfr stack and cdk-nag AwsSolutions checks (findings are error annotations)."""
    # Stage the function code from the working tree on every synth (a cheap copy, like CDK bundling),
    # so a deploy never ships a stale `functions/`; the heavy layer stays a `make layer` step.
    build_code_asset()
    app = cdk.App(outdir=outdir, context={**FEATURE_FLAGS, **(context or {})})
    LfrStack(
        app,
        DEFAULT_STACK_NAME,
        stack_name=DEFAULT_STACK_NAME,
        description="lfr: serverless live facial recognition (alerts prompt an officer)",
        # Assets go to the bootstrap bucket, which the local runtime emulates.
        synthesizer=cdk.DefaultStackSynthesizer(),
        tags=STACK_TAGS,
    )
    cdk.Aspects.of(app).add(AwsSolutionsChecks(verbose=True))
    return app


def synth(outdir: str | None = None) -> cx_api.CloudAssembly:
    return build_app(outdir=outdir).synth()


if __name__ == "__main__":
    synth()
