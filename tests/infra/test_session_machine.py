"""The session machine's Retry/Catch, from the synthesised template, run with injected task errors.

The definition is the real one (CDK -> ASL); the tasks are scripted (which action fails, with
which error, how often), and Wait/Retry delays are recorded instead of slept, so hours of
back-off run in milliseconds.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from aws_cdk import App
from aws_cdk.assertions import Template
from lfr_cli.local.runtime import InvokeResult
from lfr_cli.local.sfn import ExecutionFailed, Interpreter, definition_from_template

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

pytestmark = pytest.mark.usefixtures("built_assets")


@pytest.fixture(scope="module")
def template(built_assets: None, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    app: App = build_app(outdir=str(tmp_path_factory.mktemp("cdk.out")))
    stack = app.node.find_child(DEFAULT_STACK_NAME)
    assert isinstance(stack, LfrStack)
    return dict(Template.from_stack(stack).to_json())


@pytest.fixture(scope="module")
def definition(template: dict[str, Any]) -> dict[str, Any]:
    (logical_id,) = [k for k, r in template["Resources"].items() if r["Type"] == "AWS::StepFunctions::StateMachine"]
    ids = {k: k for k in template["Resources"]}
    arns = {k: f"arn:aws:lambda:eu-west-2:123456789012:function:{k}" for k in template["Resources"]}
    return definition_from_template(template, logical_id, ids, arns, "eu-west-2", "123456789012")


class Script:
    """Plays the session and build functions: `errors[action]` is a list of error types to raise first."""

    def __init__(self, errors: dict[str, list[str]], live_s: float = 3600, active_checks: int = 2) -> None:
        self.errors = {k: list(v) for k, v in errors.items()}
        self.calls: list[tuple[str, dict[str, Any]]] = []
        self.expires_at = datetime.now(UTC) + timedelta(seconds=live_s)
        self.active_checks = active_checks
        self.sleeps: list[float] = []

    def invoke(self, _fn: str, payload: Any) -> InvokeResult:
        action = payload.get("action", "build")
        self.calls.append((action, payload))
        pending = self.errors.get(action) or []
        if pending:
            err = pending.pop(0)
            return InvokeResult(error_type=err, error_message=f"{action}: injected {err}")
        if action == "activate":
            return InvokeResult(payload={"state": "ACTIVE", "expires_at": self.expires_at.isoformat()})
        if action == "check":
            self.active_checks -= 1
            return InvokeResult(payload={"active": self.active_checks > 0, "wait_s": 5, "state": "ACTIVE"})
        return InvokeResult(payload={"ok": True})

    def sleep(self, seconds: float) -> bool:
        self.sleeps.append(seconds)
        return True

    def actions(self) -> list[str]:
        return [a for a, _ in self.calls]


def run(definition: dict[str, Any], script: Script) -> tuple[str, list[Any]]:
    interp = Interpreter(definition, script.invoke, sleep=script.sleep)
    try:
        interp.run({"deployment_id": "dep-1"})
        status = "SUCCEEDED"
    except ExecutionFailed as exc:
        status = exc.error
    return status, interp.history


def retries(history: list[Any], state: str) -> list[tuple[str, float]]:
    return [(e.detail["error"], e.detail["delay_s"]) for e in history if e.type == "TaskRetry" and e.state == state]


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
    definition: dict[str, Any], error: str
) -> None:
    # 40 consecutive failed checks (> 5 minutes of back-off) in the middle of a live session.
    script = Script({"check": [error] * 40})
    status, history = run(definition, script)
    assert status == "SUCCEEDED"
    actions = script.actions()
    assert "fail" not in actions and actions[-2:] == ["purge", "close"]
    assert actions.count("check") == 40 + 2
    # Back-off: 1, 2, 4 s (CheckActive's retrier, if it is transient), then every LIVE_FAULT_WAIT_S.
    delays = [d for _, d in retries(history, "CheckActive")]
    if error in transient_error_names():
        assert delays == [1.0, 2.0, 4.0]
    else:
        assert delays == []  # not classified transient: no quick retry, but still not the end
    assert max(script.sleeps) <= LIVE_FAULT_WAIT_S
    # The check that recovers carries the error it recovered from.
    recovered = [p for a, p in script.calls if a == "check" and p.get("fault")]
    assert recovered and recovered[-1]["fault"]["Error"] == error


def test_a_fault_lasting_past_the_window_ends_in_the_normal_purge_not_a_failure(definition: dict[str, Any]) -> None:
    script = Script({"check": ["TransientStorageError"] * 1000}, live_s=-1)  # the window has already closed
    status, _ = run(definition, script)
    assert status == "SUCCEEDED"
    actions = script.actions()
    assert "fail" not in actions and actions[-2:] == ["purge", "close"]
    purge = next(p for a, p in script.calls if a == "purge")
    assert "error" not in purge  # an expiry, not a failure


@pytest.mark.parametrize("error", [e.__name__ for e in TERMINAL_ERRORS])
def test_a_terminal_error_while_live_fails_and_purges_with_its_reason(definition: dict[str, Any], error: str) -> None:
    script = Script({"check": [error]})
    status, _ = run(definition, script)
    assert status == "SessionFailed"
    actions = script.actions()
    assert actions[-2:] == ["fail", "purge"]
    purge = [p for a, p in script.calls if a == "purge"][-1]
    assert purge["error"]["Error"] == error  # the purge can write the reason if MarkFailed could not


def test_mark_failed_that_cannot_write_leaves_the_reason_to_the_purge(definition: dict[str, Any]) -> None:
    script = Script({"validate": ["AuthorisationError"], "fail": ["TransientStorageError"] * 8,
                     "purge": ["TransientStorageError"] * 20})
    status, history = run(definition, script)
    assert status == "SessionFailed"
    assert script.actions().count("fail") == 9  # 1 + 8 retries (~2.5 min), then on to the purge
    purges = [p for a, p in script.calls if a == "purge"]
    assert len(purges) == 21 and all(p["error"]["Error"] == "AuthorisationError" for p in purges)
    delays = [d for _, d in retries(history, "PurgeAfterFailure")]
    assert delays[:6] == [2.0, 4.0, 8.0, 16.0, 32.0, 60.0] and max(delays) == 60.0


def test_a_purge_that_cannot_finish_is_retried_for_a_day_then_fails_alarmed(definition: dict[str, Any]) -> None:
    script = Script({"purge": ["PurgeIncompleteError"] * 100_000}, active_checks=1)
    status, history = run(definition, script)
    assert status == "PurgeFailed"
    delays = [d for _, d in retries(history, "Purge")]
    assert 24 * 3600 <= sum(delays) <= 25 * 3600
    assert "close" not in script.actions()


@pytest.mark.parametrize("step", ["validate", "build", "activate"])
def test_before_live_a_transient_fault_is_retried_then_fails_with_a_reason(
    definition: dict[str, Any], step: str
) -> None:
    script = Script({step: ["TransientStorageError"] * 5})
    status, _ = run(definition, script)
    assert status == "SUCCEEDED"  # 5 failures (2+4+8+16+30 s of back-off) are absorbed
    script = Script({step: ["TransientStorageError"] * 9})
    status, _history = run(definition, script)
    assert status == "SessionFailed"
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
