"""The local ASL interpreter on hand-written definitions with a fake Lambda invoker."""

from __future__ import annotations

import json
from typing import Any

import pytest

from lfr_cli.local.runtime import InvokeResult
from lfr_cli.local.sfn import (
    ExecutionAborted,
    ExecutionFailed,
    Interpreter,
    StatesError,
    UnsupportedAslError,
    get_path,
    set_path,
)

FN = "arn:aws:lambda:eu-west-2:123456789012:function:fake"


class FakeLambda:
    """Scripted results per call; records every (function, payload)."""

    def __init__(self, *results: InvokeResult | Any) -> None:
        self.results = list(results)
        self.calls: list[tuple[str, Any]] = []

    def __call__(self, function: str, payload: Any) -> InvokeResult:
        self.calls.append((function, payload))
        nxt = self.results.pop(0) if self.results else {"echo": payload}
        return nxt if isinstance(nxt, InvokeResult) else InvokeResult(payload=nxt)


def fail(error_type: str, message: str = "nope") -> InvokeResult:
    return InvokeResult(error_type=error_type, error_message=message)


class Sleeps:
    def __init__(self, allow: bool = True) -> None:
        self.slept: list[float] = []
        self.allow = allow

    def __call__(self, seconds: float) -> bool:
        self.slept.append(seconds)
        return self.allow


def task(**extra: Any) -> dict[str, Any]:
    return {
        "Type": "Task",
        "Resource": "arn:aws:states:::lambda:invoke",
        "Parameters": {"FunctionName": FN, "Payload.$": "$"},
        **extra,
    }


def machine(states: dict[str, Any], start: str | None = None) -> dict[str, Any]:
    return {"StartAt": start or next(iter(states)), "States": states}


def test_jsonpath_subset() -> None:
    data = {"a": {"b": [10, {"c": 3}]}}
    assert get_path(data, "$") == data
    assert get_path(data, "$.a.b[0]") == 10
    assert get_path(data, "$.a.b[1].c") == 3
    with pytest.raises(StatesError, match=r"States\.Runtime"):
        get_path(data, "$.a.x")
    with pytest.raises(UnsupportedAslError):
        get_path(data, "$.a[*]")
    assert set_path({"k": 1}, "$.x.y", 2) == {"k": 1, "x": {"y": 2}}
    assert set_path({"k": 1}, "$", 2) == 2


def test_lambda_invoke_result_selector_result_path_output_path() -> None:
    fake = FakeLambda({"count": 3})
    definition = machine(
        {
            "T": task(
                Parameters={"FunctionName": FN, "Payload": {"id.$": "$.deployment_id", "fixed": 1}},
                ResultSelector={"n.$": "$.Payload.count", "code.$": "$.StatusCode"},
                ResultPath="$.res",
                OutputPath="$.res",
                End=True,
            )
        }
    )
    out = Interpreter(definition, fake).run({"deployment_id": "d1"})
    assert out == {"n": 3, "code": 200}
    assert fake.calls == [(FN, {"id": "d1", "fixed": 1})]


def test_bare_lambda_arn_resource_and_null_result_path_and_input_path() -> None:
    fake = FakeLambda({"ignored": True})
    definition = machine(
        {"T": {"Type": "Task", "Resource": FN, "InputPath": "$.inner", "ResultPath": None, "End": True}}
    )
    out = Interpreter(definition, fake).run({"inner": {"x": 1}, "keep": 2})
    assert out == {"inner": {"x": 1}, "keep": 2}
    assert fake.calls == [(FN, {"x": 1})]


def test_retry_backoff_then_success() -> None:
    fake = FakeLambda(fail("PurgeIncompleteError"), fail("PurgeIncompleteError"), {"ok": True})
    sleeps = Sleeps()
    retry = [{"ErrorEquals": ["PurgeIncompleteError"], "IntervalSeconds": 2, "MaxAttempts": 3, "BackoffRate": 3}]
    definition = machine({"T": task(Retry=retry, ResultSelector={"ok.$": "$.Payload.ok"}, End=True)})
    assert Interpreter(definition, fake, sleep=sleeps).run({}) == {"ok": True}
    assert sleeps.slept == [2.0, 6.0]


def test_retry_max_delay_and_exhaustion_then_catch() -> None:
    fake = FakeLambda(*[fail("Boom")] * 4)
    sleeps = Sleeps()
    definition = machine(
        {
            "T": task(
                Retry=[{"ErrorEquals": ["States.ALL"], "IntervalSeconds": 5, "MaxAttempts": 3, "MaxDelaySeconds": 8}],
                Catch=[{"ErrorEquals": ["Boom"], "ResultPath": "$.error", "Next": "Handled"}],
                Next="Never",
            ),
            "Never": {"Type": "Succeed"},
            "Handled": {"Type": "Pass", "End": True},
        }
    )
    out = Interpreter(definition, fake, sleep=sleeps).run({"a": 1})
    assert sleeps.slept == [5.0, 8.0, 8.0]
    assert len(fake.calls) == 4
    assert out["a"] == 1 and out["error"]["Error"] == "Boom"
    assert json.loads(out["error"]["Cause"])["errorMessage"] == "nope"


def test_max_attempts_zero_and_task_failed_catch() -> None:
    fake = FakeLambda(fail("NoUsableFacesError"))
    definition = machine(
        {
            "T": task(
                Retry=[{"ErrorEquals": ["NoUsableFacesError"], "MaxAttempts": 0}],
                Catch=[{"ErrorEquals": ["States.TaskFailed"], "Next": "F"}],
                End=True,
            ),
            "F": {"Type": "Fail", "Error": "BuildFailed", "Cause": "no faces"},
        }
    )
    with pytest.raises(ExecutionFailed) as info:
        Interpreter(definition, fake, sleep=Sleeps()).run({})
    assert (info.value.error, info.value.cause, info.value.state) == ("BuildFailed", "no faces", "F")
    assert len(fake.calls) == 1


def test_uncaught_task_error_fails_execution_with_error_type() -> None:
    fake = FakeLambda(fail("PurgeIncompleteError", "2 objects remain"))
    definition = machine(
        {"T": task(Catch=[{"ErrorEquals": ["Other"], "Next": "X"}], End=True), "X": {"Type": "Succeed"}}
    )
    with pytest.raises(ExecutionFailed) as info:
        Interpreter(definition, fake).run({})
    assert info.value.error == "PurgeIncompleteError"
    assert "2 objects remain" in info.value.cause


@pytest.mark.parametrize(
    ("rule", "data", "expected"),
    [
        ({"Variable": "$.s", "StringEquals": "a"}, {"s": "a"}, True),
        ({"Variable": "$.s", "StringEquals": "a"}, {"s": 1}, False),
        ({"Variable": "$.n", "NumericEquals": 2}, {"n": 2.0}, True),
        ({"Variable": "$.n", "NumericLessThan": 2}, {"n": 1}, True),
        ({"Variable": "$.n", "NumericLessThanEquals": 2}, {"n": 2}, True),
        ({"Variable": "$.n", "NumericGreaterThan": 2}, {"n": 2}, False),
        ({"Variable": "$.n", "NumericGreaterThanEquals": 2}, {"n": 2}, True),
        ({"Variable": "$.n", "NumericEquals": 1}, {"n": True}, False),
        ({"Variable": "$.b", "BooleanEquals": True}, {"b": True}, True),
        ({"Variable": "$.b", "BooleanEquals": True}, {"b": 1}, False),
        ({"Variable": "$.x", "IsPresent": True}, {"x": None}, True),
        ({"Variable": "$.x", "IsPresent": False}, {}, True),
        ({"Variable": "$.x", "IsNull": True}, {"x": None}, True),
        ({"Variable": "$.t", "TimestampLessThan": "2030-01-01T00:00:00Z"}, {"t": "2029-12-31T23:59:59Z"}, True),
        (
            {"Variable": "$.t", "TimestampGreaterThanEquals": "2030-01-01T00:00:00Z"},
            {"t": "2030-01-01T00:00:00Z"},
            True,
        ),
        ({"Variable": "$.t", "TimestampGreaterThan": "2030-01-01T00:00:00Z"}, {"t": "garbage"}, False),
        (
            {"Variable": "$.t", "TimestampLessThanEqualsPath": "$.u"},
            {"t": "2030-01-01T00:00:00Z", "u": "2030-01-01T00:00:00+00:00"},
            True,
        ),
        ({"Variable": "$.n", "NumericGreaterThanPath": "$.m"}, {"n": 3, "m": 2}, True),
        ({"Variable": "$.s", "StringEqualsPath": "$.r"}, {"s": "a", "r": "a"}, True),
        (
            {"And": [{"Variable": "$.n", "NumericGreaterThan": 1}, {"Variable": "$.n", "NumericLessThan": 3}]},
            {"n": 2},
            True,
        ),
        ({"Or": [{"Variable": "$.n", "NumericEquals": 1}, {"Variable": "$.n", "NumericEquals": 3}]}, {"n": 2}, False),
        ({"Not": {"Variable": "$.s", "StringEquals": "a"}}, {"s": "b"}, True),
    ],
)
def test_choice_operators(rule: dict[str, Any], data: dict[str, Any], expected: bool) -> None:
    definition = machine(
        {
            "C": {"Type": "Choice", "Choices": [{**rule, "Next": "Yes"}], "Default": "No"},
            "Yes": {"Type": "Pass", "Result": "yes", "End": True},
            "No": {"Type": "Pass", "Result": "no", "End": True},
        }
    )
    assert Interpreter(definition, FakeLambda()).run(data) == ("yes" if expected else "no")


def test_choice_without_match_or_default_and_missing_variable() -> None:
    definition = machine(
        {
            "C": {"Type": "Choice", "Choices": [{"Variable": "$.n", "NumericEquals": 1, "Next": "S"}]},
            "S": {"Type": "Succeed"},
        }
    )
    with pytest.raises(ExecutionFailed, match=r"States\.NoChoiceMatched"):
        Interpreter(definition, FakeLambda()).run({"n": 2})
    with pytest.raises(ExecutionFailed, match=r"States\.Runtime"):
        Interpreter(definition, FakeLambda()).run({})


def test_session_loop_shape_wait_seconds_path_and_choice() -> None:
    """The session machine's CheckActive -> Choice -> WaitABit loop, then Close."""
    fake = FakeLambda({"active": True, "wait_s": 7}, {"active": False, "wait_s": 0}, {"closed": True})
    sleeps = Sleeps()
    definition = machine(
        {
            "CheckActive": task(
                Parameters={"FunctionName": FN, "Payload": {"action": "check", "deployment_id.$": "$.deployment_id"}},
                ResultSelector={"active.$": "$.Payload.active", "wait_s.$": "$.Payload.wait_s"},
                ResultPath="$.check",
                Next="IsActive",
            ),
            "IsActive": {
                "Type": "Choice",
                "Choices": [{"Variable": "$.check.active", "BooleanEquals": True, "Next": "WaitABit"}],
                "Default": "Close",
            },
            "WaitABit": {"Type": "Wait", "SecondsPath": "$.check.wait_s", "Next": "CheckActive"},
            "Close": task(
                Parameters={"FunctionName": FN, "Payload": {"action": "close", "deployment_id.$": "$.deployment_id"}},
                ResultPath=None,
                Next="Done",
            ),
            "Done": {"Type": "Succeed"},
        }
    )
    interp = Interpreter(definition, fake, sleep=sleeps)
    out = interp.run({"deployment_id": "d1"})
    assert sleeps.slept == [7.0]
    assert out == {"deployment_id": "d1", "check": {"active": False, "wait_s": 0}}
    assert [c[1]["action"] for c in fake.calls] == ["check", "check", "close"]
    entered = [e.state for e in interp.history if e.type.endswith("StateEntered")]
    assert entered == ["CheckActive", "IsActive", "WaitABit", "CheckActive", "IsActive", "Close", "Done"]


def test_wait_variants_and_interrupt() -> None:
    cases: list[tuple[dict[str, Any], dict[str, Any]]] = [
        ({"Seconds": 3}, {}),
        ({"Timestamp": "2000-01-01T00:00:00Z"}, {}),
        ({"TimestampPath": "$.t"}, {"t": "2000-01-01T00:00:00Z"}),
    ]
    for state, data in cases:
        sleeps = Sleeps()
        definition = machine({"W": {"Type": "Wait", **state, "End": True}})
        assert Interpreter(definition, FakeLambda(), sleep=sleeps).run(data) == data
        assert sleeps.slept == ([3.0] if "Seconds" in state else [0.0])
    definition = machine({"W": {"Type": "Wait", "Seconds": 100, "End": True}})
    with pytest.raises(ExecutionAborted):
        Interpreter(definition, FakeLambda(), sleep=Sleeps(allow=False)).run({})


def test_pass_result_parameters_and_context_object() -> None:
    definition = machine(
        {
            "P1": {
                "Type": "Pass",
                "Parameters": {"id.$": "$.a", "exec.$": "$$.Execution.Name", "list": [1]},
                "ResultPath": "$.p",
                "Next": "P2",
            },
            "P2": {"Type": "Pass", "Result": {"r": 1}, "ResultPath": "$.q", "OutputPath": "$.q", "End": True},
        }
    )
    interp = Interpreter(definition, FakeLambda(), context={"Execution": {"Name": "ex1"}})
    assert interp.run({"a": 5}) == {"r": 1}
    definition["States"]["P2"]["OutputPath"] = "$"
    out = Interpreter(definition, FakeLambda(), context={"Execution": {"Name": "ex1"}}).run({"a": 5})
    assert out["p"] == {"id": 5, "exec": "ex1", "list": [1]}


def test_fail_state_error_and_cause() -> None:
    definition = machine({"F": {"Type": "Fail", "Error": "PurgeFailed", "Cause": "objects remain"}})
    with pytest.raises(ExecutionFailed) as info:
        Interpreter(definition, FakeLambda()).run({})
    assert (info.value.error, info.value.cause) == ("PurgeFailed", "objects remain")


@pytest.mark.parametrize(
    ("states", "named"),
    [
        ({"M": {"Type": "Map", "End": True}}, "Map"),
        ({"P": {"Type": "Parallel", "End": True}}, "Parallel"),
        ({"T": task(TimeoutSeconds=5, End=True)}, "TimeoutSeconds"),
        ({"T": {"Type": "Task", "Resource": "arn:aws:states:::sns:publish", "End": True}}, "sns:publish"),
        (
            {"T": task(Parameters={"FunctionName": FN, "Payload.$": "States.Format('{}', $.a)"}, End=True)},
            "States.Format",
        ),
        ({"P": {"Type": "Pass", "InputPath": "$.a[*]", "End": True}}, "$.a[*]"),
        (
            {"C": {"Type": "Choice", "Choices": [{"Variable": "$.s", "StringMatches": "a*", "Next": "C"}]}},
            "StringMatches",
        ),
        ({"T": task(Retry=[{"ErrorEquals": ["States.ALL"], "JitterStrategy": "FULL"}], End=True)}, "JitterStrategy"),
    ],
)
def test_unsupported_features_are_named(states: dict[str, Any], named: str) -> None:
    with pytest.raises(UnsupportedAslError, match=named.replace("[", r"\[").replace("*", r"\*").replace("$", r"\$")):
        Interpreter(machine(states), FakeLambda())
