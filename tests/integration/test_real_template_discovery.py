"""The project's own CDK template on the local stack: every function and the state machine are found.

A module of its own: one EmbeddedStack per process at a time (moto's backends are shared), and the
fixture stack of test_local_runtime.py lives for that whole module.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from lfr_cli.local.stack import EmbeddedStack

pytestmark = pytest.mark.integration


def test_real_template_is_discovered(tmp_path: Path) -> None:
    """Deploy the project's own template; only discovery is checked (the handlers may still be in progress)."""
    os.environ.setdefault("JSII_SILENCE_WARNING_DEPRECATED_NODE_VERSION", "1")
    from infra.constants import DEFAULT_STACK_NAME, OUTPUT_SESSION_STATE_MACHINE_ARN

    with EmbeddedStack(DEFAULT_STACK_NAME, run_dir=tmp_path, start_pollers=False) as s:
        assert s.deployed is not None
        handlers = sorted(fn.handler for fn in s.runtime.functions.values())
        template = json.loads((s.deployed.assembly_dir / f"{DEFAULT_STACK_NAME}.template.json").read_text())
        declared = sorted(
            r["Properties"]["Handler"] for r in template["Resources"].values() if r["Type"] == "AWS::Lambda::Function"
        )
        # Every function the template declares is runnable locally, the core three among them.
        assert handlers == declared
        assert {"functions.handlers.build_watchlist.handler", "functions.handlers.match.handler",
                "functions.handlers.session.handler"} <= set(handlers)
        # The session machine is registered with moto's executing engine, which parsed its ASL.
        assert s.state_machine_arns == [s.outputs[OUTPUT_SESSION_STATE_MACHINE_ARN]]
        # `cdk deploy` read the stack's outputs back (the CLI prints them for the admin).
        cli_log = (tmp_path / "deploy" / "cdk.log").read_text()
        assert f"{DEFAULT_STACK_NAME}.{OUTPUT_SESSION_STATE_MACHINE_ARN} =" in cli_log
        assert s.pollers is not None
        (poller,) = s.pollers.pollers
        match = next(fn for fn in s.runtime.functions.values() if fn.handler.endswith(".match.handler"))
        assert poller.mapping.function_arn == match.arn
        assert poller.mapping.report_batch_item_failures
        print(f"real stack deploy timings: {s.deployed.timings if s.deployed else None}")
