"""The embedded stack end to end: a small CDK stack of the test's own, deployed by the real CDK CLI
(`cdk bootstrap`, `cdk deploy`) into moto, run by the local Lambda runtime, the SQS poller and
moto's own Step Functions engine."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from lfr_cli.local.deploy import assets_bucket
from lfr_cli.local.stack import EmbeddedStack
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
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedStack]:
    run_dir = tmp_path_factory.mktemp("local")
    with EmbeddedStack(STACK_NAME, run_dir=run_dir, synth_fn=synth) as s:
        yield s


def _records_logged(stack: EmbeddedStack, function: str) -> list[dict[str, Any]]:
    path = stack.runtime.log_path(function)
    if not path.exists():
        return []
    return [json.loads(line[len("RECORD ") :]) for line in path.read_text().splitlines() if line.startswith("RECORD ")]


def test_deploy_reports_outputs_resources_and_timings(stack: EmbeddedStack) -> None:
    deployed = stack.deployed
    assert deployed is not None
    assert {"QueueUrl", "DlqUrl", "FunctionName", "StateMachineArn"} <= set(stack.outputs)
    assert len(deployed.of_type("AWS::Lambda::Function")) == 1
    assert deployed.timings["total_s"] > 0
    # Deployed by the CLI: the bootstrap stack exists and the stack's assets are in its bucket.
    cfn, s3 = stack.client("cloudformation"), stack.client("s3")
    assert cfn.describe_stacks(StackName="CDKToolkit")["Stacks"][0]["StackStatus"] == "CREATE_COMPLETE"
    bucket = assets_bucket()
    keys = {o["Key"] for o in s3.list_objects_v2(Bucket=bucket).get("Contents", [])}
    assert set(deployed.asset_sources) <= keys and any(k.endswith(".zip") for k in deployed.asset_sources)
    assert "cdk deploy" in (stack.run_dir / "deploy" / "cdk.log").read_text()
    assert stack.endpoint.startswith("http://127.0.0.1:")


def test_function_config_comes_from_the_template(stack: EmbeddedStack) -> None:
    (fn,) = stack.runtime.functions.values()
    assert fn.handler == "fixture_handler.handler"
    assert fn.timeout_s == 3
    assert fn.environment["FIXTURE_TABLE"].startswith(f"{STACK_NAME}-Table")
    env = stack.runtime.env_for(fn)
    assert env["MODEL_DIR"] == str(REPO / "build" / "models")  # overridden for local runs
    assert env["AWS_ENDPOINT_URL"] == stack.endpoint
    assert env["AWS_ACCESS_KEY_ID"] == "testing"


def test_invoke_warm_start_error_and_timeout(stack: EmbeddedStack) -> None:
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


def test_sqs_event_shape_and_partial_batch_failure(stack: EmbeddedStack) -> None:
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

    # 3 sent: only the failed one can still be on the queue. The records are logged during the
    # invocation and the poller deletes the successes after it returns, so wait for that delete.
    assert _eventually(lambda: sum(counts()) <= 1, timeout=10), f"the successes were not deleted: {counts()}"

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


def _history(stack: EmbeddedStack, execution_arn: str) -> list[dict[str, Any]]:
    sfn = stack.client("stepfunctions")
    events: list[dict[str, Any]] = sfn.get_execution_history(executionArn=execution_arn, maxResults=1000)["events"]
    return events


def _entered(events: list[dict[str, Any]]) -> list[str]:
    return [e["stateEnteredEventDetails"]["name"] for e in events if e["type"].endswith("StateEntered")]


def _start(stack: EmbeddedStack, payload: dict[str, Any]) -> str:
    # Named, as lfr's admin names each session's execution (moto's engine needs a name: unnamed
    # executions all get the ARN suffix "None").
    sfn = stack.client("stepfunctions")
    arn: str = sfn.start_execution(
        stateMachineArn=stack.outputs["StateMachineArn"], name=payload["deployment_id"], input=json.dumps(payload)
    )["executionArn"]
    return arn


def test_state_machine_runs_on_motos_engine_with_handler_output(stack: EmbeddedStack) -> None:
    # The machine moto's engine runs is the one CloudFormation created (same ARN).
    assert stack.state_machine_arns == [stack.outputs["StateMachineArn"]]
    arn = _start(stack, {"deployment_id": "d1"})
    desc = stack.wait_execution(arn, timeout_s=30)
    assert desc["status"] == "SUCCEEDED", (desc.get("error"), desc.get("cause"))
    out = json.loads(desc["output"])
    assert out["deployment_id"] == "d1"
    # The task's Lambda invoke ran the handler in the local runtime's worker (its module state counts).
    assert out["first"]["out"]["echo"] == {"step": "first", "input": {"deployment_id": "d1"}}
    assert out["first"]["out"]["count"] >= 1
    assert out["first"]["out"]["pid"] == stack.runtime.invoke(stack.outputs["FunctionName"], {}).payload["pid"]
    assert _entered(_history(stack, arn)) == ["First", "IsCounted", "Done"]


def test_retry_backs_off_capped_by_max_delay_then_succeeds(stack: EmbeddedStack) -> None:
    arn = _start(stack, {"deployment_id": "d2", "flaky": 2, "key": "retry-1"})
    desc = stack.wait_execution(arn, timeout_s=60)
    assert desc["status"] == "SUCCEEDED", (desc.get("error"), desc.get("cause"))
    events = _history(stack, arn)
    failed = [e for e in events if e["type"] == "TaskFailed"]
    scheduled = [e for e in events if e["type"] == "TaskScheduled"]
    assert [e["taskFailedEventDetails"]["error"] for e in failed] == ["FlakyError", "FlakyError"]
    assert len(scheduled) == 3
    # Waits between a failure and the next attempt: IntervalSeconds 1, then 1 * BackoffRate 3 = 3
    # capped by MaxDelaySeconds to 2.
    gaps = [(s["timestamp"] - f["timestamp"]).total_seconds() for f, s in zip(failed, scheduled[1:], strict=True)]
    assert 0.9 <= gaps[0] < 1.9, gaps
    assert 1.9 <= gaps[1] < 2.9, gaps


def test_retry_exhausted_fails_and_catch_takes_a_function_error(stack: EmbeddedStack) -> None:
    exhausted = stack.wait_execution(_start(stack, {"deployment_id": "d3", "flaky": 5, "key": "retry-2"}), 60)
    assert exhausted["status"] == "FAILED"
    assert exhausted["error"] == "FlakyError" and "attempt 4 of retry-2" in exhausted["cause"]

    caught_arn = _start(stack, {"deployment_id": "d4", "fail": "boom"})
    caught = stack.wait_execution(caught_arn, timeout_s=30)
    assert caught["status"] == "SUCCEEDED"
    out = json.loads(caught["output"])
    # The Catch's ResultPath holds the function's errorType and its error payload.
    assert out["error"]["Error"] == "FixtureError"
    assert json.loads(out["error"]["Cause"])["errorMessage"] == "boom"
    assert _entered(_history(stack, caught_arn)) == ["First", "Recovered"]


def test_one_function_is_served_by_several_workers_at_once(stack: EmbeddedStack) -> None:
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
