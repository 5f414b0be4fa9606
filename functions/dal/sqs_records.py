"""SQS adapter for `RecordAcks`: the match function deleting or releasing its own deliveries.

The function's role already holds what this needs: the event-source mapping's grant to
consume the crop queue (`sqs:GetQueueUrl`, `sqs:DeleteMessage`, `sqs:ChangeMessageVisibility`,
and the queue key). Nothing of a record's body is read or logged here.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from functions.dal._aws import LazyClient, transient
from functions.dal.ports import RecordAcks

_BATCH = 10  # SQS batch API limit


class SqsRecordAcks(RecordAcks):
    def __init__(self, client: Any | None = None) -> None:
        self._sqs = LazyClient("sqs", client)
        self._urls: dict[str, str] = {}  # queue ARN -> URL, resolved once per container

    def _url(self, queue_arn: str) -> str:
        url = self._urls.get(queue_arn)
        if url is None:
            _, _, _, _, account, name = queue_arn.split(":", 5)
            url = str(self._sqs.client.get_queue_url(QueueName=name, QueueOwnerAWSAccountId=account)["QueueUrl"])
            self._urls[queue_arn] = url
        return url

    def _batched(self, records: Sequence[Mapping[str, Any]], operation: str, visibility: int | None) -> None:
        by_queue: dict[str, list[str]] = {}
        for r in records:
            by_queue.setdefault(str(r["eventSourceARN"]), []).append(str(r["receiptHandle"]))
        with transient(f"sqs.{operation}"):
            for arn, handles in by_queue.items():
                url = self._url(arn)
                for i in range(0, len(handles), _BATCH):
                    chunk = handles[i : i + _BATCH]
                    if visibility is None:
                        self._sqs.client.delete_message_batch(
                            QueueUrl=url, Entries=[{"Id": str(j), "ReceiptHandle": h} for j, h in enumerate(chunk)]
                        )
                    else:
                        self._sqs.client.change_message_visibility_batch(
                            QueueUrl=url,
                            Entries=[
                                {"Id": str(j), "ReceiptHandle": h, "VisibilityTimeout": visibility}
                                for j, h in enumerate(chunk)
                            ],
                        )

    def delete(self, records: Sequence[Mapping[str, Any]]) -> None:
        if records:
            self._batched(records, "delete", None)

    def release(self, records: Sequence[Mapping[str, Any]]) -> None:
        if records:
            self._batched(records, "release", 0)
