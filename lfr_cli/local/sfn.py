"""A small Amazon States Language interpreter and an executor that runs moto's executions with it.

Implements exactly the ASL subset the session state machine uses (docs/ARCHITECTURE.md); every other
state type, field, JSONPath form or intrinsic raises `UnsupportedAslError` naming it, before the run.
"""

from __future__ import annotations

import copy
import json
import logging
import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from lfr_cli.local.runtime import InvokeResult

log = logging.getLogger(__name__)

TaskInvoker = Callable[[str, Any], InvokeResult]
LAMBDA_INVOKE = re.compile(r"^arn:aws[a-zA-Z-]*:states:::lambda:invoke$")
LAMBDA_ARN = re.compile(r"^arn:aws[a-zA-Z-]*:lambda:[^:]+:\d+:function:[^:]+(:[^:]+)?$")
_MISSING = object()  # "no default given"
_ABSENT = object()  # "path not present", for IsPresent


class UnsupportedAslError(Exception):
    """The definition uses an ASL feature the local executor does not implement."""


class StatesError(Exception):
    """A named ASL error (task failure, States.*) raised while running a state."""

    def __init__(self, error: str, cause: str = "") -> None:
        super().__init__(f"{error}: {cause}")
        self.error = error
        self.cause = cause


class ExecutionFailed(Exception):
    def __init__(self, error: str, cause: str, state: str | None = None) -> None:
        super().__init__(f"{error}: {cause}" + (f" (in state {state})" if state else ""))
        self.error = error
        self.cause = cause
        self.state = state


class ExecutionAborted(Exception):
    """The execution was stopped (executor shutdown or StopExecution) while running."""


# ---------------------------------------------------------------- JSONPath (the subset ASL needs)

_PATH_TOKEN = re.compile(r"\.([A-Za-z0-9_\-]+)|\[(\d+)\]")


def parse_path(path: str) -> list[str | int]:
    if not isinstance(path, str) or not path.startswith("$"):
        raise UnsupportedAslError(f"JSONPath {path!r}: only $, $.a.b and $.a[0] are supported")
    rest = path[1:]
    tokens: list[str | int] = []
    pos = 0
    while pos < len(rest):
        m = _PATH_TOKEN.match(rest, pos)
        if m is None:
            raise UnsupportedAslError(f"JSONPath {path!r}: only $, $.a.b and $.a[0] are supported")
        tokens.append(m.group(1) if m.group(1) is not None else int(m.group(2)))
        pos = m.end()
    return tokens


def get_path(data: Any, path: str, default: Any = _MISSING) -> Any:
    value = data
    for token in parse_path(path):
        if isinstance(token, int):
            ok = isinstance(value, list) and -len(value) <= token < len(value)
        else:
            ok = isinstance(value, dict) and token in value
        if not ok:
            if default is not _MISSING:
                return default
            raise StatesError("States.Runtime", f"path {path!r} not found in input")
        value = value[token]
    return value


def set_path(data: Any, path: str, value: Any) -> Any:
    """ResultPath: a copy of `data` with `value` at `path` (intermediate objects created)."""
    tokens = parse_path(path)
    if not tokens:
        return value
    if any(isinstance(t, int) for t in tokens):
        raise UnsupportedAslError(f"ResultPath {path!r}: array indices are not supported")
    root = copy.deepcopy(data) if isinstance(data, dict) else {}
    node = root
    for token in tokens[:-1]:
        if not isinstance(node.get(token), dict):
            node[token] = {}
        node = node[token]
    node[tokens[-1]] = value
    return root


# ---------------------------------------------------------------- definition validation

_COMMON = {"Type", "Comment", "Next", "End", "InputPath", "OutputPath"}
_ALLOWED_FIELDS: dict[str, set[str]] = {
    "Task": _COMMON | {"Resource", "Parameters", "ResultSelector", "ResultPath", "Retry", "Catch"},
    "Pass": _COMMON | {"Result", "Parameters", "ResultPath"},
    "Wait": _COMMON | {"Seconds", "SecondsPath", "Timestamp", "TimestampPath"},
    "Choice": {"Type", "Comment", "InputPath", "OutputPath", "Choices", "Default"},
    "Succeed": {"Type", "Comment", "InputPath", "OutputPath"},
    "Fail": {"Type", "Comment", "Error", "Cause"},
}
_RETRY_FIELDS = {"ErrorEquals", "IntervalSeconds", "MaxAttempts", "BackoffRate", "MaxDelaySeconds", "Comment"}
_CATCH_FIELDS = {"ErrorEquals", "Next", "ResultPath", "Comment"}
_COMPARISONS = {
    "StringEquals",
    "NumericEquals",
    "NumericLessThan",
    "NumericLessThanEquals",
    "NumericGreaterThan",
    "NumericGreaterThanEquals",
    "BooleanEquals",
    "TimestampLessThan",
    "TimestampLessThanEquals",
    "TimestampGreaterThan",
    "TimestampGreaterThanEquals",
}
_CHOICE_OPS = _COMPARISONS | {f"{op}Path" for op in _COMPARISONS} | {"IsPresent", "IsNull"}


def validate(definition: dict[str, Any]) -> None:
    extra = set(definition) - {"StartAt", "States", "Comment", "Version"}
    if extra:
        raise UnsupportedAslError(f"state machine fields {sorted(extra)} are not supported")
    states = definition.get("States")
    if not isinstance(states, dict) or definition.get("StartAt") not in states:
        raise UnsupportedAslError("definition needs StartAt naming one of States")
    for name, state in states.items():
        kind = state.get("Type")
        allowed = _ALLOWED_FIELDS.get(kind)
        if allowed is None:
            raise UnsupportedAslError(f"state {name!r}: Type {kind!r} is not supported")
        extra = set(state) - allowed
        if extra:
            raise UnsupportedAslError(f"state {name!r} ({kind}): fields {sorted(extra)} are not supported")
        for key in ("Next", "Default"):
            if key in state and state[key] not in states:
                raise UnsupportedAslError(f"state {name!r}: {key} {state[key]!r} is not a state")
        if kind == "Task":
            resource = state.get("Resource", "")
            if not (LAMBDA_INVOKE.match(resource) or LAMBDA_ARN.match(resource)):
                raise UnsupportedAslError(f"state {name!r}: Task Resource {resource!r} is not supported")
            for r in state.get("Retry", []):
                if set(r) - _RETRY_FIELDS:
                    raise UnsupportedAslError(f"state {name!r}: Retry fields {sorted(set(r) - _RETRY_FIELDS)}")
            for c in state.get("Catch", []):
                if set(c) - _CATCH_FIELDS:
                    raise UnsupportedAslError(f"state {name!r}: Catch fields {sorted(set(c) - _CATCH_FIELDS)}")
                if c.get("Next") not in states:
                    raise UnsupportedAslError(f"state {name!r}: Catch Next {c.get('Next')!r} is not a state")
        if kind == "Choice":
            for rule in state.get("Choices", []):
                _validate_rule(name, rule, top=True)
                if rule.get("Next") not in states:
                    raise UnsupportedAslError(f"state {name!r}: choice Next {rule.get('Next')!r} is not a state")
        for key in ("InputPath", "OutputPath", "ResultPath", "SecondsPath", "TimestampPath"):
            if state.get(key) is not None:
                parse_path(state[key])
        for key in ("Parameters", "ResultSelector"):
            if key in state:
                _validate_template(name, state[key])


def _validate_template(name: str, node: Any) -> None:
    if isinstance(node, dict):
        for key, value in node.items():
            if key.endswith(".$"):
                if not isinstance(value, str) or value.startswith("States."):
                    raise UnsupportedAslError(f"state {name!r}: intrinsic function {value!r} is not supported")
                parse_path(value[1:] if value.startswith("$$") else value)
            else:
                _validate_template(name, value)
    elif isinstance(node, list):
        for item in node:
            _validate_template(name, item)


def _validate_rule(name: str, rule: dict[str, Any], top: bool) -> None:
    ops = set(rule) - {"Variable", "Next", "Comment"}
    if not top and "Next" in rule:
        raise UnsupportedAslError(f"state {name!r}: Next inside a nested choice rule")
    if ops & {"And", "Or"}:
        for sub in rule.get("And", rule.get("Or", [])):
            _validate_rule(name, sub, top=False)
        return
    if "Not" in ops:
        _validate_rule(name, rule["Not"], top=False)
        return
    if len(ops) != 1 or not ops <= _CHOICE_OPS:
        raise UnsupportedAslError(f"state {name!r}: choice operator(s) {sorted(ops)} not supported")
    parse_path(rule.get("Variable", ""))


# ---------------------------------------------------------------- interpreter


def _parse_ts(value: Any) -> datetime | None:
    if not isinstance(value, str):
        return None
    try:
        ts = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return ts if ts.tzinfo else ts.replace(tzinfo=UTC)


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _compare(op: str, value: Any, other: Any) -> bool:
    if op == "StringEquals":
        return isinstance(value, str) and value == other
    if op == "BooleanEquals":
        return isinstance(value, bool) and value == other
    if op.startswith("Numeric"):
        if not (_is_number(value) and _is_number(other)):
            return False
        a, b = float(value), float(other)
    else:  # Timestamp*
        ta, tb = _parse_ts(value), _parse_ts(other)
        if ta is None or tb is None:
            return False
        a, b = ta.timestamp(), tb.timestamp()
    suffix = op.removeprefix("Numeric").removeprefix("Timestamp")
    return {
        "Equals": a == b,
        "LessThan": a < b,
        "LessThanEquals": a <= b,
        "GreaterThan": a > b,
        "GreaterThanEquals": a >= b,
    }[suffix]


def _blocking_sleep(seconds: float) -> bool:
    time.sleep(seconds)
    return True


@dataclass
class HistoryEvent:
    timestamp: str
    type: str
    state: str | None = None
    detail: dict[str, Any] = field(default_factory=dict)


class Interpreter:
    """Runs one execution of a definition. `sleep(seconds)` returns False when the run must abort."""

    def __init__(
        self,
        definition: dict[str, Any] | str,
        invoke: TaskInvoker,
        sleep: Callable[[float], bool] | None = None,
        context: dict[str, Any] | None = None,
        on_event: Callable[[HistoryEvent], None] | None = None,
    ) -> None:
        self.definition: dict[str, Any] = json.loads(definition) if isinstance(definition, str) else definition
        validate(self.definition)
        self._invoke = invoke
        self._sleep = sleep or _blocking_sleep
        self.context: dict[str, Any] = context or {}
        self.history: list[HistoryEvent] = []
        self._on_event = on_event

    def _event(self, type_: str, state: str | None = None, **detail: Any) -> None:
        ev = HistoryEvent(datetime.now(UTC).isoformat(), type_, state, detail)
        self.history.append(ev)
        if self._on_event is not None:
            self._on_event(ev)

    def run(self, execution_input: Any) -> Any:
        """The execution's output; raises ExecutionFailed / ExecutionAborted."""
        self.context.setdefault("Execution", {}).setdefault("Input", execution_input)
        self._event("ExecutionStarted", input=execution_input)
        states = self.definition["States"]
        name: str = self.definition["StartAt"]
        data = execution_input
        while True:
            state = states[name]
            self.context["State"] = {"Name": name, "EnteredTime": datetime.now(UTC).isoformat(), "RetryCount": 0}
            self._event(f"{state['Type']}StateEntered", name, input=data)
            try:
                data, nxt = self._step(name, state, data)
            except StatesError as err:
                self._event("ExecutionFailed", name, error=err.error, cause=err.cause)
                raise ExecutionFailed(err.error, err.cause, name) from err
            except ExecutionAborted:
                self._event("ExecutionAborted", name)
                raise
            if nxt is None:
                self._event(f"{state['Type']}StateExited", name, output=data)
                if state["Type"] == "Fail":
                    self._event("ExecutionFailed", name, error=state.get("Error"), cause=state.get("Cause"))
                    raise ExecutionFailed(state.get("Error", "States.Fail"), state.get("Cause", ""), name)
                self._event("ExecutionSucceeded", output=data)
                return data
            self._event(f"{state['Type']}StateExited", name, output=data)
            name = nxt

    # -- path processing

    def _input_path(self, state: dict[str, Any], data: Any) -> Any:
        if "InputPath" in state and state["InputPath"] is None:
            return {}
        return get_path(data, state.get("InputPath", "$"))

    def _output_path(self, state: dict[str, Any], data: Any) -> Any:
        if "OutputPath" in state and state["OutputPath"] is None:
            return {}
        return get_path(data, state.get("OutputPath", "$"))

    def _result_path(self, state: dict[str, Any], raw_input: Any, result: Any) -> Any:
        if "ResultPath" in state and state["ResultPath"] is None:
            return raw_input
        return set_path(raw_input, state.get("ResultPath", "$"), result)

    def resolve_template(self, node: Any, data: Any) -> Any:
        """Parameters/ResultSelector: keys ending `.$` take the value at a path ($ or $$ context)."""
        if isinstance(node, dict):
            out: dict[str, Any] = {}
            for key, value in node.items():
                if key.endswith(".$"):
                    if value.startswith("$$"):
                        out[key[:-2]] = get_path(self.context, value[1:])
                    else:
                        out[key[:-2]] = get_path(data, value)
                else:
                    out[key] = self.resolve_template(value, data)
            return out
        if isinstance(node, list):
            return [self.resolve_template(item, data) for item in node]
        return node

    # -- states

    def _step(self, name: str, state: dict[str, Any], raw: Any) -> tuple[Any, str | None]:
        kind = state["Type"]
        nxt = None if state.get("End") else state.get("Next")
        if kind == "Succeed":
            return self._output_path(state, self._input_path(state, raw)), None
        if kind == "Fail":
            return raw, None
        if kind == "Pass":
            effective = self._input_path(state, raw)
            if "Parameters" in state:
                effective = self.resolve_template(state["Parameters"], effective)
            result = copy.deepcopy(state["Result"]) if "Result" in state else effective
            return self._output_path(state, self._result_path(state, raw, result)), nxt
        if kind == "Wait":
            effective = self._input_path(state, raw)
            self._wait(state, effective)
            return self._output_path(state, effective), nxt
        if kind == "Choice":
            effective = self._input_path(state, raw)
            for rule in state.get("Choices", []):
                if self._rule(rule, effective):
                    return self._output_path(state, effective), rule["Next"]
            if "Default" in state:
                return self._output_path(state, effective), state["Default"]
            raise StatesError("States.NoChoiceMatched", f"no choice rule matched in state {name!r}")
        if kind == "Task":
            return self._task(name, state, raw, nxt)
        raise UnsupportedAslError(f"state {name!r}: Type {kind!r}")

    def _wait(self, state: dict[str, Any], data: Any) -> None:
        if "Seconds" in state:
            seconds = float(state["Seconds"])
        elif "SecondsPath" in state:
            value = get_path(data, state["SecondsPath"])
            if not _is_number(value) or value < 0:
                raise StatesError("States.Runtime", f"SecondsPath {state['SecondsPath']!r} is not a number >= 0")
            seconds = float(value)
        else:
            raw_ts = state["Timestamp"] if "Timestamp" in state else get_path(data, state["TimestampPath"])
            ts = _parse_ts(raw_ts)
            if ts is None:
                raise StatesError("States.Runtime", f"invalid timestamp {raw_ts!r}")
            seconds = max(0.0, ts.timestamp() - time.time())
        if not self._sleep(seconds):
            raise ExecutionAborted()

    def _rule(self, rule: dict[str, Any], data: Any) -> bool:
        if "And" in rule:
            return all(self._rule(r, data) for r in rule["And"])
        if "Or" in rule:
            return any(self._rule(r, data) for r in rule["Or"])
        if "Not" in rule:
            return not self._rule(rule["Not"], data)
        variable = rule["Variable"]
        (op,) = set(rule) - {"Variable", "Next", "Comment"}
        value = get_path(data, variable, default=_ABSENT)
        if op == "IsPresent":
            return (value is not _ABSENT) == bool(rule[op])
        if value is _ABSENT:
            raise StatesError("States.Runtime", f"choice Variable {variable!r} not found in input")
        if op == "IsNull":
            return (value is None) == bool(rule[op])
        if op.endswith("Path"):
            return _compare(op.removesuffix("Path"), value, get_path(data, rule[op]))
        return _compare(op, value, rule[op])

    def _task(self, name: str, state: dict[str, Any], raw: Any, nxt: str | None) -> tuple[Any, str | None]:
        attempts: dict[int, int] = {}
        while True:
            try:
                effective = self._input_path(state, raw)
                params = self.resolve_template(state["Parameters"], effective) if "Parameters" in state else effective
                result = self._call(state["Resource"], params)
                if "ResultSelector" in state:
                    result = self.resolve_template(state["ResultSelector"], result)
                return self._output_path(state, self._result_path(state, raw, result)), nxt
            except StatesError as err:
                if err.error == "States.Runtime":
                    raise  # runtime errors are neither retried nor caught
                delay = self._retry_delay(state.get("Retry", []), err, attempts)
                if delay is not None:
                    self._event("TaskRetry", name, error=err.error, cause=err.cause, delay_s=delay)
                    self.context["State"]["RetryCount"] = sum(attempts.values())
                    if not self._sleep(delay):
                        raise ExecutionAborted() from err
                    continue
                for catcher in state.get("Catch", []):
                    if self._matches(catcher["ErrorEquals"], err.error):
                        self._event("TaskCaught", name, error=err.error, cause=err.cause, next=catcher["Next"])
                        error_output = {"Error": err.error, "Cause": err.cause}
                        caught_path = {"ResultPath": catcher["ResultPath"]} if "ResultPath" in catcher else {}
                        return self._result_path(caught_path, raw, error_output), catcher["Next"]
                raise

    @staticmethod
    def _matches(names: list[str], error: str) -> bool:
        if error in names:
            return True
        if "States.ALL" in names:
            return True
        # Every task error but a timeout is a States.TaskFailed.
        return "States.TaskFailed" in names and error != "States.Timeout"

    def _retry_delay(self, retriers: list[dict[str, Any]], err: StatesError, attempts: dict[int, int]) -> float | None:
        for i, retrier in enumerate(retriers):
            if not self._matches(retrier["ErrorEquals"], err.error):
                continue
            done = attempts.get(i, 0)
            if done >= int(retrier.get("MaxAttempts", 3)):
                return None  # the first matching retrier decides, even when exhausted
            attempts[i] = done + 1
            try:
                delay = float(retrier.get("IntervalSeconds", 1)) * float(retrier.get("BackoffRate", 2.0)) ** done
            except OverflowError:  # a long retrier (thousands of attempts): MaxDelaySeconds caps it below
                delay = float("inf")
            if "MaxDelaySeconds" in retrier:
                delay = min(delay, float(retrier["MaxDelaySeconds"]))
            return delay
        return None

    def _call(self, resource: str, params: Any) -> Any:
        if LAMBDA_INVOKE.match(resource):
            if not isinstance(params, dict) or "FunctionName" not in params:
                raise StatesError("States.Runtime", "lambda:invoke needs Parameters.FunctionName")
            payload = params.get("Payload", {})
            result = self._invoke_lambda(params["FunctionName"], payload)
            return {
                "ExecutedVersion": "$LATEST",
                "Payload": result,
                "SdkHttpMetadata": {"HttpStatusCode": 200},
                "SdkResponseMetadata": {},
                "StatusCode": 200,
            }
        return self._invoke_lambda(resource, params)

    def _invoke_lambda(self, function: str, payload: Any) -> Any:
        try:
            res = self._invoke(function, payload)
        except KeyError as exc:
            raise StatesError("Lambda.ResourceNotFoundException", str(exc)) from exc
        if res.ok:
            return res.payload
        # Step Functions' cause for a function error is the function's error JSON.
        cause = json.dumps(
            {"errorMessage": res.error_message, "errorType": res.error_type, "stackTrace": res.stack_trace}
        )
        raise StatesError(res.error_type or "States.TaskFailed", cause)


# ---------------------------------------------------------------- template-side definition


def definition_from_template(
    template: dict[str, Any], logical_id: str, physical: dict[str, str], arns: dict[str, str], region: str, account: str
) -> dict[str, Any]:
    """Resolve a state machine's DefinitionString from the template (Fn::Join/Ref/GetAtt/Sub).

    `physical`: logical id -> physical id; `arns`: logical id -> ARN (for Fn::GetAtt .Arn).
    """
    pseudo = {
        "AWS::Partition": "aws",
        "AWS::Region": region,
        "AWS::AccountId": account,
        "AWS::URLSuffix": "amazonaws.com",
    }

    def resolve(node: Any) -> Any:
        if isinstance(node, str):
            return node
        if isinstance(node, dict) and len(node) == 1:
            ((fn, arg),) = node.items()
            if fn == "Ref":
                return pseudo.get(arg) or physical[arg]
            if fn == "Fn::GetAtt":
                target, attr = arg if isinstance(arg, list) else arg.split(".", 1)
                if attr != "Arn":
                    raise UnsupportedAslError(f"Fn::GetAtt {target}.{attr} in a definition")
                return arns[target]
            if fn == "Fn::Join":
                sep, parts = arg
                return sep.join(resolve(p) for p in parts)
            if fn == "Fn::Sub" and isinstance(arg, str):
                return re.sub(
                    r"\$\{([^}]+)\}",
                    lambda m: (
                        pseudo.get(m.group(1))
                        or (arns[m.group(1).split(".")[0]] if m.group(1).endswith(".Arn") else physical[m.group(1)])
                    ),
                    arg,
                )
        raise UnsupportedAslError(f"cannot resolve {node!r} in a definition")

    props = template["Resources"][logical_id]["Properties"]
    if "DefinitionString" in props:
        result: dict[str, Any] = json.loads(resolve(props["DefinitionString"]))
        return result
    raise UnsupportedAslError(f"{logical_id}: only DefinitionString is supported")


# ---------------------------------------------------------------- executor


@dataclass
class ExecutionRecord:
    execution_arn: str
    name: str
    state_machine_arn: str
    input: Any
    status: str = "RUNNING"
    output: Any = None
    error: str | None = None
    cause: str | None = None
    started_at: str = field(default_factory=lambda: datetime.now(UTC).isoformat())
    stopped_at: str | None = None
    history: list[HistoryEvent] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {
            "executionArn": self.execution_arn,
            "name": self.name,
            "stateMachineArn": self.state_machine_arn,
            "status": self.status,
            "input": self.input,
            "output": self.output,
            "error": self.error,
            "cause": self.cause,
            "startedAt": self.started_at,
            "stoppedAt": self.stopped_at,
            "history": [ev.__dict__ for ev in self.history],
        }


MotoStatusHook = Callable[[ExecutionRecord], None]


class SfnExecutor:
    """Polls moto for RUNNING executions of the stack's state machines and runs each with the interpreter.

    `start_execution` from any client therefore starts a real run. The final status is written back
    into moto by `mark_in_moto` (in-process hook) so `describe_execution` reports SUCCEEDED/FAILED with
    output/error/cause; `result(arn)` has the same from the executor's own record.
    """

    def __init__(
        self,
        client: Callable[[str], Any],
        state_machine_arns: list[str],
        invoke: TaskInvoker,
        history_dir: Path,
        poll_interval_s: float = 0.25,
        mark_in_moto: MotoStatusHook | None = None,
    ) -> None:
        self._sfn = client("stepfunctions")
        self.state_machine_arns = list(state_machine_arns)
        self._invoke = invoke
        self.history_dir = history_dir
        self._poll_interval = poll_interval_s
        self._mark = mark_in_moto
        self._stop = threading.Event()
        self._records: dict[str, ExecutionRecord] = {}
        self._threads: dict[str, threading.Thread] = {}
        self._definitions: dict[str, dict[str, Any]] = {}
        self._lock = threading.Lock()
        self._done = threading.Condition(self._lock)
        self._poller: threading.Thread | None = None

    def load_definitions(self) -> dict[str, dict[str, Any]]:
        """Read (and validate) each definition as moto resolved it from the template."""
        for arn in self.state_machine_arns:
            definition = json.loads(self._sfn.describe_state_machine(stateMachineArn=arn)["definition"])
            validate(definition)
            self._definitions[arn] = definition
        return self._definitions

    def start(self) -> None:
        if not self._definitions:
            self.load_definitions()
        self._poller = threading.Thread(target=self._poll, daemon=True, name="sfn-executor")
        self._poller.start()

    def stop(self, timeout: float = 10.0) -> None:
        self._stop.set()  # interrupts Wait states and retry back-offs
        if self._poller is not None:
            self._poller.join(timeout)
        for thread in list(self._threads.values()):
            thread.join(timeout)

    def _poll(self) -> None:
        while not self._stop.is_set():
            for arn in self.state_machine_arns:
                try:
                    self._poll_machine(arn)
                except Exception:
                    log.exception("polling executions of %s failed", arn)
            self._stop.wait(self._poll_interval)

    def _poll_machine(self, machine_arn: str) -> None:
        for page in self._sfn.get_paginator("list_executions").paginate(
            stateMachineArn=machine_arn, statusFilter="RUNNING"
        ):
            for ex in page["executions"]:
                arn = ex["executionArn"]
                with self._lock:
                    if arn in self._records:
                        continue
                desc = self._sfn.describe_execution(executionArn=arn)
                record = ExecutionRecord(arn, desc["name"], machine_arn, json.loads(desc.get("input") or "{}"))
                with self._lock:
                    self._records[arn] = record
                thread = threading.Thread(target=self._run, args=(record,), daemon=True, name=f"sfn-{record.name}")
                self._threads[arn] = thread
                thread.start()

    def _sleep_until_stopped(self, record: ExecutionRecord) -> Callable[[float], bool]:
        def sleep(seconds: float) -> bool:
            deadline = time.monotonic() + seconds
            while True:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return not self._stop.is_set() and not self._aborted(record)
                if self._stop.wait(min(remaining, 1.0)) or self._aborted(record):
                    return False

        return sleep

    def _aborted(self, record: ExecutionRecord) -> bool:
        # StopExecution through the API (moto marks it ABORTED) ends the local run at the next wait.
        try:
            status: str = self._sfn.describe_execution(executionArn=record.execution_arn)["status"]
        except Exception:
            return False
        return status == "ABORTED"

    def _run(self, record: ExecutionRecord) -> None:
        definition = self._definitions[record.state_machine_arn]
        context = {
            "Execution": {
                "Id": record.execution_arn,
                "Name": record.name,
                "Input": record.input,
                "StartTime": record.started_at,
            },
            "StateMachine": {"Id": record.state_machine_arn, "Name": record.state_machine_arn.rsplit(":", 1)[-1]},
        }

        def on_event(ev: HistoryEvent) -> None:
            record.history.append(ev)
            self._write(record)

        interp = Interpreter(
            definition, self._invoke, sleep=self._sleep_until_stopped(record), context=context, on_event=on_event
        )
        try:
            record.output = interp.run(record.input)
            record.status = "SUCCEEDED"
        except ExecutionFailed as exc:
            record.status, record.error, record.cause = "FAILED", exc.error, exc.cause
        except ExecutionAborted:
            record.status = "ABORTED"
        except Exception as exc:  # an executor bug must still end the execution visibly
            log.exception("execution %s crashed", record.name)
            record.status, record.error, record.cause = "FAILED", "LocalExecutor.Error", repr(exc)
        record.stopped_at = datetime.now(UTC).isoformat()
        self._write(record)
        if self._mark is not None and record.status != "ABORTED":
            try:
                self._mark(record)
            except Exception:
                log.exception("could not record %s's status in moto", record.name)
        log.info("execution %s %s", record.name, record.status)
        with self._done:
            self._done.notify_all()

    def _write(self, record: ExecutionRecord) -> None:
        self.history_dir.mkdir(parents=True, exist_ok=True)
        path = self.history_dir / f"{record.name}.json"
        tmp = path.with_suffix(".json.part")
        tmp.write_text(json.dumps(record.to_json(), indent=1, default=str))
        tmp.replace(path)

    def result(self, execution_arn: str) -> ExecutionRecord | None:
        with self._lock:
            return self._records.get(execution_arn)

    def wait(self, execution_arn: str, timeout: float = 60.0) -> ExecutionRecord:
        """Block until the execution has ended; the record (status, output, error, cause, history)."""
        deadline = time.monotonic() + timeout
        with self._done:
            while True:
                record = self._records.get(execution_arn)
                if record is not None and record.status != "RUNNING":
                    return record
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise TimeoutError(f"execution {execution_arn} still {record.status if record else 'unseen'}")
                self._done.wait(min(remaining, 0.5))


def moto_status_hook(account: str, region: str) -> MotoStatusHook:
    """Write the final status into the in-process moto backend (its API has no call for that)."""

    def mark(record: ExecutionRecord) -> None:
        from moto.stepfunctions.models import stepfunctions_backends

        execution: Any = stepfunctions_backends[account][region].describe_execution(record.execution_arn)
        execution.status = record.status
        execution.stop_date = datetime.now(UTC)
        if record.status == "SUCCEEDED":
            execution.output = json.dumps(record.output)
            execution.output_details = {"truncated": False}
        else:
            execution.error = record.error
            execution.cause = record.cause

    return mark
