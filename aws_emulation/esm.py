"""SQS event-source mapping pollers: what the Lambda service does for an SQS trigger, locally.

Semantics kept from Lambda: success deletes the batch; with ReportBatchItemFailures, only the listed
items stay; an invocation error (a raised exception, a timeout, a crashed runtime) deletes nothing, so
every message of the batch comes back after the queue's visibility timeout with its receive count
grown, and the queue's RedrivePolicy (applied by moto on receive) moves it to the DLQ after
maxReceiveCount receives. Like Lambda's SQS pollers, nothing here splits a failed batch: isolating a
record that crashes its invocation is the function's own job (functions/logic/match.py).

Concurrency: a mapping runs as many poller threads as the function may have concurrent invocations
(its container cap, and the mapping's ScalingConfig.MaximumConcurrency if set), each receiving a
batch and invoking synchronously, so batches are processed in parallel as Lambda's would be.
"""

from __future__ import annotations

import hashlib
import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from aws_emulation.runtime import InvokeResult

log = logging.getLogger(__name__)
_TRACKED = 10_000

Invoker = Callable[[str, Any], InvokeResult]


@dataclass
class MappingConfig:
    uuid: str
    event_source_arn: str
    function_arn: str
    batch_size: int
    report_batch_item_failures: bool
    batching_window_s: int
    enabled: bool
    maximum_concurrency: int | None = None  # ScalingConfig.MaximumConcurrency


def queue_url_from_arn(arn: str, sqs: Any) -> str:
    _, _, _, _, account, name = arn.split(":", 5)
    url: str = sqs.get_queue_url(QueueName=name, QueueOwnerAWSAccountId=account)["QueueUrl"]
    return url


def discover_mappings(lam: Any, function_arns: set[str] | None = None) -> list[MappingConfig]:
    """SQS mappings from moto (optionally only those of the given functions)."""
    mappings: list[MappingConfig] = []
    for page in lam.get_paginator("list_event_source_mappings").paginate():
        for m in page["EventSourceMappings"]:
            if ":sqs:" not in m.get("EventSourceArn", ""):
                continue
            if function_arns is not None and m["FunctionArn"] not in function_arns:
                continue
            mappings.append(
                MappingConfig(
                    uuid=m["UUID"],
                    event_source_arn=m["EventSourceArn"],
                    function_arn=m["FunctionArn"],
                    batch_size=int(m.get("BatchSize", 10)),
                    report_batch_item_failures="ReportBatchItemFailures" in m.get("FunctionResponseTypes", []),
                    batching_window_s=int(m.get("MaximumBatchingWindowInSeconds", 0) or 0),
                    enabled=m.get("State", "Enabled") in ("Enabled", "Enabling"),
                    maximum_concurrency=(m.get("ScalingConfig") or {}).get("MaximumConcurrency"),
                )
            )
    return mappings


def _message_attributes(attrs: dict[str, Any]) -> dict[str, Any]:
    """SQS API shape -> Lambda event shape (camelCase keys, list fields always present)."""
    out: dict[str, Any] = {}
    for name, value in attrs.items():
        out[name] = {
            "stringValue": value.get("StringValue"),
            "binaryValue": value.get("BinaryValue"),
            "stringListValues": value.get("StringListValues", []),
            "binaryListValues": value.get("BinaryListValues", []),
            "dataType": value["DataType"],
        }
        if out[name]["binaryValue"] is None:
            del out[name]["binaryValue"]
        if out[name]["stringValue"] is None:
            del out[name]["stringValue"]
    return out


def sqs_record(message: dict[str, Any], queue_arn: str, region: str) -> dict[str, Any]:
    attributes = message.get("Attributes", {})
    keep = (
        "ApproximateReceiveCount",
        "SentTimestamp",
        "SenderId",
        "ApproximateFirstReceiveTimestamp",
        "MessageGroupId",
        "MessageDeduplicationId",
        "SequenceNumber",
        "AWSTraceHeader",
    )
    body = message["Body"]
    return {
        "messageId": message["MessageId"],
        "receiptHandle": message["ReceiptHandle"],
        "body": body,
        "attributes": {k: attributes[k] for k in keep if k in attributes},
        "messageAttributes": _message_attributes(message.get("MessageAttributes", {})),
        "md5OfBody": message.get("MD5OfBody") or hashlib.md5(body.encode()).hexdigest(),
        "eventSource": "aws:sqs",
        "eventSourceARN": queue_arn,
        "awsRegion": region,
    }


class SqsPoller:
    """`concurrency` threads per mapping; `stop()` returns within about one long-poll (1 s)."""

    def __init__(
        self, mapping: MappingConfig, sqs: Any, invoke: Invoker, region: str, concurrency: int = 1
    ) -> None:
        self.mapping = mapping
        self._sqs = sqs
        self._invoke = invoke
        self._region = region
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self.concurrency = max(1, min(concurrency, mapping.maximum_concurrency or concurrency))
        self.queue_url = queue_url_from_arn(mapping.event_source_arn, sqs)
        self._counts = threading.Lock()
        self.batches = 0
        self.records_delivered = 0  # every record handed to an invocation, retries included
        self.failed_invocations = 0
        # Seconds between a message's deliveries (how soon a failed record was retried), for the
        # last `_TRACKED` message ids: what the fault-injection tests assert on.
        self._last_delivery: OrderedDict[str, float] = OrderedDict()
        self.redelivery_gaps_s: list[float] = []
        self.last_error: str | None = None

    def start(self) -> None:
        for i in range(self.concurrency):
            t = threading.Thread(target=self._run, daemon=True, name=f"esm-{self.mapping.uuid[:8]}-{i}")
            t.start()
            self._threads.append(t)

    def stop(self, timeout: float = 10.0) -> None:
        self._stop.set()
        for t in self._threads:
            t.join(timeout)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.poll_once()
            except Exception as exc:  # keep polling like the service does; record why
                self.last_error = repr(exc)
                log.exception("ESM %s poll failed", self.mapping.uuid)
                self._stop.wait(1.0)

    def _receive(self) -> list[dict[str, Any]]:
        batch_size = self.mapping.batch_size
        messages: list[dict[str, Any]] = []
        # Batching window: keep collecting until the batch is full or the window closes.
        window_end = time.monotonic() + self.mapping.batching_window_s
        while len(messages) < batch_size and not self._stop.is_set():
            resp = self._sqs.receive_message(
                QueueUrl=self.queue_url,
                MaxNumberOfMessages=min(10, batch_size - len(messages)),
                WaitTimeSeconds=1,
                AttributeNames=["All"],
                MessageAttributeNames=["All"],
            )
            messages.extend(resp.get("Messages", []))
            if not messages or time.monotonic() >= window_end:
                break
        return messages

    def poll_once(self) -> int:
        """Receive one batch, invoke, delete per the outcome. Returns the batch size (0: queue empty)."""
        if not self.mapping.enabled:
            self._stop.wait(1.0)
            return 0
        messages = self._receive()
        if not messages:
            return 0
        records = [sqs_record(m, self.mapping.event_source_arn, self._region) for m in messages]
        self._note_deliveries([m["MessageId"] for m in messages])
        result = self._invoke(self.mapping.function_arn, {"Records": records})
        with self._counts:
            self.batches += 1
            self.records_delivered += len(records)
            self.failed_invocations += 0 if result.ok else 1
        if not result.ok:
            # Whole batch failed: leave every message for redelivery (and the DLQ after maxReceiveCount).
            log.warning(
                "ESM %s: %s failed (%s: %s); %d message(s) left on the queue",
                self.mapping.uuid,
                self.mapping.function_arn,
                result.error_type,
                result.error_message,
                len(messages),
            )
            return len(messages)
        keep = self._failed_ids(result.payload, {m["MessageId"] for m in messages})
        to_delete = [m for m in messages if m["MessageId"] not in keep]
        for start in range(0, len(to_delete), 10):
            chunk = to_delete[start : start + 10]
            self._sqs.delete_message_batch(
                QueueUrl=self.queue_url,
                Entries=[{"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]} for i, m in enumerate(chunk)],
            )
        return len(messages)

    def _note_deliveries(self, ids: list[str]) -> None:
        now = time.monotonic()
        with self._counts:
            for i in ids:
                last = self._last_delivery.pop(i, None)
                if last is not None:
                    self.redelivery_gaps_s.append(now - last)
                self._last_delivery[i] = now
            while len(self._last_delivery) > _TRACKED:
                self._last_delivery.popitem(last=False)
            del self.redelivery_gaps_s[:-_TRACKED]

    def _failed_ids(self, payload: Any, batch_ids: set[str]) -> set[str]:
        if not self.mapping.report_batch_item_failures or not isinstance(payload, dict):
            return set()
        failures = payload.get("batchItemFailures") or []
        ids: set[str] = set()
        for item in failures:
            ident = item.get("itemIdentifier") if isinstance(item, dict) else None
            if not ident or ident not in batch_ids:
                # Lambda treats a malformed/unknown identifier as a failure of the whole batch.
                return batch_ids
            ids.add(ident)
        return ids


class EsmPollers:
    def __init__(self, pollers: list[SqsPoller]) -> None:
        self.pollers = pollers

    def start(self) -> None:
        for p in self.pollers:
            p.start()

    def stop(self) -> None:
        for p in self.pollers:
            p._stop.set()
        for p in self.pollers:
            p.stop()


def detach_moto_sqs_invoker(account: str, region: str) -> int:
    """Stop moto invoking Lambda (via Docker) itself on SendMessage for SQS mappings.

    moto's SQS backend calls the function synchronously inside SendMessage when a mapping exists; with
    no Docker engine that fails *after receiving the messages*, bumping their receive count. The
    mapping stays listed by the Lambda API; only moto's in-process shortcut is removed, and these
    pollers take its place. Returns how many queue->function links were removed.
    """
    from moto.sqs.models import sqs_backends

    removed = 0
    for q in sqs_backends[account][region].queues.values():
        removed += len(q.lambda_event_source_mappings)
        q.lambda_event_source_mappings.clear()
    return removed
