"""SQS adapter for purge: remove one deployment's crop messages from the crop queue and the DLQ.

SQS has no delete-by-attribute, so purge receives everything it can see (hiding it for
`SCAN_VISIBILITY_S`), deletes this deployment's messages and holds the others' hidden until the
scan ends, then makes them visible again at once. An empty receive does not mean an empty queue
(messages in flight elsewhere come back later), so a queue counts as drained only when its own
counts say so: nothing visible, nothing delayed, and nothing in flight but the other deployments'
messages this scan holds, twice in a row (the counts are approximate). Messages in flight with
someone else (a match worker, an operator looking at the DLQ) cannot be attributed until they are
visible again: the scan waits for them up to `SCAN_BUDGET_S`, then reports the queue unverified
(the session machine retries the purge). Other deployments' messages are never deleted.

The edge sets the `deployment_id` message attribute; the body's `deployment_id` is the fallback.
Nothing read here is logged or kept.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from typing import Any

from functions.dal._aws import LazyClient, transient
from functions.dal.ports import CropQueues, QueuePurge

SCAN_VISIBILITY_S = 60  # > SCAN_BUDGET_S: a held message never reappears during its own scan
SCAN_BUDGET_S = 25.0  # per queue per purge attempt (the session function has 120 s); a retry continues
POLL_WAIT_S = 1  # long poll: one empty short-poll reply proves nothing
CLEAN_READS = 2  # consecutive clean readings of the counts needed to call a queue drained
_COUNTS = ["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible", "ApproximateNumberOfMessagesDelayed"]


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


@dataclass
class _Drain:
    deleted: int
    verified: bool
    detail: str


class SqsCropQueues(CropQueues):
    def __init__(
        self,
        queue_url: str | None,
        dlq_url: str | None,
        client: Any | None = None,
        budget_s: float = SCAN_BUDGET_S,
    ) -> None:
        self.queue_url = queue_url
        self.dlq_url = dlq_url
        self.budget_s = budget_s
        self._sqs = LazyClient("sqs", client)

    def _counts(self, url: str) -> tuple[int, int, int]:
        attrs = self._sqs.client.get_queue_attributes(QueueUrl=url, AttributeNames=_COUNTS)["Attributes"]
        visible, in_flight, delayed = (int(attrs.get(name, 0)) for name in _COUNTS)
        return visible, in_flight, delayed

    def _purge_one(self, url: str, deployment_id: str) -> _Drain:
        deleted = 0
        held: dict[str, str] = {}  # other deployments' messages: id -> receipt handle, released at the end
        deadline = time.monotonic() + self.budget_s
        clean = 0
        detail = ""
        with transient("sqs.purge"):
            try:
                while True:
                    resp = self._sqs.client.receive_message(
                        QueueUrl=url,
                        MaxNumberOfMessages=10,
                        MessageAttributeNames=["deployment_id"],
                        VisibilityTimeout=SCAN_VISIBILITY_S,
                        WaitTimeSeconds=POLL_WAIT_S,
                    )
                    msgs = resp.get("Messages", [])
                    mine = [m for m in msgs if _deployment_of(m) == deployment_id]
                    for m in msgs:
                        if _deployment_of(m) != deployment_id:
                            held[m["MessageId"]] = m["ReceiptHandle"]
                    if mine:
                        resp = self._sqs.client.delete_message_batch(
                            QueueUrl=url,
                            Entries=[{"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]} for i, m in enumerate(mine)],
                        )
                        deleted += len(resp.get("Successful", []))
                    if msgs:
                        clean = 0
                    else:
                        visible, in_flight, delayed = self._counts(url)
                        unknown = max(0, in_flight - len(held))
                        if visible == 0 and delayed == 0 and unknown == 0:
                            clean += 1
                            if clean >= CLEAN_READS:
                                return _Drain(deleted, True, "")
                        else:
                            clean = 0
                            detail = f"{visible} visible, {unknown} in flight elsewhere, {delayed} delayed"
                    if time.monotonic() >= deadline:
                        return _Drain(deleted, False, detail or "messages still arriving")
            finally:
                items = list(held.values())
                for i in range(0, len(items), 10):
                    self._sqs.client.change_message_visibility_batch(
                        QueueUrl=url,
                        Entries=[
                            {"Id": str(j), "ReceiptHandle": h, "VisibilityTimeout": 0}
                            for j, h in enumerate(items[i : i + 10])
                        ],
                    )

    def purge_deployment(self, deployment_id: str) -> QueuePurge:
        # The crop queue first: a message it still holds on its last receive moves to the DLQ
        # when received, so the DLQ scan after it sees it.
        none = _Drain(0, True, "")
        q = self._purge_one(self.queue_url, deployment_id) if self.queue_url else none
        d = self._purge_one(self.dlq_url, deployment_id) if self.dlq_url else none
        details = [f"{name}: {r.detail}" for name, r in (("queue", q), ("dlq", d)) if not r.verified]
        return QueuePurge(q.deleted, d.deleted, q.verified and d.verified, "; ".join(details))
