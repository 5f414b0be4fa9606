"""The session machine's Retry/Catch, from the synthesised template, run with injected task errors.

The definition is the real one (CDK -> ASL), run on moto's own Step Functions engine (the one the
local stack runs it on) in-process; its Lambda tasks reach the test's script through the local
stack's one Lambda route (`moto_ext.route_lambda_invocations`): which action fails, with which
error, how often. Wait/Retry delays are recorded instead of slept (virtual time, `VirtualClock`),
so hours of back-off run in seconds; retries and delays are read back from the execution history.
"""

from __future__ import annotations

import datetime as dt
import json
import time
import types
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import boto3
import pytest
from aws_cdk import App
from aws_cdk.assertions import Template
from moto import mock_aws
from moto.stepfunctions.parser.asl.component.common.retry import retrier_decl
from moto.stepfunctions.parser.asl.component.state import state as asl_state
from moto.stepfunctions.parser.asl.component.state.wait.wait_function.wait_function import WaitFunction

from aws_emulation.runtime import InvokeResult
from functions.exceptions import (
    LAMBDA_TRANSIENT_ERRORS,
    TERMINAL_ERRORS,
    TRANSIENT_ERRORS,
    LfrFunctionError,
    terminal_error_names,
    transient_error_names,
)
from functions.logic.session import STEP_ERRORS_METRIC
from functions.observability import METRIC_PURGE_INCOMPLETE
from infra.app import build_app
from infra.constants import DEFAULT_STACK_NAME, METRICS_NAMESPACE, SERVICE_NAME
from infra.constructs.session import LIVE_FAULT_WAIT_S
from infra.stack import LfrStack
from lfr_cli.local import moto_ext

pytestmark = pytest.mark.usefixtures("built_assets")

REGION = "eu-west-2"
ACCOUNT = "123456789012"
UTC = dt.UTC


@pytest.fixture(scope="module")
def template(built_assets: None, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    app: App = build_app(outdir=str(tmp_path_factory.mktemp("cdk.out")))
    stack = app.node.find_child(DEFAULT_STACK_NAME)
    assert isinstance(stack, LfrStack)
    return dict(Template.from_stack(stack).to_json())


def _resolve(node: Any, template: dict[str, Any]) -> str:
    """The definition's Fn::Join of strings, Refs and Fn::GetAtt .Arn (the Lambda functions' ARNs)."""
    pseudo = {"AWS::Partition": "aws", "AWS::Region": REGION, "AWS::AccountId": ACCOUNT,
              "AWS::URLSuffix": "amazonaws.com"}
    if isinstance(node, str):
        return node
    ((fn, arg),) = node.items()
    if fn == "Fn::Join":
        return str(arg[0]).join(_resolve(p, template) for p in arg[1])
    if fn == "Ref":
        return pseudo.get(arg, arg)
    if fn == "Fn::GetAtt":
        target, attr = arg if isinstance(arg, list) else arg.split(".", 1)
        assert attr == "Arn" and target in template["Resources"], node
        return f"arn:aws:lambda:{REGION}:{ACCOUNT}:function:{target}"
    raise AssertionError(f"cannot resolve {node!r} in the definition")


@pytest.fixture(scope="module")
def definition(template: dict[str, Any]) -> dict[str, Any]:
    (sm,) = [r for r in template["Resources"].values() if r["Type"] == "AWS::StepFunctions::StateMachine"]
    resolved: dict[str, Any] = json.loads(_resolve(sm["Properties"]["DefinitionString"], template))
    return resolved


@dataclass
class VirtualClock:
    """Virtual time for moto's engine, in this test only: the machine's back-offs span 24 h.

    moto's engine sleeps for real (a Wait state in `WaitFunction._wait_interval`, a Retrier with
    `time.sleep` in `retrier_decl`) and stamps `$$.State.EnteredTime` with the real clock. Here each
    requested delay is recorded and added to a virtual clock instead of slept, and EnteredTime is
    read from that clock, so the live-fault loop's window check (EnteredTime < expires_at) sees the
    time the back-offs would have taken.
    """

    start: dt.datetime = field(default_factory=lambda: dt.datetime.now(UTC))
    elapsed_s: float = 0.0
    waits: list[float] = field(default_factory=list)  # Wait states, in order
    retries: list[float] = field(default_factory=list)  # Retrier delays, in order

    def now(self) -> dt.datetime:
        return self.start + dt.timedelta(seconds=self.elapsed_s)

    def install(self, monkeypatch: pytest.MonkeyPatch) -> None:
        clock = self

        def wait_interval(_self: WaitFunction, env: Any, wait_seconds: int) -> None:
            clock.waits.append(float(wait_seconds))
            clock.elapsed_s += wait_seconds

        def retry_sleep(seconds: float) -> None:
            clock.retries.append(float(seconds))
            clock.elapsed_s += seconds

        class VirtualDatetime(dt.datetime):
            @classmethod
            def now(cls, tz: dt.tzinfo | None = None) -> VirtualDatetime:
                t = clock.now().astimezone(tz) if tz is not None else clock.now()
                return cls.fromtimestamp(t.timestamp(), tz)

        monkeypatch.setattr(WaitFunction, "_wait_interval", wait_interval)
        monkeypatch.setattr(retrier_decl, "time", types.SimpleNamespace(sleep=retry_sleep))
        monkeypatch.setattr(asl_state, "datetime", types.SimpleNamespace(datetime=VirtualDatetime,
                                                                         timezone=dt.timezone))


class Script:
    """Plays the session and build functions: `errors[action]` is a list of error types to raise first."""

    def __init__(self, errors: dict[str, list[str]], live_s: float = 3600, active_checks: int = 2) -> None:
        self.errors = {k: list(v) for k, v in errors.items()}
        self.calls: list[tuple[str, dict[str, Any]]] = []
        self.live_s = live_s
        self.clock: VirtualClock | None = None
        self.active_checks = active_checks

    def invoke(self, _fn: str, payload: Any) -> InvokeResult:
        action = payload.get("action", "build")
        self.calls.append((action, payload))
        pending = self.errors.get(action) or []
        if pending:
            err = pending.pop(0)
            return InvokeResult(error_type=err, error_message=f"{action}: injected {err}")
        if action == "activate":
            assert self.clock is not None
            expires_at = self.clock.now() + dt.timedelta(seconds=self.live_s)  # the machine's own clock
            return InvokeResult(payload={"state": "ACTIVE", "expires_at": expires_at.isoformat()})
        if action == "check":
            self.active_checks -= 1
            return InvokeResult(payload={"active": self.active_checks > 0, "wait_s": 5, "state": "ACTIVE"})
        return InvokeResult(payload={"ok": True})

    def actions(self) -> list[str]:
        return [a for a, _ in self.calls]


@dataclass
class Run:
    status: str  # SUCCEEDED, or the error the execution failed with
    history: list[dict[str, Any]]
    clock: VirtualClock


@pytest.fixture
def run(definition: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    """`run(script)`: one execution of the real definition on moto's engine, its Lambda tasks played by `script`."""
    moto_ext.install()  # the local stack's Lambda route, as the local server registers it
    with mock_aws(config={"stepfunctions": {"execute_state_machine": True}}):
        sfn = boto3.client("stepfunctions", region_name=REGION)
        arn = sfn.create_state_machine(
            name="session", definition=json.dumps(definition), roleArn=f"arn:aws:iam::{ACCOUNT}:role/session"
        )["stateMachineArn"]

        runs: list[Run] = []

        def execute(script: Script, timeout_s: float = 300.0) -> Run:
            clock = VirtualClock()
            clock.install(monkeypatch)
            script.clock = clock
            moto_ext.route_lambda_invocations(script.invoke)
            try:
                ex = sfn.start_execution(
                    stateMachineArn=arn, name=f"run-{len(runs)}", input=json.dumps({"deployment_id": "dep-1"})
                )
                deadline = time.monotonic() + timeout_s
                while (desc := sfn.describe_execution(executionArn=ex["executionArn"]))["status"] == "RUNNING":
                    assert time.monotonic() < deadline, "execution still running"
                    time.sleep(0.05)
            finally:
                moto_ext.route_lambda_invocations(None)
            pages = sfn.get_paginator("get_execution_history").paginate(executionArn=ex["executionArn"])
            history: list[dict[str, Any]] = [dict(e) for page in pages for e in page["events"]]
            status = desc["status"] if desc["status"] == "SUCCEEDED" else desc.get("error", desc["status"])
            runs.append(Run(status, history, clock))
            return runs[-1]

        yield execute


def retries(run: Run, state: str) -> list[tuple[str, float]]:
    """(error, delay) of each retry of `state`: a TaskFailed followed by the same state's next TaskScheduled.

    The history says which state retried and why; the delays are the Retrier's, in the same order.
    """
    found: list[tuple[str, str]] = []
    current, failed = "", ""
    for event in run.history:
        kind = event["type"]
        if kind.endswith("StateEntered"):
            current, failed = event["stateEnteredEventDetails"]["name"], ""
        elif kind == "TaskFailed":
            failed = event["taskFailedEventDetails"]["error"]
        elif kind == "TaskScheduled" and failed:
            found.append((current, failed))
            failed = ""
    assert len(found) == len(run.clock.retries), "every Retrier delay is one retry in the history"
    return [(err, d) for (s, err), d in zip(found, run.clock.retries, strict=True) if s == state]


def test_classification_is_one_partition_and_the_machine_uses_it(definition: dict[str, Any]) -> None:
    assert not set(TRANSIENT_ERRORS) & set(TERMINAL_ERRORS)
    assert all(issubclass(e, LfrFunctionError) for e in TRANSIENT_ERRORS + TERMINAL_ERRORS)
    states = definition["States"]
    for name, state in states.items():
        for retrier in state.get("Retry", []):
            # Only transient errors are retried, exactly the classified list, with a capped delay.
            assert retrier["ErrorEquals"] == transient_error_names(), name
            assert "MaxDelaySeconds" in retrier and retrier["BackoffRate"] >= 1.0, name
        catchers = state.get("Catch", [])
        for i, catcher in enumerate(catchers):
            if "States.ALL" in catcher["ErrorEquals"]:
                assert catcher["ErrorEquals"] == ["States.ALL"] and i == len(catchers) - 1, name  # ASL rule
    # Live checks: terminal errors fail the session; anything else loops inside the window.
    for name in ("CheckActive", "CheckAfterFault"):
        catch = states[name]["Catch"]
        assert catch[0] == {"ErrorEquals": terminal_error_names(), "Next": "MarkFailed", "ResultPath": "$.error"}
        assert catch[1]["Next"] == "LiveFault"
    assert "Retry" not in states["CheckAfterFault"]  # so its success knows the error it recovered from
    assert set(LAMBDA_TRANSIENT_ERRORS) <= set(transient_error_names())


@pytest.mark.parametrize("error", ["TransientStorageError", "Runtime.ExitError", "Sandbox.Timedout",
                                   "Lambda.ServiceException", "AuditAppendError", "KeyError"])
def test_a_live_deployment_survives_a_long_fault_of_any_non_terminal_kind(
    run: Any, error: str
) -> None:
    # 40 consecutive failed checks (> 5 minutes of back-off) in the middle of a live session.
    script = Script({"check": [error] * 40})
    result = run(script)
    assert result.status == "SUCCEEDED"
    actions = script.actions()
    assert "fail" not in actions and actions[-2:] == ["purge", "close"]
    assert actions.count("check") == 40 + 2
    # Back-off: 1, 2, 4 s (CheckActive's retrier, if it is transient), then every LIVE_FAULT_WAIT_S.
    delays = [d for _, d in retries(result, "CheckActive")]
    if error in transient_error_names():
        assert delays == [1.0, 2.0, 4.0]
    else:
        assert delays == []  # not classified transient: no quick retry, but still not the end
    assert max(result.clock.waits + result.clock.retries) <= LIVE_FAULT_WAIT_S
    assert result.clock.elapsed_s > 5 * 60  # the fault lasted, in the machine's time
    # The check that recovers carries the error it recovered from.
    recovered = [p for a, p in script.calls if a == "check" and p.get("fault")]
    assert recovered and recovered[-1]["fault"]["Error"] == error


def test_a_fault_lasting_past_the_window_ends_in_the_normal_purge_not_a_failure(run: Any) -> None:
    script = Script({"check": ["TransientStorageError"] * 1000}, live_s=-1)  # the window has already closed
    result = run(script)
    assert result.status == "SUCCEEDED"
    actions = script.actions()
    assert "fail" not in actions and actions[-2:] == ["purge", "close"]
    purge = next(p for a, p in script.calls if a == "purge")
    assert "error" not in purge  # an expiry, not a failure


def test_a_fault_is_rechecked_until_the_window_closes_then_purged(run: Any) -> None:
    # The window closes 2 minutes into a fault that never ends: re-checks every LIVE_FAULT_WAIT_S
    # until the machine's clock passes expires_at, then the normal purge.
    script = Script({"check": ["TransientStorageError"] * 1000}, live_s=120)
    result = run(script)
    assert result.status == "SUCCEEDED"
    assert script.actions()[-2:] == ["purge", "close"] and "fail" not in script.actions()
    quick = 1 + 2 + 4
    assert result.clock.waits == [float(LIVE_FAULT_WAIT_S)] * -(-(120 - quick) // LIVE_FAULT_WAIT_S)
    assert script.actions().count("check") == 1 + 3 + len(result.clock.waits)


@pytest.mark.parametrize("error", [e.__name__ for e in TERMINAL_ERRORS])
def test_a_terminal_error_while_live_fails_and_purges_with_its_reason(run: Any, error: str) -> None:
    script = Script({"check": [error]})
    assert run(script).status == "SessionFailed"
    actions = script.actions()
    assert actions[-2:] == ["fail", "purge"]
    purge = [p for a, p in script.calls if a == "purge"][-1]
    assert purge["error"]["Error"] == error  # the purge can write the reason if MarkFailed could not


def test_mark_failed_that_cannot_write_leaves_the_reason_to_the_purge(run: Any) -> None:
    script = Script({"validate": ["AuthorisationError"], "fail": ["TransientStorageError"] * 8,
                     "purge": ["TransientStorageError"] * 20})
    result = run(script)
    assert result.status == "SessionFailed"
    assert script.actions().count("fail") == 9  # 1 + 8 retries (~2.5 min), then on to the purge
    purges = [p for a, p in script.calls if a == "purge"]
    assert len(purges) == 21 and all(p["error"]["Error"] == "AuthorisationError" for p in purges)
    delays = [d for _, d in retries(result, "PurgeAfterFailure")]
    assert delays[:6] == [2.0, 4.0, 8.0, 16.0, 32.0, 60.0] and max(delays) == 60.0


def test_a_purge_that_cannot_finish_is_retried_for_a_day_then_fails_alarmed(run: Any) -> None:
    script = Script({"purge": ["PurgeIncompleteError"] * 100_000}, active_checks=1)
    result = run(script)
    assert result.status == "PurgeFailed"
    delays = [d for _, d in retries(result, "Purge")]
    assert 24 * 3600 <= sum(delays) <= 25 * 3600
    assert "close" not in script.actions()


@pytest.mark.parametrize("step", ["validate", "build", "activate"])
def test_before_live_a_transient_fault_is_retried_then_fails_with_a_reason(
    run: Any, step: str
) -> None:
    script = Script({step: ["TransientStorageError"] * 5})
    assert run(script).status == "SUCCEEDED"  # 5 failures (2+4+8+16+30 s of back-off) are absorbed
    script = Script({step: ["TransientStorageError"] * 9})
    assert run(script).status == "SessionFailed"
    fail = next(p for a, p in script.calls if a == "fail")
    assert fail["error"]["Error"] == "TransientStorageError"


def test_failing_checks_and_retrying_purges_alarm_from_the_first_error(template: dict[str, Any]) -> None:
    alarms = [r["Properties"] for r in template["Resources"].values() if r["Type"] == "AWS::CloudWatch::Alarm"]
    by_action = {
        next(d["Value"] for d in a["Dimensions"] if d["Name"] == "Action"): a
        for a in alarms if a.get("MetricName") == STEP_ERRORS_METRIC
    }
    assert set(by_action) == {"check"}
    # A retried purge alarms through PurgeIncomplete, counted by the same failed step.
    purge = [a for a in alarms if a.get("MetricName") == METRIC_PURGE_INCOMPLETE]
    assert len(purge) == 1 and purge[0]["Threshold"] == 1
    for alarm in by_action.values():
        assert alarm["Namespace"] == METRICS_NAMESPACE and alarm["Threshold"] == 1
        assert {"Name": "service", "Value": SERVICE_NAME} in alarm["Dimensions"]  # as Powertools emits it
    assert any(a.get("MetricName") == "Errors" and a.get("Namespace") == "AWS/Lambda" for a in alarms)
    # The purge verifies the queues by their counts.
    assert "sqs:GetQueueAttributes" in json.dumps(
        [r for r in template["Resources"].values() if r["Type"] == "AWS::IAM::Policy"]
    )
