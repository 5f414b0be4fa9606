"""The embedded stack, shared by the integration modules that run against it.

Module-scoped: moto's state is per process, so one EmbeddedStack runs at a time, each module
deploying its own (`cdk bootstrap` + `cdk deploy` of the app, synthesised once per session)
into its own run directory (logs, the CLI's output), so a module's scans read only what that
module produced.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from lfr_cli.admin import Admin
from lfr_cli.aws import AwsContext
from lfr_cli.demo import PhoneStandIn
from lfr_cli.local.stack import EmbeddedStack
from lfr_eval.datasets import LfwImage

ARTIFACTS = Path(__file__).resolve().parents[2] / "build" / "test-artifacts"  # screenshots for the report
CHROMIUM = Path("/usr/bin/chromium")  # Debian's, installed by `make browser`
CHROMIUM_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    """Headless Chromium through Playwright (the officers' pages are tested in a real browser)."""
    if not CHROMIUM.exists():
        pytest.skip("no /usr/bin/chromium (run `make browser`)")
    sync_api = pytest.importorskip("playwright.sync_api")
    with sync_api.sync_playwright() as pw:
        b = pw.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, headless=True)
        yield b
        b.close()


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedStack]:
    with EmbeddedStack(run_dir=tmp_path_factory.mktemp("local")) as s:
        yield s


@pytest.fixture(scope="module")
def ctx(stack: EmbeddedStack) -> AwsContext:
    return AwsContext(region=stack.region, endpoint_url=stack.endpoint)


@pytest.fixture(scope="module")
def phone(ctx: AwsContext) -> Iterator[PhoneStandIn]:
    """An SQS queue subscribed to the alert topic: an officer's phone stand-in."""
    p = PhoneStandIn(ctx, on_alert=lambda a: None)
    yield p
    p.stop()


@pytest.fixture(scope="module")
def admin(ctx: AwsContext) -> Admin:
    return Admin(ctx, actor="cli:test-admin")


@pytest.fixture(scope="module")
def watchlist_dir(people: dict[str, list[LfwImage]], tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The module's `people` watchlist as a folder of links (the dataset is never copied)."""
    wl = tmp_path_factory.mktemp("watchlist")
    for img in people["watchlist"]:
        (wl / img.file).symlink_to(img.path)
    return wl
