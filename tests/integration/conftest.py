"""The embedded stack, shared by the integration modules that run against it.

Module-scoped: moto's state is per process, so one LocalStack runs at a time, each module
deploying its own (`cdk bootstrap` + `cdk deploy` of the app, synthesised once per session)
into its own run directory (logs, the CLI's output), so a module's scans read only what that
module produced.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from lfr_cli.aws import AwsContext
from lfr_cli.demo import PhoneStandIn
from lfr_cli.local.stack import LocalStack


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalStack]:
    with LocalStack(run_dir=tmp_path_factory.mktemp("local")) as s:
        yield s


@pytest.fixture(scope="module")
def ctx(stack: LocalStack) -> AwsContext:
    return AwsContext(region=stack.region, endpoint_url=stack.endpoint)


@pytest.fixture(scope="module")
def phone(ctx: AwsContext) -> Iterator[PhoneStandIn]:
    """An SQS queue subscribed to the alert topic: an officer's phone stand-in."""
    p = PhoneStandIn(ctx, on_alert=lambda a: None)
    yield p
    p.stop()
