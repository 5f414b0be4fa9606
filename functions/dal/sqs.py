"""SQS adapter for purge: remove one deployment's crop messages from the crop queue and the DLQ.

SQS has no delete-by-attribute, so purge receives everything it can see (hiding it for
`SCAN_VISIBILITY_S`), deletes this deployment's messages and then makes the others visible
again at once. The edge sets the `deployment_id` message attribute; the body's
`deployment_id` is the fallback. Nothing read here is logged or kept.
"""

from __future__ import annotations

import json
from typing import Any

from functions.dal._aws import LazyClient, transient
from functions.dal.ports import CropQueues

SCAN_VISIBILITY_S = 30  # long enough to finish one scan; released as soon as the scan ends
MAX_SCAN_BATCHES = 100  # 1000 messages per queue per purge attempt; a retry continues


def _deployment_of(msg: dict[str, Any]) -> str | None:
    attr = (msg.get("MessageAttributes") or {}).get("deployment_id") or {}
    if attr.get("StringValue"):
        return str(attr["StringValue"])
    try:
        body = json.loads(msg.get("Body") or "")
    except ValueError:
        return None
    value = body.get("deployment_id") if isinstance(body, dict) else None
    return value if isinstance(value, str) else None


class SqsCropQueues(CropQueues):
    def __init__(self, queue_url: str | None, dlq_url: str | None, client: Any | None = None) -> None:
        self.queue_url = queue_url
        self.dlq_url = dlq_url
        self._sqs = LazyClient("sqs", client)

    def _purge_one(self, url: str, deployment_id: str) -> int:
        deleted = 0
        others: dict[str, str] = {}  # message id -> receipt handle, released at the end
        seen: set[str] = set()
        with transient("sqs.purge"):
            try:
                for _ in range(MAX_SCAN_BATCHES):
                    resp = self._sqs.client.receive_message(
                        QueueUrl=url,
                        MaxNumberOfMessages=10,
                        MessageAttributeNames=["deployment_id"],
                        VisibilityTimeout=SCAN_VISIBILITY_S,
                        WaitTimeSeconds=0,
                    )
                    msgs = [m for m in resp.get("Messages", []) if m["MessageId"] not in seen]
                    if not msgs:
                        break
                    mine = []
                    for m in msgs:
                        seen.add(m["MessageId"])
                        if _deployment_of(m) == deployment_id:
                            mine.append(m)
                        else:
                            others[m["MessageId"]] = m["ReceiptHandle"]
                    if mine:
                        resp = self._sqs.client.delete_message_batch(
                            QueueUrl=url,
                            Entries=[{"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]} for i, m in enumerate(mine)],
                        )
                        deleted += len(resp.get("Successful", []))
            finally:
                items = list(others.values())
                for i in range(0, len(items), 10):
                    self._sqs.client.change_message_visibility_batch(
                        QueueUrl=url,
                        Entries=[
                            {"Id": str(j), "ReceiptHandle": h, "VisibilityTimeout": 0}
                            for j, h in enumerate(items[i : i + 10])
                        ],
                    )
        return deleted

    def purge_deployment(self, deployment_id: str) -> tuple[int, int]:
        q = self._purge_one(self.queue_url, deployment_id) if self.queue_url else 0
        d = self._purge_one(self.dlq_url, deployment_id) if self.dlq_url else 0
        return q, d
