"""The embedded stack end to end: a small CDK stack of the test's own, deployed through moto's
CloudFormation, run by the local Lambda runtime, the SQS poller and the ASL executor."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from lfr_cli.local.sfn import definition_from_template
from lfr_cli.local.stack import LocalStack
from tests.integration.local_fixture_stack import STACK_NAME, synth

pytestmark = pytest.mark.integration
REPO = Path(__file__).resolve().parents[2]


def _eventually(check: Callable[[], Any], timeout: float = 30.0, every: float = 0.25) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value or time.monotonic() > deadline:
            return value
        time.sleep(every)


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalStack]:
    run_dir = tmp_path_factory.mktemp("local")
    with LocalStack(STACK_NAME, run_dir=run_dir, synth_fn=synth) as s:
        yield s


def _records_logged(stack: LocalStack, function: str) -> list[dict[str, Any]]:
    path = stack.runtime.log_path(function)
    if not path.exists():
        return []
    return [json.loads(line[len("RECORD ") :]) for line in path.read_text().splitlines() if line.startswith("RECORD ")]


def test_deploy_reports_outputs_resources_and_timings(stack: LocalStack) -> None:
    deployed = stack.deployed
    assert deployed is not None
    assert {"QueueUrl", "DlqUrl", "FunctionName", "StateMachineArn"} <= set(stack.outputs)
    assert len(deployed.of_type("AWS::Lambda::Function")) == 1
    assert deployed.timings["total_s"] > 0
    assert stack.endpoint.startswith("http://127.0.0.1:")


def test_function_config_comes_from_the_template(stack: LocalStack) -> None:
    (fn,) = stack.runtime.functions.values()
    assert fn.handler == "fixture_handler.handler"
    assert fn.timeout_s == 3
    assert fn.environment["FIXTURE_TABLE"].startswith(f"{STACK_NAME}-Table")
    env = stack.runtime.env_for(fn)
    assert env["MODEL_DIR"] == str(REPO / "build" / "models")  # overridden for local runs
    assert env["AWS_ENDPOINT_URL"] == stack.endpoint
    assert env["AWS_ACCESS_KEY_ID"] == "testing"


def test_invoke_warm_start_error_and_timeout(stack: LocalStack) -> None:
    name = stack.outputs["FunctionName"]
    first = stack.runtime.invoke(name, {"a": 1})
    second = stack.runtime.invoke(stack.runtime.resolve(name).arn, {"a": 2})
    assert first.ok and second.ok, (first, second)
    assert second.payload["pid"] == first.payload["pid"]  # same container
    assert second.payload["count"] == first.payload["count"] + 1  # module state survived
    assert not second.cold_start
    assert second.payload["function_name"] == name
    assert 0 < second.payload["remaining_ms"] <= 3000

    err = stack.runtime.invoke(name, {"fail": "boom"})
    assert (err.error_type, err.error_message) == ("FixtureError", "boom")

    timed_out = stack.runtime.invoke(name, {"sleep_s": 10})
    assert timed_out.error_type == "Sandbox.Timedout"
    after = stack.runtime.invoke(name, {"a": 3})
    assert after.ok and after.cold_start and after.payload["pid"] != first.payload["pid"]

    log = stack.runtime.log_path(name).read_text()
    assert "COLD_START" in log and "fixture invoked" in log  # the handler's stdout went to the log


def test_sqs_event_shape_and_partial_batch_failure(stack: LocalStack) -> None:
    sqs = stack.client("sqs")
    queue, dlq = stack.outputs["QueueUrl"], stack.outputs["DlqUrl"]
    name = stack.outputs["FunctionName"]
    good = sqs.send_message(
        QueueUrl=queue,
        MessageBody=json.dumps({"ok": 1}),
        MessageAttributes={"deployment_id": {"DataType": "String", "StringValue": "d1"}},
    )["MessageId"]
    also_good = sqs.send_message(QueueUrl=queue, MessageBody=json.dumps({"ok": 2}))["MessageId"]
    bad = sqs.send_message(QueueUrl=queue, MessageBody=json.dumps({"fail": True}))["MessageId"]

    def seen() -> dict[str, dict[str, Any]]:
        recs = {r["messageId"]: r for r in _records_logged(stack, name)}
        return recs if {good, also_good, bad} <= set(recs) else {}

    records = _eventually(seen)
    assert records, "the poller never delivered the messages"
    record = records[good]
    queue_arn = sqs.get_queue_attributes(QueueUrl=queue, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    assert record["eventSource"] == "aws:sqs"
    assert record["eventSourceARN"] == queue_arn
    assert record["awsRegion"] == "eu-west-2"
    assert json.loads(record["body"]) == {"ok": 1}
    assert record["receiptHandle"] and len(record["md5OfBody"]) == 32
    assert {"ApproximateReceiveCount", "SentTimestamp", "SenderId", "ApproximateFirstReceiveTimestamp"} <= set(
        record["attributes"]
    )
    assert record["messageAttributes"]["deployment_id"]["stringValue"] == "d1"
    assert record["messageAttributes"]["deployment_id"]["dataType"] == "String"

    # The reported failure stays (in flight or redelivered); the two good ones are gone for good.
    def counts() -> tuple[int, int]:
        attrs = sqs.get_queue_attributes(QueueUrl=queue, AttributeNames=["All"])["Attributes"]
        return int(attrs["ApproximateNumberOfMessages"]), int(attrs["ApproximateNumberOfMessagesNotVisible"])

    assert sum(counts()) <= 1  # 3 sent: only the failed one can still be on the queue

    # maxReceiveCount 2: after two failed deliveries moto's redrive moves it to the DLQ.
    def in_dlq() -> list[dict[str, Any]]:
        msgs: list[dict[str, Any]] = sqs.receive_message(QueueUrl=dlq, WaitTimeSeconds=1).get("Messages", [])
        return msgs

    moved = _eventually(in_dlq, timeout=30)
    assert [m["MessageId"] for m in moved] == [bad]
    assert [r for r in _records_logged(stack, name) if r["messageId"] == bad][-1]["attributes"][
        "ApproximateReceiveCount"
    ] == "2"
    assert sum(counts()) == 0
    delivered_good = [r for r in _records_logged(stack, name) if r["messageId"] in (good, also_good)]
    assert len(delivered_good) == 2  # deleted after the first delivery, never redelivered


def test_state_machine_runs_to_succeed_with_handler_output(stack: LocalStack) -> None:
    sfn = stack.client("stepfunctions")
    machine = stack.outputs["StateMachineArn"]
    arn = sfn.start_execution(stateMachineArn=machine, input=json.dumps({"deployment_id": "d1"}))["executionArn"]
    record = stack.executor.wait(arn, timeout=30)
    assert record.status == "SUCCEEDED", (record.error, record.cause)
    out = record.output
    assert out["deployment_id"] == "d1"
    assert out["first"]["out"]["echo"] == {"step": "first", "input": {"deployment_id": "d1"}}
    assert out["first"]["out"]["count"] >= 1
    # The status is visible to any client, and the history is on disk.
    desc = sfn.describe_execution(executionArn=arn)
    assert desc["status"] == "SUCCEEDED" and json.loads(desc["output"]) == out
    history = json.loads((stack.run_dir / "executions" / f"{record.name}.json").read_text())
    entered = [e["state"] for e in history["history"] if e["type"].endswith("StateEntered")]
    assert entered == ["First", "IsCounted", "Done"]


def test_template_definition_matches_what_moto_resolved(stack: LocalStack) -> None:
    deployed = stack.deployed
    assert deployed is not None
    (sm,) = deployed.of_type("AWS::StepFunctions::StateMachine")
    physical = {r.logical_id: r.physical_id for r in deployed.resources}
    arns = {fn.logical_id: fn.arn for fn in stack.runtime.functions.values()}
    from_template = definition_from_template(
        deployed.template, sm.logical_id, physical, arns, "eu-west-2", "123456789012"
    )
    from_moto = json.loads(
        stack.client("stepfunctions").describe_state_machine(stateMachineArn=sm.physical_id)["definition"]
    )
    assert from_template == from_moto


def test_one_function_is_served_by_several_workers_at_once(stack: LocalStack) -> None:
    """Like Lambda's concurrency: a second invocation while the first runs gets its own container."""
    from concurrent.futures import ThreadPoolExecutor

    name = stack.outputs["FunctionName"]
    fn = stack.runtime.resolve(name)
    assert fn.reserved_concurrency is None and fn.max_workers >= 1
    if fn.max_workers < 2:
        pytest.skip("one core: the cap is one container")
    t0 = time.monotonic()
    with ThreadPoolExecutor(2) as pool:
        results = list(pool.map(lambda i: stack.runtime.invoke(name, {"sleep_s": 1.5, "i": i}), range(2)))
    elapsed = time.monotonic() - t0
    assert all(r.ok for r in results), results
    assert len({r.payload["pid"] for r in results}) == 2  # two containers
    assert elapsed < 2 * 1.5 + 1.0  # concurrently (a cold start may add to one of them)
    assert sum(1 for w in stack.runtime.workers(name) if w.pid) >= 2
    # The SQS mapping polls with as many threads as the function has containers.
    (poller,) = stack.pollers.pollers  # type: ignore[union-attr]
    assert poller.concurrency == fn.max_workers
