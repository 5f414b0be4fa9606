"""The SQS event-source poller (aws_emulation/esm.py) against a real moto server: what it costs per
batch and when idle, and what it deletes. The function it invokes is a plain recorder here (the
Lambda runtime has its own tests, tests/integration/test_local_runtime.py): these tests are about
the poller's SQS calls, counted as botocore sends them to the server."""

from __future__ import annotations

import json
import threading
import time
from collections import Counter
from collections.abc import Iterator
from typing import Any

import pytest

from aws_emulation.esm import MappingConfig, SqsPoller
from aws_emulation.runtime import InvokeResult
from lfr_cli.local.server import REGION, MotoServer, make_client


@pytest.fixture
def server() -> Iterator[MotoServer]:
    with MotoServer() as s:
        yield s


def _counted(client: Any) -> Counter[str]:
    """Every API call the client makes, by operation name (botocore's own event, sent to the server)."""
    calls: Counter[str] = Counter()

    def count(model: Any, **_: Any) -> None:
        calls[model.name] += 1

    client.meta.events.register("before-call.sqs.*", count)
    return calls


def _mapping(queue_arn: str, batch_size: int = 5) -> MappingConfig:
    return MappingConfig(
        uuid="00000000-test", event_source_arn=queue_arn,
        function_arn="arn:aws:lambda:eu-west-2:123456789012:function:f",
        batch_size=batch_size, report_batch_item_failures=True, batching_window_s=0, enabled=True,
    )


def _queue(server: MotoServer, name: str) -> tuple[str, str]:
    sqs = server.client("sqs")
    url = sqs.create_queue(QueueName=name, Attributes={"VisibilityTimeout": "30"})["QueueUrl"]
    arn = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    return url, arn


def test_an_idle_poller_long_polls_instead_of_spinning(server: MotoServer) -> None:
    _, arn = _queue(server, "idle")
    client = make_client("sqs", server.endpoint)
    calls = _counted(client)
    invoked: list[Any] = []

    def invoke(fn: str, event: Any) -> InvokeResult:
        invoked.append(event)
        return InvokeResult()

    poller = SqsPoller(_mapping(arn), client, invoke, REGION, 2)
    calls.clear()  # GetQueueUrl at construction
    poller.start()
    time.sleep(3.0)
    poller.stop()
    # Each of the 2 threads waits up to 1 s per receive on the server (WaitTimeSeconds=1): at most
    # one receive per thread per second (plus the one in flight at stop), not hundreds.
    assert 2 <= calls["ReceiveMessage"] <= 2 * (3 + 1)
    assert invoked == [] and calls["DeleteMessageBatch"] == 0 and calls["DeleteMessage"] == 0


def test_a_batch_costs_one_receive_and_one_batch_delete_and_keeps_only_the_failed(server: MotoServer) -> None:
    url, arn = _queue(server, "work")
    sqs = server.client("sqs")
    ids = [sqs.send_message(QueueUrl=url, MessageBody=json.dumps({"i": i}))["MessageId"] for i in range(5)]
    failed = ids[2]
    client = make_client("sqs", server.endpoint)
    calls = _counted(client)
    events: list[dict[str, Any]] = []

    def invoke(fn: str, event: dict[str, Any]) -> InvokeResult:
        events.append(event)
        return InvokeResult(payload={"batchItemFailures": [{"itemIdentifier": failed}]})

    poller = SqsPoller(_mapping(arn), client, invoke, REGION, 1)
    calls.clear()
    assert poller.poll_once() == 5
    assert [r["messageId"] for r in events[0]["Records"]] == ids
    assert calls == Counter({"ReceiveMessage": 1, "DeleteMessageBatch": 1})
    attrs = sqs.get_queue_attributes(
        QueueUrl=url, AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"]
    )["Attributes"]
    # Only the failed record is left (in flight until its visibility timeout), the rest deleted.
    assert (attrs["ApproximateNumberOfMessages"], attrs["ApproximateNumberOfMessagesNotVisible"]) == ("0", "1")
    sqs.change_message_visibility_batch(QueueUrl=url, Entries=[
        {"Id": "0", "ReceiptHandle": events[0]["Records"][2]["receiptHandle"], "VisibilityTimeout": 0}])
    again = sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10, WaitTimeSeconds=1)["Messages"]
    assert [m["MessageId"] for m in again] == [failed]


def test_an_invocation_error_deletes_nothing(server: MotoServer) -> None:
    url, arn = _queue(server, "crash")
    sqs = server.client("sqs")
    for i in range(3):
        sqs.send_message(QueueUrl=url, MessageBody=str(i))
    client = make_client("sqs", server.endpoint)
    calls = _counted(client)
    poller = SqsPoller(_mapping(arn), client, lambda fn, ev: InvokeResult(error_type="Sandbox.Timedout"), REGION, 1)
    calls.clear()
    assert poller.poll_once() == 3
    assert calls == Counter({"ReceiveMessage": 1})
    attrs = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["ApproximateNumberOfMessagesNotVisible"])
    assert attrs["Attributes"]["ApproximateNumberOfMessagesNotVisible"] == "3"


def test_concurrent_pollers_drain_a_backlog_in_full_batches(server: MotoServer) -> None:
    url, arn = _queue(server, "backlog")
    sqs = server.client("sqs")
    for start in range(0, 40, 10):
        sqs.send_message_batch(QueueUrl=url, Entries=[{"Id": str(i), "MessageBody": str(start + i)} for i in range(10)])
    seen: Counter[str] = Counter()
    lock = threading.Lock()

    def invoke(fn: str, event: dict[str, Any]) -> InvokeResult:
        with lock:
            seen.update(r["body"] for r in event["Records"])
        return InvokeResult(payload={"batchItemFailures": []})

    poller = SqsPoller(_mapping(arn), make_client("sqs", server.endpoint), invoke, REGION, 2)
    poller.start()
    deadline = time.monotonic() + 20
    while len(seen) < 40 and time.monotonic() < deadline:
        time.sleep(0.1)
    poller.stop()
    assert set(seen) == {str(i) for i in range(40)}
    assert poller.failed_invocations == 0 and poller.batches <= 10  # batches of 5 while the backlog lasts
    attrs = sqs.get_queue_attributes(
        QueueUrl=url, AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"]
    )["Attributes"]
    assert attrs == {"ApproximateNumberOfMessages": "0", "ApproximateNumberOfMessagesNotVisible": "0"}
